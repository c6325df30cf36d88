//! A token-auth upstream: `docker-registry` with `auth.token`, its token service served by the test
//! (credentials checked, ES256 JWTs with an `x5c` chain to the registry's `rootcertbundle`).

use std::collections::BTreeMap;

use crate::harness::{
    DistOptions, DistRegistry, MirrorOptions, TokenAuth, UpstreamSpec, Wharf, WharfOptions,
};
use crate::http::Api;
use crate::layout::{assert_same_image, write_layout, Layout, LayoutSpec};
use crate::oci::regular_files;
use crate::skopeo::Skopeo;

use super::pki::TestCa;
use super::token_server::{TokenServer, ISSUER, SERVICE};
use super::{assert_message_names, upstream};

const USER: &str = "puller";
const PASSWORD: &str = "s3cret-e2e-pw";
const PASSWORD_ENV: &str = "E2E_UPSTREAM_PASSWORD";

struct Setup {
    _pki: tempfile::TempDir,
    tokens: TokenServer,
    registry: DistRegistry,
}

/// A token-auth registry holding `team/multi:v1` (pushed with the test user's credentials); the token
/// service's request log is cleared after the push. `realm_host` names the token service's host in the
/// challenge (None: 127.0.0.1, the registry's own host).
fn token_registry(
    layout_dir: &std::path::Path,
    seed: u64,
    realm_host: Option<&str>,
) -> (Setup, Layout) {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "token");
    let tokens = TokenServer::start(ca.token_signer(), USER, PASSWORD);
    let realm = realm_host.map_or_else(|| tokens.realm(), |h| tokens.realm_named(h));
    let registry = DistRegistry::start_with(DistOptions {
        token: Some(TokenAuth {
            realm: realm.clone(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            rootcertbundle: ca.pem_path.clone(),
        }),
        ..Default::default()
    });
    // The registry really wants a token: anonymous requests are challenged with our realm.
    let r = Api::new(registry.base()).get("/v2/team/multi/manifests/v1");
    r.assert_status(401);
    let challenge = r.need_header("WWW-Authenticate").to_owned();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(&realm),
        "{challenge}"
    );

    let layout = write_layout(layout_dir, &LayoutSpec::small("v1", seed));
    Skopeo::new().copy_with(
        &["--dest-creds", &format!("{USER}:{PASSWORD}")],
        &layout.skopeo_ref(),
        &format!("docker://{}/team/multi:v1", registry.host()),
    );
    tokens.clear();
    (
        Setup {
            _pki: pki,
            tokens,
            registry,
        },
        layout,
    )
}

fn wharf_with_password(s: &Setup, password: &str) -> Wharf {
    let up = s.registry.host();
    Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams: vec![UpstreamSpec {
                username: Some(USER.into()),
                password_env: Some(PASSWORD_ENV.into()),
                ..upstream(&up, s.registry.addr(), "up")
            }],
            ..Default::default()
        },
        env: vec![(PASSWORD_ENV.into(), password.into())],
        ..Default::default()
    })
}

/// Proves: with `username` + `password_env`, wharf follows the registry's bearer challenge to the
/// token service (sending the configured credentials, since the realm is on the upstream's host),
/// gets a JWT the registry accepts, and skopeo pulls the whole image through wharf; the token service
/// was asked once per scope: the token is cached for the requests that follow.
#[test]
fn token_auth_upstream_pull_sends_credentials_and_caches_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, layout) = token_registry(&tmp.path().join("src"), 950, None);
    let wharf = wharf_with_password(&s, PASSWORD);

    let out = wharf.scratch("out");
    Skopeo::new().copy(
        &format!("docker://{}/up/team/multi:v1", wharf.host()),
        &format!("oci:{}:v1", out.display()),
    );
    assert_same_image(&layout, &out, "v1");

    let requests = s.tokens.requests();
    assert!(!requests.is_empty(), "wharf never asked the token service");
    let mut per_scope: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests {
        assert_eq!(
            r.basic.as_deref(),
            Some(format!("{USER}:{PASSWORD}").as_str()),
            "the token request must carry the configured credentials: {r:?}"
        );
        assert_eq!(r.service.as_deref(), Some(SERVICE), "{r:?}");
        assert_eq!(r.status, 200, "{r:?}");
        for scope in &r.scopes {
            *per_scope.entry(scope.clone()).or_default() += 1;
        }
    }
    assert_eq!(
        per_scope,
        BTreeMap::from([("repository:team/multi:pull".to_owned(), 1)]),
        "one token request per scope (tokens are cached until they expire): {requests:#?}"
    );
}

/// Proves: with wrong credentials the token service refuses wharf (401), and wharf answers the client
/// 403 DENIED naming the upstream, for the tag and for a blob, caching nothing.
#[test]
fn token_auth_with_wrong_credentials_is_403_denied_naming_the_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, layout) = token_registry(&tmp.path().join("src"), 960, None);
    let wharf = wharf_with_password(&s, "not-the-password");
    let up = s.registry.host();
    let api = Api::new(wharf.base());

    let r = api.get_manifest("up/team/multi", "v1");
    r.assert_error(403, "DENIED");
    assert_message_names(&r, &up);
    let r = api.get(&format!(
        "/v2/up/team/multi/blobs/{}",
        layout.shared_layer.digest
    ));
    r.assert_error(403, "DENIED");
    assert_message_names(&r, &up);

    let requests = s.tokens.requests();
    assert!(
        !requests.is_empty() && requests.iter().all(|r| r.status == 401),
        "the token service should have seen (and refused) wharf's wrong credentials: {requests:#?}"
    );
    let files = regular_files(&wharf.blobs_dir());
    assert!(files.is_empty(), "nothing may be cached: {files:?}");
}

/// Proves: credentials only go where they cannot leak. When the challenge names a plain-http realm on
/// another host than the upstream's endpoint (`localhost` vs `127.0.0.1`), wharf asks for a token
/// without the configured password; the token service refuses, and the client gets a spec error naming
/// the upstream (not a 200, and no password on the wire).
#[test]
fn credentials_are_not_sent_to_a_plain_http_realm_on_another_host() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _layout) = token_registry(&tmp.path().join("src"), 970, Some("localhost"));
    let wharf = wharf_with_password(&s, PASSWORD);
    let up = s.registry.host();

    let r = Api::new(wharf.base()).get_manifest("up/team/multi", "v1");
    assert!(
        r.status >= 400 && !r.error_codes().is_empty(),
        "without a token the pull must fail with a spec error: {}",
        r.describe()
    );
    assert_message_names(&r, &up);
    let requests = s.tokens.requests();
    assert!(!requests.is_empty(), "wharf never asked the token service");
    for req in &requests {
        assert!(
            req.basic.is_none(),
            "wharf sent the upstream's credentials to a plain-http realm on another host: {req:?}"
        );
    }
    eprintln!("untrusted realm: wharf answered {}", r.describe());
}
