use super::*;
use wharf_model::config::{PushConfig, UpstreamConfig};

fn route(prefix: &str, target: &str, upstreams: &[UpstreamConfig]) -> Result<PushRoute, PushError> {
    let cfg: PushConfig = toml::from_str(&format!(
        "prefix = \"{prefix}\"\ntarget = \"{target}\"\ninsecure = true\n"
    ))
    .unwrap();
    PushRoute::new(&cfg, upstreams)
}

#[test]
fn names_map_both_ways_on_component_boundaries() {
    let r = route("ci/app", "http://127.0.0.1:5001/team/app", &[]).unwrap();
    assert_eq!(r.remote_of("ci/app").as_deref(), Some("team/app"));
    assert_eq!(r.remote_of("ci/app/arm").as_deref(), Some("team/app/arm"));
    assert_eq!(r.remote_of("ci/apple"), None);
    assert_eq!(r.remote_of("ci"), None);
    assert_eq!(
        r.local_of("127.0.0.1:5001", "team/app/x").as_deref(),
        Some("ci/app/x")
    );
    assert_eq!(r.local_of("127.0.0.1:5002", "team/app"), None);
    assert_eq!(r.local_of("127.0.0.1:5001", "team/apps"), None);
}

#[test]
fn an_upstream_entry_for_the_same_registry_lends_its_names() {
    let mut up = UpstreamConfig::docker_hub();
    up.host = "registry.example.com".into();
    up.endpoint = "http://127.0.0.1:5001".into();
    up.prefix = Some("example".into());
    up.insecure = true;
    let r = route("ci/app", "http://127.0.0.1:5001/team/app", &[up]).unwrap();
    assert_eq!(
        r.local_of("registry.example.com", "team/app").as_deref(),
        Some("ci/app")
    );
    assert_eq!(r.local_of("example", "team/app").as_deref(), Some("ci/app"));
}

#[test]
fn bad_routes_say_what_to_write() {
    let e = route("ci/app", "registry.example.com/team/app", &[])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("http(s)://host[:port]/repository"), "{e}");
    let e = route("ci/app", "https://registry.example.com", &[])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no valid upstream repository"), "{e}");
    let e = route("Bad Name", "https://r.example/x", &[])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("prefix is not a repository name"), "{e}");
    let cfg: PushConfig =
        toml::from_str("prefix = \"a\"\ntarget = \"http://r.example/x\"\n").unwrap();
    let e = PushRoute::new(&cfg, &[]).err().unwrap().to_string();
    assert!(e.contains("insecure = true"), "{e}");
}

#[test]
fn a_write_through_failure_reaches_the_client_as_the_upstream_left_it() {
    let rec = Delivery {
        state: State::Failed,
        mode: PushMode::WriteThrough,
        route: "ci/app".into(),
        repository: "ci/app".into(),
        reference: "v1".into(),
        tagged: true,
        digest: Digest::sha256_of(b"index"),
        target: "http://127.0.0.1:5001".into(),
        upstream_repository: "team/app".into(),
        upstream_digest: None,
        platforms: None,
        attempts: 1,
        last_error: None,
        next_try_ms: None,
        created: 0,
        delivered_at: None,
        lease: Some("l".into()),
        committed: false,
    };
    let answered = |status: u16, code: &str| DeliverError {
        permanent: status < 500,
        upstream: true,
        status: Some(http::StatusCode::from_u16(status).unwrap()),
        code: Some(code.into()),
        message: format!("upstream refused: {status} {code}"),
        retry_after: None,
    };
    // The upstream's refusal passes on as it is.
    let e = client_error(7, &rec, answered(403, "DENIED"));
    assert_eq!((e.status.as_u16(), e.code), (403, ErrorCode::Denied));
    assert!(!e.message.contains("store-and-forward"), "{}", e.message);
    // An upstream that failed is UNAVAILABLE (a 4xx clients print), with what to do.
    for (status, code) in [
        (503, "UNAVAILABLE"),
        (429, "TOOMANYREQUESTS"),
        (500, "UNKNOWN"),
    ] {
        let e = client_error(7, &rec, answered(status, code));
        assert_eq!((e.status.as_u16(), e.code), (424, ErrorCode::Unavailable));
    }
    let e = client_error(
        7,
        &rec,
        DeliverError::stalled("upstream took nothing".into()),
    );
    assert_eq!((e.status.as_u16(), e.code), (424, ErrorCode::Unavailable));
    for needle in [
        "ci/app:v1",
        "http://127.0.0.1:5001/team/app",
        "upstream took nothing",
        "store-and-forward",
        "wharf push retry 7",
    ] {
        assert!(e.message.contains(needle), "{needle:?}: {}", e.message);
    }
    // wharf's own failure is its own.
    let e = client_error(7, &rec, DeliverError::local("cannot read the store".into()));
    assert_eq!((e.status.as_u16(), e.code), (500, ErrorCode::Unknown));
}
