//! The local-directory backend, berth's embedded default. Writes are a temp
//! file in the target directory, fsync, rename and a directory fsync;
//! compare-and-swap and gc hold an exclusive `flock` on the repository
//! directory itself, so no lock file ever appears in the tree.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::{
    Backend, MAX_SMALL_OBJECT, Open, REPO_TOML, RepoError, UpdateFn, config::NEW_REPO_TOML,
};
use crate::fsutil::{self, IoResultExt, PathError};

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
        let empty = fs::read_dir(root).at("cannot list", root)?.next().is_none();
        if !empty {
            return Err(RepoError::NotARepository {
                path: backend.location(),
            });
        }
        if how == Open::Existing {
            return Err(RepoError::NoRepository {
                path: backend.location(),
            });
        }
        // repo.toml goes last: until it is there the directory is "empty or
        // ours", and a crash leaves something the next publish can finish.
        for dir in ["blobs/sha256", "channels"] {
            fsutil::create_dir_all_synced(&root.join(dir))?;
        }
        fsutil::write_atomic(&root.join(REPO_TOML), NEW_REPO_TOML.as_bytes())?;
        Ok((backend, true))
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
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
        fsutil::create_dir_all_synced(dir)?;
        let mut tmp = fsutil::temp_file_in(dir)?;
        io::copy(data, tmp.as_file_mut()).at("cannot write", tmp.path())?;
        Ok(fsutil::persist_new(tmp, &dest)?)
    }

    fn update(&self, key: &str, f: &mut UpdateFn<'_>) -> Result<bool, RepoError> {
        let _lock = self.lock()?;
        let path = self.path(key);
        let current = read_opt(&path)?;
        match f(current.as_deref())? {
            None => Ok(false),
            Some(write) => {
                fsutil::create_dir_all_synced(path.parent().unwrap_or(&self.root))?;
                fsutil::write_atomic(&path, &write.data)?;
                for (key, data) in &write.then {
                    let path = self.path(key);
                    fsutil::create_dir_all_synced(path.parent().unwrap_or(&self.root))?;
                    fsutil::write_atomic(&path, data)?;
                }
                Ok(true)
            }
        }
    }

    fn delete(&self, key: &str) -> Result<(), RepoError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(fsutil::sync_dir(path.parent().unwrap_or(&self.root))?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(PathError::new("cannot delete", &path, e).into()),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, RepoError> {
        let base = self.path(prefix);
        if !base.exists() {
            return Ok(Vec::new());
        }
        let mut keys = Vec::new();
        for entry in walkdir::WalkDir::new(&base).sort_by_file_name() {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(&base).to_owned();
                RepoError::Io(PathError::new("cannot list", &path, e.into()))
            })?;
            if !entry.file_type().is_file() || entry.file_name().to_string_lossy().starts_with('.')
            {
                continue;
            }
            if let Ok(rel) = entry.path().strip_prefix(&self.root)
                && let Some(rel) = rel.to_str()
            {
                keys.push(rel.to_owned());
            }
        }
        Ok(keys)
    }

    fn lock(&self) -> Result<Box<dyn Send>, RepoError> {
        let dir = File::open(&self.root).at("cannot open repository", &self.root)?;
        dir.lock().at("cannot lock repository", &self.root)?;
        Ok(Box::new(dir))
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
