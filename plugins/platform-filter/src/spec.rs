//! Platform specs (`os/arch[/variant]`) and the config that lists them; free of WIT types so it is
//! tested natively.

use std::fmt;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    os: String,
    architecture: String,
    /// None: any variant (and none) matches, so `linux/arm64` keeps an index entry that says `v8`.
    variant: Option<String>,
}

impl PlatformSpec {
    pub fn parse(text: &str) -> Result<PlatformSpec, String> {
        let parts: Vec<&str> = text.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "platform-filter: {text:?} is not a platform; write os/architecture[/variant], e.g. \"linux/arm/v7\""
            ));
        }
        Ok(PlatformSpec {
            os: parts[0].to_owned(),
            architecture: parts[1].to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
        })
    }

    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        self.os == os
            && self.architecture == architecture
            && self
                .variant
                .as_deref()
                .is_none_or(|want| variant == Some(want))
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    platforms: Vec<String>,
}

const EXAMPLE: &str = r#"{"platforms": ["linux/amd64", "linux/arm64"]}"#;

pub fn parse_config(config: &str) -> Result<Vec<PlatformSpec>, String> {
    let raw: RawConfig = serde_json::from_str(config)
        .map_err(|e| format!("platform-filter: invalid config ({e}); expected e.g. {EXAMPLE}"))?;
    if raw.platforms.is_empty() {
        return Err(format!(
            "platform-filter: `platforms` is empty, which would keep no platform at all; list some, e.g. {EXAMPLE}"
        ));
    }
    raw.platforms
        .iter()
        .map(|p| PlatformSpec::parse(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_is_matched_only_when_given() {
        let arm64 = PlatformSpec::parse("linux/arm64").unwrap();
        assert!(arm64.matches("linux", "arm64", None));
        assert!(arm64.matches("linux", "arm64", Some("v8")));
        assert!(!arm64.matches("linux", "amd64", None));
        let armv7 = PlatformSpec::parse("linux/arm/v7").unwrap();
        assert!(armv7.matches("linux", "arm", Some("v7")));
        assert!(!armv7.matches("linux", "arm", Some("v6")));
        assert!(!armv7.matches("linux", "arm", None));
        assert!(!armv7.matches("windows", "arm", Some("v7")));
    }

    #[test]
    fn config_lists_platforms() {
        let specs = parse_config(r#"{"platforms": ["linux/amd64", "linux/arm/v7"]}"#).unwrap();
        assert_eq!(
            specs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["linux/amd64", "linux/arm/v7"]
        );
    }

    #[test]
    fn invalid_configs_say_what_to_fix() {
        for (config, needle) in [
            ("", "invalid config"),
            (r#"{"platforms": []}"#, "`platforms` is empty"),
            (r#"{"platforms": ["linux"]}"#, "is not a platform"),
            (r#"{"platforms": ["linux/arm/v7/x"]}"#, "is not a platform"),
            (r#"{"platforms": ["linux//v7"]}"#, "is not a platform"),
            (r#"{"platform": ["linux/amd64"]}"#, "unknown field"),
        ] {
            let err = parse_config(config).unwrap_err();
            assert!(
                err.contains(needle),
                "config {config:?}: error {err:?} lacks {needle:?}"
            );
        }
    }
}
