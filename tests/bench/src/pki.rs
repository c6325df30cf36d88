//! A throwaway CA and a server certificate for 127.0.0.1, made with rcgen for the TLS case (as
//! tests/e2e/mirror/pki.rs does for the e2e tests): written into the case's temp dir, never kept.
//! ECDSA P-256, which rustls and OpenSSL both sign fast; rcgen's default validity (1975 to 4096)
//! keeps clock skew out of the picture.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

use crate::servers::TlsFiles;

/// The CA's certificate (what clients trust) and the server's certificate and key.
pub struct TestPki {
    pub ca: PathBuf,
    pub server: TlsFiles,
}

/// Writes `ca.pem`, `server.pem` and `server-key.pem` into `dir`.
pub fn generate(dir: &Path) -> Result<TestPki> {
    fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "wharf-bench test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).context("self-sign the CA")?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("server key")?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &issuer)
        .context("sign the server certificate")?;

    let pki = TestPki {
        ca: dir.join("ca.pem"),
        server: TlsFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        },
    };
    fs::write(&pki.ca, ca_cert.pem())?;
    fs::write(&pki.server.cert, cert.pem())?;
    fs::write(&pki.server.key, key.serialize_pem())?;
    Ok(pki)
}
