//! Rust source as the few tokens an import graph needs. Comments vanish and literals become opaque
//! (a string's text is kept only because serde attributes name functions in strings), so that
//! `crate::x` inside a comment, a doc example or a message is never taken for an import.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Identifiers and keywords alike; a raw identifier (`r#type`) without its `r#`.
    Ident(String),
    /// `::`
    PathSep,
    /// Any other punctuation, one character at a time (`->` is `-` then `>`).
    Punct(char),
    /// A string literal's contents, escapes left as written (raw, byte and C strings too).
    Str(String),
    /// Numbers, characters, bytes: nothing an import graph reads.
    Literal,
    /// `'a`, `'static`, loop labels.
    Lifetime,
}

/// Splits `src` into tokens. Never fails: an unterminated literal or comment ends at the end of the
/// file, as the compiler would have refused the file anyway.
pub fn lex(src: &str) -> Vec<Token> {
    let chars: Vec<char> = src.chars().collect();
    let mut lexer = Lexer { chars, at: 0 };
    let mut tokens = Vec::new();
    while let Some(token) = lexer.next_token() {
        tokens.push(token);
    }
    tokens
}

struct Lexer {
    chars: Vec<char>,
    at: usize,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    fn next_token(&mut self) -> Option<Token> {
        loop {
            let c = self.peek(0)?;
            if c.is_whitespace() {
                self.at += 1;
            } else if c == '/' && self.peek(1) == Some('/') {
                while self.peek(0).is_some_and(|c| c != '\n') {
                    self.at += 1;
                }
            } else if c == '/' && self.peek(1) == Some('*') {
                self.block_comment();
            } else {
                break;
            }
        }
        let c = self.peek(0)?;
        if let Some(token) = self.prefixed_literal() {
            return Some(token);
        }
        if c == '"' {
            self.at += 1;
            return Some(Token::Str(self.quoted('"')));
        }
        if c == '\'' {
            return Some(self.quote_or_lifetime());
        }
        if c.is_ascii_digit() {
            self.number();
            return Some(Token::Literal);
        }
        if is_ident_start(c) {
            return Some(Token::Ident(self.ident()));
        }
        self.at += 1;
        if c == ':' && self.peek(0) == Some(':') {
            self.at += 1;
            return Some(Token::PathSep);
        }
        Some(Token::Punct(c))
    }

    /// `/* … */`, nested as Rust nests them.
    fn block_comment(&mut self) {
        self.at += 2;
        let mut depth = 1;
        while depth > 0 {
            match (self.peek(0), self.peek(1)) {
                (None, _) => return,
                (Some('/'), Some('*')) => {
                    depth += 1;
                    self.at += 2;
                }
                (Some('*'), Some('/')) => {
                    depth -= 1;
                    self.at += 2;
                }
                _ => self.at += 1,
            }
        }
    }

    /// Literals that start like an identifier: `b"…"`, `b'x'`, `c"…"`, `r"…"`, `r#"…"#`, `br#"…"#`,
    /// `cr"…"`, and the raw identifier `r#name`. None when this is a plain identifier.
    fn prefixed_literal(&mut self) -> Option<Token> {
        let c = self.peek(0)?;
        let (prefix_len, raw) = match (c, self.peek(1)) {
            ('b' | 'c', Some('r')) => (2, true),
            ('r', _) => (1, true),
            ('b' | 'c', _) => (1, false),
            _ => return None,
        };
        let next = self.peek(prefix_len);
        if !raw {
            return match next {
                Some('"') => {
                    self.at += prefix_len + 1;
                    Some(Token::Str(self.quoted('"')))
                }
                Some('\'') if c == 'b' => {
                    self.at += prefix_len + 1;
                    self.quoted('\'');
                    Some(Token::Literal)
                }
                _ => None,
            };
        }
        let mut hashes = 0;
        while self.peek(prefix_len + hashes) == Some('#') {
            hashes += 1;
        }
        match self.peek(prefix_len + hashes) {
            Some('"') => {
                self.at += prefix_len + hashes + 1;
                Some(Token::Str(self.raw_string(hashes)))
            }
            Some(n) if c == 'r' && prefix_len == 1 && hashes == 1 && is_ident_start(n) => {
                self.at += 2;
                Some(Token::Ident(self.ident()))
            }
            _ => None,
        }
    }

    /// The rest of a quoted literal, after its opening quote; backslash escapes are skipped over.
    fn quoted(&mut self, close: char) -> String {
        let mut text = String::new();
        while let Some(c) = self.peek(0) {
            self.at += 1;
            if c == close {
                break;
            }
            text.push(c);
            if c == '\\' {
                if let Some(escaped) = self.peek(0) {
                    text.push(escaped);
                    self.at += 1;
                }
            }
        }
        text
    }

    fn raw_string(&mut self, hashes: usize) -> String {
        let mut text = String::new();
        while let Some(c) = self.peek(0) {
            self.at += 1;
            if c == '"' && (0..hashes).all(|i| self.peek(i) == Some('#')) {
                self.at += hashes;
                break;
            }
            text.push(c);
        }
        text
    }

    /// `'x'`, `'\n'`, `'\u{1F600}'` are characters; `'a` and `'static` are lifetimes or labels.
    fn quote_or_lifetime(&mut self) -> Token {
        self.at += 1;
        match (self.peek(0), self.peek(1)) {
            (Some('\\'), _) => {
                self.quoted('\'');
                Token::Literal
            }
            (Some(_), Some('\'')) => {
                self.at += 2;
                Token::Literal
            }
            (Some(c), _) if is_ident_start(c) => {
                self.ident();
                Token::Lifetime
            }
            _ => Token::Punct('\''),
        }
    }

    fn number(&mut self) {
        while let Some(c) = self.peek(0) {
            let fraction = c == '.' && self.peek(1).is_some_and(|d| d.is_ascii_digit());
            if c.is_alphanumeric() || c == '_' || fraction {
                self.at += 1;
            } else {
                break;
            }
        }
    }

    fn ident(&mut self) -> String {
        let start = self.at;
        while self
            .peek(0)
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idents(src: &str) -> Vec<String> {
        lex(src)
            .into_iter()
            .filter_map(|t| match t {
                Token::Ident(name) => Some(name),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn comments_and_literals_hide_their_words() {
        let src = r####"
            // crate::a::X
            /* crate::b /* nested crate::c */ still comment */
            /// doc: crate::d::Y
            let s = "crate::e \" crate::f";
            let r = r#"crate::g " still"#;
            let b = br##"crate::h"##;
            let c = b'\'';
            let d = '"';
            let l: &'static str = x;
            kept
        "####;
        assert_eq!(
            idents(src),
            [
                "let", "s", "let", "r", "let", "b", "let", "c", "let", "d", "let", "l", "str", "x",
                "kept"
            ]
        );
    }

    #[test]
    fn raw_identifiers_and_path_separators() {
        let tokens = lex("r#type::x");
        assert_eq!(
            tokens,
            [
                Token::Ident("type".into()),
                Token::PathSep,
                Token::Ident("x".into())
            ]
        );
    }

    #[test]
    fn numbers_are_opaque() {
        assert_eq!(
            lex("1..2 3.5e3"),
            [
                Token::Literal,
                Token::Punct('.'),
                Token::Punct('.'),
                Token::Literal,
                Token::Literal
            ]
        );
    }
}
