//! Client authentication and authorization (`[auth]`): htpasswd (bcrypt) users and static tokens,
//! wharf's own token endpoint (the registry token flow skopeo and docker follow), tokens that grant
//! only their scope, rules per repository prefix, failed-login limits per address and user, a
//! refusal to listen beyond loopback unprotected, and no credential in any log line.

use std::fs;

use base64::Engine as _;

use crate::harness::{wharf_bin, Wharf, WharfOptions};
use crate::http::Api;
use crate::layout::{assert_same_image, write_layout, LayoutSpec};
use crate::skopeo::Skopeo;

pub const ALICE_PASSWORD: &str = "alice-pw-3f9c2b";
pub const BOB_PASSWORD: &str = "bob-pw-77";
const ROBOT_TOKEN: &str = "ci-robot-token-5e1d7a9c0b2f4d6e";

/// A wharf with two users in its htpasswd file (alice, bob), one static token (ci-robot), and a
/// rule: only ci-robot pushes under `ci/`, anyone may pull it.
fn start(extra: &str) -> Wharf {
    start_with(WharfOptions::default(), extra)
}

/// [`start`] with more options (`[registry]` keys, deletes); `extra`: more `[auth]` keys.
pub fn start_with(options: WharfOptions, extra: &str) -> Wharf {
    let home = tempfile::tempdir().unwrap().keep();
    let htpasswd = home.join("htpasswd");
    let tokens = home.join("tokens");
    let hash = |p: &str| bcrypt::hash(p, 4).unwrap();
    fs::write(
        &htpasswd,
        format!(
            "alice:{}\nbob:{}\n",
            hash(ALICE_PASSWORD),
            hash(BOB_PASSWORD)
        ),
    )
    .unwrap();
    fs::write(&tokens, format!("# CI\n{ROBOT_TOKEN} ci-robot\n")).unwrap();
    Wharf::start(WharfOptions {
        extra_toml: format!(
            "\n[auth]\nhtpasswd_file = \"{}\"\ntokens_file = \"{}\"\nmax_failed_logins = 5\n{extra}\n\
             [[auth.rule]]\nprefix = \"ci\"\npull = [\"*\", \"anonymous\"]\npush = [\"ci-robot\"]\n",
            htpasswd.display(),
            tokens.display()
        ),
        ..options
    })
}

pub fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// Proves: skopeo pushes with a user's credentials and pulls anonymously, following wharf's
/// challenge to its token endpoint; without credentials the push is refused with a challenge that
/// names the token endpoint and the scope; with a wrong password the push fails; a static token
/// pushes where the rule allows it, and a known user is refused there with 403 naming the rule.
#[test]
fn skopeo_pushes_with_credentials_and_pulls_anonymously() {
    let wharf = start("");
    let api = Api::new(wharf.base());
    let tmp = tempfile::tempdir().unwrap();
    let layout = write_layout(&tmp.path().join("src"), &LayoutSpec::small("v1", 8801));
    let skopeo = Skopeo::new();
    let w = wharf.host();

    // The API root asks for credentials (what `docker login` checks), naming the token endpoint.
    let r = api.get("/v2/");
    r.assert_error(401, "UNAUTHORIZED");
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(format!("Bearer realm=\"http://{w}/token\",service=\"wharf\"").as_str())
    );
    // A push without credentials: 401 with the scope.
    let r = api.request("POST", "/v2/team/app/blobs/uploads/", &[], None);
    r.assert_error(401, "UNAUTHORIZED");
    assert!(
        r.need_header("WWW-Authenticate")
            .ends_with("scope=\"repository:team/app:pull,push\""),
        "{}",
        r.describe()
    );

    skopeo.copy_with(
        &["--dest-creds", &format!("alice:{ALICE_PASSWORD}")],
        &layout.skopeo_ref(),
        &format!("docker://{w}/team/app:v1"),
    );
    let out = tmp.path().join("out");
    skopeo.copy(
        &format!("docker://{w}/team/app:v1"),
        &format!("oci:{}:v1", out.display()),
    );
    assert_same_image(&layout, &out, "v1");

    let wrong = skopeo.output(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:not-her-password",
        &layout.skopeo_ref(),
        &format!("docker://{w}/team/app:v2"),
    ]);
    assert!(!wrong.status.success(), "a wrong password pushed");

    // The rule for ci/: ci-robot (a static token as the password) may push, alice may not.
    skopeo.copy_with(
        &["--dest-creds", &format!("ci-robot:{ROBOT_TOKEN}")],
        &layout.skopeo_ref(),
        &format!("docker://{w}/ci/app:v1"),
    );
    let r = api.request(
        "POST",
        "/v2/ci/app/blobs/uploads/",
        &[("Authorization", &basic("alice", ALICE_PASSWORD))],
        None,
    );
    r.assert_error(403, "DENIED");
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("alice may not push ci/app") && text.contains("prefix = \\\"ci\\\""),
        "{text}"
    );

    // Nothing secret was ever logged.
    let log = fs::read_to_string(wharf.log_path()).unwrap();
    for secret in [ALICE_PASSWORD, ROBOT_TOKEN, "not-her-password"] {
        assert!(
            !log.contains(secret),
            "the log shows a credential:\n{}",
            log.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Proves: the token endpoint gives a token for right credentials (GET with Basic, and containerd's
/// OAuth2 password grant POST) that then works as a bearer token, and answers 401 with a message for
/// a wrong password.
#[test]
fn the_token_endpoint_issues_tokens() {
    let wharf = start("");
    let api = Api::new(wharf.base());
    let r = api.request(
        "GET",
        "/token?service=wharf&scope=repository:team/app:pull,push",
        &[("Authorization", &basic("alice", ALICE_PASSWORD))],
        None,
    );
    r.assert_status(200);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert!(r.json()["expires_in"].as_u64().unwrap() > 0);
    let bearer = format!("Bearer {token}");
    api.request(
        "POST",
        "/v2/team/app/blobs/uploads/",
        &[("Authorization", &bearer)],
        None,
    )
    .assert_status(202);

    let form = format!(
        "grant_type=password&username=alice&password={ALICE_PASSWORD}&service=wharf&client_id=containerd-client"
    );
    let r = api.request(
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(form.as_bytes()),
    );
    r.assert_status(200);
    assert!(r.json()["access_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let r = api.request(
        "GET",
        "/token",
        &[("Authorization", &basic("alice", "guess"))],
        None,
    );
    r.assert_error(401, "UNAUTHORIZED");
    assert!(String::from_utf8_lossy(&r.body).contains("wrong username or password"));
    let log = fs::read_to_string(wharf.log_path()).unwrap();
    assert!(!log.contains("guess") && !log.contains(&token) && !log.contains(ALICE_PASSWORD));
}

/// A token from `/token` asked with `query` (and `basic` credentials, if any).
fn token(api: &Api, query: &str, creds: Option<(&str, &str)>) -> String {
    let auth = creds.map(|(u, p)| basic(u, p));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let r = api.request(
        "GET",
        &format!("/token?service=wharf&{query}"),
        &headers,
        None,
    );
    r.assert_status(200);
    r.json()["token"].as_str().unwrap().to_owned()
}

/// Proves: after `max_failed_logins` wrong passwords from one address for one user name (here a
/// mistyped one, as a misconfigured CI job sends), the right password of another user still works
/// from that address, with Basic and at `/token` (GET and containerd's POST), while that user name
/// stays refused with 429, `Retry-After` and a message naming the limit; a user whose own password
/// was guessed wrong that often waits out the window (a password is not even checked then), but a
/// token she already holds goes on working; forged tokens count for the address, and a valid
/// token passes still.
#[test]
fn failed_logins_hold_that_user_from_that_address_only() {
    let wharf = start("");
    let api = Api::new(wharf.base());
    for _ in 0..5 {
        api.request(
            "GET",
            "/token",
            &[("Authorization", &basic("alcie", ALICE_PASSWORD))],
            None,
        )
        .assert_error(401, "UNAUTHORIZED");
    }
    let held = api.request(
        "GET",
        "/token",
        &[("Authorization", &basic("alcie", ALICE_PASSWORD))],
        None,
    );
    held.assert_error(429, "TOOMANYREQUESTS");
    assert!(held.header("Retry-After").is_some(), "{}", held.describe());
    assert!(
        String::from_utf8_lossy(&held.body).contains("auth.max_failed_logins"),
        "{}",
        held.describe()
    );
    api.request(
        "GET",
        "/v2/",
        &[("Authorization", &basic("alcie", ALICE_PASSWORD))],
        None,
    )
    .assert_error(429, "TOOMANYREQUESTS");

    // The right password of a user who made no mistake: Basic, /token by GET and by POST.
    api.request(
        "GET",
        "/v2/",
        &[("Authorization", &basic("alice", ALICE_PASSWORD))],
        None,
    )
    .assert_status(200);
    let alice = token(
        &api,
        "scope=repository:team/app:pull,push",
        Some(("alice", ALICE_PASSWORD)),
    );
    api.request(
        "POST",
        "/v2/team/app/blobs/uploads/",
        &[("Authorization", &format!("Bearer {alice}"))],
        None,
    )
    .assert_status(202);
    let form =
        format!("grant_type=password&username=alice&password={ALICE_PASSWORD}&service=wharf");
    api.request(
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(form.as_bytes()),
    )
    .assert_status(200);

    // Alice's own password guessed wrong as often: she waits, bob does not, her token still works.
    for _ in 0..5 {
        api.request(
            "GET",
            "/v2/",
            &[("Authorization", &basic("alice", "guess"))],
            None,
        )
        .assert_error(401, "UNAUTHORIZED");
    }
    api.request(
        "GET",
        "/v2/",
        &[("Authorization", &basic("alice", ALICE_PASSWORD))],
        None,
    )
    .assert_error(429, "TOOMANYREQUESTS");
    api.request(
        "GET",
        "/v2/",
        &[("Authorization", &basic("bob", BOB_PASSWORD))],
        None,
    )
    .assert_status(200);
    let bearer = format!("Bearer {alice}");
    api.request("GET", "/v2/", &[("Authorization", &bearer)], None)
        .assert_status(200);

    // Forged tokens: counted for the address, then 429; a valid token still passes.
    for _ in 0..5 {
        api.request(
            "GET",
            "/v2/",
            &[("Authorization", "Bearer forged.token")],
            None,
        )
        .assert_error(401, "UNAUTHORIZED");
    }
    api.request(
        "GET",
        "/v2/",
        &[("Authorization", "Bearer forged.token")],
        None,
    )
    .assert_error(429, "TOOMANYREQUESTS");
    api.request("GET", "/v2/", &[("Authorization", &bearer)], None)
        .assert_status(200);

    // The log is written in batches: wait for the line rather than read it at once.
    crate::plugins::wait_for_log(
        &wharf,
        &["failed login"],
        std::time::Duration::from_secs(10),
    );
    let log = fs::read_to_string(wharf.log_path()).unwrap();
    assert!(!log.contains("guess") && !log.contains(&alice) && !log.contains(ALICE_PASSWORD));
}

/// The `access` claim of a token from wharf's `/token`: clients treat tokens as opaque, but the
/// test reads what it was granted.
fn granted(token: &str) -> serde_json::Value {
    let payload = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["access"].clone()
}

/// Proves: a token grants only the scope it was asked for: one asked for
/// `repository:team/app:pull` pulls (tags, manifest) but cannot start an upload or push a manifest
/// (401 with a challenge for `pull,push` and `error="insufficient_scope"`, and a message naming the
/// scope it has and the one to ask for), nor read another repository; one asked for `pull,push`
/// pushes. A token is granted what the rules allow its identity: alice asking to push under `ci/`
/// (only ci-robot may) gets pull; an anonymous token gets pull where anonymous pulls are allowed and
/// nothing else. skopeo pushes, pulls and deletes (it asks `*` for a delete) through these tokens.
#[test]
fn tokens_grant_only_their_scope() {
    let wharf = start_with(WharfOptions::with_delete(), "");
    let api = Api::new(wharf.base());
    let w = wharf.host();
    let tmp = tempfile::tempdir().unwrap();
    let layout = write_layout(&tmp.path().join("src"), &LayoutSpec::small("v1", 8811));
    let skopeo = Skopeo::new();
    let alice = format!("alice:{ALICE_PASSWORD}");
    skopeo.copy_with(
        &["--dest-creds", &alice],
        &layout.skopeo_ref(),
        &format!("docker://{w}/team/app:v1"),
    );

    let pull = token(
        &api,
        "scope=repository:team/app:pull",
        Some(("alice", ALICE_PASSWORD)),
    );
    let as_pull = format!("Bearer {pull}");
    let bearer = [("Authorization", as_pull.as_str())];
    api.request("GET", "/v2/team/app/tags/list", &bearer, None)
        .assert_status(200);
    let m = api.request(
        "GET",
        "/v2/team/app/manifests/v1",
        &[bearer[0], ("Accept", &crate::http::all_manifest_types())],
        None,
    );
    m.assert_status(200);
    let refused = api.request("POST", "/v2/team/app/blobs/uploads/", &bearer, None);
    refused.assert_error(401, "UNAUTHORIZED");
    assert!(
        refused
            .need_header("WWW-Authenticate")
            .ends_with("scope=\"repository:team/app:pull,push\",error=\"insufficient_scope\""),
        "{}",
        refused.describe()
    );
    let text = String::from_utf8_lossy(&refused.body);
    assert!(
        text.contains("grants repository:team/app:pull,")
            && text.contains("scope repository:team/app:pull,push"),
        "{text}"
    );
    let content_type = m.need_header("Content-Type").to_owned();
    api.request(
        "PUT",
        "/v2/team/app/manifests/v2",
        &[bearer[0], ("Content-Type", &content_type)],
        Some(m.body.as_slice()),
    )
    .assert_error(401, "UNAUTHORIZED");
    api.request("GET", "/v2/ci/app/tags/list", &bearer, None)
        .assert_error(401, "UNAUTHORIZED");
    assert_eq!(
        granted(&pull),
        serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}])
    );

    let push = token(
        &api,
        "scope=repository:team/app:pull,push",
        Some(("alice", ALICE_PASSWORD)),
    );
    api.request(
        "PUT",
        "/v2/team/app/manifests/v2",
        &[
            ("Authorization", &format!("Bearer {push}")),
            ("Content-Type", &content_type),
        ],
        Some(m.body.as_slice()),
    )
    .assert_status(201);

    // What the rules allow the identity, of what it asked.
    let ci = token(
        &api,
        "scope=repository:ci/app:pull,push&scope=repository:team/app:pull",
        Some(("alice", ALICE_PASSWORD)),
    );
    assert_eq!(
        granted(&ci),
        serde_json::json!([
            {"type": "repository", "name": "ci/app", "actions": ["pull"]},
            {"type": "repository", "name": "team/app", "actions": ["pull"]}
        ])
    );
    let anonymous = token(&api, "scope=repository:ci/app:pull,push", None);
    assert_eq!(
        granted(&anonymous),
        serde_json::json!([{"type": "repository", "name": "ci/app", "actions": ["pull"]}])
    );
    api.request(
        "GET",
        "/v2/team/app/tags/list",
        &[("Authorization", &format!("Bearer {anonymous}"))],
        None,
    )
    .assert_error(401, "UNAUTHORIZED");

    // skopeo: a pull, and a delete (scope `*`), each through a token for its own scope.
    let out = tmp.path().join("out");
    skopeo.copy_with(
        &["--src-creds", &alice],
        &format!("docker://{w}/team/app:v1"),
        &format!("oci:{}:v1", out.display()),
    );
    assert_same_image(&layout, &out, "v1");
    let deleted = skopeo.output(&[
        "delete",
        "--tls-verify=false",
        "--creds",
        &alice,
        &format!("docker://{w}/team/app:v2"),
    ]);
    assert!(
        deleted.status.success(),
        "skopeo delete with a token for scope `*`: {}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    api.request(
        "GET",
        "/v2/team/app/manifests/v2",
        &[("Authorization", &basic("alice", ALICE_PASSWORD))],
        None,
    )
    .assert_error(404, "MANIFEST_UNKNOWN");
}

/// Proves: `anonymous_pull = false` makes an anonymous pull a 401 challenge, and a credential pull
/// work.
#[test]
fn anonymous_pulls_can_be_turned_off() {
    let wharf = start("anonymous_pull = false");
    let api = Api::new(wharf.base());
    api.get("/v2/team/app/tags/list")
        .assert_error(401, "UNAUTHORIZED");
    api.request(
        "GET",
        "/v2/team/app/tags/list",
        &[("Authorization", &basic("bob", BOB_PASSWORD))],
        None,
    )
    .assert_error(404, "NAME_UNKNOWN");
}

/// Proves: wharf refuses to listen beyond loopback with no authentication, says why and what to set,
/// and exits non-zero.
#[test]
fn a_remote_listen_without_auth_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wharf.toml");
    fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"0.0.0.0:0\"\n[storage]\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(wharf_bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no client authentication") && text.contains("allow_anonymous_remote"),
        "{text}"
    );
}

/// Proves: a user file written by Apache's `htpasswd -B` (the tool operators use for distribution
/// and nginx; it writes `$2y$` hashes) is read as is: its user pushes with skopeo, a wrong password
/// is refused.
#[test]
fn an_htpasswd_file_written_by_apache_htpasswd_is_read() {
    let htpasswd_tool = crate::harness::require_tool("htpasswd", "apt-get install apache2-utils");
    let home = tempfile::tempdir().unwrap().keep();
    let file = home.join("htpasswd");
    let made = std::process::Command::new(htpasswd_tool)
        .args(["-B", "-b", "-c"])
        .arg(&file)
        .args(["carol", "carol-pw-apache"])
        .output()
        .expect("run htpasswd");
    assert!(made.status.success(), "{made:?}");
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("carol:$2y$"), "htpasswd -B wrote: {text}");
    let wharf = Wharf::start(WharfOptions {
        extra_toml: format!("\n[auth]\nhtpasswd_file = \"{}\"\n", file.display()),
        ..Default::default()
    });
    let layout = write_layout(&home.join("src"), &LayoutSpec::small("v1", 8807));
    let skopeo = Skopeo::new();
    let w = wharf.host();
    skopeo.copy_with(
        &["--dest-creds", "carol:carol-pw-apache"],
        &layout.skopeo_ref(),
        &format!("docker://{w}/team/apache:v1"),
    );
    let wrong = skopeo.output(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--retry-times=0",
        "--dest-creds",
        "carol:wrong",
        &layout.skopeo_ref(),
        &format!("docker://{w}/team/apache:v2"),
    ]);
    assert!(!wrong.status.success(), "a wrong password pushed");
}
