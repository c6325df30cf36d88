use super::*;
use wharf_model::request::Caller;

const HASH_OF_SECRET: &str = "$2y$04$Z3JtS5GMKLGmHkMLMvM0xO0N2dpLUdzBWv0O2XkUdYQ1Hp0v5i5Jm";

fn auth(htpasswd: &str, tokens: &str) -> Auth {
    let dir = tempfile::tempdir().unwrap().keep();
    let (h, t) = (dir.join("htpasswd"), dir.join("tokens"));
    std::fs::write(&h, htpasswd).unwrap();
    std::fs::write(&t, tokens).unwrap();
    let cfg = AuthConfig {
        htpasswd_file: Some(h),
        tokens_file: Some(t),
        max_failed_logins: 3,
        ..AuthConfig::default()
    };
    Auth::load(&cfg).unwrap().unwrap()
}

fn basic(user: &str, pass: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    h.insert(AUTHORIZATION, format!("Basic {v}").parse().unwrap());
    h
}

#[tokio::test]
async fn passwords_tokens_and_lockout() {
    let hash = bcrypt::hash("secret", 4).unwrap();
    let a = auth(
        &format!("# users\nalice:{hash}\n"),
        "0123456789abcdef0123 ci-robot\n",
    );
    let ip: IpAddr = "10.1.1.1".parse().unwrap();
    let c = a
        .identify(&basic("alice", "secret"), Some(ip))
        .await
        .unwrap();
    assert_eq!(c.identity.as_deref(), Some("alice"));
    // A static token works as a bearer token and as a password.
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        "Bearer 0123456789abcdef0123".parse().unwrap(),
    );
    let c = a.identify(&h, Some(ip)).await.unwrap();
    assert_eq!(c.identity.as_deref(), Some("ci-robot"));
    let c = a
        .identify(&basic("x", "0123456789abcdef0123"), Some(ip))
        .await
        .unwrap();
    assert_eq!(c.identity.as_deref(), Some("ci-robot"));
    // No credential: anonymous, not an error.
    assert_eq!(
        a.identify(&HeaderMap::new(), Some(ip)).await.unwrap(),
        Caller::default()
    );
    // Wrong passwords count for (address, user): past the limit that user waits (a password is not
    // even checked then), while other users and tokens from the address pass.
    for _ in 0..3 {
        let e = a
            .identify(&basic("alice", "nope"), Some(ip))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(!e.message.contains("nope"), "{}", e.message);
    }
    let e = a
        .identify(&basic("alice", "secret"), Some(ip))
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS, "{}", e.message);
    assert!(
        e.message.contains("auth.max_failed_logins") && e.message.contains("for this user"),
        "{}",
        e.message
    );
    let other: IpAddr = "10.1.1.2".parse().unwrap();
    assert!(a
        .identify(&basic("alice", "secret"), Some(other))
        .await
        .is_ok());
    let c = a
        .identify(&basic("x", "0123456789abcdef0123"), Some(ip))
        .await
        .unwrap();
    assert_eq!(c.identity.as_deref(), Some("ci-robot"), "a static token");
    let signed = a
        .signer
        .sign(Some("alice"), &Access::default(), unix_now() + 60);
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, format!("Bearer {signed}").parse().unwrap());
    let c = a.identify(&h, Some(ip)).await.unwrap();
    assert_eq!(c.identity.as_deref(), Some("alice"), "a valid token passes");
    assert!(c.access.is_some(), "a token from /token is scoped");
    // Forged tokens count for the address alone.
    let mut forged = HeaderMap::new();
    forged.insert(AUTHORIZATION, "Bearer forged.token".parse().unwrap());
    for _ in 0..3 {
        let e = a.identify(&forged, Some(ip)).await.unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    }
    let e = a.identify(&forged, Some(ip)).await.unwrap_err();
    assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS, "{}", e.message);
    assert!(
        a.identify(&h, Some(ip)).await.is_ok(),
        "a valid token still passes"
    );
    let _ = HASH_OF_SECRET;
}

#[test]
fn files_are_checked_line_by_line() {
    assert!(parse_htpasswd("bob:{SHA}abc")
        .unwrap_err()
        .contains("htpasswd -B"));
    assert!(parse_htpasswd("nocolon").unwrap_err().contains("line 1"));
    assert!(parse_tokens("short bob")
        .unwrap_err()
        .contains("16 characters"));
    assert!(parse_tokens("0123456789abcdef0123 a b")
        .unwrap_err()
        .contains("line 1"));
    assert_eq!(
        parse_tokens("# c\n\n0123456789abcdef0123 a").unwrap().len(),
        1
    );
}

#[test]
fn a_remote_listen_needs_auth_or_an_explicit_yes() {
    let mut cfg = Config::default();
    assert!(check_exposure(&cfg).is_ok());
    cfg.server.listen = "0.0.0.0:5000".parse().unwrap();
    let e = check_exposure(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("allow_anonymous_remote") && e.contains("htpasswd_file"),
        "{e}"
    );
    cfg.auth.allow_anonymous_remote = true;
    assert!(check_exposure(&cfg).is_ok());
}

/// Proves (issue 24): the metrics listener follows the registry's rule: beyond loopback it needs
/// `[auth]` (its page then shows each caller what they may pull) or `allow_anonymous_remote`, and
/// the refusal names `metrics.listen` and the fix.
#[test]
fn a_remote_metrics_listener_needs_auth_or_an_explicit_yes() {
    let mut cfg = Config::default();
    cfg.metrics.listen = Some("127.0.0.1:9090".parse().unwrap());
    assert!(exposures(&cfg).is_empty());
    cfg.metrics.listen = Some("0.0.0.0:9090".parse().unwrap());
    let e = check_exposure(&cfg).unwrap_err().to_string();
    for said in [
        "0.0.0.0:9090 (metrics.listen)",
        "status page",
        "set metrics.listen to a loopback address (\"127.0.0.1:9090\")",
        "allow_anonymous_remote = true",
    ] {
        assert!(e.contains(said), "{said:?} not in {e}");
    }
    cfg.server.listen = "[::]:5000".parse().unwrap();
    let both: Vec<String> = exposures(&cfg).iter().map(|e| e.to_string()).collect();
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both[0].contains("(server.listen)"), "{both:?}");
    cfg.auth.allow_anonymous_remote = true;
    assert!(exposures(&cfg).is_empty());
    cfg.auth.allow_anonymous_remote = false;
    cfg.auth.tokens_file = Some("/etc/wharf/tokens".into());
    assert!(exposures(&cfg).is_empty());
}

#[tokio::test]
async fn the_challenge_names_wharfs_token_endpoint_and_the_scope() {
    let a = auth("", "0123456789abcdef0123 ci-robot\n");
    let req = Request::builder()
        .uri("/v2/ci/app/manifests/v1")
        .header(HOST, "127.0.0.1:5000")
        .body(())
        .unwrap();
    let e = a
        .authorize(
            &Caller::default(),
            Some(Operation::Push),
            Some("ci/app"),
            None,
            &req,
        )
        .unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    let (_, v) = e
        .headers
        .iter()
        .find(|(k, _)| k == WWW_AUTHENTICATE)
        .unwrap();
    assert_eq!(
        v.to_str().unwrap(),
        "Bearer realm=\"http://127.0.0.1:5000/token\",service=\"wharf\",scope=\"repository:ci/app:pull,push\""
    );
    let root = a
        .authorize(&Caller::default(), None, None, None, &req)
        .unwrap_err();
    assert_eq!(root.status, StatusCode::UNAUTHORIZED);
    let anon_token = Caller {
        identity: None,
        credentialed: true,
        access: None,
    };
    assert!(a.authorize(&anon_token, None, None, None, &req).is_ok());
    assert!(a
        .authorize(
            &anon_token,
            Some(Operation::Pull),
            Some("ci/app"),
            None,
            &req
        )
        .is_ok());
}

#[test]
fn a_pull_token_cannot_push_and_its_refusal_names_the_scope_to_ask() {
    let a = auth("", "0123456789abcdef0123 ci-robot\n");
    let req = Request::builder()
        .uri("/v2/ci/bob/blobs/uploads/")
        .header(HOST, "127.0.0.1:5000")
        .body(())
        .unwrap();
    let mut access = Access::default();
    access.grant("ci/bob", wharf_model::scope::Actions::parse("pull"));
    let bob = Caller {
        identity: Some("bob".into()),
        credentialed: true,
        access: Some(Arc::new(access)),
    };
    assert!(a
        .authorize(&bob, Some(Operation::Pull), Some("ci/bob"), None, &req)
        .is_ok());
    // Granted on the name the client wrote, judged by the routing phase's name: both count.
    assert!(a
        .authorize(
            &bob,
            Some(Operation::List),
            Some("docker.io/ci/bob"),
            Some("ci/bob"),
            &req
        )
        .is_ok());
    let e = a
        .authorize(&bob, Some(Operation::Push), Some("ci/bob"), None, &req)
        .unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert!(
        e.message.contains("repository:ci/bob:pull,")
            && e.message.contains("not push on ci/bob")
            && e.message.contains("scope repository:ci/bob:pull,push"),
        "{}",
        e.message
    );
    let (_, v) = e
        .headers
        .iter()
        .find(|(k, _)| k == WWW_AUTHENTICATE)
        .unwrap();
    assert_eq!(
        v.to_str().unwrap(),
        "Bearer realm=\"http://127.0.0.1:5000/token\",service=\"wharf\",\
         scope=\"repository:ci/bob:pull,push\",error=\"insufficient_scope\""
    );
    let e = a
        .authorize(&bob, Some(Operation::Delete), Some("ci/bob"), None, &req)
        .unwrap_err();
    let (_, v) = e
        .headers
        .iter()
        .find(|(k, _)| k == WWW_AUTHENTICATE)
        .unwrap();
    assert!(
        v.to_str()
            .unwrap()
            .contains("scope=\"repository:ci/bob:delete\""),
        "{v:?}"
    );
    // Another repository: not granted at all.
    let e = a
        .authorize(&bob, Some(Operation::Pull), Some("team/app"), None, &req)
        .unwrap_err();
    assert!(e.message.contains("nothing on team/app"), "{}", e.message);
}
