//! The annotations to add and the rewrite itself; free of WIT types so it is tested natively.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The media types this plugin rewrites; Docker's own manifest types have no annotations field.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    annotations: Map<String, Value>,
}

#[derive(Debug)]
pub struct Annotations(Vec<(String, String)>);

const EXAMPLE: &str = r#"{"annotations": {"org.example.mirrored-by": "wharf"}}"#;

impl Annotations {
    pub fn parse(config: &str) -> Result<Annotations, String> {
        let raw: RawConfig = serde_json::from_str(config)
            .map_err(|e| format!("annotate: invalid config ({e}); expected e.g. {EXAMPLE}"))?;
        if raw.annotations.is_empty() {
            return Err(format!(
                "annotate: `annotations` is empty, so the plugin would change nothing; e.g. {EXAMPLE}"
            ));
        }
        raw.annotations
            .into_iter()
            .map(|(key, value)| match value {
                // The OCI image spec: annotation values MUST be strings.
                Value::String(value) => Ok((key, value)),
                other => Err(format!("annotate: the value of annotation {key:?} is {other}; OCI annotation values are strings, quote it")),
            })
            .collect::<Result<_, _>>()
            .map(Annotations)
    }

    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// The manifest with the annotations added, or None when it needs no change (another media type, or
    /// every annotation already there with its value).
    pub fn apply(&self, media_type: &str, manifest: &[u8]) -> Result<Option<Vec<u8>>, String> {
        if media_type != OCI_MANIFEST && media_type != OCI_INDEX {
            return Ok(None);
        }
        let mut doc: Value = serde_json::from_slice(manifest)
            .map_err(|e| format!("annotate: the {media_type} is not valid JSON ({e})"))?;
        let top = doc
            .as_object_mut()
            .ok_or_else(|| format!("annotate: the {media_type} is not a JSON object"))?;
        let existing = top
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        let existing = existing.as_object_mut().ok_or_else(|| {
            format!("annotate: the {media_type} has an `annotations` field that is not an object")
        })?;
        let mut changed = false;
        for (key, value) in &self.0 {
            if existing.get(key).and_then(Value::as_str) != Some(value.as_str()) {
                existing.insert(key.clone(), Value::String(value.clone()));
                changed = true;
            }
        }
        if !changed {
            return Ok(None);
        }
        serde_json::to_vec(&doc)
            .map(Some)
            .map_err(|e| format!("annotate: cannot encode the manifest ({e})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations() -> Annotations {
        Annotations::parse(
            r#"{"annotations": {"org.example.by": "wharf", "org.example.tier": "gold"}}"#,
        )
        .unwrap()
    }

    const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":2},"layers":[]}"#;

    #[test]
    fn adds_annotations_and_keeps_key_order() {
        let out = annotations()
            .apply(OCI_MANIFEST, MANIFEST.as_bytes())
            .unwrap()
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":2},"layers":[],"annotations":{"org.example.by":"wharf","org.example.tier":"gold"}}"#
        );
    }

    #[test]
    fn merges_into_existing_annotations_of_an_index() {
        let index = r#"{"schemaVersion":2,"annotations":{"a":"1","org.example.tier":"silver"},"manifests":[]}"#;
        let out = annotations()
            .apply(OCI_INDEX, index.as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"schemaVersion":2,"annotations":{"a":"1","org.example.tier":"gold","org.example.by":"wharf"},"manifests":[]}"#
        );
    }

    #[test]
    fn is_idempotent() {
        let a = annotations();
        let once = a.apply(OCI_MANIFEST, MANIFEST.as_bytes()).unwrap().unwrap();
        assert_eq!(a.apply(OCI_MANIFEST, &once).unwrap(), None);
    }

    #[test]
    fn leaves_other_media_types_alone() {
        let docker = "application/vnd.docker.distribution.manifest.v2+json";
        assert_eq!(
            annotations().apply(docker, MANIFEST.as_bytes()).unwrap(),
            None
        );
    }

    #[test]
    fn refuses_what_it_cannot_rewrite() {
        let a = annotations();
        assert!(a
            .apply(OCI_MANIFEST, b"not json")
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(a
            .apply(OCI_MANIFEST, b"[1]")
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(a
            .apply(OCI_MANIFEST, br#"{"annotations": 3}"#)
            .unwrap_err()
            .contains("not an object"));
    }

    #[test]
    fn invalid_configs_say_what_to_fix() {
        for (config, needle) in [
            ("", "invalid config"),
            (r#"{"annotations": {}}"#, "is empty"),
            (r#"{"annotations": {"k": 1}}"#, "values are strings"),
            (r#"{"labels": {"k": "v"}}"#, "unknown field"),
        ] {
            let err = Annotations::parse(config).unwrap_err();
            assert!(
                err.contains(needle),
                "config {config:?}: error {err:?} lacks {needle:?}"
            );
        }
    }
}
