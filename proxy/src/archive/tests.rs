//! Unit tests of the archive pieces that need no server: references, the archive's index.json, and
//! the tar writer and reader (what one writes the other, and the `tar` crate, read back).

use bytes::Bytes;
use http_body_util::Full;

use super::tarball::{self, TarWriter};
use super::*;
use wharf_model::platform::Platform;

fn digest(bytes: &[u8]) -> Digest {
    Digest::sha256_of(bytes)
}

#[test]
fn references_split_host_name_and_tag_or_digest() {
    let r: ImageRef = "docker.io/library/alpine:3".parse().unwrap();
    assert_eq!(r.host.as_deref(), Some("docker.io"));
    assert_eq!(r.name, "library/alpine");
    assert_eq!(r.reference.to_string(), "3");
    assert_eq!(r.to_string(), "docker.io/library/alpine:3");

    let r: ImageRef = "127.0.0.1:5000/team/app".parse().unwrap();
    assert_eq!(r.host.as_deref(), Some("127.0.0.1:5000"));
    assert_eq!(r.name, "team/app");
    assert_eq!(r.reference.to_string(), "latest", "no tag means latest");

    // No dot, no port, not localhost: a repository of wharf (or the default upstream), no host.
    let r: ImageRef = "localhost-repo/app:v1".parse().unwrap();
    assert_eq!(r.host, None);
    assert_eq!(r.name, "localhost-repo/app");

    let d = digest(b"x");
    let r: ImageRef = format!("localhost/app@{d}").parse().unwrap();
    assert_eq!(r.host.as_deref(), Some("localhost"));
    assert_eq!(r.reference, Reference::Digest(d.clone()));
    assert_eq!(r.to_string(), format!("localhost/app@{d}"));

    for bad in ["", "Team/App:v1", "app:-x", "app@sha256:zz", "a//b"] {
        assert!(
            bad.parse::<ImageRef>().is_err(),
            "{bad:?} should be refused"
        );
    }
}

fn plan_of(top: &[u8], reduced_from: Option<Digest>) -> Plan {
    let top = Fetched {
        digest: digest(top),
        media_type: manifest::OCI_INDEX.into(),
        bytes: Bytes::copy_from_slice(top),
    };
    Plan {
        manifests: vec![top.clone()],
        top,
        blobs: Vec::new(),
        platforms: Vec::new(),
        left_out: Vec::new(),
        reduced_from,
    }
}

#[test]
fn index_json_names_the_top_manifest_for_skopeo_and_containerd() {
    let plan = plan_of(br#"{"schemaVersion":2,"manifests":[]}"#, None);
    let r: ImageRef = "docker.io/library/alpine:3".parse().unwrap();
    let v: Value = serde_json::from_slice(&index_json(&plan, &r)).unwrap();
    let entry = &v["manifests"][0];
    assert_eq!(entry["digest"], plan.top.digest.to_string());
    assert_eq!(entry["size"], plan.top.bytes.len());
    assert_eq!(entry["mediaType"], manifest::OCI_INDEX);
    // skopeo's `oci-archive:F:3` looks for the tag; ctr names the image by the full name.
    assert_eq!(entry["annotations"][REF_NAME], "3");
    assert_eq!(
        entry["annotations"][CONTAINERD_NAME],
        "docker.io/library/alpine:3"
    );
    assert!(entry["annotations"].get(REDUCED_FROM).is_none());

    let orig = digest(b"original");
    let plan = plan_of(b"{}", Some(orig.clone()));
    let r: ImageRef = format!("team/app@{}", digest(b"{}")).parse().unwrap();
    let v: Value = serde_json::from_slice(&index_json(&plan, &r)).unwrap();
    let notes = &v["manifests"][0]["annotations"];
    assert_eq!(notes[REDUCED_FROM], orig.to_string());
    assert_eq!(
        notes[REF_NAME],
        r.to_string(),
        "a digest reference has no tag"
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn written_archives_read_back_with_the_tar_crate_and_by_region() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar");
    let small = b"{\"manifest\":true}".to_vec();
    // Not a multiple of 512, and more than one body frame.
    let big: Vec<u8> = (0..700_001u32).map(|i| (i * 7 % 251) as u8).collect();
    let (ds, db) = (digest(&small), digest(&big));
    rt().block_on(async {
        let mut w = TarWriter::create(&path).await.unwrap();
        w.file("oci-layout", OCI_LAYOUT).await.unwrap();
        w.blob_bytes(&ds, &small).await.unwrap();
        w.blob_stream(&db, big.len() as u64, Full::new(Bytes::from(big.clone())))
            .await
            .unwrap();
        // Written once, whatever asks for it again.
        w.blob_bytes(&ds, &small).await.unwrap();
        assert!(w.has(&db));
        w.finish().await.unwrap();
    });

    let mut names = Vec::new();
    let mut tar = tar::Archive::new(std::fs::File::open(&path).unwrap());
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        if name == tarball::blob_path(&db) {
            assert_eq!(bytes, big);
        }
        names.push(name);
    }
    assert_eq!(
        names,
        [
            "oci-layout".to_owned(),
            "blobs/".into(),
            "blobs/sha256/".into(),
            tarball::blob_path(&ds),
            tarball::blob_path(&db),
        ]
    );

    let entries = tarball::scan(&path).unwrap();
    assert_eq!(entries.len(), 3, "regular files only: {entries:?}");
    let region = entries[&tarball::blob_path(&db)];
    assert_eq!(region.size, big.len() as u64);
    let got = rt().block_on(async {
        let mut r = tarball::open_region(&path, region).await.unwrap();
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut r, &mut out)
            .await
            .unwrap();
        out
    });
    assert_eq!(got, big);
    let small_region = entries[&tarball::blob_path(&ds)];
    let read = rt().block_on(tarball::read_region(&path, small_region, 1024));
    assert_eq!(read.unwrap().as_ref(), small.as_slice());
    let capped = rt().block_on(tarball::read_region(&path, region, 1024));
    assert!(matches!(capped, Err(ArchiveError::Invalid(_))));
}

#[test]
fn a_blob_that_does_not_match_its_digest_or_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar");
    let bytes = Bytes::from_static(b"the bytes the registry sent");
    rt().block_on(async {
        let mut w = TarWriter::create(&path).await.unwrap();
        let wrong = digest(b"other bytes");
        let e = w
            .blob_stream(&wrong, bytes.len() as u64, Full::new(bytes.clone()))
            .await;
        assert!(
            matches!(e, Err(ArchiveError::DigestMismatch { .. })),
            "{e:?}"
        );
        assert!(!w.has(&wrong));
        let d = digest(&bytes);
        let e = w
            .blob_stream(&d, bytes.len() as u64 - 1, Full::new(bytes.clone()))
            .await;
        assert!(matches!(e, Err(ArchiveError::SizeMismatch { .. })), "{e:?}");
        let e = w
            .blob_stream(&d, bytes.len() as u64 + 1, Full::new(bytes.clone()))
            .await;
        assert!(matches!(e, Err(ArchiveError::SizeMismatch { .. })), "{e:?}");
        let e = w.blob_bytes(&wrong, &bytes).await;
        assert!(
            matches!(e, Err(ArchiveError::DigestMismatch { .. })),
            "{e:?}"
        );
    });
}

#[test]
fn gzip_archives_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar.gz");
    std::fs::write(&path, [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
    match tarball::scan(&path) {
        Err(ArchiveError::Invalid(m)) => assert!(m.contains("gunzip"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// A manifest fetched for a plan.
fn fetched(media_type: &str, v: Value) -> Fetched {
    let bytes = serde_json::to_vec(&v).unwrap();
    Fetched {
        digest: digest(&bytes),
        media_type: media_type.into(),
        bytes: Bytes::from(bytes),
    }
}

fn image_manifest(config_type: &str, layers: &[&[u8]]) -> Fetched {
    let desc = |mt: &str, b: &[u8]| json!({"mediaType": mt, "digest": digest(b).to_string(), "size": b.len()});
    fetched(
        manifest::DOCKER_MANIFEST,
        json!({
            "schemaVersion": 2,
            "mediaType": manifest::DOCKER_MANIFEST,
            "config": desc(config_type, b"config"),
            "layers": layers
                .iter()
                .map(|l| desc("application/vnd.docker.image.rootfs.diff.tar.gzip", l))
                .collect::<Vec<_>>(),
        }),
    )
}

fn plan_with(manifests: Vec<Fetched>, platforms: &[&str]) -> Plan {
    Plan {
        top: manifests[0].clone(),
        manifests,
        blobs: Vec::new(),
        platforms: platforms
            .iter()
            .map(|p| {
                let (os, arch) = p.split_once('/').unwrap();
                Platform {
                    os: os.into(),
                    architecture: arch.into(),
                    variant: None,
                    os_version: None,
                    os_features: Vec::new(),
                }
            })
            .collect(),
        left_out: Vec::new(),
        reduced_from: None,
    }
}

const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

#[test]
fn a_docker_archive_names_the_config_and_every_layer_in_order() {
    // The base layer twice (as an image may): docker pairs Layers[i] with rootfs.diff_ids[i].
    let m = image_manifest(DOCKER_CONFIG, &[b"base", b"app", b"base"]);
    let r: ImageRef = "127.0.0.1:5000/team/app:v1".parse().unwrap();
    let image = docker::image_of(&plan_with(vec![m.clone()], &[]), &r).unwrap();
    assert_eq!(image.manifest, m.digest);
    assert_eq!(image.id(), &digest(b"config"));
    assert_eq!(
        image.repo_tag.as_deref(),
        Some("127.0.0.1:5000/team/app:v1")
    );
    assert_eq!(image.layers.len(), 3);
    assert_eq!(image.blobs().len(), 3, "config, base and app: each once");

    let v: Value = serde_json::from_slice(&docker::manifest_json(&image)).unwrap();
    let path = |b: &[u8]| tarball::blob_path(&digest(b));
    assert_eq!(
        v,
        json!([{
            "Config": path(b"config"),
            "RepoTags": ["127.0.0.1:5000/team/app:v1"],
            "Layers": [path(b"base"), path(b"app"), path(b"base")],
        }])
    );
    let repos: Value = serde_json::from_slice(&docker::repositories_json(&image)).unwrap();
    assert_eq!(
        repos,
        json!({"127.0.0.1:5000/team/app": {"v1": digest(b"base").hex()}})
    );

    // A digest reference has no tag: docker loads the image untagged.
    let by_digest: ImageRef = format!("team/app@{}", m.digest).parse().unwrap();
    let image = docker::image_of(&plan_with(vec![m], &[]), &by_digest).unwrap();
    assert_eq!(image.repo_tag, None);
    let v: Value = serde_json::from_slice(&docker::manifest_json(&image)).unwrap();
    assert_eq!(v[0]["RepoTags"], json!([]));
    assert_eq!(
        serde_json::from_slice::<Value>(&docker::repositories_json(&image)).unwrap(),
        json!({})
    );
}

#[test]
fn a_docker_archive_takes_one_platform_of_an_index_and_container_images_only() {
    let r: ImageRef = "team/app:v1".parse().unwrap();
    let index = fetched(
        manifest::OCI_INDEX,
        json!({"schemaVersion": 2, "manifests": []}),
    );
    let amd = image_manifest(DOCKER_CONFIG, &[b"amd"]);
    let arm = image_manifest(DOCKER_CONFIG, &[b"arm"]);

    let one = plan_with(vec![index.clone(), amd.clone()], &["linux/amd64"]);
    assert_eq!(docker::image_of(&one, &r).unwrap().manifest, amd.digest);

    let two = plan_with(vec![index, amd, arm], &["linux/amd64", "linux/arm64"]);
    match docker::image_of(&two, &r) {
        Err(ArchiveError::Platforms(m)) => {
            assert!(
                m.contains("linux/amd64, linux/arm64") && m.contains("--platform"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }

    let chart = image_manifest("application/vnd.cncf.helm.config.v1+json", &[b"chart"]);
    match docker::image_of(&plan_with(vec![chart], &[]), &r) {
        Err(ArchiveError::Invalid(m)) => {
            assert!(
                m.contains("not a container image") && m.contains("--format oci"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
}
