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
}

#[derive(Debug)]
pub struct Rules {
    pub allow: Vec<Glob>,
    pub deny: Vec<Glob>,
    /// None: every operation is judged.
    pub ops: Option<Vec<Op>>,
}

/// What the plugin decided; `Deny` carries the reason the client sees.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(String),
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
        })
    }

    /// `name` is `<registry>/<repository>` for mirrored content and `<repository>` for local content.
    pub fn decide(&self, op: Op, name: &str) -> Verdict {
        if self.ops.as_ref().is_some_and(|ops| !ops.contains(&op)) {
            return Verdict::Allow;
        }
        if let Some(rule) = self.deny.iter().find(|g| g.matches(name)) {
            return Verdict::Deny(format!(
                "{name} is denied by rule {:?} (allow-list plugin)",
                rule.as_str()
            ));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|g| g.matches(name)) {
            return Verdict::Deny(format!(
                "{name} is not in the allow list (allow-list plugin)"
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
            r.decide(Op::Pull, "docker.io/library/redis"),
            Verdict::Deny(
                r#"docker.io/library/redis is denied by rule "docker.io/library/re*" (allow-list plugin)"#
                    .into()
            )
        );
        assert_eq!(
            r.decide(Op::Pull, "docker.io/library/alpine"),
            Verdict::Allow
        );
    }

    #[test]
    fn a_non_empty_allow_list_denies_what_it_does_not_match() {
        let r = rules(r#"{"allow": ["docker.io/library/*", "team/*"]}"#);
        assert_eq!(r.decide(Op::Push, "team/app"), Verdict::Allow);
        assert_eq!(
            r.decide(Op::Pull, "ghcr.io/org/tool"),
            Verdict::Deny("ghcr.io/org/tool is not in the allow list (allow-list plugin)".into())
        );
    }

    #[test]
    fn deny_only_allows_the_rest() {
        let r = rules(r#"{"deny": ["**/secret*"]}"#);
        assert!(matches!(
            r.decide(Op::Pull, "team/secrets"),
            Verdict::Deny(_)
        ));
        assert_eq!(r.decide(Op::Pull, "team/app"), Verdict::Allow);
    }

    #[test]
    fn ops_limit_what_is_judged() {
        let r = rules(r#"{"deny": ["**"], "ops": ["push", "delete"]}"#);
        assert_eq!(r.decide(Op::Pull, "team/app"), Verdict::Allow);
        assert_eq!(r.decide(Op::List, "team/app"), Verdict::Allow);
        assert!(matches!(r.decide(Op::Push, "team/app"), Verdict::Deny(_)));
        assert!(matches!(r.decide(Op::Delete, "team/app"), Verdict::Deny(_)));
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
        ] {
            let err = Rules::parse(config).unwrap_err();
            assert!(
                err.contains(needle),
                "config {config:?}: error {err:?} lacks {needle:?}"
            );
        }
    }
}
