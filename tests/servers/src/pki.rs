//! Throw-away certificates: a CA and a server certificate it signed, made with rcgen (whose default
//! validity, 1975 to 4096, keeps clock skew out of the picture).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// `(ca.pem, server.pem, server-key.pem)` for a server named `names` (host names or IP addresses).
pub(crate) fn server_certificate(names: &[&str]) -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "wharf test server CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key).expect("self-sign the CA").pem();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("server key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut server = CertificateParams::new(names.clone()).expect("server names");
    server.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    let cert = server
        .signed_by(&key, &issuer)
        .expect("sign the server's certificate");
    (ca_pem, cert.pem(), key.serialize_pem())
}
