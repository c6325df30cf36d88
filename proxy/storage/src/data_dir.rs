//! Who may read the data directory: the user wharf runs as, and no one else. Its blobs are every
//! image pushed here or mirrored (private ones included), `meta.redb` names every repository, tag
//! and push, and `admin.sock` acts as the operator. Directories wharf creates there are 0700 and
//! files 0600, whatever the umask (a umask only takes bits away).
//!
//! A data directory from before (0755 directories, 0644 files) is made private when it is opened:
//! its directories (the data directory, `blobs/` with its algorithm and shard directories, `ingest/`,
//! `plugins/`: a few hundred at most), `meta.redb` and the ingests. The blob files are not walked
//! (there may be millions, and a start must stay quick): no other user can open a file below a 0700
//! directory, whatever the file's own mode, since opening it needs search permission on every
//! directory of its path. They keep 0644 until replaced; a copy that keeps modes but not the
//! directories around them (a backup) keeps that too: `chmod -R go= <data_dir>` once makes them
//! 0600 as well.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Directories: the owner only.
pub const DIR_MODE: u32 = 0o700;
/// Files: the owner reads and writes.
pub const FILE_MODE: u32 = 0o600;
/// The bits the group and others would use.
const OTHERS: u32 = 0o077;

/// Creates the data directory `dir` itself 0700 (missing parents as any directory is created: they
/// are not wharf's), or leaves it as it is when it exists.
pub fn create(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        r => r,
    }
}

/// Creates `dir`, inside the data directory, and its missing parents, each 0700.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Options that create a file 0600 (an existing file keeps its mode).
pub fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// What [`make_private`] did.
#[derive(Debug, Default)]
pub struct Tightened {
    /// Directories that were open to the group or others, with their mode before.
    pub dirs: Vec<(PathBuf, u32)>,
    /// Files likewise.
    pub files: Vec<(PathBuf, u32)>,
    /// What could not be changed (a directory wharf's user does not own), and why.
    pub failed: Vec<(PathBuf, u32, io::Error)>,
}

impl Tightened {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.files.is_empty() && self.failed.is_empty()
    }

    /// One line: how many of each were changed, and the first few with their old modes.
    pub fn summary(&self) -> String {
        const SHOWN: usize = 4;
        let list = |v: &[(PathBuf, u32)]| {
            let mut s: Vec<String> = v
                .iter()
                .take(SHOWN)
                .map(|(p, m)| format!("{} (was {:04o})", p.display(), m))
                .collect();
            if v.len() > SHOWN {
                s.push(format!("{} more", v.len() - SHOWN));
            }
            s.join(", ")
        };
        let mut parts = Vec::new();
        if !self.dirs.is_empty() {
            parts.push(format!(
                "{} director{} now {DIR_MODE:04o}: {}",
                self.dirs.len(),
                if self.dirs.len() == 1 { "y" } else { "ies" },
                list(&self.dirs)
            ));
        }
        if !self.files.is_empty() {
            parts.push(format!(
                "{} file{} now {FILE_MODE:04o}: {}",
                self.files.len(),
                if self.files.len() == 1 { "" } else { "s" },
                list(&self.files)
            ));
        }
        parts.join("; ")
    }

    fn tighten(&mut self, path: &Path, dir: bool) {
        let Ok(m) = fs::metadata(path) else { return };
        let mode = m.permissions().mode() & 0o7777;
        if mode & OTHERS == 0 {
            return;
        }
        match fs::set_permissions(path, fs::Permissions::from_mode(mode & !OTHERS)) {
            Ok(()) if dir => self.dirs.push((path.to_owned(), mode)),
            Ok(()) => self.files.push((path.to_owned(), mode)),
            // Gone meanwhile (an ingest committed): nothing to protect.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => self.failed.push((path.to_owned(), mode, e)),
        }
    }
}

/// Takes the group's and others' access away from the data directory `dir` (when it exists): every
/// directory wharf keeps there, `meta.redb` and other files at its top, the ingests. Blob files are
/// left as they are (see the module's comment). Blocking: call it off the runtime.
pub fn make_private(dir: &Path) -> Tightened {
    let mut t = Tightened::default();
    if !dir.is_dir() {
        return t;
    }
    t.tighten(dir, true);
    let Ok(entries) = fs::read_dir(dir) else {
        return t;
    };
    for entry in entries.flatten() {
        // Not followed: a link leads out of the data directory, to what is not wharf's to change.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            t.tighten(&path, true);
        } else if kind.is_file() {
            t.tighten(&path, false);
        }
    }
    for (sub, depth) in [("blobs", 2), ("ingest", 0), ("plugins", 0)] {
        tighten_below(&mut t, &dir.join(sub), depth);
    }
    t
}

/// The directories below `dir` down to `depth` levels (`blobs/<alg>/<xx>`), and at `depth` 0 the
/// files in `dir` (ingests, compiled plugins) too.
fn tighten_below(t: &mut Tightened, dir: &Path, depth: u32) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            t.tighten(&path, true);
            if depth > 1 {
                tighten_below(t, &path, depth - 1);
            }
        } else if kind.is_file() && depth == 0 {
            t.tighten(&path, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn set(p: &Path, m: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn created_private_whatever_the_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/data");
        create(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        create(&dir).unwrap();
        create_dir_all(&dir.join("blobs/sha256/ab")).unwrap();
        assert_eq!(mode(&dir.join("blobs")), DIR_MODE);
        assert_eq!(mode(&dir.join("blobs/sha256/ab")), DIR_MODE);
        let f = dir.join("f");
        file_options().write(true).create(true).open(&f).unwrap();
        assert_eq!(mode(&f), FILE_MODE);
    }

    #[test]
    fn an_old_data_dir_is_made_private_but_its_blob_files_are_left() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let shard = dir.join("blobs/sha256/ab");
        fs::create_dir_all(&shard).unwrap();
        fs::create_dir_all(dir.join("ingest")).unwrap();
        for d in [&dir, &dir.join("blobs"), &dir.join("blobs/sha256"), &shard] {
            set(d, 0o755);
        }
        set(&dir.join("ingest"), 0o750);
        let (meta, ingest, blob) = (
            dir.join("meta.redb"),
            dir.join("ingest/fill-1"),
            shard.join("ab12"),
        );
        for f in [&meta, &ingest, &blob] {
            fs::write(f, b"x").unwrap();
            set(f, 0o644);
        }
        let t = make_private(&dir);
        assert_eq!(t.dirs.len(), 5, "{t:?}");
        assert_eq!(t.files.len(), 2, "{t:?}");
        assert!(t.failed.is_empty(), "{t:?}");
        for d in [&dir, &dir.join("blobs"), &dir.join("blobs/sha256"), &shard] {
            assert_eq!(mode(d), 0o700, "{}", d.display());
        }
        assert_eq!(mode(&dir.join("ingest")), 0o700);
        assert_eq!(mode(&meta), 0o600);
        assert_eq!(mode(&ingest), 0o600);
        assert_eq!(mode(&blob), 0o644, "blob files are not walked");
        let line = t.summary();
        assert!(
            line.contains("5 directories now 0700")
                && line.contains("was 0755")
                && line.contains("1 more")
                && line.contains("2 files now 0600"),
            "{line}"
        );
        assert!(
            make_private(&dir).is_empty(),
            "a second start changes nothing"
        );
        assert!(make_private(&tmp.path().join("absent")).is_empty());
    }
}
