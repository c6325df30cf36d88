//! A throwaway PKI for the TLS and token-auth upstreams, made with rcgen: a CA, server certificates for
//! 127.0.0.1, and an ES256 token signer whose certificate chains to the CA (for distribution's
//! `auth.token.rootcertbundle` and the JWT `x5c` header). rcgen's default validity (1975 to 4096)
//! keeps clock skew out of the picture.

use std::fs;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::Value;

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM, as a file (wharf's `ca_file`, distribution's `rootcertbundle`).
    pub pem_path: PathBuf,
}

impl TestCa {
    /// A new CA; its certificate is written to `dir/ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        fs::create_dir_all(dir).unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("wharf e2e test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        let pem_path = dir.join("ca.pem");
        fs::write(&pem_path, cert.pem()).unwrap();
        TestCa {
            issuer: Issuer::new(params, key),
            pem_path,
        }
    }

    /// A server certificate for 127.0.0.1 and localhost: `(cert.pem, key.pem)` in `dir`.
    pub fn server_cert(&self, dir: &Path) -> (PathBuf, PathBuf) {
        fs::create_dir_all(dir).unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("server key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign server cert");
        let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server-key.pem"));
        fs::write(&cert_path, cert.pem()).unwrap();
        fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// An ES256 signer whose certificate the CA issued, for JWTs that distribution verifies by `x5c`.
    pub fn token_signer(&self) -> TokenSigner {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("signer key");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "wharf e2e token signer");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign signer cert");
        let ring_key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &SystemRandom::new(),
        )
        .expect("ring key from PKCS#8");
        TokenSigner {
            cert_der: cert.der().to_vec(),
            key: ring_key,
        }
    }
}

pub struct TokenSigner {
    cert_der: Vec<u8>,
    key: EcdsaKeyPair,
}

impl TokenSigner {
    /// A compact JWS (`header.claims.signature`), ES256, with the signing certificate in `x5c`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [STANDARD.encode(&self.cert_der)],
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
        );
        // FIXED signing gives r||s (64 bytes), the JWS form; rcgen's own signer gives ASN.1.
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign JWT");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}
