//! The node's copy of the channel indexes it last read from a repository
//! whose server gives validators (an HTTP server's `ETag` and
//! `Last-Modified`), so that the next read is a conditional GET: a server
//! that answers `304 Not Modified` sends no index at all, and the copy is
//! used. One file a (channel, package), `cache/indexes/<channel>/<package>.toml`,
//! holding the repository's URL, the index's and its signature's bytes and
//! validators, written whole (temp file and rename).
//!
//! The copy is checked exactly as the bytes a server sends are: the trust
//! checks (signature, channel and package, expiry, sequence floor) run on
//! whatever the bytes' source. A copy that is refused, damaged or from
//! another repository is not trusted to be current: the index is read
//! again without validators. It is written only when the command that
//! read it succeeds, with the trust floor (so a failed command leaves the
//! node as it was), and never by `--dry-run`.
//!
//! A local repository has no validators: nothing is kept for it.

use std::path::PathBuf;

use berth_core::fsutil::{self, PathError};
use berth_core::repo::{
    Conditional, RepoError, Repository, StoredIndex, Validators, index_key, signature_key,
};
use serde::{Deserialize, Serialize};

use crate::layout::Layout;

/// One object as kept: its bytes (an index or a signature is text) and
/// its validators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kept {
    #[serde(flatten)]
    pub validators: Validators,
    pub content: String,
}

/// The file of one (channel, package).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub repository: String,
    pub channel: String,
    pub package: String,
    pub index: Kept,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Kept>,
}

/// An index and its signature as read now.
#[derive(Debug)]
pub struct Read {
    pub stored: StoredIndex,
    /// Some of the bytes came from the node's copy (a 304).
    pub from_copy: bool,
    /// What to keep once the command succeeds, when the server gave
    /// validators.
    pub keep: Option<Entry>,
}

/// The node's index copies for one repository.
#[derive(Debug, Clone)]
pub struct IndexCache {
    dir: PathBuf,
    repository: String,
}

impl IndexCache {
    pub fn new(layout: &Layout, repository: &str) -> IndexCache {
        IndexCache {
            dir: layout.cache_dir().join("indexes"),
            repository: repository.to_owned(),
        }
    }

    fn file(&self, channel: &str, package: &str) -> PathBuf {
        self.dir.join(channel).join(format!("{package}.toml"))
    }

    /// The copy of (channel, package), if there is a readable one of this
    /// repository.
    fn load(&self, channel: &str, package: &str) -> Option<Entry> {
        let text = std::fs::read_to_string(self.file(channel, package)).ok()?;
        let entry: Entry = toml::from_str(&text).ok()?;
        (entry.repository == self.repository
            && entry.channel == channel
            && entry.package == package)
            .then_some(entry)
    }

    /// Writes `entry` unless the copy holds it already.
    pub fn save(&self, entry: &Entry) -> Result<(), PathError> {
        if self.load(&entry.channel, &entry.package).as_ref() == Some(entry) {
            return Ok(());
        }
        let path = self.file(&entry.channel, &entry.package);
        let dir = path.parent().expect("a copy's file is in a channel's dir");
        fsutil::create_dir_all_synced(dir)?;
        let text = toml::to_string(entry).expect("an index copy serializes");
        fsutil::write_atomic(&path, text.as_bytes())
    }

    /// Reads the index of (channel, package), and its signature when
    /// `signed`, from `repo`, conditionally on the copy when `use_copy`;
    /// `None` when the repository has no such index.
    pub fn read(
        &self,
        repo: &Repository,
        channel: &str,
        package: &str,
        signed: bool,
        use_copy: bool,
    ) -> Result<Option<Read>, RepoError> {
        berth_core::name::check_channel(channel)?;
        berth_core::name::check_package_name(package)?;
        let copy = use_copy.then(|| self.load(channel, package)).flatten();
        let Some(index) = read_one(
            repo,
            &index_key(channel, package),
            copy.as_ref().map(|c| &c.index),
        )?
        else {
            return Ok(None);
        };
        let signature = if signed {
            read_one(
                repo,
                &signature_key(channel, package),
                copy.as_ref().and_then(|c| c.signature.as_ref()),
            )?
        } else {
            None
        };
        let from_copy = index.1 || signature.as_ref().is_some_and(|s| s.1);
        let keep = keepable(&index.0).and_then(|kept_index| {
            let kept_signature = match &signature {
                None => None,
                Some(s) => Some(keepable(&s.0)?),
            };
            Some(Entry {
                repository: self.repository.clone(),
                channel: channel.to_owned(),
                package: package.to_owned(),
                index: kept_index,
                signature: kept_signature,
            })
        });
        Ok(Some(Read {
            stored: StoredIndex {
                bytes: index.0.0,
                signature: signature.map(|s| s.0.0),
            },
            from_copy,
            keep,
        }))
    }
}

/// Saves the copies of a command that succeeded. A copy that cannot be
/// written costs the next run a full read, not this one its result: a
/// warning says so.
pub fn save_all(cache: &IndexCache, entries: &[Entry]) {
    for entry in entries {
        if let Err(e) = cache.save(entry) {
            berth_cli::warn(&format!(
                "the copy of the index of `{}` in channel `{}` was not kept ({e}); the next run reads it whole",
                entry.package, entry.channel
            ));
        }
    }
}

/// One object: its bytes and validators, and whether they are the copy's
/// (the server said 304); `None` when it does not exist.
#[allow(clippy::type_complexity)]
fn read_one(
    repo: &Repository,
    key: &str,
    copy: Option<&Kept>,
) -> Result<Option<((Vec<u8>, Validators), bool)>, RepoError> {
    let known = copy.map(|c| &c.validators).filter(|v| !v.is_empty());
    match repo.backend().read_if_changed(key, known)? {
        Conditional::Missing => Ok(None),
        Conditional::Changed { bytes, validators } => Ok(Some(((bytes, validators), false))),
        Conditional::NotModified => match copy {
            Some(c) => Ok(Some((
                (c.content.clone().into_bytes(), c.validators.clone()),
                true,
            ))),
            // Not asked conditionally, yet answered so: read it plainly.
            None => Ok(repo
                .backend()
                .read(key)?
                .map(|bytes| ((bytes, Validators::default()), false))),
        },
    }
}

/// What to keep of an object read: only text with validators.
fn keepable((bytes, validators): &(Vec<u8>, Validators)) -> Option<Kept> {
    if validators.is_empty() {
        return None;
    }
    Some(Kept {
        validators: validators.clone(),
        content: String::from_utf8(bytes.clone()).ok()?,
    })
}
