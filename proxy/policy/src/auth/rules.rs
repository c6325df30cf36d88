//! Who may pull and push which repository: `[[auth.rule]]` entries (the longest matching prefix
//! decides), else the defaults (pulls as `anonymous_pull` says, pushes and deletes by any
//! authenticated caller). A pure function of the config and the caller.

use wharf_model::config::{AuthConfig, AuthRule};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Pull,
    Push,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Anonymous, and an identity is needed (`401` with a challenge): why.
    NeedIdentity(String),
    /// The caller is known and not allowed (`403`): why.
    Deny(String),
}

/// `name` is `prefix` or below it (whole name components).
fn covers(prefix: &str, name: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn rule_for<'a>(cfg: &'a AuthConfig, repo: &str) -> Option<&'a AuthRule> {
    cfg.rules
        .iter()
        .filter(|r| covers(&r.prefix, repo))
        .max_by_key(|r| r.prefix.trim_end_matches('/').len())
}

pub fn decide(cfg: &AuthConfig, repo: &str, want: Want, identity: Option<&str>) -> Verdict {
    let what = match want {
        Want::Pull => "pull",
        Want::Push => "push",
    };
    let Some(rule) = rule_for(cfg, repo) else {
        return match (want, identity) {
            (_, Some(_)) => Verdict::Allow,
            (Want::Pull, None) if cfg.anonymous_pull => Verdict::Allow,
            (Want::Pull, None) => Verdict::NeedIdentity(
                "anonymous pulls are off (auth.anonymous_pull = false)".into(),
            ),
            (Want::Push, None) => {
                Verdict::NeedIdentity("pushes and deletes need a credential".into())
            }
        };
    };
    let list = match want {
        Want::Pull => &rule.pull,
        Want::Push => &rule.push,
    };
    let allowed = match identity {
        None => want == Want::Pull && list.iter().any(|i| i == "anonymous"),
        Some(id) => list.iter().any(|i| i == "*" || i == id),
    };
    match (allowed, identity) {
        (true, _) => Verdict::Allow,
        (false, None) => Verdict::NeedIdentity(format!(
            "the [[auth.rule]] for {} lets only {} {what}",
            rule.prefix,
            names(list)
        )),
        (false, Some(_)) => Verdict::Deny(format!(
            "the [[auth.rule]] with prefix = \"{}\" lets only {} {what} there; add the identity to \
             its {what} list",
            rule.prefix,
            names(list)
        )),
    }
}

fn names(list: &[String]) -> String {
    if list.is_empty() {
        "no one".into()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rules: &[(&str, &[&str], &[&str])], anonymous_pull: bool) -> AuthConfig {
        AuthConfig {
            anonymous_pull,
            rules: rules
                .iter()
                .map(|(p, pull, push)| AuthRule {
                    prefix: (*p).into(),
                    pull: pull.iter().map(|s| (*s).into()).collect(),
                    push: push.iter().map(|s| (*s).into()).collect(),
                })
                .collect(),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn defaults_let_anyone_pull_and_the_known_push() {
        let c = cfg(&[], true);
        assert_eq!(decide(&c, "a/b", Want::Pull, None), Verdict::Allow);
        assert!(matches!(
            decide(&c, "a/b", Want::Push, None),
            Verdict::NeedIdentity(_)
        ));
        assert_eq!(decide(&c, "a/b", Want::Push, Some("bob")), Verdict::Allow);
        let closed = cfg(&[], false);
        assert!(matches!(
            decide(&closed, "a/b", Want::Pull, None),
            Verdict::NeedIdentity(_)
        ));
        assert_eq!(
            decide(&closed, "a/b", Want::Pull, Some("bob")),
            Verdict::Allow
        );
    }

    #[test]
    fn the_longest_prefix_decides_on_whole_components() {
        let c = cfg(
            &[
                ("ci", &["*"], &["ci-robot"]),
                ("ci/secret/", &["alice"], &["alice"]),
            ],
            true,
        );
        assert_eq!(
            decide(&c, "ci/app", Want::Push, Some("ci-robot")),
            Verdict::Allow
        );
        let d = decide(&c, "ci/app", Want::Push, Some("bob"));
        assert!(
            matches!(&d, Verdict::Deny(m) if m.contains("ci-robot") && m.contains("prefix = \"ci\"")),
            "{d:?}"
        );
        assert!(matches!(
            decide(&c, "ci/app", Want::Pull, None),
            Verdict::NeedIdentity(_)
        ));
        assert_eq!(
            decide(&c, "ci/app", Want::Pull, Some("bob")),
            Verdict::Allow
        );
        assert!(matches!(
            decide(&c, "ci/secret/x", Want::Pull, Some("bob")),
            Verdict::Deny(_)
        ));
        assert_eq!(
            decide(&c, "ci/secret/x", Want::Pull, Some("alice")),
            Verdict::Allow
        );
        // `cinema` is not under `ci`.
        assert_eq!(
            decide(&c, "cinema/x", Want::Push, Some("bob")),
            Verdict::Allow
        );
        let open = cfg(&[("pub", &["anonymous"], &[])], false);
        assert_eq!(decide(&open, "pub/x", Want::Pull, None), Verdict::Allow);
        assert!(matches!(
            decide(&open, "pub/x", Want::Push, Some("bob")),
            Verdict::Deny(_)
        ));
    }
}
