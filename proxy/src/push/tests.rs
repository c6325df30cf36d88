use super::*;
use crate::config::{PushConfig, UpstreamConfig};

fn route(prefix: &str, target: &str, upstreams: &[UpstreamConfig]) -> Result<Route, PushError> {
    let cfg: PushConfig = toml::from_str(&format!(
        "prefix = \"{prefix}\"\ntarget = \"{target}\"\ninsecure = true\n"
    ))
    .unwrap();
    Route::new(&cfg, upstreams)
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
    let e = Route::new(&cfg, &[]).err().unwrap().to_string();
    assert!(e.contains("insecure = true"), "{e}");
}
