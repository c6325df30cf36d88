//! Credentials of a push route: borrowed from the `[[upstream]]` entry for the same registry, sent only
//! to the token service the registry names, and never written to a log or printed by the CLI.

use crate::gc::cli;
use crate::harness::{
    DistOptions, DistRegistry, MirrorOptions, TokenAuth, UpstreamSpec, Wharf, WharfOptions,
};
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::mirror::pki::TestCa;
use crate::mirror::token_server::{TokenServer, ISSUER, SERVICE};
use crate::skopeo::Skopeo;

use super::{route_toml, wait_delivered, LOCAL, REMOTE};

const USER: &str = "ci-robot";
const PASSWORD: &str = "route-borrowed-secret-71";
const PASSWORD_ENV: &str = "E2E_ROUTE_UPSTREAM_PASSWORD";

/// Proves: a `[[push]]` route with no credentials of its own uses those of the `[[upstream]]` whose
/// endpoint is the same registry (a token-auth `docker-registry`): pushes to the local prefix and to
/// the upstream's path prefix (`up/team/app`) both arrive, the token service saw exactly those
/// credentials, and the password appears nowhere: not in wharf's log, `push status`, `leases` or
/// `wharf config`.
#[test]
fn a_route_borrows_the_upstream_entrys_credentials_and_never_shows_them() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "push-creds");
    let tokens = TokenServer::start(ca.token_signer(), USER, PASSWORD);
    let registry = DistRegistry::start_with(DistOptions {
        token: Some(TokenAuth {
            realm: tokens.realm(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            rootcertbundle: ca.pem_path.clone(),
        }),
        ..Default::default()
    });
    let wharf = Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![UpstreamSpec {
                username: Some(USER.into()),
                password_env: Some(PASSWORD_ENV.into()),
                ..UpstreamSpec::http("registry.test", registry.addr()).with_prefix("up")
            }],
            ..Default::default()
        },
        env: vec![(PASSWORD_ENV.into(), PASSWORD.into())],
        extra_toml: route_toml(&registry.host(), &[]),
        ..Default::default()
    });

    let tmp = tempfile::tempdir().unwrap();
    let one = write_layout(&tmp.path().join("one"), &LayoutSpec::small("v1", 7301));
    let two = write_layout(&tmp.path().join("two"), &LayoutSpec::small("v2", 7302));
    Skopeo::new().copy(
        &one.skopeo_ref(),
        &format!("docker://{}/{LOCAL}:v1", wharf.host()),
    );
    // The upstream's own name, through its path prefix: the same route.
    Skopeo::new().copy(
        &two.skopeo_ref(),
        &format!("docker://{}/up/{REMOTE}:v2", wharf.host()),
    );
    wait_delivered(&wharf, LOCAL, "v1");
    wait_delivered(&wharf, LOCAL, "v2");

    let creds = format!("{USER}:{PASSWORD}");
    for (layout, tag) in [(&one, "v1"), (&two, "v2")] {
        let out = tmp.path().join(format!("out-{tag}"));
        Skopeo::new().copy_with(
            &["--src-creds", &creds],
            &format!("docker://{}/{REMOTE}:{tag}", registry.host()),
            &format!("oci:{}:{tag}", out.display()),
        );
        assert_same_image(layout, &out, tag);
    }
    let asked = tokens.requests();
    assert!(
        asked
            .iter()
            .any(|r| r.basic.as_deref() == Some(creds.as_str())),
        "wharf never gave the token service the [[upstream]] entry's credentials: {asked:?}"
    );
    assert!(
        asked
            .iter()
            .all(|r| r.basic.is_none() || r.basic.as_deref() == Some(creds.as_str())),
        "{asked:?}"
    );

    let mut shown = std::fs::read_to_string(wharf.log_path()).unwrap();
    for args in [
        &["push", "status", "--json"][..],
        &["push", "status"],
        &["leases", "--json"],
        &["config"],
    ] {
        let out = cli(&wharf, args);
        assert!(out.status.success(), "wharf {args:?}: {out:?}");
        shown += &String::from_utf8_lossy(&out.stdout);
        shown += &String::from_utf8_lossy(&out.stderr);
    }
    assert!(
        !shown.contains(PASSWORD),
        "the password was shown:\n{}",
        shown
            .lines()
            .filter(|l| l.contains(PASSWORD))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
