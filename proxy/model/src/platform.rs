//! Platforms as values: what a platform is (the OCI index `platform` object, the WIT `platform`
//! record), how the configuration names one (`os/architecture[/variant]`), the entries of an index,
//! and an index reduced to some platforms. Pure functions of their inputs: a reduced index has the
//! same digest wherever and whenever it is computed.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::digest::Digest;

/// The annotation a reduced index carries: the digest of the index it was reduced from.
pub const REDUCED_FROM: &str = "dev.wharf.reduced-from";
/// The prefix of the rewrite keys (`Meta::record_rewrite`) of reduced indexes.
pub const KEY_PREFIX: &str = "platforms:";

/// One platform of a multi-platform image (the WIT `platform` record).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub os_version: Option<String>,
    pub os_features: Vec<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A platform as configured: `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    /// None: any variant (and none) matches, so `linux/arm64` keeps an entry that says `v8`.
    pub variant: Option<String>,
}

impl PlatformSpec {
    pub fn matches(&self, p: &Platform) -> bool {
        self.os == p.os
            && self.architecture == p.architecture
            && self
                .variant
                .as_deref()
                .is_none_or(|want| p.variant.as_deref() == Some(want))
    }
}

impl std::str::FromStr for PlatformSpec {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| valid(p)) {
            return Err(format!(
                "{text:?} is not a platform; write os/architecture[/variant], e.g. \"linux/amd64\" \
                 or \"linux/arm/v7\""
            ));
        }
        Ok(PlatformSpec {
            os: parts[0].to_owned(),
            architecture: parts[1].to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
        })
    }
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Serialize for PlatformSpec {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses a list of platform strings, naming `key` in the error.
pub(crate) fn parse_list<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
) -> std::result::Result<Vec<PlatformSpec>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e| serde::de::Error::custom(format!("{key}: {e}")))
        })
        .collect()
}

/// `deserialize_with` for `[mirror] platforms`.
pub fn de_mirror_platforms<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<PlatformSpec>, D::Error> {
    parse_list(d, "mirror.platforms")
}

/// `deserialize_with` for `[[upstream]] platforms`.
pub fn de_upstream_platforms<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<PlatformSpec>>, D::Error> {
    parse_list(d, "upstream.platforms").map(Some)
}

/// How a tag of an index whose platforms the policy reduces is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformMode {
    /// The original index (bytes and digest); the left-out platforms answer 404.
    #[default]
    Sparse,
    /// A new index listing only the kept platforms, mapped from the original.
    Rewritten,
}

/// One entry of an index: a child manifest and the platform it says it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub digest: Digest,
    pub platform: Option<Platform>,
}

/// The entries of an index (`manifests[]`), in order.
pub fn entries(index: &[u8]) -> std::result::Result<Vec<Entry>, String> {
    let v: Value = serde_json::from_slice(index).map_err(|e| e.to_string())?;
    let list = v
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or("the index has no manifests list")?;
    list.iter()
        .map(|e| {
            let digest = e
                .get("digest")
                .and_then(Value::as_str)
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| format!("an index entry has no valid digest: {e}"))?;
            Ok(Entry {
                digest,
                platform: e.get("platform").and_then(platform_of),
            })
        })
        .collect()
}

pub fn platform_of(p: &Value) -> Option<Platform> {
    let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(Platform {
        os: s("os")?,
        architecture: s("architecture")?,
        variant: s("variant"),
        os_version: s("os.version"),
        os_features: p
            .get("os.features")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// `index` with only the entries whose platform is in `chosen` (the others' order and every other
/// field kept), annotated with the digest it was reduced from. A pure function of its inputs, so the
/// reduced digest is the same wherever and whenever it is computed.
pub fn reduce(
    original: &Digest,
    index: &[u8],
    chosen: &[Platform],
) -> std::result::Result<Vec<u8>, String> {
    let mut v: Value = serde_json::from_slice(index).map_err(|e| e.to_string())?;
    let obj = v.as_object_mut().ok_or("the index is not a JSON object")?;
    let list = obj
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .ok_or("the index has no manifests list")?;
    list.retain(|e| {
        e.get("platform")
            .and_then(platform_of)
            .is_some_and(|p| chosen.contains(&p))
    });
    let notes = obj
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    let notes = notes
        .as_object_mut()
        .ok_or("the index's annotations are not an object")?;
    notes.insert(REDUCED_FROM.to_owned(), Value::String(original.to_string()));
    serde_json::to_vec(&v).map_err(|e| e.to_string())
}

/// The rewrite key of a chosen set: the same set gives the same reduced index, whichever policy chose it.
pub fn chosen_key(chosen: &[Platform]) -> String {
    let mut names: Vec<String> = chosen.iter().map(ToString::to_string).collect();
    names.sort();
    names.dedup();
    format!("{KEY_PREFIX}{}", names.join(","))
}

/// `deserialize_with` for `[[push]] platforms`.
pub fn de_push_platforms<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PlatformSpec>, D::Error> {
    parse_list(d, "push.platforms")
}
