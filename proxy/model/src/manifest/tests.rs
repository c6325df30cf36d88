use super::*;

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn image(media_type: Option<&str>) -> String {
    let mt = media_type.map_or(String::new(), |m| format!(r#""mediaType":"{m}","#));
    format!(
        r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":10}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":20}}]}}"#
    )
}

#[test]
fn image_manifest_references() {
    let m = parse(Some(OCI_MANIFEST), image(Some(OCI_MANIFEST)).as_bytes()).unwrap();
    assert_eq!(m.kind, Kind::Image);
    assert_eq!(
        m.blobs,
        vec![(D1.parse().unwrap(), 10), (D2.parse().unwrap(), 20)]
    );
    assert_eq!(
        m.artifact_type.as_deref(),
        Some("application/vnd.oci.image.config.v1+json")
    );
}

#[test]
fn media_type_from_header_or_shape() {
    let m = parse(Some(DOCKER_MANIFEST), image(None).as_bytes()).unwrap();
    assert_eq!(m.media_type, DOCKER_MANIFEST);
    let m = parse(None, image(None).as_bytes()).unwrap();
    assert_eq!(m.media_type, OCI_MANIFEST);
    let idx = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":3}}]}}"#
    );
    let m = parse(Some("application/octet-stream"), idx.as_bytes()).unwrap();
    assert_eq!((m.media_type.as_str(), m.kind), (OCI_INDEX, Kind::Index));
    assert_eq!(m.manifests, vec![(D1.parse().unwrap(), 3)]);
}

#[test]
fn refusals_name_the_problem() {
    assert!(matches!(
        parse(None, b"{not json"),
        Err(ManifestError::Json(_))
    ));
    assert!(matches!(
        parse(Some(DOCKER_MANIFEST), image(Some(OCI_MANIFEST)).as_bytes()),
        Err(ManifestError::TypeMismatch { .. })
    ));
    assert!(matches!(
        parse(None, br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#),
        Err(ManifestError::Schema1)
    ));
    assert!(matches!(
        parse(None, br#"{"schemaVersion":2,"mediaType":"text/plain"}"#),
        Err(ManifestError::UnsupportedType(_))
    ));
    let no_config = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#);
    let err = parse(None, no_config.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("config"), "{err}");
    let bad_digest = image(Some(OCI_MANIFEST)).replace(D2, "sha256:zz");
    assert!(parse(None, bad_digest.as_bytes()).is_err());
    let v3 = image(Some(OCI_MANIFEST)).replace("\"schemaVersion\":2", "\"schemaVersion\":3");
    assert!(matches!(
        parse(None, v3.as_bytes()),
        Err(ManifestError::SchemaVersion(3))
    ));
}

#[test]
fn subject_and_artifact_type() {
    let art = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{D1}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":5}},"annotations":{{"a":"b"}}}}"#
    );
    let m = parse(Some(OCI_MANIFEST), art.as_bytes()).unwrap();
    assert_eq!(m.subject, Some(D2.parse().unwrap()));
    assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
    let d = m.descriptor(&D1.parse().unwrap(), 99);
    assert_eq!(d.annotations.unwrap()["a"], "b");
}

#[test]
fn foreign_layers_need_not_be_pushed() {
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":1}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{D2}","size":2,"urls":["https://example.com/l"]}}]}}"#
    );
    let m = parse(None, m.as_bytes()).unwrap();
    assert_eq!(m.blobs, vec![(D1.parse().unwrap(), 1)]);
}

/// Proves: a blob or child manifest named twice is one requirement (an artifact whose config and
/// layer are the same empty blob), so a push missing it reports it once.
#[test]
fn repeated_references_count_once() {
    let empty = "application/vnd.oci.empty.v1+json";
    let art = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{empty}","digest":"{D1}","size":2}},"layers":[{{"mediaType":"{empty}","digest":"{D1}","size":2}},{{"mediaType":"{empty}","digest":"{D2}","size":2}},{{"mediaType":"{empty}","digest":"{D1}","size":2}}]}}"#
    );
    let m = parse(None, art.as_bytes()).unwrap();
    assert_eq!(
        m.blobs,
        vec![(D1.parse().unwrap(), 2), (D2.parse().unwrap(), 2)]
    );
    let idx = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":3}},{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":3}}]}}"#
    );
    let m = parse(None, idx.as_bytes()).unwrap();
    assert_eq!(m.manifests, vec![(D2.parse().unwrap(), 3)]);
}
