//! The allow list's configuration and its decision, free of any WIT type so it is tested natively.

use crate::glob::Glob;
use serde::Deserialize;

/// The operations a rule set can be limited to, named as in the config (and the WIT `operation` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Pull,
    Push,
    Delete,
    List,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    ops: Option<Vec<Op>>,
    identities: Option<Vec<String>>,
    #[serde(default)]
    except_identities: Vec<String>,
}

#[derive(Debug)]
pub struct Rules {
    pub allow: Vec<Glob>,
    pub deny: Vec<Glob>,
    /// None: every operation is judged.
    pub ops: Option<Vec<Op>>,
    /// None: every caller is judged.
    pub identities: Option<Vec<Caller>>,
    /// Callers never judged, whatever `identities` says.
    pub except_identities: Vec<Caller>,
}

/// Who an `identities` entry stands for, in the words of wharf's own `[[auth.rule]]` lists:
/// `"anonymous"` is a caller with no credential, `"*"` any caller with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    AnyIdentity,
    Named(String),
}

impl Caller {
    fn parse(key: &str, text: &str) -> Result<Caller, String> {
        Ok(match text {
            "anonymous" => Caller::Anonymous,
            "*" => Caller::AnyIdentity,
            "" => {
                return Err(format!(
                    "allow-list: `{key}` has an empty entry; write an identity (a user of wharf's htpasswd file or a token's identity), \"*\" or \"anonymous\""
                ))
            }
            name => Caller::Named(name.to_owned()),
        })
    }

    fn matches(&self, identity: Option<&str>) -> bool {
        match (self, identity) {
            (Caller::Anonymous, None) => true,
            (Caller::AnyIdentity, Some(_)) => true,
            (Caller::Named(n), Some(id)) => n == id,
            _ => false,
        }
    }
}

/// What the plugin decided; `Deny` carries the reason the client sees.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(String),
}

/// How a caller is named in a reason.
fn who(identity: Option<&str>) -> &str {
    identity.unwrap_or("anonymous callers")
}

const EXAMPLE: &str =
    r#"{"allow": ["docker.io/library/*"], "deny": ["docker.io/library/re*"], "ops": ["pull"]}"#;

impl Rules {
    pub fn parse(config: &str) -> Result<Rules, String> {
        if config.trim().is_empty() {
            return Err(format!(
                "allow-list: the plugin needs a JSON config, e.g. {EXAMPLE}"
            ));
        }
        let raw: RawConfig = serde_json::from_str(config)
            .map_err(|e| format!("allow-list: invalid config ({e}); expected e.g. {EXAMPLE}"))?;
        if raw.allow.is_empty() && raw.deny.is_empty() {
            return Err(format!(
                "allow-list: the config has neither `allow` nor `deny` rules, so the plugin would allow everything; add rules, e.g. {EXAMPLE}"
            ));
        }
        if raw.ops.as_ref().is_some_and(|ops| ops.is_empty()) {
            return Err(
                "allow-list: `ops` is empty, so the plugin would judge nothing; list operations (pull, push, delete, list) or leave `ops` out to judge all"
                    .into(),
            );
        }
        let callers = |key: &str, list: &[String]| -> Result<Vec<Caller>, String> {
            list.iter().map(|c| Caller::parse(key, c)).collect()
        };
        if raw.identities.as_ref().is_some_and(|ids| ids.is_empty()) {
            return Err(
                "allow-list: `identities` is empty, so the plugin would judge no one; list identities (\"anonymous\" for callers without a credential, \"*\" for any with one) or leave `identities` out to judge everyone"
                    .into(),
            );
        }
        let identities = match &raw.identities {
            Some(list) => Some(callers("identities", list)?),
            None => None,
        };
        let except_identities = callers("except_identities", &raw.except_identities)?;
        let globs = |key: &str, patterns: Vec<String>| -> Result<Vec<Glob>, String> {
            patterns
                .iter()
                .map(|p| Glob::new(p).map_err(|e| format!("allow-list: `{key}`: {e}")))
                .collect()
        };
        Ok(Rules {
            allow: globs("allow", raw.allow)?,
            deny: globs("deny", raw.deny)?,
            ops: raw.ops,
            identities,
            except_identities,
        })
    }

    /// Whether the rules apply to a caller with `identity` (`None`: anonymous).
    fn judges(&self, identity: Option<&str>) -> bool {
        self.identities
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|c| c.matches(identity)))
            && !self.except_identities.iter().any(|c| c.matches(identity))
    }

    /// `name` is `<registry>/<repository>` for mirrored content and `<repository>` for local content.
    /// `identity` is who wharf says the caller authenticated as (`None`: anonymous, or wharf has no
    /// `[auth]`).
    pub fn decide(&self, op: Op, name: &str, identity: Option<&str>) -> Verdict {
        if self.ops.as_ref().is_some_and(|ops| !ops.contains(&op)) || !self.judges(identity) {
            return Verdict::Allow;
        }
        // With rules for some callers only, the reason says which caller they were applied to.
        let scoped = self.identities.is_some() || !self.except_identities.is_empty();
        let to = if scoped {
            format!(" for {}", who(identity))
        } else {
            String::new()
        };
        if let Some(rule) = self.deny.iter().find(|g| g.matches(name)) {
            return Verdict::Deny(format!(
                "{name} is denied by rule {:?}{to} (allow-list plugin)",
                rule.as_str()
            ));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|g| g.matches(name)) {
            return Verdict::Deny(format!(
                "{name} is not in the allow list{to} (allow-list plugin)"
            ));
        }
        Verdict::Allow
    }
}

/// The name a request is judged by.
pub fn checked_name(registry: Option<&str>, repository: &str) -> String {
    match registry {
        Some(registry) => format!("{registry}/{repository}"),
        None => repository.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(config: &str) -> Rules {
        Rules::parse(config).unwrap()
    }

    #[test]
    fn deny_wins_and_names_the_rule() {
        let r = rules(r#"{"allow": ["docker.io/**"], "deny": ["docker.io/library/re*"]}"#);
        assert_eq!(
            r.decide(Op::Pull, "docker.io/library/redis", None),
            Verdict::Deny(
                r#"docker.io/library/redis is denied by rule "docker.io/library/re*" (allow-list plugin)"#
                    .into()
            )
        );
        assert_eq!(
            r.decide(Op::Pull, "docker.io/library/alpine", None),
            Verdict::Allow
        );
    }

    #[test]
    fn a_non_empty_allow_list_denies_what_it_does_not_match() {
        let r = rules(r#"{"allow": ["docker.io/library/*", "team/*"]}"#);
        assert_eq!(r.decide(Op::Push, "team/app", None), Verdict::Allow);
        assert_eq!(
            r.decide(Op::Pull, "ghcr.io/org/tool", None),
            Verdict::Deny("ghcr.io/org/tool is not in the allow list (allow-list plugin)".into())
        );
    }

    #[test]
    fn deny_only_allows_the_rest() {
        let r = rules(r#"{"deny": ["**/secret*"]}"#);
        assert!(matches!(
            r.decide(Op::Pull, "team/secrets", None),
            Verdict::Deny(_)
        ));
        assert_eq!(r.decide(Op::Pull, "team/app", None), Verdict::Allow);
    }

    #[test]
    fn ops_limit_what_is_judged() {
        let r = rules(r#"{"deny": ["**"], "ops": ["push", "delete"]}"#);
        assert_eq!(r.decide(Op::Pull, "team/app", None), Verdict::Allow);
        assert_eq!(r.decide(Op::List, "team/app", None), Verdict::Allow);
        assert!(matches!(
            r.decide(Op::Push, "team/app", None),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            r.decide(Op::Delete, "team/app", None),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn identities_limit_whom_the_rules_judge() {
        let r = rules(r#"{"deny": ["release/**"], "identities": ["bob", "anonymous"]}"#);
        assert_eq!(
            r.decide(Op::Push, "release/app", Some("bob")),
            Verdict::Deny(
                r#"release/app is denied by rule "release/**" for bob (allow-list plugin)"#.into()
            )
        );
        assert_eq!(
            r.decide(Op::Pull, "release/app", None),
            Verdict::Deny(
                r#"release/app is denied by rule "release/**" for anonymous callers (allow-list plugin)"#
                    .into()
            )
        );
        assert_eq!(
            r.decide(Op::Push, "release/app", Some("alice")),
            Verdict::Allow
        );
        // The scope limits whom the rules judge, not what they match.
        assert_eq!(r.decide(Op::Push, "team/app", Some("bob")), Verdict::Allow);
    }

    #[test]
    fn star_stands_for_every_authenticated_caller() {
        let r = rules(r#"{"allow": ["team/**"], "identities": ["*"]}"#);
        assert_eq!(r.decide(Op::Pull, "other/app", None), Verdict::Allow);
        assert_eq!(
            r.decide(Op::Pull, "other/app", Some("alice")),
            Verdict::Deny(
                "other/app is not in the allow list for alice (allow-list plugin)".into()
            )
        );
    }

    #[test]
    fn except_identities_are_never_judged() {
        // "Only ci-robot pushes release/**": everyone else, anonymous callers included, is refused.
        let r = rules(
            r#"{"deny": ["release/**"], "ops": ["push", "delete"], "except_identities": ["ci-robot"]}"#,
        );
        assert_eq!(
            r.decide(Op::Push, "release/app", Some("ci-robot")),
            Verdict::Allow
        );
        assert_eq!(
            r.decide(Op::Delete, "release/app", Some("alice")),
            Verdict::Deny(
                r#"release/app is denied by rule "release/**" for alice (allow-list plugin)"#
                    .into()
            )
        );
        assert!(matches!(
            r.decide(Op::Push, "release/app", None),
            Verdict::Deny(_)
        ));
        assert_eq!(r.decide(Op::Pull, "release/app", None), Verdict::Allow);
        // Both keys: judged when listed and not excepted.
        let r = rules(r#"{"deny": ["**"], "identities": ["*"], "except_identities": ["admin"]}"#);
        assert_eq!(r.decide(Op::Pull, "a", Some("admin")), Verdict::Allow);
        assert_eq!(r.decide(Op::Pull, "a", None), Verdict::Allow);
        assert!(matches!(
            r.decide(Op::Pull, "a", Some("alice")),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn without_identity_keys_everyone_is_judged_and_reasons_are_unchanged() {
        let r = rules(r#"{"deny": ["team/secret*"]}"#);
        for identity in [None, Some("alice")] {
            assert_eq!(
                r.decide(Op::Pull, "team/secret", identity),
                Verdict::Deny(
                    r#"team/secret is denied by rule "team/secret*" (allow-list plugin)"#.into()
                )
            );
        }
    }

    #[test]
    fn names_carry_the_registry_only_for_mirrored_content() {
        assert_eq!(
            checked_name(Some("docker.io"), "library/redis"),
            "docker.io/library/redis"
        );
        assert_eq!(checked_name(None, "team/app"), "team/app");
    }

    #[test]
    fn invalid_configs_say_what_to_fix() {
        for (config, needle) in [
            ("", "needs a JSON config"),
            ("{", "invalid config"),
            (r#"{"allow": "docker.io/**"}"#, "invalid config"),
            (r#"{"alow": ["x"]}"#, "unknown field `alow`"),
            ("{}", "neither `allow` nor `deny`"),
            (r#"{"deny": ["x"], "ops": []}"#, "`ops` is empty"),
            (
                r#"{"deny": ["x"], "ops": ["pul"]}"#,
                "unknown variant `pul`",
            ),
            (r#"{"deny": ["a/***"]}"#, "`deny`: pattern"),
            (
                r#"{"deny": ["x"], "identities": []}"#,
                "`identities` is empty",
            ),
            (
                r#"{"deny": ["x"], "identities": [""]}"#,
                "`identities` has an empty entry",
            ),
            (
                r#"{"deny": ["x"], "except_identities": ["a", ""]}"#,
                "`except_identities` has an empty entry",
            ),
            (r#"{"deny": ["x"], "identities": "bob"}"#, "invalid config"),
        ] {
            let err = Rules::parse(config).unwrap_err();
            assert!(
                err.contains(needle),
                "config {config:?}: error {err:?} lacks {needle:?}"
            );
        }
    }
}
