//! The glob dialect of the allow list, written by hand to keep the component small.
//!
//! `*` matches any run of characters except `/` (so within one path segment), `**` matches any run of
//! characters including `/`, and every other character matches itself. Matching is case-sensitive:
//! registry and repository names are lower-case by the distribution spec, so a pattern with capitals is
//! a typo we reject at init rather than silently never match.

/// A checked pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(u8),
    /// `*`: any run without `/`.
    Segment,
    /// `**`: any run at all.
    Any,
}

impl Glob {
    pub fn new(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("an empty pattern matches nothing; remove it".into());
        }
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "pattern {text:?} has upper-case letters, which no repository name has; write it in lower case"
            ));
        }
        let bytes = text.as_bytes();
        let mut tokens = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'*' {
                let run = bytes[i..].iter().take_while(|&&b| b == b'*').count();
                if run > 2 {
                    return Err(format!(
                        "pattern {text:?} has {run} `*` in a row; use `*` (within a segment) or `**` (across `/`)"
                    ));
                }
                tokens.push(if run == 2 { Token::Any } else { Token::Segment });
                i += run;
            } else {
                tokens.push(Token::Literal(bytes[i]));
                i += 1;
            }
        }
        Ok(Glob {
            text: text.to_owned(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, name: &str) -> bool {
        matches(&self.tokens, name.as_bytes())
    }
}

/// Backtracking matcher. It only branches at wildcards, and patterns come from the operator's config
/// (a few wildcards each) while names are at most a few hundred bytes, so no memo table is worth its size.
fn matches(tokens: &[Token], name: &[u8]) -> bool {
    match tokens.split_first() {
        None => name.is_empty(),
        Some((Token::Literal(c), rest)) => name.first() == Some(c) && matches(rest, &name[1..]),
        Some((Token::Segment, rest)) => {
            let segment_end = name.iter().position(|&b| b == b'/').unwrap_or(name.len());
            (0..=segment_end).any(|skip| matches(rest, &name[skip..]))
        }
        Some((Token::Any, rest)) => (0..=name.len()).any(|skip| matches(rest, &name[skip..])),
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn m(pattern: &str, name: &str) -> bool {
        Glob::new(pattern).unwrap().matches(name)
    }

    #[test]
    fn literal_matches_only_itself() {
        assert!(m("docker.io/library/redis", "docker.io/library/redis"));
        assert!(!m("docker.io/library/redis", "docker.io/library/redis2"));
        assert!(!m("docker.io/library/redis", "docker.io/library/redi"));
    }

    #[test]
    fn star_stays_within_a_segment() {
        assert!(m("docker.io/library/re*", "docker.io/library/redis"));
        assert!(m("docker.io/library/re*", "docker.io/library/re"));
        assert!(m("docker.io/*/redis", "docker.io/library/redis"));
        assert!(!m("docker.io/*", "docker.io/library/redis"));
        assert!(!m("docker.io/*/redis", "docker.io/a/b/redis"));
        assert!(m("*", "alpine"));
        assert!(!m("*", "team/alpine"));
    }

    #[test]
    fn double_star_crosses_segments() {
        assert!(m("docker.io/**", "docker.io/library/redis"));
        assert!(m("**/redis", "ghcr.io/a/b/redis"));
        assert!(m("**", "anything/at/all"));
        assert!(m("ghcr.io/**/cache", "ghcr.io/org/team/cache"));
        assert!(!m("ghcr.io/**/cache", "ghcr.io/org/team/cache2"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("a/***").is_err());
        assert!(Glob::new("Docker.io/**").is_err());
    }
}
