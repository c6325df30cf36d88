use std::path::PathBuf;

use super::*;

fn files(dir: &Path, cert: &str, key: &str) -> TlsConfig {
    TlsConfig {
        cert_file: dir.join(cert),
        key_file: dir.join(key),
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Proves: a missing file names its key (`server.tls.cert_file` / `key_file`) and the path.
#[test]
fn missing_files_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let err = certified_key(&files(dir.path(), "no.crt", "no.key"), &provider()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("server.tls.cert_file"), "{msg}");
    assert!(msg.contains("no.crt"), "{msg}");
    std::fs::write(dir.path().join("a.crt"), "x").unwrap();
    let err = certified_key(&files(dir.path(), "a.crt", "no.key"), &provider()).unwrap_err();
    assert!(err.to_string().contains("server.tls.key_file"), "{err}");
}

/// Proves: files that are not PEM say what they must hold, naming the key.
#[test]
fn files_without_pem_say_what_they_need() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| -> PathBuf { dir.path().join(n) };
    std::fs::write(p("text.crt"), "not a certificate\n").unwrap();
    std::fs::write(p("text.key"), "not a key\n").unwrap();
    let err = certified_key(&files(dir.path(), "text.crt", "text.key"), &provider()).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    assert!(err.to_string().contains("BEGIN CERTIFICATE"), "{err}");
    // A certificate block (its content is not checked before the key is read), then no key.
    std::fs::write(
        p("one.crt"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = certified_key(&files(dir.path(), "one.crt", "text.key"), &provider()).unwrap_err();
    assert!(matches!(err, TlsError::NoKey { .. }), "{err:?}");
    assert!(err.to_string().contains("server.tls.key_file"), "{err}");
}
