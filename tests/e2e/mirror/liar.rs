//! A lying upstream (issue 24, bug 3): an upstream registry that answers `HEAD 200` for any digest
//! must not get wharf to serve, under that upstream's name, content stored here for another reason:
//! pushed to a private repository, or sent by another upstream. Such content goes out under an
//! upstream's name only once that upstream has sent the very bytes (a verified `GET`); a `HEAD`
//! never stands in for that. What an upstream really sent is still served under its other
//! repositories on a `HEAD`, without fetching it again.

use std::fs;
use std::sync::mpsc;
use std::time::Duration;

use crate::fixtures::SmallImage;
use crate::harness::{DistRegistry, MirrorOptions, UpstreamSpec, Wharf, WharfOptions};
use crate::http::{Api, Resp};
use crate::layout::{write_layout, Desc, LayoutSpec};
use crate::skopeo::Skopeo;

use super::relay::{Fault, Gate, Relay};
use super::{fetch, push_noise_blob, wait_until};

const LIAR: &str = "liar.test";
const ALICE_PASSWORD: &str = "alice-pw-liar-24";
/// The length the liar claims for every blob it is asked about.
const CLAIMED_LENGTH: &str = "7";

/// A wharf with [auth]: only alice pulls or pushes under `private/`, anyone pulls the rest (the
/// mirrored names included), and `upstreams` to mirror.
fn start_wharf(upstreams: Vec<UpstreamSpec>) -> Wharf {
    let home = tempfile::tempdir().unwrap().keep();
    let htpasswd = home.join("htpasswd");
    fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash(ALICE_PASSWORD, 4).unwrap()),
    )
    .unwrap();
    Wharf::start(WharfOptions {
        mirror: MirrorOptions {
            upstreams,
            ..Default::default()
        },
        extra_toml: format!(
            "\n[auth]\nhtpasswd_file = \"{}\"\nanonymous_pull = true\n\n\
             [[auth.rule]]\nprefix = \"private\"\npull = [\"alice\"]\npush = [\"alice\"]\n",
            htpasswd.display()
        ),
        ..Default::default()
    })
}

/// Makes `relay` answer every `HEAD` with 200, as if it had whatever it is asked about: blobs of
/// `CLAIMED_LENGTH` bytes, and tags naming manifest `names` (the digest wharf holds privately).
fn lie(relay: &Relay, names: &Desc) {
    relay.add_rule(
        Some("HEAD"),
        "/v2/",
        Fault::Claim(vec![
            ("Content-Length".into(), CLAIMED_LENGTH.into()),
            ("Docker-Content-Digest".into(), names.digest.clone()),
            ("Content-Type".into(), names.media_type.clone()),
        ]),
    );
}

/// `r` is not a 200, and carries none of `secret`.
fn assert_keeps(r: &Resp, secret: &[u8], what: &str) {
    assert!(
        r.status != 200 && !contains(&r.body, secret),
        "{what} was served under the lying upstream's name: {} answered {} with {} body bytes",
        r.request,
        r.status,
        r.body.len()
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A blob `HEAD` may repeat the upstream's claim (as for any blob wharf does not hold), but must
/// tell nothing of what wharf stores: no 200 with the stored size.
fn assert_head_tells_nothing(r: &Resp, stored: &Desc) {
    assert!(
        r.status != 200 || r.header("Content-Length") == Some(CLAIMED_LENGTH),
        "a HEAD under the lying upstream's name answered with what wharf stores ({} bytes): {}",
        stored.size,
        r.describe()
    );
}

/// Proves: against an upstream that answers `HEAD 200` for any digest (and names a private manifest
/// for a tag), anonymous `GET`s and `HEAD`s under `liar.test/...` (path prefix and `?ns=`) of a
/// layer, an image manifest and an index pushed to wharf's private repository never return them:
/// blobs and manifests are 404 (wharf asked the upstream for the bytes, and it had none), a `HEAD`
/// carries only the upstream's claim and links nothing, the tag fails. And a blob and a manifest the
/// upstream really sent, through one of its repositories, are still served under another one after
/// a `HEAD`: one upstream `GET` each, not two.
#[test]
fn a_lying_upstream_never_gets_private_content_out() {
    let registry = DistRegistry::start();
    let relay = Relay::start(registry.addr());
    let wharf = start_wharf(vec![UpstreamSpec::http(LIAR, relay.addr())]);
    let api = Api::new(wharf.base());

    let tmp = tempfile::tempdir().unwrap();
    let layout = write_layout(&tmp.path().join("src"), &LayoutSpec::small("v1", 2403));
    Skopeo::new().copy_with(
        &["--dest-creds", &format!("alice:{ALICE_PASSWORD}")],
        &layout.skopeo_ref(),
        &format!("docker://{}/private/app:v1", wharf.host()),
    );
    let image = &layout.images[0];
    let layer = &image.layers[0];
    let layer_bytes = fs::read(layout.blob_path(&layer.digest)).unwrap();
    let manifest_bytes = fs::read(layout.blob_path(&image.manifest.digest)).unwrap();
    let index_bytes = fs::read(layout.blob_path(&layout.index.digest)).unwrap();
    api.get(&format!("/v2/private/app/blobs/{}", layer.digest))
        .assert_error(401, "UNAUTHORIZED");

    lie(&relay, &image.manifest);
    for path in [
        format!("/v2/{LIAR}/any/blobs/{}", layer.digest),
        format!("/v2/any/blobs/{}?ns={LIAR}", layer.digest),
    ] {
        let r = api.get(&path);
        assert_keeps(&r, &layer_bytes, "a private layer");
        r.assert_error(404, "BLOB_UNKNOWN");
        assert_head_tells_nothing(&api.head(&path), layer);
        // The HEAD linked nothing: the next GET is refused the same way.
        api.get(&path).assert_error(404, "BLOB_UNKNOWN");
    }
    assert!(
        relay.count("GET", &format!("/v2/any/blobs/{}", layer.digest)) >= 1,
        "wharf must ask the upstream for the bytes rather than trust its HEAD: {}",
        relay.describe()
    );

    for (d, bytes, what) in [
        (
            &image.manifest.digest,
            &manifest_bytes,
            "a private manifest",
        ),
        (&layout.index.digest, &index_bytes, "a private index"),
    ] {
        for path in [
            format!("/v2/{LIAR}/any/manifests/{d}"),
            format!("/v2/any/manifests/{d}?ns={LIAR}"),
        ] {
            let r = api.get_manifest_path(&path);
            assert_keeps(&r, bytes, what);
            r.assert_error(404, "MANIFEST_UNKNOWN");
            let h = api.request(
                "HEAD",
                &path,
                &[("Accept", &crate::http::all_manifest_types())],
                None,
            );
            assert_ne!(h.status, 200, "{what} by HEAD: {}", h.describe());
        }
    }
    // The tag's HEAD names the private manifest: the tag is not served with it.
    for path in [
        format!("/v2/{LIAR}/any/manifests/v1"),
        format!("/v2/any/manifests/v1?ns={LIAR}"),
    ] {
        let r = api.get_manifest_path(&path);
        assert_keeps(&r, &manifest_bytes, "a private manifest named by a tag");
    }

    // What the upstream really sent, through team/public, is served under team/other (which the
    // liar's HEAD claims to have) from the stored copy.
    let upstream_api = Api::new(registry.base());
    let blob = push_noise_blob(&upstream_api, "team/public", 2404, 48 << 10);
    let public = SmallImage::push(&upstream_api, "team/public", "v1", 2405);
    // GETs: the liar's HEAD would answer for any blob with its own claim.
    let intact = |repo: &str| {
        let (status, got, len, _) = api.get_blob_hashed(&format!("{LIAR}/{repo}"), &blob);
        assert_eq!(
            (status, got.as_str(), len),
            (200, blob.as_str(), 48 << 10),
            "GET {repo}"
        );
    };
    intact("team/public");
    api.get_manifest(&format!("{LIAR}/team/public"), &public.manifest_digest)
        .assert_status(200);
    intact("team/other");
    // Linked there now: answered from the store.
    let h = api.head(&format!("/v2/{LIAR}/team/other/blobs/{blob}"));
    assert_eq!(
        (h.status, h.header("Content-Length")),
        (200, Some("49152")),
        "{}",
        h.describe()
    );
    let r = api.get_manifest(&format!("{LIAR}/team/other"), &public.manifest_digest);
    r.assert_status(200);
    assert!(r.body == public.manifest, "{}", r.describe());
    assert_eq!(
        (
            relay.count("GET", &blob),
            relay.count("GET", &public.manifest_digest)
        ),
        (1, 1),
        "content the upstream sent once is served under its other repository on a HEAD, not \
         fetched again: {}",
        relay.describe()
    );
}

/// Proves: a blob on its way from one upstream (a fill in progress) or stored after it is not
/// served under another upstream's name on that upstream's `HEAD 200`: the request naming the liar
/// fetches from the liar, which has nothing (404), at once, without waiting for the other fill;
/// the client of the first upstream still gets the whole blob.
#[test]
fn a_blob_sent_by_one_upstream_is_not_served_under_a_lying_one() {
    const SIZE: u64 = 1 << 20;
    let trusted_registry = DistRegistry::start();
    let trusted = Relay::start(trusted_registry.addr());
    let liar_registry = DistRegistry::start();
    let liar = Relay::start(liar_registry.addr());
    let wharf = start_wharf(vec![
        UpstreamSpec::http("trusted.test", trusted.addr()),
        UpstreamSpec::http(LIAR, liar.addr()),
    ]);
    let api = Api::new(wharf.base());
    let blob = push_noise_blob(
        &Api::new(trusted_registry.base()),
        "team/secret",
        2406,
        SIZE,
    );
    let secret = Desc {
        media_type: "application/octet-stream".into(),
        digest: blob.clone(),
        size: SIZE,
    };
    lie(&liar, &secret);

    // The trusted upstream's fill is held after its first 64 KiB.
    let gate = Gate::new();
    trusted.add_rule(Some("GET"), "/blobs/", Fault::Hold(64 << 10, gate.clone()));
    let trusted_url = format!("{}/v2/trusted.test/team/secret/blobs/{blob}", wharf.base());
    let first = std::thread::spawn(move || fetch(&trusted_url, &[]));
    wait_until(
        || "the trusted upstream's fill never reached the gate".into(),
        || gate.waiting() == 1,
    );

    let liar_url = format!("{}/v2/{LIAR}/any/blobs/{blob}", wharf.base());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(fetch(&liar_url, &[]));
    });
    // A request that joined the held fill would wait for the gate: give it a while, then let the
    // fill go so the answer can be judged either way.
    let during = rx.recv_timeout(Duration::from_secs(10));
    gate.open();
    let during = during.unwrap_or_else(|_| rx.recv().unwrap());
    assert!(
        during.status == 404 && during.len < SIZE,
        "a blob on its way from another upstream was served under the liar's name: {}",
        during.describe()
    );
    let first = first.join().unwrap();
    assert!(first.is_complete(&blob, SIZE), "{}", first.describe());

    // Stored now, sent by trusted.test only.
    super::assert_cached_intact(&wharf, &blob);
    let path = format!("/v2/{LIAR}/any/blobs/{blob}");
    let r = api.get(&path);
    assert!(
        r.status == 404 && (r.body.len() as u64) < SIZE,
        "a blob another upstream sent was served under the liar's name: {}",
        r.describe()
    );
    assert_head_tells_nothing(&api.head(&path), &secret);
    assert_eq!(trusted.count("GET", &blob), 1, "{}", trusted.describe());
}
