//! File system helpers: I/O errors that carry their path, and atomic
//! writes (a temp file in the same directory, fsync, rename, fsync of the
//! directory) so a reader sees the old file or the new one, never half.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// An I/O error and the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{action} `{path}`: {source}")]
pub struct PathError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl PathError {
    pub fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        PathError {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// Attaches a path and an action to I/O results.
pub trait IoResultExt<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T, PathError>;
}

impl<T> IoResultExt<T> for io::Result<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T, PathError> {
        self.map_err(|source| PathError::new(action, path, source))
    }
}

/// A temp file in `dir`, named so a crashed writer's leftovers are easy to
/// recognise (`.tmp-…`) and never mistaken for content. Its writer holds
/// it under an exclusive `flock` from creation until the file is renamed
/// into place or dropped, so a `.tmp-` file that nobody holds is a dead
/// writer's, which [`remove_if_abandoned`] may remove.
pub fn temp_file_in(dir: &Path) -> Result<tempfile::NamedTempFile, PathError> {
    loop {
        // 0666 less the umask, like any file a program creates: artifacts,
        // blobs and indexes are meant to be read by other users (a web server).
        let tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)
            .at("cannot create a temp file in", dir)?;
        tmp.as_file().lock().at("cannot lock", tmp.path())?;
        // Between the creation and the lock the file was nobody's: a
        // sweep may have removed it then. It is ours only if its name
        // still leads to it.
        if same_file(tmp.as_file(), tmp.path()).at("cannot stat", tmp.path())? {
            return Ok(tmp);
        }
        // Not ours to delete any more: whatever has that name now is not
        // this file.
        let _ = tmp.into_temp_path().keep();
    }
}

/// Removes the file (or symlink) at `path` and syncs its directory;
/// nothing there is not an error. Returns whether there was one.
pub fn remove_file_synced(path: &Path) -> Result<bool, PathError> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(parent_dir(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(PathError::new("cannot remove", path, e)),
    }
}

/// Removes the directory tree at `path`; nothing there is not an error.
pub fn remove_dir_all_if_exists(path: &Path) -> Result<(), PathError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PathError::new("cannot remove", path, e)),
    }
}

/// The name every temp file and directory of a writer starts with.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Whether `path` names the file `file` has open (false if it names
/// nothing).
fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    let open = file.metadata()?;
    match fs::symlink_metadata(path) {
        Ok(named) => Ok(open.dev() == named.dev() && open.ino() == named.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// What [`remove_if_abandoned`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempState {
    /// Nobody held it: removed (or, in a dry run, would be). Its size.
    Abandoned(u64),
    /// A live writer holds it.
    Held,
    /// It was gone by the time it was looked at (renamed into place).
    Gone,
}

/// Removes the temp file at `path` if its writer is gone: nobody holds
/// the `flock` that [`temp_file_in`] takes. The file is removed while this
/// process holds the lock, so a writer that created it and has not locked
/// it yet finds its name gone once it does, and makes another. With
/// `dry_run`, says the same and removes nothing.
pub fn remove_if_abandoned(path: &Path, dry_run: bool) -> Result<TempState, PathError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(TempState::Gone),
        Err(e) => return Err(PathError::new("cannot open", path, e)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Ok(TempState::Held),
        Err(fs::TryLockError::Error(e)) => return Err(PathError::new("cannot lock", path, e)),
    }
    // Renamed into place between the open and the lock: not a temp file
    // any more.
    if !same_file(&file, path).at("cannot stat", path)? {
        return Ok(TempState::Gone);
    }
    let size = file.metadata().at("cannot stat", path)?.len();
    if !dry_run {
        fs::remove_file(path).at("cannot remove", path)?;
        sync_dir(parent_dir(path))?;
    }
    Ok(TempState::Abandoned(size))
}

/// Fsyncs a directory so a rename in it survives a power loss.
pub fn sync_dir(dir: &Path) -> Result<(), PathError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("cannot sync directory", dir)
}

/// The directory `path` is in: `.` for a bare file name (whose
/// `Path::parent` is the empty path, which no system call takes).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Moves a finished temp file into place: fsync, rename over `dest`, fsync
/// the directory.
pub fn persist(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<(), PathError> {
    tmp.as_file().sync_all().at("cannot sync", tmp.path())?;
    tmp.persist(dest)
        .map_err(|e| e.error)
        .at("cannot rename into", dest)?;
    sync_dir(parent_dir(dest))
}

/// Like [`persist`] but never replaces an existing `dest`; returns false
/// (and drops the temp file) when `dest` already exists.
pub fn persist_new(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<bool, PathError> {
    tmp.as_file().sync_all().at("cannot sync", tmp.path())?;
    match tmp.persist_noclobber(dest) {
        Ok(_) => {
            sync_dir(parent_dir(dest))?;
            Ok(true)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error).at("cannot rename into", dest),
    }
}

/// Writes `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<(), PathError> {
    let dir = parent_dir(dest);
    let mut tmp = temp_file_in(dir)?;
    tmp.write_all(bytes).at("cannot write", tmp.path())?;
    persist(tmp, dest)
}

/// Creates `dir` and its parents, fsyncing each directory it created and
/// the parent of the topmost, so the new entries survive a power loss.
pub fn create_dir_all_synced(dir: &Path) -> Result<(), PathError> {
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() {
        missing.push(cur.to_owned());
        match cur.parent() {
            Some(p) if !p.as_os_str().is_empty() => cur = p,
            _ => break,
        }
    }
    fs::create_dir_all(dir).at("cannot create directory", dir)?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_and_noclobber_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a/b/file");
        create_dir_all_synced(dest.parent().unwrap()).unwrap();
        write_atomic(&dest, b"one").unwrap();
        write_atomic(&dest, b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        let mut tmp = temp_file_in(dest.parent().unwrap()).unwrap();
        tmp.write_all(b"three").unwrap();
        assert!(!persist_new(tmp, &dest).unwrap());
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        let leftovers: Vec<_> = fs::read_dir(dest.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "the temp file is gone");
    }

    #[test]
    fn a_temp_file_is_abandoned_only_once_its_writer_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut tmp = temp_file_in(dir.path()).unwrap();
        tmp.write_all(b"half").unwrap();
        let path = tmp.path().to_owned();
        assert_eq!(remove_if_abandoned(&path, false).unwrap(), TempState::Held);
        assert!(path.exists());
        // The writer dies without removing it.
        drop(tmp.into_temp_path().keep().unwrap());
        assert_eq!(
            remove_if_abandoned(&path, true).unwrap(),
            TempState::Abandoned(4)
        );
        assert!(path.exists(), "a dry run removes nothing");
        assert_eq!(
            remove_if_abandoned(&path, false).unwrap(),
            TempState::Abandoned(4)
        );
        assert!(!path.exists());
        assert_eq!(remove_if_abandoned(&path, false).unwrap(), TempState::Gone);
    }
}
