//! `wharf storage copy --from A.toml --to B.toml`: moves a cache to other storage (files and redb to
//! S3 and Postgres, back, or any pair). Content first, then the metadata, so the destination's
//! records never name content it lacks.
//!
//! Resumable: a blob the destination already holds (same digest, same size) is skipped, and the
//! records are upserted in one transaction, so a copy that stopped is simply run again. Every blob is
//! verified by the destination's commit, as an upload is: a damaged one is not copied, and the copy
//! fails naming it (after copying everything else).
//!
//! Each side is what its file says: `WHARF_*` overrides would apply to both sides alike, so they are
//! not read. A files/redb side must not be served while copying (its metadata opens only once: the
//! "another wharf is using this data directory" refusal). A shared side (S3, Postgres) that a wharf
//! serves meanwhile is copied as it is; content that records name but that arrived after the content
//! was listed is copied before the records.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::app::StartError;
use wharf_model::config::{Config, MetadataBackend, StorageBackend};
use wharf_model::digest::Digest;
use wharf_model::units::human_bytes;
use wharf_storage::meta::{Meta, MetaError, TableCount};
use wharf_storage::store::{copy_blob, ContentStore, StoreError};

/// Blobs copied at once: enough to hide an object store's latency per request.
const PARALLEL: usize = 4;
/// A progress line this often while blobs are copied...
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// ...or after this many blobs, whichever comes first.
const PROGRESS_BLOBS: u64 = 500;

/// One side of the copy: its config file and what the file says.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub path: &'a Path,
    pub cfg: &'a Config,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "--from and --to name the same storage ({0}): there is nothing to copy; point --to at the \
         config of the storage to copy into"
    )]
    SameStorage(String),
    #[error("{flag} {path}: {source}")]
    Open {
        flag: &'static str,
        path: String,
        source: StartError,
    },
    #[error("cannot list the content of --from: {0}")]
    List(StoreError),
    #[error(
        "copying {digest} failed: {source}; nothing of it was published: run the copy again to go on \
         from there"
    )]
    Blob { digest: Digest, source: StoreError },
    #[error("a copy task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot read the metadata of --from: {0}")]
    Export(MetaError),
    #[error(
        "cannot write the metadata to --to: {0}; none of it was written (one transaction): run the \
         copy again"
    )]
    Import(MetaError),
}

/// What a copy did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The backends of each side, as `wharf status` names them.
    pub from: String,
    pub to: String,
    pub content: ContentReport,
    pub metadata: MetadataReport,
}

#[derive(Debug, Default, Serialize)]
pub struct ContentReport {
    /// Both sides use one content store: nothing to copy.
    pub same_store: bool,
    pub copied: u64,
    pub copied_bytes: u64,
    /// Blobs the destination held already (an earlier copy): not copied again.
    pub already_there: u64,
    /// Blobs whose bytes in --from do not match their digest: not copied.
    pub damaged: Vec<Damaged>,
    /// Listed, then gone from --from before they were read (collected meanwhile).
    pub vanished: Vec<Digest>,
}

#[derive(Debug, Serialize)]
pub struct Damaged {
    pub digest: Digest,
    pub problem: String,
}

#[derive(Debug, Default, Serialize)]
pub struct MetadataReport {
    /// Both sides use one metadata database: nothing to copy.
    pub same_database: bool,
    /// Why no record was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Rows written per table.
    pub tables: Vec<TableCount>,
    /// Uploads in progress in --from: not copied (each names a partial file in --from's data
    /// directory; its client starts the upload again).
    pub upload_sessions_left_out: u64,
    /// Digests that --from's records name but its content store does not hold: carried as they are
    /// (`wharf fsck` on --from lists them).
    pub named_without_content: Vec<String>,
}

impl Report {
    /// Why the command must fail after printing the report, if it must.
    pub fn failure(&self, from: &Path) -> Option<String> {
        let damaged = &self.content.damaged;
        if damaged.is_empty() && self.metadata.skipped.is_none() {
            return None;
        }
        let mut why = Vec::new();
        if !damaged.is_empty() {
            let names: Vec<String> = damaged.iter().map(|d| d.digest.to_string()).collect();
            why.push(format!(
                "not copied, as their bytes in --from do not match their digests: {}",
                names.join(", ")
            ));
        }
        if let Some(skipped) = &self.metadata.skipped {
            why.push(format!("no metadata was copied: {skipped}"));
        }
        Some(format!(
            "{}; run `wharf fsck --config {}` (it quarantines damaged content and drops the records \
             naming it), then run the copy again",
            why.join("; "),
            from.display()
        ))
    }
}

/// Copies everything --from holds into --to; see the module's comment.
pub async fn copy(from: Side<'_>, to: Side<'_>) -> Result<Report, CopyError> {
    let content_same = same_content(from.cfg, to.cfg);
    let redb_same = same_redb(from.cfg, to.cfg);
    if let (Some(c), Some(m)) = (&content_same, &redb_same) {
        return Err(CopyError::SameStorage(format!("{c}, {m}")));
    }
    let open_err = |flag: &'static str, side: Side<'_>| {
        let path = side.path.display().to_string();
        move |source| CopyError::Open { flag, path, source }
    };
    let (src, src_meta) = crate::app::open_storage(from.cfg)
        .await
        .map_err(open_err("--from", from))?;
    let dst = match content_same {
        Some(_) => None,
        None => Some(
            crate::app::open_content(to.cfg)
                .await
                .map_err(open_err("--to", to))?,
        ),
    };
    let dst_meta = match redb_same {
        Some(_) => None,
        None => Some(
            crate::app::open_meta(to.cfg, false)
                .await
                .map_err(open_err("--to", to))?,
        ),
    };
    let meta_same = match &dst_meta {
        None => redb_same,
        Some(m) => same_database(&src_meta, m),
    };
    if let (Some(c), Some(m)) = (&content_same, &meta_same) {
        return Err(CopyError::SameStorage(format!("{c}, {m}")));
    }
    let describe = |cfg| {
        let (content, meta) = crate::backends::describe(cfg);
        format!("{content}, metadata {meta}")
    };
    let mut report = Report {
        from: describe(from.cfg),
        to: describe(to.cfg),
        ..Report::default()
    };
    say(format_args!(
        "copying {}\n     to {}",
        report.from, report.to
    ));

    let mut listed = HashSet::new();
    match &dst {
        None => report.content.same_store = true,
        Some(dst) => {
            let contents = src.contents().await.map_err(CopyError::List)?;
            let bytes = contents.iter().map(|(_, s)| s).sum();
            say(format_args!(
                "content: {} in --from ({})",
                plural(contents.len() as u64, "blob"),
                human_bytes(bytes)
            ));
            listed.extend(contents.iter().map(|(d, _)| d.clone()));
            copy_blobs(contents, &src, dst, &mut report.content).await?;
        }
    }

    let Some(dst_meta) = dst_meta.filter(|_| meta_same.is_none()) else {
        report.metadata.same_database = true;
        return Ok(report);
    };
    say(format_args!("metadata: reading --from"));
    let dump = src_meta.export().await.map_err(CopyError::Export)?;
    report.metadata.upload_sessions_left_out = dump.uploads_left_out;
    let named = dump.content();
    if let Some(dst) = &dst {
        // Records written after the listing (a served --from) may name content it did not show.
        let mut late = Vec::new();
        for name in &named {
            let Ok(d) = name.parse::<Digest>() else {
                continue;
            };
            if listed.contains(&d) {
                continue;
            }
            match src.stat(&d).await.map_err(CopyError::List)? {
                Some(size) => late.push((d, size)),
                None => report.metadata.named_without_content.push(name.to_string()),
            }
        }
        if !late.is_empty() {
            say(format_args!(
                "content: {} arrived in --from since it was listed",
                plural(late.len() as u64, "blob")
            ));
            copy_blobs(late, &src, dst, &mut report.content).await?;
        }
    }
    let not_copied: BTreeSet<String> = report
        .content
        .damaged
        .iter()
        .map(|d| &d.digest)
        .chain(&report.content.vanished)
        .map(|d| d.to_string())
        .filter(|d| named.contains(d.as_str()))
        .collect();
    if !not_copied.is_empty() {
        report.metadata.skipped = Some(format!(
            "its records name {} that did not arrive ({}), and the destination's records must \
             never name content it lacks",
            plural(not_copied.len() as u64, "blob"),
            not_copied.into_iter().collect::<Vec<_>>().join(", ")
        ));
        return Ok(report);
    }
    let rows: usize = dump.rows().iter().map(|(_, n)| n).sum();
    say(format_args!(
        "metadata: writing {} to --to",
        plural(rows as u64, "record")
    ));
    let imported = dst_meta.import(dump).await.map_err(CopyError::Import)?;
    report.metadata.tables = imported.tables;
    Ok(report)
}

/// What became of one blob.
enum Outcome {
    Copied(u64),
    AlreadyThere,
}

/// Copies `blobs` from `src` to `dst`, `PARALLEL` at once, noting each in `report`. A damaged or
/// vanished blob is noted and the others go on; any other failure stops the copy.
async fn copy_blobs(
    blobs: Vec<(Digest, u64)>,
    src: &Arc<dyn ContentStore>,
    dst: &Arc<dyn ContentStore>,
    report: &mut ContentReport,
) -> Result<(), CopyError> {
    let total = blobs.len() as u64;
    let mut queue = blobs.into_iter();
    let mut tasks = JoinSet::new();
    let mut done = 0u64;
    let mut said = (Instant::now(), 0u64);
    loop {
        while tasks.len() < PARALLEL {
            let Some((d, size)) = queue.next() else { break };
            let (s, t) = (src.clone(), dst.clone());
            tasks.spawn(async move {
                let r = one_blob(&*s, &*t, &d, size).await;
                (d, r)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (d, r) = joined?;
        match r {
            Ok(Outcome::Copied(n)) => {
                report.copied += 1;
                report.copied_bytes += n;
            }
            Ok(Outcome::AlreadyThere) => report.already_there += 1,
            Err(e @ (StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. })) => {
                say(format_args!(
                    "content: {d} is damaged in --from ({e}): not copied"
                ));
                report.damaged.push(Damaged {
                    digest: d,
                    problem: e.to_string(),
                });
            }
            Err(StoreError::NotFound(_)) => report.vanished.push(d),
            // Dropping the tasks stops the others: what they wrote is never published.
            Err(source) => return Err(CopyError::Blob { digest: d, source }),
        }
        done += 1;
        if done == total || done - said.1 >= PROGRESS_BLOBS || said.0.elapsed() >= PROGRESS_EVERY {
            say(format_args!(
                "content: {done}/{total} blobs: {} copied ({}), {} already there",
                report.copied,
                human_bytes(report.copied_bytes),
                report.already_there
            ));
            said = (Instant::now(), done);
        }
    }
    Ok(())
}

async fn one_blob(
    src: &dyn ContentStore,
    dst: &dyn ContentStore,
    d: &Digest,
    size: u64,
) -> Result<Outcome, StoreError> {
    if dst.stat(d).await? == Some(size) {
        return Ok(Outcome::AlreadyThere);
    }
    copy_blob(src, dst, d, size).await.map(Outcome::Copied)
}

/// A progress line on stderr. A reader of stderr that went away must not stop the copy.
fn say(args: std::fmt::Arguments<'_>) {
    let _ = crate::output::stderr(format_args!("wharf storage copy: {args}\n"));
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The content store both configs name, if they name one: the same data directory (files), or the
/// same bucket and prefix of the same endpoint (S3).
fn same_content(a: &Config, b: &Config) -> Option<String> {
    match (a.storage.backend, b.storage.backend) {
        (StorageBackend::Fs, StorageBackend::Fs) => {
            same_dir(&a.storage.data_dir, &b.storage.data_dir)
                .then(|| format!("files in {}", a.storage.data_dir.display()))
        }
        (StorageBackend::S3, StorageBackend::S3) => {
            let (x, y) = (a.storage.s3.as_ref()?, b.storage.s3.as_ref()?);
            let endpoint = |e: &str| e.trim_end_matches('/').to_ascii_lowercase();
            let prefix = |p: &str| p.trim_matches('/').to_owned();
            (endpoint(&x.endpoint) == endpoint(&y.endpoint)
                && x.bucket == y.bucket
                && prefix(&x.prefix) == prefix(&y.prefix))
            .then(|| {
                format!(
                    "bucket {} at {}{}",
                    x.bucket,
                    x.endpoint,
                    match prefix(&x.prefix) {
                        p if p.is_empty() => String::new(),
                        p => format!(" prefix {p}"),
                    }
                )
            })
        }
        _ => None,
    }
}

/// The redb file both configs name, if they do (opening it twice would fail as "in use").
fn same_redb(a: &Config, b: &Config) -> Option<String> {
    let redb = MetadataBackend::Redb;
    (a.metadata.backend == redb
        && b.metadata.backend == redb
        && same_dir(&a.storage.data_dir, &b.storage.data_dir))
    .then(|| {
        format!(
            "metadata {}",
            a.storage.data_dir.join("meta.redb").display()
        )
    })
}

/// The Postgres database both handles are on, if they are on one (whichever user each logs in as).
fn same_database(a: &Meta, b: &Meta) -> Option<String> {
    let place = |e: String| match e.split_once('@') {
        Some((_, rest)) => rest.to_owned(),
        None => e,
    };
    let (x, y) = (a.backend_endpoint()?, b.backend_endpoint()?);
    (place(x.clone()) == place(y)).then(|| format!("metadata database {x}"))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    canonical(a) == canonical(b)
}

/// The report as the command prints it.
pub fn text(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let c = &r.content;
    if c.same_store {
        let _ = writeln!(
            out,
            "content: the same store on both sides, nothing to copy"
        );
    } else {
        let _ = writeln!(
            out,
            "content: {} copied ({}), {} already there",
            plural(c.copied, "blob"),
            human_bytes(c.copied_bytes),
            c.already_there
        );
        for d in &c.damaged {
            let _ = writeln!(
                out,
                "  damaged in --from, not copied: {} ({})",
                d.digest, d.problem
            );
        }
        for d in &c.vanished {
            let _ = writeln!(out, "  gone from --from before it was read: {d}");
        }
    }
    let m = &r.metadata;
    if m.same_database {
        let _ = writeln!(
            out,
            "metadata: the same database on both sides, nothing to copy"
        );
    } else if let Some(why) = &m.skipped {
        let _ = writeln!(out, "metadata: not copied: {why}");
    } else {
        let rows: u64 = m.tables.iter().map(|t| t.rows).sum();
        let changed: u64 = m.tables.iter().map(|t| t.changed).sum();
        let _ = writeln!(
            out,
            "metadata: {} written, {changed} of them new or changed",
            plural(rows, "record")
        );
        for t in m.tables.iter().filter(|t| t.rows > 0) {
            let _ = writeln!(
                out,
                "  {:<24} {:>8}  ({} changed)",
                t.table, t.rows, t.changed
            );
        }
    }
    if m.upload_sessions_left_out > 0 {
        let _ = writeln!(
            out,
            "not copied: {} in progress (each names a partial file in --from's data directory; \
             its client starts the upload again)",
            plural(m.upload_sessions_left_out, "upload session")
        );
    }
    if !m.named_without_content.is_empty() {
        let _ = writeln!(
            out,
            "note: --from's records name {} its content store does not hold (copied as they are; \
             `wharf fsck` on --from lists them): {}",
            plural(m.named_without_content.len() as u64, "digest"),
            m.named_without_content.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests;
