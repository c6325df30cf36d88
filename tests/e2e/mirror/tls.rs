//! An https upstream whose certificate comes from a test CA (rcgen): trusted through `ca_file`,
//! refused clearly without it.

use crate::harness::{DistOptions, DistRegistry, MirrorOptions, UpstreamSpec, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::oci::regular_files;
use crate::skopeo::Skopeo;

use super::pki::TestCa;
use super::{assert_message_names, push_to_upstream};

fn wharf_for_tls(up: &str, ca_file: Option<std::path::PathBuf>) -> Wharf {
    Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![UpstreamSpec {
                host: up.to_owned(),
                endpoint: format!("https://{up}"),
                prefix: Some("up".into()),
                ca_file,
                ..Default::default()
            }],
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Proves: wharf reaches a `docker-registry` serving https with a certificate for 127.0.0.1 from a
/// private CA when the upstream's `ca_file` names that CA (skopeo pulls the whole 3-platform image
/// through it byte-for-byte); without `ca_file` the same pull fails with a 424 UNAVAILABLE naming the
/// upstream, for manifests and blobs, and nothing is cached.
#[test]
fn tls_upstream_is_trusted_through_ca_file_and_refused_clearly_without() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "tls");
    let (cert, key) = ca.server_cert(pki.path());
    let registry = DistRegistry::start_with(DistOptions {
        tls: Some((cert, key)),
        ..Default::default()
    });
    let up = registry.host();
    let trusted = wharf_for_tls(&up, Some(ca.pem_path.clone()));
    let layout = write_layout(&trusted.scratch("src"), &LayoutSpec::small("v1", 900));
    // skopeo pushes over https (with --dest-tls-verify=false).
    push_to_upstream(&registry, &layout, "team/multi");

    let out = trusted.scratch("out");
    Skopeo::new().copy(
        &format!("docker://{}/up/team/multi:v1", trusted.host()),
        &format!("oci:{}:v1", out.display()),
    );
    assert_same_image(&layout, &out, "v1");

    let untrusted = wharf_for_tls(&up, None);
    let api = Api::new(untrusted.base());
    let r = api.get_manifest("up/team/multi", "v1");
    r.assert_error(424, "UNAVAILABLE");
    assert_message_names(&r, &up);
    eprintln!(
        "without ca_file wharf answers: {}",
        String::from_utf8_lossy(&r.body)
    );
    let r = api.get(&format!(
        "/v2/up/team/multi/blobs/{}",
        layout.shared_layer.digest
    ));
    r.assert_error(424, "UNAVAILABLE");
    assert_message_names(&r, &up);
    let files = regular_files(&untrusted.blobs_dir());
    assert!(
        files.is_empty(),
        "nothing may be cached from an untrusted upstream: {files:?}"
    );
}
