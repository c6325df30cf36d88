use std::path::PathBuf;

use super::*;
use wharf_model::config::S3Config;

fn files(dir: &Path) -> Config {
    let mut c = Config::default();
    c.storage.data_dir = dir.to_owned();
    c
}

fn s3(dir: &Path, bucket: &str, prefix: &str) -> Config {
    let mut c = files(dir);
    c.storage.backend = StorageBackend::S3;
    c.storage.s3 = Some(S3Config {
        endpoint: "http://127.0.0.1:3900".into(),
        bucket: bucket.into(),
        region: "garage".into(),
        prefix: prefix.into(),
        access_key_id_env: Some("K".into()),
        access_key_id_file: None,
        secret_access_key_env: Some("S".into()),
        secret_access_key_file: None,
        cache_max_bytes: 0,
    });
    c.metadata.backend = MetadataBackend::Postgres;
    c
}

#[test]
fn one_data_directory_is_the_same_storage_however_it_is_spelt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("x")).unwrap();
    let a = files(dir.path());
    let b = files(&dir.path().join(".").join("x").join(".."));
    assert!(same_content(&a, &b).is_some());
    assert!(same_redb(&a, &b).is_some());

    let other = tempfile::tempdir().unwrap();
    assert!(same_content(&a, &files(other.path())).is_none());
    assert!(same_redb(&a, &files(other.path())).is_none());
    // Files beside S3 in one data directory: the content differs, and Postgres holds the records.
    let shared = s3(dir.path(), "wharf", "");
    assert!(same_content(&a, &shared).is_none());
    assert!(same_redb(&a, &shared).is_none());
}

#[test]
fn one_bucket_and_prefix_is_the_same_content() {
    let (x, y) = (
        PathBuf::from("/nonexistent/x"),
        PathBuf::from("/nonexistent/y"),
    );
    assert!(same_content(&s3(&x, "wharf", "prod/"), &s3(&y, "wharf", "/prod")).is_some());
    assert!(same_content(&s3(&x, "wharf", "prod"), &s3(&y, "wharf", "staging")).is_none());
    assert!(same_content(&s3(&x, "wharf", ""), &s3(&y, "other", "")).is_none());
}

#[test]
fn a_damaged_blob_fails_the_copy_naming_it_and_the_fix() {
    let mut r = Report::default();
    assert_eq!(r.failure(Path::new("old.toml")), None);
    let d = Digest::sha256_of(b"x");
    r.content.damaged.push(Damaged {
        digest: d.clone(),
        problem: "content does not match its digest".into(),
    });
    let why = r.failure(Path::new("old.toml")).unwrap();
    assert!(why.contains(&d.to_string()), "{why}");
    assert!(why.contains("wharf fsck --config old.toml"), "{why}");
}
