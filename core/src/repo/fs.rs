//! The local-directory backend, berth's embedded default. A blob is
//! streamed into a temp file in its directory, fsynced and renamed to its
//! final name; an index is a temp file renamed over the old one; an index
//! and its signature appear together by swapping their channel's directory
//! with a new one. Compare-and-swap and gc hold an exclusive `flock` on the
//! repository directory itself, so no lock file ever appears in the tree,
//! and every temp file is held under an `flock` by its writer, so a sweep
//! can tell a dead writer's leftovers from a live writer's work.

use std::fs::{self, File};
use std::io::{self, Read, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{
    Abandoned, Backend, MAX_SMALL_OBJECT, Open, REPO_TOML, RepoError, Sweep, UpdateFn, Write,
    config::NEW_REPO_TOML,
};
use crate::fault;
use crate::fsutil::{self, IoResultExt, PathError, TEMP_PREFIX, TempState};

/// A repository in a local directory.
#[derive(Debug)]
pub struct FsBackend {
    root: PathBuf,
}

impl FsBackend {
    /// Opens the repository at `root`; with [`Open::CreateIfMissing`] a
    /// missing or empty directory is made into one (under the directory
    /// lock, so concurrent first publishers agree). Returns whether it created.
    pub fn open(root: &Path, how: Open) -> Result<(FsBackend, bool), RepoError> {
        let backend = FsBackend {
            root: root.to_owned(),
        };
        match fs::metadata(root) {
            Ok(m) if !m.is_dir() => {
                return Err(RepoError::NotADirectory {
                    path: backend.location(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if how == Open::Existing {
                    return Err(RepoError::NoRepository {
                        path: backend.location(),
                    });
                }
                fsutil::create_dir_all_synced(root)?;
            }
            Err(e) => return Err(PathError::new("cannot open repository", root, e).into()),
        }
        if root.join(REPO_TOML).is_file() {
            return Ok((backend, false));
        }
        let _lock = backend.lock()?;
        if root.join(REPO_TOML).is_file() {
            return Ok((backend, false));
        }
        if !unfinished_creation(root)? {
            return Err(RepoError::NotARepository {
                path: backend.location(),
            });
        }
        if how == Open::Existing {
            return Err(RepoError::NoRepository {
                path: backend.location(),
            });
        }
        // repo.toml goes last: until it is there the directory holds
        // nothing but what this creation makes (see `unfinished_creation`),
        // and a creator killed half-way leaves something the next publish
        // finishes.
        for dir in ["blobs/sha256", "channels"] {
            fsutil::create_dir_all_synced(&root.join(dir))?;
        }
        fault::point("repo:dirs");
        fsutil::write_atomic(&root.join(REPO_TOML), NEW_REPO_TOML.as_bytes())?;
        Ok((backend, true))
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Writes the objects of one update so that they appear together. All
    /// in one directory (an index and its signature), the directory is
    /// built again beside itself, with hard links to the files that stay
    /// and the new files written and fsynced, then swapped with the old
    /// one by a single `renameat2(RENAME_EXCHANGE)`: a reader finds the old
    /// pair or the new pair, never one of each, and a writer killed before
    /// the swap leaves the old directory as it was. Where the file system
    /// cannot swap (e.g. NFS), the objects are written in turn.
    fn write_together(&self, key: &str, write: &Write) -> Result<(), RepoError> {
        let dir = self.path(key).parent().unwrap_or(&self.root).to_owned();
        let mut files = vec![(file_name(key), &write.data[..])];
        for (k, data) in &write.then {
            files.push((file_name(k), &data[..]));
        }
        let same_dir = write
            .then
            .iter()
            .all(|(k, _)| self.path(k).parent() == Some(&dir));
        if !same_dir {
            return self.write_in_turn(key, write);
        }
        fsutil::create_dir_all_synced(&dir)?;
        // What stays: every entry but the files written and dead writers'
        // temp files (written under the repository lock, which this writer
        // holds). A directory cannot be linked: refused before anything is
        // made.
        let mut stay = Vec::new();
        for entry in fs::read_dir(&dir).at("cannot list", &dir)? {
            let entry = entry.at("cannot list", &dir)?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(TEMP_PREFIX)
                || files.iter().any(|(f, _)| **f == *name)
            {
                continue;
            }
            let from = entry.path();
            if entry.file_type().at("cannot stat", &from)?.is_dir() {
                return Err(RepoError::StrayDirectory {
                    repo: self.location(),
                    key: self.key_of(&from),
                });
            }
            stay.push((from, name));
        }
        let parent = fsutil::parent_dir(&dir);
        let mode = fs::metadata(&dir).at("cannot stat", &dir)?.permissions();
        // Removed on any failure before the swap; after it, it names the
        // old directory and is removed the same way.
        let new = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .permissions(mode.clone())
            .tempdir_in(parent)
            .at("cannot create a temp directory in", parent)?;
        fs::set_permissions(new.path(), mode).at("cannot set the mode of", new.path())?;
        for (from, name) in stay {
            fs::hard_link(&from, new.path().join(&name)).at("cannot link", &from)?;
        }
        for (i, (name, data)) in files.iter().enumerate() {
            let path = new.path().join(name);
            let mut file = File::create_new(&path).at("cannot create", &path)?;
            file.write_all(data).at("cannot write", &path)?;
            file.sync_all().at("cannot sync", &path)?;
            fault::point(if i == 0 {
                "index:written"
            } else {
                "signature:written"
            });
        }
        fsutil::sync_dir(new.path())?;
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            new.path(),
            rustix::fs::CWD,
            &dir,
            rustix::fs::RenameFlags::EXCHANGE,
        ) {
            Ok(()) => {}
            Err(
                rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP,
            ) => {
                drop(new);
                return self.write_in_turn(key, write);
            }
            Err(e) => return Err(PathError::new("cannot swap in", &dir, e.into()).into()),
        }
        fsutil::sync_dir(parent)?;
        fault::point("index:renamed");
        // The update is done; a directory left here is a sweep's to remove.
        let _ = new.close();
        fault::point("index:cleaned");
        Ok(())
    }

    /// Writes an update's objects one after the other, each atomically: a
    /// writer killed in between leaves the first without the others.
    fn write_in_turn(&self, key: &str, write: &Write) -> Result<(), RepoError> {
        let then = write.then.iter().map(|(k, d)| (k.as_str(), d));
        for (i, (key, data)) in std::iter::once((key, &write.data)).chain(then).enumerate() {
            let path = self.path(key);
            fsutil::create_dir_all_synced(path.parent().unwrap_or(&self.root))?;
            fsutil::write_atomic(&path, data)?;
            if i == 0 {
                fault::point("index:renamed");
            }
        }
        Ok(())
    }

    /// Every `.tmp-` file and directory in the tree (none inside another).
    fn temps(&self) -> Result<Vec<(PathBuf, bool)>, RepoError> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).at("cannot list", &dir)? {
                let entry = entry.at("cannot list", &dir)?;
                let path = entry.path();
                let kind = entry.file_type().at("cannot stat", &path)?;
                let temp = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
                if temp && (kind.is_file() || kind.is_dir()) {
                    out.push((path, kind.is_dir()));
                } else if kind.is_dir() {
                    stack.push(path);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every file key under `base` (dot-names skipped), and the identity
    /// of every directory read, as it was when the walk came to it.
    fn list_once(&self, base: &Path) -> Result<(Vec<String>, DirIds), RepoError> {
        let mut keys = Vec::new();
        let mut dirs = Vec::new();
        // Dot-names are writers' temp files and directories, not content.
        // Unsorted, so that each directory is read as the walk goes: a
        // sorted walk reads a directory whole when it opens it.
        let walk = walkdir::WalkDir::new(base)
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walk {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(base).to_owned();
                RepoError::Io(PathError::new("cannot list", &path, e.into()))
            })?;
            if entry.file_type().is_dir() {
                if let Some(id) = dir_id(entry.path()) {
                    dirs.push((entry.path().to_owned(), id));
                }
                if entry.depth() > 0 {
                    // The directory is open and not read yet.
                    fault::point("list:dir");
                }
                continue;
            }
            if !entry.file_type().is_file() {
                continue;
            }
            if let Ok(rel) = entry.path().strip_prefix(&self.root)
                && let Some(rel) = rel.to_str()
            {
                keys.push(rel.to_owned());
            }
        }
        keys.sort();
        Ok((keys, dirs))
    }

    fn key_of(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// How many times a listing is taken while directories are swapped under
/// it, before the last one is returned as it is.
const LIST_ATTEMPTS: usize = 10;

/// Directories and their identities (device, inode).
type DirIds = Vec<(PathBuf, (u64, u64))>;

/// A directory's identity (device, inode), or `None` if `path` names none.
fn dir_id(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// The last component of a key.
fn file_name(key: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(key.rsplit('/').next().unwrap_or(key))
}

/// Whether `root` (a directory with no repo.toml, looked at under the
/// repository lock) holds nothing but what creating a repository makes
/// before repo.toml: an empty `channels/`, a `blobs/` with at most an
/// empty `sha256/`, and the temp files of a dead creator. An empty
/// directory qualifies.
fn unfinished_creation(root: &Path) -> Result<bool, RepoError> {
    let only = |dir: &Path, allowed: &[&str]| -> Result<bool, RepoError> {
        for entry in fs::read_dir(dir).at("cannot list", dir)? {
            let entry = entry.at("cannot list", dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type().at("cannot stat", &entry.path())?;
            let ok = if name.starts_with(TEMP_PREFIX) {
                kind.is_file()
            } else {
                kind.is_dir() && allowed.contains(&name.as_str())
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    };
    Ok(only(root, &["blobs", "channels"])?
        && (!root.join("blobs").is_dir() || only(&root.join("blobs"), &["sha256"])?)
        && (!root.join("blobs/sha256").is_dir() || only(&root.join("blobs/sha256"), &[])?)
        && (!root.join("channels").is_dir() || only(&root.join("channels"), &[])?))
}

/// Removes a dead writer's temp directory; the bytes that leaves free
/// (files linked nowhere else).
fn remove_temp_dir(path: &Path, dry_run: bool) -> Result<u64, RepoError> {
    let mut freed = 0;
    for entry in fs::read_dir(path).at("cannot list", path)? {
        let entry = entry.at("cannot list", path)?;
        let meta = fs::symlink_metadata(entry.path()).at("cannot stat", &entry.path())?;
        if meta.is_file() && meta.nlink() == 1 {
            freed += meta.len();
        }
    }
    if !dry_run {
        fs::remove_dir_all(path).at("cannot remove", path)?;
        fsutil::sync_dir(fsutil::parent_dir(path))?;
    }
    Ok(freed)
}

/// Reads a small object whole, refusing one past [`MAX_SMALL_OBJECT`]
/// without reading it: a repository can be hostile.
fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, RepoError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PathError::new("cannot read", path, e).into()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_SMALL_OBJECT + 1)
        .read_to_end(&mut bytes)
        .at("cannot read", path)?;
    if bytes.len() as u64 > MAX_SMALL_OBJECT {
        return Err(RepoError::TooLarge {
            path: path.display().to_string(),
            max: MAX_SMALL_OBJECT,
        });
    }
    Ok(Some(bytes))
}

impl Backend for FsBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, RepoError> {
        read_opt(&self.path(key))
    }

    fn open(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>, RepoError> {
        let path = self.path(key);
        match File::open(&path) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PathError::new("cannot open", &path, e).into()),
        }
    }

    fn size(&self, key: &str) -> Result<Option<u64>, RepoError> {
        let path = self.path(key);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PathError::new("cannot stat", &path, e).into()),
        }
    }

    fn put_new(&self, key: &str, data: &mut dyn Read) -> Result<bool, RepoError> {
        let dest = self.path(key);
        if dest.exists() {
            return Ok(false);
        }
        let dir = dest.parent().unwrap_or(&self.root);
        // The temp file goes in the deepest directory that exists, so that
        // a write that fails creates nothing; the rest is made once the
        // data is complete.
        let mut tmp_dir = dir;
        while !tmp_dir.is_dir() && tmp_dir != self.root {
            tmp_dir = tmp_dir.parent().unwrap_or(&self.root);
        }
        let mut tmp = fsutil::temp_file_in(tmp_dir)?;
        let mut buf = vec![0; 1 << 20];
        let mut first = true;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(PathError::new("cannot read the data for", &dest, e).into()),
            };
            tmp.write_all(&buf[..n]).at("cannot write", tmp.path())?;
            if first {
                fault::point("blob:partial");
                first = false;
            }
        }
        fault::point("blob:written");
        fsutil::create_dir_all_synced(dir)?;
        let written = fsutil::persist_new(tmp, &dest)?;
        if written {
            fault::point("blob:renamed");
        }
        Ok(written)
    }

    fn update(&self, key: &str, f: &mut UpdateFn<'_>) -> Result<bool, RepoError> {
        fault::point("index:lock");
        let _lock = self.lock()?;
        let path = self.path(key);
        let current = read_opt(&path)?;
        let Some(write) = f(current.as_deref())? else {
            return Ok(false);
        };
        if write.then.is_empty() {
            let dir = path.parent().unwrap_or(&self.root);
            fsutil::create_dir_all_synced(dir)?;
            let mut tmp = fsutil::temp_file_in(dir)?;
            tmp.write_all(&write.data).at("cannot write", tmp.path())?;
            tmp.as_file().sync_all().at("cannot sync", tmp.path())?;
            fault::point("index:written");
            fsutil::persist(tmp, &path)?;
            fault::point("index:renamed");
        } else {
            self.write_together(key, &write)?;
        }
        Ok(true)
    }

    fn delete(&self, key: &str) -> Result<(), RepoError> {
        fsutil::remove_file_synced(&self.path(key))?;
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, RepoError> {
        let base = self.path(prefix);
        if !base.exists() {
            return Ok(Vec::new());
        }
        // A signed write swaps a channel's directory while readers list
        // without the lock: a listing that read a directory which has been
        // swapped since is taken again.
        for _ in 1..LIST_ATTEMPTS {
            let (keys, dirs) = self.list_once(&base)?;
            if dirs.iter().all(|(path, id)| dir_id(path) == Some(*id)) {
                return Ok(keys);
            }
        }
        Ok(self.list_once(&base)?.0)
    }

    fn lock(&self) -> Result<Box<dyn Send>, RepoError> {
        let dir = File::open(&self.root).at("cannot open repository", &self.root)?;
        dir.lock().at("cannot lock repository", &self.root)?;
        Ok(Box::new(dir))
    }

    fn sweep_abandoned(&self, dry_run: bool) -> Result<Sweep, RepoError> {
        // A temp file is abandoned when nobody holds its lock (see
        // `fsutil::temp_file_in`); index writers make theirs under the
        // repository lock, so none is seen here before its writer locks
        // it. Temp directories (a channel's directory being rebuilt) are
        // made and removed under the repository lock: with it held, every
        // one is a dead writer's.
        let _lock = self.lock()?;
        let mut sweep = Sweep::default();
        for (path, is_dir) in self.temps()? {
            let key = self.key_of(&path);
            let state = if is_dir {
                TempState::Abandoned(remove_temp_dir(&path, dry_run)?)
            } else {
                fsutil::remove_if_abandoned(&path, dry_run)?
            };
            match state {
                TempState::Abandoned(size) => {
                    sweep.abandoned.push(Abandoned { key, size });
                    if !dry_run {
                        fault::point("temp:removed");
                    }
                }
                TempState::Held => sweep.in_progress.push(key),
                TempState::Gone => {}
            }
        }
        Ok(sweep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_object_past_the_limit_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, _) = FsBackend::open(dir.path(), Open::CreateIfMissing).unwrap();
        let key = "channels/staging/webapp.json";
        fs::create_dir_all(dir.path().join("channels/staging")).unwrap();
        let file = File::create(dir.path().join(key)).unwrap();
        file.set_len(MAX_SMALL_OBJECT).unwrap();
        assert_eq!(
            backend.read(key).unwrap().map(|b| b.len() as u64),
            Some(MAX_SMALL_OBJECT)
        );
        file.set_len(MAX_SMALL_OBJECT + 1).unwrap();
        let err = backend.read(key).unwrap_err();
        assert!(matches!(err, RepoError::TooLarge { .. }), "{err}");
        assert!(
            err.to_string().contains("larger than the 67108864 bytes"),
            "{err}"
        );
        assert_eq!(backend.read("channels/staging/none.json").unwrap(), None);
    }
}
