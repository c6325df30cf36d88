use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::*;
use wharf_storage::lease::{Leases, Touching};
use wharf_storage::meta::{ManifestPut, ManifestRecord, Meta};
use wharf_storage::store::{FsStore, Ingester};

const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn d(n: u8) -> Digest {
    Digest::sha256_of(&[n])
}

fn image(config: &Digest, layers: &[&Digest]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": IMAGE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config.to_string(), "size": 1},
        "layers": layers.iter().map(|l| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                   "digest": l.to_string(), "size": 1})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn index(children: &[&Digest]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": children.iter().map(|c| json!({"mediaType": IMAGE,
                   "digest": c.to_string(), "size": 1})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Touching>,
    meta: Meta,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("m.redb")).unwrap();
        let store = Touching::wrap(
            Arc::new(FsStore::open(dir.path().join("s")).unwrap()),
            Leases::new(meta.clone()),
        );
        Fixture {
            _dir: dir,
            store,
            meta,
        }
    }

    /// Stores `bytes` and records them for `repo`.
    async fn manifest(&self, repo: &str, bytes: &[u8]) -> (Digest, ManifestRecord) {
        let digest = Digest::sha256_of(bytes);
        let m = wharf_model::manifest::parse(None, bytes).unwrap();
        let record = ManifestRecord {
            media_type: m.media_type,
            size: bytes.len() as u64,
            subject: None,
        };
        self.store
            .put(&digest, Bytes::copy_from_slice(bytes))
            .await
            .unwrap();
        self.meta
            .put_manifest(ManifestPut {
                repo,
                digest: &digest,
                record: record.clone(),
                tag: None,
                referrer: None,
            })
            .await
            .unwrap();
        (digest, record)
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A local repository serves what it links, nothing else: not a blob or manifest another repository
/// links, not one that is nowhere. A rewrite larger than the limit, not a manifest, or of another media
/// type is refused before anything is looked up.
#[test]
fn a_local_repository_serves_what_it_links() {
    rt().block_on(async {
        let f = Fixture::new();
        f.meta.link_blob("team/app", &d(1), 1).await.unwrap();
        f.meta.link_blob("team/app", &d(2), 1).await.unwrap();
        f.meta.link_blob("team/secret", &d(3), 1).await.unwrap();
        let (child, _) = f.manifest("team/app", &image(&d(1), &[&d(2)])).await;
        let (private, _) = f.manifest("team/secret", &image(&d(1), &[&d(3)])).await;
        let original = image(&d(1), &[&d(2)]);
        let check = Servable::new(
            f.meta.clone(),
            Repo::Local("team/app"),
            IMAGE,
            &original,
            4096,
        );

        check
            .servable(&image(&d(1), &[&d(2), &d(2)]))
            .await
            .unwrap();
        let e = check
            .servable(&image(&d(1), &[&d(2), &d(3), &d(4)]))
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "it names {} (and 1 more), which repository team/app does not have;",
                d(3)
            )),
            "{msg}"
        );

        let check = Servable::new(
            f.meta.clone(),
            Repo::Local("team/app"),
            INDEX,
            &index(&[&child]),
            4096,
        );
        check.servable(&index(&[&child, &child])).await.unwrap();
        let e = check
            .servable(&index(&[&child, &private]))
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("it names {private},")),
            "{e}"
        );

        let big = index(&[&child; 64]);
        let e = Servable::new(f.meta.clone(), Repo::Local("team/app"), INDEX, &[], 1000)
            .servable(&big)
            .await
            .unwrap_err();
        assert!(matches!(e, Unservable::TooLarge { limit: 1000, .. }), "{e}");
        assert!(
            e.to_string().contains("registry.max_manifest_bytes = 1000"),
            "{e}"
        );
        let e = check.servable(b"\0\0\0").await.unwrap_err();
        assert!(matches!(e, Unservable::Invalid(_)), "{e}");
        // Another media type than the original's is refused by the parse already.
        let e = check.servable(&image(&d(1), &[])).await.unwrap_err();
        assert!(e.to_string().contains(IMAGE), "{e}");
    });
}

/// The mirror's cache repository also serves what the original names (its upstream serves that, and
/// the mirror fetches it when asked), though not yet cached; nothing else it does not link.
#[test]
fn a_mirrored_repository_also_serves_what_the_original_names() {
    rt().block_on(async {
        let f = Fixture::new();
        let repo = "up.test/team/app";
        let original = index(&[&d(1), &d(2)]);
        let check = Servable::new(f.meta.clone(), Repo::Mirror(repo), INDEX, &original, 4096);
        check.servable(&index(&[&d(2)])).await.unwrap();
        let e = check.servable(&index(&[&d(2), &d(9)])).await.unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "it names {}, which repository {repo} does not have and the original does not name",
                d(9)
            )),
            "{msg}"
        );
        // The same original in a local repository: its children must be linked.
        let local = Servable::new(f.meta.clone(), Repo::Local(repo), INDEX, &original, 4096);
        assert!(local.servable(&index(&[&d(2)])).await.is_err());
    });
}

/// A derivation made for one repository is served by another holding the same original only if
/// that one can serve it; otherwise it is derived again for that repository (here: refused by the
/// check, so the original is served) and the first repository's mapping stays as it was.
#[test]
fn a_derivation_is_served_only_where_its_content_is() {
    rt().block_on(async {
        let f = Fixture::new();
        let policy = Policy::new(Plugins::none(), f.store.clone(), f.meta.clone(), 4096);
        for repo in ["team/a", "team/b"] {
            f.meta.link_blob(repo, &d(1), 1).await.unwrap();
        }
        f.meta.link_blob("team/a", &d(2), 1).await.unwrap();
        let original = image(&d(1), &[]);
        let (o, rec) = f.manifest("team/a", &original).await;
        f.manifest("team/b", &original).await;
        let derived = Bytes::from(image(&d(1), &[&d(2)]));
        let want = Digest::sha256_of(&derived);

        let derive = |bytes: Bytes| {
            move |_: ManifestRecord, _: Bytes, _: Arc<Servable>| async move {
                Ok(Rewritten::made(bytes))
            }
        };
        let (got, _) = policy
            .derived(
                Repo::Local("team/a"),
                o.clone(),
                rec.clone(),
                "k".into(),
                "derived",
                derive(derived.clone()),
            )
            .await
            .unwrap();
        assert_eq!(got, want);

        let (got, _) = policy
            .derived(
                Repo::Local("team/b"),
                o.clone(),
                rec.clone(),
                "k".into(),
                "derived",
                derive(derived.clone()),
            )
            .await
            .unwrap();
        assert_eq!(
            got, o,
            "team/b does not link the layer the derivation names"
        );
        assert!(f.meta.manifest("team/b", &want).await.unwrap().is_none());
        assert_eq!(
            f.meta.rewrite_of(&o, "k").await.unwrap(),
            Some(want.clone())
        );
        // And team/a still serves its own.
        let (got, _) = policy
            .derived(
                Repo::Local("team/a"),
                o.clone(),
                rec,
                "k".into(),
                "derived",
                derive(derived),
            )
            .await
            .unwrap();
        assert_eq!(got, want);
    });
}
