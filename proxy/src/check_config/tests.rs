use super::*;

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

fn find<'a>(problems: &'a [Problem], key: &str) -> &'a Problem {
    problems
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem at {key}: {problems:#?}"))
}

async fn check_text(text: &str) -> (tempfile::TempDir, Vec<Problem>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.toml");
    std::fs::write(&path, text).unwrap();
    let problems = check_file(&path).await;
    (dir, problems)
}

/// Proves: unknown keys in several tables are all reported in one run, each with its full key and
/// the known key it is a typo of (or the list of keys the table takes).
#[test]
fn every_unknown_key_with_a_suggestion() {
    let text = r#"
[server]
lisen = "127.0.0.1:5000"
[storage]
data-dir = "/tmp/x"
[sever]
listen = "127.0.0.1:5000"
[registry]
completely_wrong = 1
[[upstreams]]
host = "ghcr.io"
"#;
    let p = parse(text);
    assert!(p.config.is_some(), "{:#?}", p.problems);
    assert_eq!(
        keys(&p.problems).len(),
        5,
        "one problem per mistake: {:#?}",
        p.problems
    );
    let l = find(&p.problems, "server.lisen");
    assert_eq!(l.problem, "unknown key (line 3)");
    assert_eq!(l.fix, "did you mean `listen`?");
    assert_eq!(
        find(&p.problems, "storage.data-dir").fix,
        "did you mean `data_dir`?"
    );
    assert_eq!(find(&p.problems, "sever").fix, "did you mean `server`?");
    assert_eq!(
        find(&p.problems, "upstreams").fix,
        "did you mean `upstream`?"
    );
    let w = find(&p.problems, "registry.completely_wrong");
    assert!(
        w.fix.starts_with("remove it; [registry] takes: ") && w.fix.contains("delete_enabled"),
        "{w}"
    );
}

/// Proves: values of the wrong type or form are named with the fix the key needs (an address, a
/// number of seconds computed from what was written, a platform, an enum value), entries missing a
/// required key are named by their index in the file, and the indices of later entries stay those
/// of the file.
#[test]
fn bad_values_and_missing_keys() {
    let text = r#"
[server]
listen = "localhost:5000"
[gc]
grace_secs = "1h"
[mirror]
platforms = ["linux"]
platform_mode = "rewriten"
[[upstream]]
host = "a.example"
endpoint = "https://a.example"
[[upstream]]
host = "b.example"
[[upstream]]
host = "c.example"
endpoint = "https://c.example"
timeout_secs = -1
"#;
    let p = parse(text);
    let listen = find(&p.problems, "server.listen");
    assert!(listen.problem.ends_with("(line 3)"), "{listen}");
    assert!(listen.fix.contains("\"0.0.0.0:5000\""), "{listen}");
    assert_eq!(
        find(&p.problems, "gc.grace_secs").fix,
        "write a whole number of seconds without quotes: grace_secs = 3600"
    );
    let pl = find(&p.problems, "mirror.platforms");
    assert!(pl.problem.contains("\"linux\" is not a platform"), "{pl}");
    assert!(pl.fix.contains("linux/amd64"), "{pl}");
    assert_eq!(
        find(&p.problems, "mirror.platform_mode").fix,
        "did you mean \"rewritten\"?"
    );
    let up = find(&p.problems, "upstream[1]");
    assert!(
        up.problem.starts_with("required key `endpoint` is missing"),
        "{up}"
    );
    find(&p.problems, "upstream[2].timeout_secs");
    assert_eq!(p.problems.len(), 6, "{:#?}", p.problems);
    // What is left is what the next stage checks, with the file's indices.
    let cfg = p.config.unwrap();
    assert_eq!(cfg.upstreams.len(), 2);
    assert_eq!(p.indices["upstream"], vec![0, 2]);
}

/// Proves: a syntax error is one problem with its line; nothing else can be trusted after it.
#[test]
fn syntax_error_names_the_line() {
    let p = parse("[server]\nlisten = 127.0.0.1:5000\n");
    assert!(p.config.is_none());
    assert_eq!(p.problems.len(), 1, "{:#?}", p.problems);
    assert_eq!(p.problems[0].key, "line 2");
    assert!(p.problems[0].problem.starts_with("not valid TOML"));
}

/// Proves: the checks the server runs at start are run, on every entry, with the file's indices:
/// files that are not there, an upstream `Upstream::new` refuses, routes `Push::new` refuses alone
/// and together, a default upstream no entry names, a plugin file that is missing.
#[tokio::test]
async fn what_serve_would_refuse() {
    let text = r#"
[mirror]
default_upstream = "nowhere.example"
[[upstream]]
host = "plain.example"
endpoint = "http://plain.example"
[[upstream]]
host = "ca.example"
endpoint = "https://ca.example"
ca_file = "/nonexistent/wharf-check/ca.pem"
[[upstream]]
host = "ok.example"
endpoint = "https://ok.example"
[[push]]
prefix = "ci"
target = "https://ok.example/team"
[[push]]
prefix = "ci/app"
target = "https://ok.example/other"
[[push]]
prefix = "Bad Prefix"
target = "https://ok.example/x"
[[push]]
prefix = "creds"
target = "https://ok.example/y"
password_file = "/nonexistent/wharf-check/pw"
username = "bot"
[[plugin]]
name = "gone"
path = "gone.wasm"
"#;
    let (dir, problems) = check_text(text).await;
    let up = find(&problems, "upstream[0].endpoint");
    assert!(up.fix.contains("insecure = true"), "{up}");
    let ca = find(&problems, "upstream[1].ca_file");
    assert_eq!(ca.problem, "/nonexistent/wharf-check/ca.pem does not exist");
    find(&problems, "mirror.default_upstream");
    find(&problems, "push[2].prefix");
    find(&problems, "push[3].password_file");
    let plugin = find(&problems, "plugin[0].path");
    assert!(
        plugin
            .problem
            .starts_with(&dir.path().join("gone.wasm").display().to_string()),
        "relative to the config file: {plugin}"
    );
    // Overlapping routes are only looked for once each route is fine on its own.
    assert!(
        !keys(&problems).contains(&"push[1].prefix"),
        "{problems:#?}"
    );
    assert_eq!(problems.len(), 6, "{problems:#?}");

    let text = r#"
[[push]]
prefix = "ci"
target = "https://ok.example/team"
[[push]]
prefix = "ci/app"
target = "https://ok.example/other"
"#;
    let (_dir, problems) = check_text(text).await;
    let overlap = find(&problems, "push[1].prefix");
    assert!(overlap.problem.contains("overlaps"), "{overlap}");
    assert_eq!(problems.len(), 1, "{problems:#?}");
}

/// Proves: the example config (every key, documented) passes.
#[tokio::test]
async fn example_config_is_ok() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wharf.toml");
    let problems = check_file(&path).await;
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Proves: a file that is not there is one problem naming it.
#[tokio::test]
async fn missing_file() {
    let problems = check_file(Path::new("/nonexistent/wharf.toml")).await;
    assert_eq!(problems.len(), 1);
    assert!(problems[0].problem.starts_with("cannot read the file"));
}

/// Proves: `[server.tls]` files that are missing, or that hold no certificate, are named by key.
#[tokio::test]
async fn tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let text = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"absent.key\"\n",
        cert.display()
    );
    let (_d, problems) = check_text(&text).await;
    let key = find(&problems, "server.tls.key_file");
    assert!(key.problem.ends_with("absent.key does not exist"), "{key}");
    assert_eq!(problems.len(), 1, "{problems:#?}");

    let key_file = dir.path().join("tls.key");
    std::fs::write(&key_file, "no key either\n").unwrap();
    let text = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key_file.display()
    );
    let (_d, problems) = check_text(&text).await;
    let c = find(&problems, "server.tls.cert_file");
    assert!(c.problem.contains("holds no PEM certificate"), "{c}");
}

/// Proves: `[auth]` files that are missing are named by key, and a listen address others can reach
/// with no authentication is refused as the server refuses it (and passes once auth is configured).
#[tokio::test]
async fn auth_files_and_exposure() {
    let text = "[server]\nlisten = \"0.0.0.0:5000\"\n[auth]\ntokens_file = \"/nonexistent/wharf-check/tokens\"\n";
    let (_d, problems) = check_text(text).await;
    let t = find(&problems, "auth.tokens_file");
    assert_eq!(t.problem, "/nonexistent/wharf-check/tokens does not exist");
    // A tokens file is configured: authentication is on, so the address is not exposed.
    assert_eq!(problems.len(), 1, "{problems:#?}");

    let (_d, problems) = check_text("[server]\nlisten = \"0.0.0.0:5000\"\n").await;
    let l = find(&problems, "server.listen");
    assert!(l.fix.contains("allow_anonymous_remote = true"), "{l}");
    assert_eq!(problems.len(), 1, "{problems:#?}");

    // The metrics listener too (issue 24): its status page names every repository.
    let (_d, problems) = check_text("[metrics]\nlisten = \"0.0.0.0:9090\"\n").await;
    let m = find(&problems, "metrics.listen");
    assert!(m.problem.contains("status page"), "{m}");
    assert!(
        m.fix.contains("set metrics.listen to a loopback address")
            && m.fix.contains("allow_anonymous_remote = true"),
        "{m}"
    );
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let text = "[metrics]\nlisten = \"0.0.0.0:9090\"\n[auth]\nallow_anonymous_remote = true\n";
    let (_d, problems) = check_text(text).await;
    assert!(problems.is_empty(), "{problems:#?}");
}
