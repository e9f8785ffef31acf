//! Fetching a release's artifact into the node's cache
//! (`/var/lib/berth/cache/<sha256>.tar.zst`), streaming: it is hashed as it
//! is copied, never held in memory, and the download stops at the size the
//! channel index gives. A cached artifact is hashed again before use, so a
//! damaged cache is noticed and fetched anew rather than installed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use berth_core::digest::{self, HashingReader};
use berth_core::fsutil::{self, IoResultExt, PathError};
use berth_core::progress::{Progress, ProgressReader};
use berth_core::repo::{RepoError, Repository, blob_key};

use crate::layout::Layout;
use crate::resolve::Resolved;

/// The artifact in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub path: PathBuf,
    /// It was already in the cache, intact.
    pub cached: bool,
    /// A damaged cached copy was found and replaced.
    pub replaced_damaged: bool,
}

/// Why the artifact could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the repository `{repo}` has no artifact {key}, which its index lists")]
    Missing { repo: String, key: String },
    #[error(
        "the artifact {key} from `{repo}` is larger than the {expected} bytes its index gives; the download was stopped"
    )]
    TooLarge {
        repo: String,
        key: String,
        expected: u64,
    },
    #[error(
        "the artifact {key} from `{repo}` has the wrong digest: expected {expected}, got {actual} ({size} bytes)"
    )]
    Digest {
        repo: String,
        key: String,
        expected: String,
        actual: String,
        size: u64,
    },
    #[error("the download of {key} from `{repo}` failed: {reason}")]
    Download {
        repo: String,
        key: String,
        reason: String,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Io(#[from] PathError),
}

/// Puts the artifact of `release` in the cache, or checks the one there.
pub fn fetch(
    repo: &Repository,
    release: &Resolved,
    layout: &Layout,
    progress: &dyn Progress,
) -> Result<Fetched, FetchError> {
    let entry = &release.entry;
    let path = layout.cached_artifact(&entry.sha256);
    let mut replaced_damaged = false;
    match digest::sha256_file(&path) {
        Ok((sha, size)) if sha == entry.sha256 && size == entry.size => {
            return Ok(Fetched {
                path,
                cached: true,
                replaced_damaged: false,
            });
        }
        Ok(_) => replaced_damaged = true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(PathError::new("cannot read the cached artifact", &path, e).into()),
    }
    let key = blob_key(&entry.sha256);
    let blob = repo
        .open_blob(&entry.sha256)?
        .ok_or_else(|| FetchError::Missing {
            repo: repo.location(),
            key: key.clone(),
        })?;
    let cache = layout.cache_dir();
    fsutil::create_dir_all_synced(&cache)?;
    let mut tmp = fsutil::temp_file_in(&cache)?;
    progress.start("fetching", entry.size);
    // One byte more than expected is enough to know it is too large.
    let mut reader = HashingReader::new(ProgressReader::new(blob.take(entry.size + 1), progress));
    let copied = copy(&mut reader, tmp.as_file_mut());
    progress.finish();
    match copied {
        Ok(()) => {}
        Err(Copy::Read(e)) => {
            return Err(FetchError::Download {
                repo: repo.location(),
                key,
                reason: e.to_string(),
            });
        }
        Err(Copy::Write(e)) => {
            return Err(PathError::new("cannot write the cache", tmp.path(), e).into());
        }
    }
    let (actual, size) = reader.finish();
    if size > entry.size {
        return Err(FetchError::TooLarge {
            repo: repo.location(),
            key,
            expected: entry.size,
        });
    }
    if actual != entry.sha256 || size != entry.size {
        return Err(FetchError::Digest {
            repo: repo.location(),
            key,
            expected: entry.sha256.clone(),
            actual,
            size,
        });
    }
    fsutil::persist(tmp, &path)?;
    Ok(Fetched {
        path,
        cached: false,
        replaced_damaged,
    })
}

/// Which side of a copy failed.
enum Copy {
    Read(io::Error),
    Write(io::Error),
}

/// `io::copy` that tells a failed read (the repository: a connection cut
/// off after the retries, a stall) from a failed write (the node's disk).
fn copy(from: &mut impl Read, to: &mut impl Write) -> Result<(), Copy> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(Copy::Write)?;
    }
}

/// Opens a cached artifact for reading.
pub fn open_cached(fetched: &Fetched) -> Result<File, PathError> {
    File::open(&fetched.path).at("cannot open the cached artifact", &fetched.path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::progress::Silent;
    use berth_core::repo::{Open, ReleaseEntry};
    use std::path::Path;

    fn read_all(mut r: impl Read) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        v
    }

    fn setup(content: &[u8], index_size: u64) -> (tempfile::TempDir, Repository, Resolved, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = Repository::open(
            dir.path().join("repo").to_str().unwrap(),
            Open::CreateIfMissing,
        )
        .unwrap();
        let sha = digest::sha256_bytes(content);
        repo.put_blob(&sha, &mut &content[..]).unwrap();
        let resolved = Resolved {
            package: "webapp".into(),
            channel: "staging".into(),
            entry: ReleaseEntry {
                version: "1.0".into(),
                build: 1,
                sha256: sha,
                size: index_size,
                published: jiff::Timestamp::UNIX_EPOCH,
                promoted_from: None,
                yanked: false,
                source: Default::default(),
            },
            sequence: 1,
        };
        let layout = Layout::new(dir.path().join("node"));
        (dir, repo, resolved, layout)
    }

    #[test]
    fn fetches_once_then_uses_the_cache() {
        let (_d, repo, resolved, layout) = setup(b"artifact bytes", 14);
        let first = fetch(&repo, &resolved, &layout, &Silent).unwrap();
        assert!(!first.cached);
        assert_eq!(read_all(open_cached(&first).unwrap()), b"artifact bytes");
        let second = fetch(&repo, &resolved, &layout, &Silent).unwrap();
        assert!(second.cached);
    }

    #[test]
    fn a_damaged_cache_is_fetched_again() {
        let (_d, repo, resolved, layout) = setup(b"artifact bytes", 14);
        let fetched = fetch(&repo, &resolved, &layout, &Silent).unwrap();
        std::fs::write(&fetched.path, b"artifact bytez").unwrap();
        let again = fetch(&repo, &resolved, &layout, &Silent).unwrap();
        assert!(!again.cached && again.replaced_damaged);
        assert_eq!(read_all(open_cached(&again).unwrap()), b"artifact bytes");
    }

    #[test]
    fn a_download_stops_at_the_size_of_the_index() {
        let (_d, repo, resolved, layout) = setup(b"artifact bytes", 5);
        let err = fetch(&repo, &resolved, &layout, &Silent).unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { expected: 5, .. }),
            "{err}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(layout.cache_dir()).unwrap().collect();
        assert!(leftovers.is_empty(), "nothing is left in the cache");
    }

    #[test]
    fn wrong_bytes_are_refused_with_both_digests() {
        let (_d, repo, mut resolved, layout) = setup(b"artifact bytes", 14);
        // The index promises other bytes than the blob holds.
        let wrong = digest::sha256_bytes(b"other");
        let root = Path::new(&repo.location()).to_owned();
        let moved = root.join(blob_key(&wrong));
        std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
        std::fs::rename(root.join(blob_key(&resolved.entry.sha256)), &moved).unwrap();
        resolved.entry.sha256 = wrong.clone();
        let err = fetch(&repo, &resolved, &layout, &Silent).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&wrong) && text.contains("wrong digest"),
            "{text}"
        );
        assert!(!layout.cached_artifact(&wrong).exists());
    }

    #[test]
    fn a_blob_missing_from_the_repository_is_named() {
        let (_d, repo, mut resolved, layout) = setup(b"artifact bytes", 14);
        resolved.entry.sha256 = digest::sha256_bytes(b"never published");
        let err = fetch(&repo, &resolved, &layout, &Silent).unwrap_err();
        assert!(matches!(err, FetchError::Missing { .. }), "{err}");
    }
}
