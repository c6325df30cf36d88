//! What wharf holds, as a `nerdctl images` user sees it: one row per tag (many tags can share an image
//! ID, the digest of the top manifest or index; `name@sha256:…` references cost nothing), with the
//! platforms present, the size of what the image reaches (each blob once), its last use and where a
//! rewritten or reduced index came from. `--dangling` lists the images no tag reaches: what the next
//! collection reclaims once its grace window has passed.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::gc::{mark, Collector, GcError};
use wharf_model::digest::Digest;
use wharf_model::manifest::{self, Kind};

/// Config blobs and indexes larger than this are not read for platforms.
const MAX_READ: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub repository: String,
    /// `None` for a dangling image.
    pub tag: Option<String>,
    pub digest: Digest,
    pub media_type: String,
    /// `os/arch[/variant]` of each platform whose manifest is here (an index's children that are
    /// stored; an image manifest's own config).
    pub platforms: Vec<String>,
    /// An index's platforms that are not here (left out by the platform policy, or not pulled yet).
    pub platforms_absent: usize,
    /// Bytes of everything the image reaches that is stored, each blob counted once.
    pub size: u64,
    /// Unix seconds of the tag's last use: its last pull (by tag, or by the digest it names, through
    /// this repository) or push, whichever is later (`meta::LastUse`); for a dangling image, its last
    /// pull by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<u64>,
    /// `reduced from sha256:…` / `rewritten from sha256:…`, or the other way round.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provenance: Vec<String>,
}

fn platform_name(v: &serde_json::Value) -> Option<String> {
    let os = v.get("os")?.as_str()?;
    let arch = v.get("architecture")?.as_str()?;
    Some(match v.get("variant").and_then(|x| x.as_str()) {
        Some(var) => format!("{os}/{arch}/{var}"),
        None => format!("{os}/{arch}"),
    })
}

/// The images wharf holds (`dangling`: those no tag reaches instead).
pub async fn list(c: &Collector, dangling: bool) -> Result<Vec<Image>, GcError> {
    let snap = c.meta.snapshot().await?;
    let sizes: HashMap<Digest, u64> = c.store.contents().await?.into_iter().collect();
    let graph = c.graph(&snap).await?;
    // Repositories that record each manifest (for dangling rows).
    let tops: Vec<(String, Option<String>, Digest)> = if dangling {
        let tagged = mark(&graph, snap.tags.iter().map(|(_, _, d)| d));
        // A manifest that another unreachable manifest refers to is part of that image, not one of
        // its own.
        let mut children: HashSet<&Digest> = HashSet::new();
        for d in snap.manifests.keys().filter(|d| !tagged.contains(*d)) {
            children.extend(graph.edges.get(d).into_iter().flatten());
        }
        let mut out: Vec<(String, Option<String>, Digest)> = c
            .meta
            .manifest_repos()
            .await?
            .into_iter()
            .filter(|(_, d)| !tagged.contains(d) && !children.contains(d) && sizes.contains_key(d))
            .map(|(r, d)| (r, None, d))
            .collect();
        out.sort();
        out
    } else {
        snap.tags
            .iter()
            .map(|(r, t, d)| (r.clone(), Some(t.clone()), d.clone()))
            .collect()
    };
    let mut out = Vec::with_capacity(tops.len());
    let mut platform_cache: HashMap<Digest, (Vec<String>, usize)> = HashMap::new();
    for (repository, tag, digest) in tops {
        let Some(rec) = snap.manifests.get(&digest) else {
            continue;
        };
        let reach = mark(&graph, [&digest]);
        let size = reach.iter().filter_map(|d| sizes.get(d)).sum();
        let (platforms, platforms_absent) = match platform_cache.get(&digest) {
            Some(p) => p.clone(),
            None => {
                let p = platforms_of(c, &digest, &rec.media_type, &sizes).await;
                platform_cache.insert(digest.clone(), p.clone());
                p
            }
        };
        let provenance = snap
            .rewrites
            .iter()
            .filter(|(a, _, b)| a != b && (*a == digest || *b == digest))
            .map(|(a, key, b)| {
                let how = if key.starts_with("platforms:") {
                    "reduced"
                } else {
                    "rewritten"
                };
                if *b == digest {
                    format!("{how} from {a}")
                } else {
                    format!("{how} to {b}")
                }
            })
            .collect();
        out.push(Image {
            last_used: snap.last_use.of_tag(&repository, tag.as_deref(), &digest),
            repository,
            tag,
            media_type: rec.media_type.clone(),
            digest,
            platforms,
            platforms_absent,
            size,
            provenance,
        });
    }
    Ok(out)
}

/// The platforms of an image that are here, and how many of an index's are not.
async fn platforms_of(
    c: &Collector,
    d: &Digest,
    media_type: &str,
    sizes: &HashMap<Digest, u64>,
) -> (Vec<String>, usize) {
    let Ok(bytes) = c.store.read_all(d, MAX_READ).await else {
        return (Vec::new(), 0);
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return (Vec::new(), 0);
    };
    match manifest::kind_of(media_type) {
        Some(Kind::Index) => {
            let mut here = Vec::new();
            let mut absent = 0;
            for m in v["manifests"].as_array().into_iter().flatten() {
                let Some(child) = m["digest"].as_str().and_then(|s| s.parse::<Digest>().ok())
                else {
                    continue;
                };
                let name = m
                    .get("platform")
                    .and_then(platform_name)
                    .unwrap_or_else(|| "unknown".into());
                // Attestation manifests (buildkit's unknown/unknown) are not platforms.
                if name.starts_with("unknown") {
                    continue;
                }
                if sizes.contains_key(&child) {
                    here.push(name);
                } else {
                    absent += 1;
                }
            }
            (here, absent)
        }
        _ => {
            let config = v["config"]["digest"]
                .as_str()
                .and_then(|s| s.parse::<Digest>().ok());
            let name = match config {
                Some(cd) => match c.store.read_all(&cd, MAX_READ).await {
                    Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
                        .ok()
                        .and_then(|v| platform_name(&v)),
                    Err(_) => None,
                },
                None => None,
            };
            (name.into_iter().collect(), 0)
        }
    }
}
