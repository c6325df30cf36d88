//! Upload sessions under abuse: many abandoned ones must not exhaust wharf's descriptors, their number
//! is capped with a clear 429, and a stalled PATCH never blocks the session's status or its cancel.

use std::time::Duration;

use crate::http::{raw, Api};
use crate::oci::{sha256_digest, Noise};

use super::{files_in, open_fds, start, wait_for, within, Peer};

/// wharf's descriptor limit in the exhaustion test: far below the sessions opened.
const NOFILE: u64 = 128;
const SESSIONS: usize = 400;

fn lower_nofile(pid: u32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: soft,
    };
    // SAFETY: prlimit(2) on our own child process, with valid pointers to two rlimit structs.
    let rc = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &new, &mut old) };
    assert_eq!(
        rc,
        0,
        "prlimit RLIMIT_NOFILE on wharf: {}",
        std::io::Error::last_os_error()
    );
}

/// Proves: with wharf limited to 128 descriptors, 400 upload sessions that each received a chunk and
/// were abandoned hold none (wharf stays far below the limit), pushes (monolithic, finishing an open
/// session, manifests) and pulls still work, and a session beyond `registry.max_upload_sessions` is
/// refused with 429 TOOMANYREQUESTS and a message naming the key.
#[test]
fn abandoned_sessions_hold_no_descriptors_and_are_capped() {
    // One client opens them all: its own cap is the global one here.
    let (wharf, api) = start(
        &[],
        &[
            &format!("max_upload_sessions = {SESSIONS}"),
            &format!("max_upload_sessions_per_client = {SESSIONS}"),
        ],
    );
    lower_nofile(wharf.pid(), NOFILE);
    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        let loc = api.start_upload("abandoned/app");
        let r = api.request(
            "PATCH",
            &loc,
            &[("Content-Type", "application/octet-stream")],
            Some(format!("chunk {i}").as_bytes()),
        );
        assert_eq!(
            r.status,
            202,
            "PATCH of session {i} with wharf limited to {NOFILE} descriptors (idle sessions must not \
             hold one): {}",
            r.describe()
        );
        sessions.push(loc);
    }
    let fds = open_fds(&wharf);
    assert!(
        fds < 64,
        "{SESSIONS} idle upload sessions leave wharf with {fds} descriptors open"
    );

    // The cap, with a message that says what to do.
    let r = api.request("POST", "/v2/abandoned/app/blobs/uploads/", &[], None);
    r.assert_error(429, "TOOMANYREQUESTS");
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        body.contains("registry.max_upload_sessions"),
        "429 must name the key: {body}"
    );

    // Pushes and pulls go on.
    let blob = Noise::bytes(5, 100_000);
    let d = sha256_digest(&blob);
    api.request(
        "POST",
        &format!("/v2/abandoned/app/blobs/uploads/?digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        Some(&blob),
    )
    .assert_status(201);
    let first = &sessions[0];
    let chunk = b"chunk 0";
    api.request(
        "PUT",
        &crate::http::with_query(first, &format!("digest={}", sha256_digest(chunk))),
        &[],
        None,
    )
    .assert_status(201);
    let image = crate::fixtures::SmallImage::push(&api, "abandoned/image", "v1", 3);
    image.assert_intact(&api);
    api.assert_blob_intact("abandoned/app", &d, blob.len() as u64);
    // Finishing one made room for one more.
    api.start_upload("abandoned/app");
}

/// Proves: while a PATCH on a session has stalled mid-body, `GET` of the session's status answers at
/// once with the range received so far, and `DELETE` cancels it at once; the stalled PATCH is then
/// answered, and the session and its partial file are gone.
#[test]
fn status_and_cancel_answer_at_once_while_a_patch_stalls() {
    let (wharf, api) = start(&["body_idle_secs = 120"], &[]);
    let data = Noise::bytes(8, 1000);
    let loc = api.start_upload("stall/status");
    api.request(
        "PATCH",
        &loc,
        &[("Content-Type", "application/octet-stream")],
        Some(&data[..100]),
    )
    .assert_status(202);
    let path = crate::http::path_of(&loc);
    let mut patch = Peer::connect(wharf.addr());
    patch.head(
        "PATCH",
        &path,
        &[("Content-Length", "900"), ("Content-Range", "100-999")],
    );
    patch.send(&data[100..300]);
    std::thread::sleep(Duration::from_millis(300));

    let addr = wharf.addr();
    let p = path.clone();
    let status = within(
        Duration::from_secs(5),
        "GET of an upload's status while a PATCH on it stalls",
        move || raw::send(addr, "GET", &p, &[], b""),
    );
    status.assert_status(204);
    let range = status.need_header("Range").to_owned();
    assert!(
        range == "0-99" || range == "0-299",
        "status while a PATCH stalls: {}",
        status.describe()
    );
    let p = path.clone();
    let cancel = within(
        Duration::from_secs(5),
        "DELETE of an upload while a PATCH on it stalls",
        move || raw::send(addr, "DELETE", &p, &[], b""),
    );
    cancel.assert_status(204);
    let a = patch
        .answer(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the stalled PATCH of a cancelled session: {e}"));
    assert_eq!(
        a.status, 404,
        "the stalled PATCH of a cancelled session: {a:?}"
    );
    Api::new(wharf.base())
        .get(&loc)
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    wait_for(
        Duration::from_secs(5),
        || format!("partial files left: {:?}", files_in(&wharf.ingest_dir())),
        || files_in(&wharf.ingest_dir()).is_empty(),
    );
}

/// Starts an upload session as `auth` (an `Authorization` value) would; the answer.
fn start_session(api: &Api, repo: &str, auth: &str) -> crate::http::Resp {
    api.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[("Authorization", auth)],
        None,
    )
}

/// Proves: one identity holding `registry.max_upload_sessions_per_client` sessions is refused its
/// next one with 429 TOOMANYREQUESTS, `Retry-After` and a message naming the key and the identity,
/// while another identity's skopeo push goes through (the global cap is not reached); once the
/// first cancels one, it may start another.
#[test]
fn one_identity_holding_its_session_cap_leaves_room_for_others() {
    use crate::auth::{basic, start_with, ALICE_PASSWORD, BOB_PASSWORD};
    const PER_CLIENT: usize = 4;
    const GLOBAL: usize = 12;
    let wharf = start_with(
        crate::harness::WharfOptions {
            registry_keys: vec![
                format!("max_upload_sessions = {GLOBAL}"),
                format!("max_upload_sessions_per_client = {PER_CLIENT}"),
            ],
            ..Default::default()
        },
        "",
    );
    let api = Api::new(wharf.base());
    let alice = basic("alice", ALICE_PASSWORD);
    let mut held = Vec::new();
    for i in 0..GLOBAL {
        let r = start_session(&api, "team/alice", &alice);
        if i < PER_CLIENT {
            r.assert_status(202);
            held.push(r.need_header("Location").to_owned());
            continue;
        }
        r.assert_error(429, "TOOMANYREQUESTS");
        assert!(
            r.header("Retry-After")
                .is_some_and(|v| v.parse::<u64>().is_ok()),
            "{}",
            r.describe()
        );
        let text = String::from_utf8_lossy(&r.body);
        assert!(
            text.contains("registry.max_upload_sessions_per_client")
                && text.contains("identity alice"),
            "the refusal names the limit and whose sessions they are: {text}"
        );
        break;
    }
    assert_eq!(
        held.len(),
        PER_CLIENT,
        "alice started {} sessions, more than max_upload_sessions_per_client = {PER_CLIENT}",
        held.len()
    );

    let tmp = tempfile::tempdir().unwrap();
    let layout = crate::layout::write_layout(
        &tmp.path().join("src"),
        &crate::layout::LayoutSpec::small("v1", 8821),
    );
    let w = wharf.host();
    crate::skopeo::Skopeo::new().copy_with(
        &["--dest-creds", &format!("bob:{BOB_PASSWORD}")],
        &layout.skopeo_ref(),
        &format!("docker://{w}/team/bob:v1"),
    );

    api.request(
        "DELETE",
        &crate::http::path_of(&held[0]),
        &[("Authorization", &alice)],
        None,
    )
    .assert_status(204);
    start_session(&api, "team/alice", &alice).assert_status(202);
}

/// Proves: without a credential, clients are told apart by address: one address holding
/// `max_upload_sessions_per_client` sessions gets 429 naming its address, while another address
/// (127.0.0.2, by curl) still starts one.
#[test]
fn anonymous_clients_are_held_by_address() {
    const PER_CLIENT: usize = 2;
    let cap = format!("max_upload_sessions_per_client = {PER_CLIENT}");
    let (wharf, api) = start(&[], &[&cap]);
    for _ in 0..PER_CLIENT {
        api.start_upload("anon/app");
    }
    let r = api.request("POST", "/v2/anon/app/blobs/uploads/", &[], None);
    r.assert_error(429, "TOOMANYREQUESTS");
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("address 127.0.0.1") && text.contains("max_upload_sessions_per_client"),
        "{text}"
    );
    let curl = crate::harness::require_tool("curl", "apt-get install curl");
    let out = std::process::Command::new(curl)
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--interface", "127.0.0.2", "-X", "POST"])
        .arg(format!("{}/v2/anon/app/blobs/uploads/", wharf.base()))
        .output()
        .expect("run curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "202",
        "a POST from 127.0.0.2 while 127.0.0.1 holds its sessions: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
