//! `wharf status`: what the cache holds by upstream and repository, how well it serves (hit ratio and
//! bytes, counted across restarts: the history `ui.rs` records in the metadata, plus the running
//! server's counters since its last sample), the last collection (recorded when it ends), and the push
//! journal. The admin socket answers `GET /status` with it; without a server the CLI reads the files,
//! which hold all of it but this run's counters by blob and manifest (`cache`).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::admin::Admin;
use crate::push::journal::State;
use wharf_model::digest::Digest;
use wharf_model::units::human_bytes;
use wharf_storage::gc::{mark, GcError};

/// Where cached content of a repository came from, by its name: a mirror caches `<host>/<remote>`,
/// with a first component that is a host by Docker's rule. Anything else was pushed to wharf.
pub fn upstream_of(repository: &str) -> Option<&str> {
    wharf_model::reference::split_registry_host(repository).map(|(host, _)| host)
}

/// One repository's share of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub repository: String,
    /// The upstream it mirrors; `None` for a repository pushed to wharf.
    pub upstream: Option<String>,
    pub tags: usize,
    /// Manifests and indexes it records (tagged or pulled by digest).
    pub manifests: usize,
    /// Bytes of everything its manifests reach that is stored, each blob once.
    pub bytes: u64,
    /// Unix seconds of its tags' latest last use (`meta::LastUse`, as `wharf images` shows each tag);
    /// with no tag, its latest pull by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<u64>,
}

/// One upstream's (or, `upstream: None`, wharf's own pushed) share of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    pub upstream: Option<String>,
    pub repositories: usize,
    pub tags: usize,
    /// Bytes its repositories reach, each blob once (a blob two repositories share counts once).
    pub bytes: u64,
}

/// The last garbage collection (recorded in the metadata, so it outlives the server that ran it).
pub use wharf_storage::meta::LastGc;

/// Deliveries in the push journal by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushes {
    pub pending: usize,
    pub delivering: usize,
    pub delivered: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub backends: crate::backends::Backends,
    /// Whether a running server answered (else the files were read, and `cache` is unknown).
    pub server: bool,
    /// Content in the store: blobs and manifests, and their bytes.
    pub contents: usize,
    pub bytes: u64,
    pub upstreams: Vec<Upstream>,
    pub repositories: Vec<Repository>,
    /// The server's cache counters since it started, by blob and manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<wharf_metrics::CacheCounts>,
    /// The cache totals counted across restarts (since `since`), as of `at`; `None`: never counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_totals: Option<wharf_storage::meta::Sample>,
    /// hits / (hits + misses) of `cache_totals`, blobs and manifests together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gc: Option<LastGc>,
    /// The last finished scrub pass (`wharf fsck`, `[scrub] interval_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scrub: Option<wharf_storage::scrub::LastScrub>,
    /// Where a scrub pass that stopped (or is running now) got to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub_progress: Option<wharf_storage::scrub::Progress>,
    pub pushes: Pushes,
    pub leases: usize,
}

/// Status as this process sees it: `server` says whether it is the running server (its counters and
/// last collection are then meaningful).
pub async fn collect(admin: &Admin, server: bool) -> Result<Status, GcError> {
    let c = &admin.collector;
    admin.flush_usage().await;
    let snap = c.meta.snapshot().await?;
    let sizes: HashMap<Digest, u64> = c.store.contents().await?.into_iter().collect();
    let graph = c.graph(&snap).await?;
    let mut manifests: BTreeMap<String, Vec<Digest>> = BTreeMap::new();
    for (repo, d) in c.meta.manifest_repos().await? {
        manifests.entry(repo).or_default().push(d);
    }
    let mut tags: HashMap<&str, usize> = HashMap::new();
    let mut used: HashMap<&str, u64> = HashMap::new();
    for (repo, tag, d) in &snap.tags {
        *tags.entry(repo.as_str()).or_default() += 1;
        if let Some(at) = snap.last_use.of_tag(repo, Some(tag), d) {
            let u = used.entry(repo.as_str()).or_default();
            *u = (*u).max(at);
        }
        // A tag always names a recorded manifest; this keeps a repository listed if not.
        manifests.entry(repo.clone()).or_default().push(d.clone());
    }
    let mut repositories = Vec::new();
    let mut by_upstream: BTreeMap<Option<String>, (Upstream, HashSet<Digest>)> = BTreeMap::new();
    for (repo, tops) in &manifests {
        let reach = mark(&graph, tops.iter());
        let bytes = reach.iter().filter_map(|d| sizes.get(d)).sum();
        let upstream = upstream_of(repo).map(str::to_owned);
        let n_tags = tags.get(repo.as_str()).copied().unwrap_or(0);
        let last_used = match n_tags {
            0 => snap.last_use.of_repository(repo),
            _ => used.get(repo.as_str()).copied(),
        };
        let unique: HashSet<&Digest> = tops.iter().collect();
        repositories.push(Repository {
            repository: repo.clone(),
            upstream: upstream.clone(),
            tags: n_tags,
            manifests: unique.len(),
            bytes,
            last_used,
        });
        let (u, seen) = by_upstream.entry(upstream.clone()).or_insert_with(|| {
            (
                Upstream {
                    upstream,
                    repositories: 0,
                    tags: 0,
                    bytes: 0,
                },
                HashSet::new(),
            )
        });
        u.repositories += 1;
        u.tags += n_tags;
        seen.extend(reach);
    }
    let upstreams = by_upstream
        .into_values()
        .map(|(mut u, seen)| {
            u.bytes = seen.iter().filter_map(|d| sizes.get(d)).sum();
            u
        })
        .collect();
    let mut pushes = Pushes::default();
    match admin.push.status().await {
        Ok(list) => {
            for s in list {
                match s.state {
                    State::Pending => pushes.pending += 1,
                    State::Delivering => pushes.delivering += 1,
                    State::Delivered => pushes.delivered += 1,
                    State::Failed => pushes.failed += 1,
                }
            }
        }
        Err(e) => tracing::warn!(error = %e.message, "status: cannot read the push journal"),
    }
    let last_gc = c.meta.last_gc().await?;
    let last_scrub = c.meta.last_scrub().await?;
    let scrub_progress = c.meta.scrub_progress().await?;
    let cache_totals = admin.history.current(&c.meta).await?;
    let cache = server.then(wharf_metrics::cache_counts);
    Ok(Status {
        backends: admin.backends.clone(),
        server,
        contents: sizes.len(),
        bytes: sizes.values().sum(),
        upstreams,
        repositories,
        hit_ratio: cache_totals.and_then(|s| s.totals.hit_ratio()),
        cache_totals,
        cache,
        last_gc,
        last_scrub,
        scrub_progress,
        pushes,
        leases: admin.leases.list().len(),
    })
}

/// `wharf status` as a text table.
pub fn text(s: &Status) -> String {
    use std::fmt::Write;
    let now = wharf_model::clock::unix_now();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "store: {} contents, {}",
        s.contents,
        human_bytes(s.bytes)
    );
    if !s.backends.content.is_empty() {
        let _ = writeln!(
            out,
            "backends: content: {}; metadata: {}",
            s.backends.content, s.backends.metadata
        );
    }
    match &s.cache_totals {
        Some(t) => {
            let ratio = s
                .hit_ratio
                .map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
            let _ = writeln!(
                out,
                "cache since {}: hit ratio {ratio} ({} of {} mirror requests answered from the \
                 cache), {} served from cache, {} fetched from upstreams",
                httpdate::fmt_http_date(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.since)
                ),
                t.totals.hits,
                t.totals.hits.saturating_add(t.totals.misses),
                human_bytes(t.totals.bytes_from_cache),
                human_bytes(t.totals.bytes_from_upstream)
            );
        }
        None => {
            let _ = writeln!(out, "cache: no mirror request counted yet");
        }
    }
    match &s.cache {
        Some(c) => {
            let _ = writeln!(
                out,
                "since this server started: blobs {} hit / {} miss, manifests {} hit / {} miss",
                c.blob_hits, c.blob_misses, c.manifest_hits, c.manifest_misses,
            );
        }
        None if s.cache_totals.is_some() => {
            let _ = writeln!(out, "no server running: totals as of its last sample");
        }
        None => {}
    }
    match &s.last_gc {
        Some(g) => {
            let _ = writeln!(
                out,
                "last gc: {} ({}), removed {} ({}), evicted {} tags, {} ms",
                httpdate::fmt_http_date(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(g.started)
                ),
                ago(now, g.started),
                g.removed,
                human_bytes(g.removed_bytes),
                g.evicted,
                g.millis
            );
        }
        None => {
            let _ = writeln!(out, "last gc: none recorded");
        }
    }
    let _ = writeln!(out, "{}", scrub_line(now, s.last_scrub.as_ref()));
    if let Some(p) = &s.scrub_progress {
        let _ = writeln!(
            out,
            "fsck in progress or stopped: {} verified ({}) since {}, last at {} ({}); the next \
             pass goes on from there",
            p.verified,
            human_bytes(p.verified_bytes),
            ago(now, p.started),
            p.after,
            ago(now, p.at)
        );
    }
    let p = &s.pushes;
    let _ = writeln!(
        out,
        "pushes: {} pending, {} delivering, {} failed, {} delivered; {} live leases",
        p.pending, p.delivering, p.failed, p.delivered, s.leases
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<40} {:>6} {:>6} {:>12}",
        "UPSTREAM", "REPOS", "TAGS", "SIZE"
    );
    for u in &s.upstreams {
        let _ = writeln!(
            out,
            "{:<40} {:>6} {:>6} {:>12}",
            u.upstream.as_deref().unwrap_or("(pushed here)"),
            u.repositories,
            u.tags,
            human_bytes(u.bytes)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<50} {:>5} {:>9} {:>12} {:>12}",
        "REPOSITORY", "TAGS", "MANIFESTS", "SIZE", "LAST USE"
    );
    for r in &s.repositories {
        let _ = writeln!(
            out,
            "{:<50} {:>5} {:>9} {:>12} {:>12}",
            r.repository,
            r.tags,
            r.manifests,
            human_bytes(r.bytes),
            last_use(now, r.last_used)
        );
    }
    out
}

/// The status line of the last finished scrub pass.
fn scrub_line(now: u64, last: Option<&wharf_storage::scrub::LastScrub>) -> String {
    let Some(l) = last else {
        return "last fsck: none recorded (`wharf fsck`, or [scrub] interval_secs)".to_owned();
    };
    let found = if l.damaged + l.problems() == 0 {
        "nothing damaged, every record has its content".to_owned()
    } else {
        format!(
            "{} damaged (moved to quarantine/), {} records without content, {} manifests \
             missing children, {} dangling tags (the server's log names them; `wharf fsck` checks \
             again)",
            l.damaged, l.missing_content, l.missing_children, l.dangling_tags
        )
    };
    format!(
        "last fsck: {} ({}), verified {} ({}) in {} ms: {found}",
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(l.started)),
        ago(now, l.started),
        l.verified,
        human_bytes(l.verified_bytes),
        l.millis
    )
}

/// `42 s`, `5 min`, `3 h`, `2 days`: how `wharf images`, `wharf status` and the status page write a
/// span of time.
pub fn duration(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        7200..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86400),
    }
}

/// How long before `now` the moment `t` was (a clock that moved back reads as `0 s ago`).
pub fn ago(now: u64, t: u64) -> String {
    format!("{} ago", duration(now.saturating_sub(t)))
}

/// A last use (`meta::LastUse`) as the command-line tables write it: `-` for none.
pub fn last_use(now: u64, t: Option<u64>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| ago(now, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_from_the_name() {
        assert_eq!(upstream_of("docker.io/library/alpine"), Some("docker.io"));
        assert_eq!(
            upstream_of("127.0.0.1:5001/team/app"),
            Some("127.0.0.1:5001")
        );
        assert_eq!(upstream_of("localhost/x"), Some("localhost"));
        assert_eq!(upstream_of("ci/app"), None);
        assert_eq!(upstream_of("alpine"), None);
    }

    #[test]
    fn text_names_each_repository() {
        let s = Status {
            backends: crate::backends::Backends::default(),
            server: true,
            contents: 3,
            bytes: 2048,
            upstreams: vec![Upstream {
                upstream: Some("docker.io".into()),
                repositories: 1,
                tags: 1,
                bytes: 2048,
            }],
            repositories: vec![Repository {
                repository: "docker.io/library/alpine".into(),
                upstream: Some("docker.io".into()),
                tags: 1,
                manifests: 1,
                bytes: 2048,
                last_used: None,
            }],
            cache: Some(wharf_metrics::CacheCounts {
                blob_hits: 1,
                blob_misses: 1,
                ..Default::default()
            }),
            cache_totals: Some(wharf_storage::meta::Sample {
                at: 1_800_000_000,
                since: 1_700_000_000,
                totals: wharf_storage::meta::CacheTotals {
                    hits: 1,
                    misses: 1,
                    ..Default::default()
                },
            }),
            hit_ratio: Some(0.5),
            last_gc: None,
            last_scrub: None,
            scrub_progress: None,
            pushes: Pushes {
                pending: 2,
                ..Default::default()
            },
            leases: 0,
        };
        let t = text(&s);
        assert!(t.contains("hit ratio 50.0%"), "{t}");
        assert!(t.contains("docker.io/library/alpine"), "{t}");
        assert!(t.contains("2 pending"), "{t}");
        assert!(t.contains("last gc: none recorded"), "{t}");
        assert!(
            t.contains("(1 of 2 mirror requests answered from the cache)"),
            "{t}"
        );
    }
}
