//! The repository: a tree of plain files that a directory, a static HTTP
//! server or an S3 bucket can hold, the same layout on every backend.
//!
//! ```text
//! repo.toml                               channel policies
//! blobs/sha256/<2 hex>/<64 hex>.tar.zst   artifacts, content-addressed, immutable
//! channels/<channel>/<package>.json       a channel's index of one package
//! channels/<channel>/<package>.json.minisig  its signature, when signed
//! ```
//!
//! Readers need only GET. Writers go through a [`Backend`]: blobs are put
//! only when absent and appear atomically; indexes change only through
//! [`Backend::update`], a compare-and-swap, so concurrent publishers never
//! lose an entry.

mod config;
mod fs;
mod index;
mod object;
mod trust;

use std::io::Read;

pub use config::{ChannelPolicy, NEW_REPO_TOML, RepoConfig};
pub use fs::FsBackend;
pub use index::{ChannelIndex, INDEX_FORMAT, ReleaseEntry};
pub use object::{HttpAuth, ObjectBackend, RemoteKind, RemoteOptions, Secret};
pub use trust::{
    DEFAULT_LIFETIME, IndexOrigin, IndexSigner, Lifetime, SIGNATURE_SUFFIX, TrustError,
    verify_index,
};

use crate::digest::{HashingReader, is_sha256_hex};
use crate::fsutil::PathError;
use crate::name::{self, InvalidName};
use crate::sign::SignError;
use crate::{Diagnose, Fault};

/// The most bytes a small object (repo.toml, an index, a signature) may
/// have: an index of 100,000 releases is about 40 MB. Past it a reader
/// refuses the object instead of holding it in memory.
pub const MAX_SMALL_OBJECT: u64 = 64 << 20;

/// The repository's policy file, which also marks a directory as a repository.
pub const REPO_TOML: &str = "repo.toml";

/// The key of an artifact blob.
pub fn blob_key(sha256: &str) -> String {
    format!("blobs/sha256/{}/{sha256}.tar.zst", &sha256[..2])
}

/// The key of a channel's index of one package.
pub fn index_key(channel: &str, package: &str) -> String {
    format!("channels/{channel}/{package}.json")
}

/// The key of the signature of a channel's index of one package.
pub fn signature_key(channel: &str, package: &str) -> String {
    format!("{}{SIGNATURE_SUFFIX}", index_key(channel, package))
}

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("unsupported repository `{url}`: {reason}")]
    UnsupportedUrl { url: String, reason: String },
    #[error(
        "`{path}` exists but is not a berth repository: it is not empty and has no `{REPO_TOML}`"
    )]
    NotARepository { path: String },
    #[error("there is no berth repository at `{path}`")]
    NoRepository { path: String },
    #[error("`{path}` is not a berth repository directory: it is a file")]
    NotADirectory { path: String },
    #[error("`{key}` in `{repo}` is invalid: {reason}")]
    Invalid {
        repo: String,
        key: String,
        reason: String,
    },
    #[error(transparent)]
    Name(#[from] InvalidName),
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("`{REPO_TOML}` in `{repo}` is invalid: {reason}")]
    BadConfig { repo: String, reason: String },
    #[error("the update was abandoned")]
    Aborted,
    #[error("`{path}` is larger than the {max} bytes an index, signature or repo.toml may have")]
    TooLarge { path: String, max: u64 },
    #[error("`{key}` in `{repo}` disappeared while it was being used: {reason}")]
    Vanished {
        repo: String,
        key: String,
        reason: String,
    },
    #[error(
        "the index of `{package}` in channel `{channel}` at `{repo}` is signed, and this write would leave it unsigned"
    )]
    SigningKeyNeeded {
        repo: String,
        channel: String,
        package: String,
    },
    #[error(
        "the index of `{package}` in channel `{channel}` at `{repo}` is not signed: signing a change to it, or what is copied from it, would vouch for entries nobody signed"
    )]
    UnsignedContent {
        repo: String,
        channel: String,
        package: String,
    },
    #[error(
        "the index of `{package}` in channel `{channel}` at `{repo}` does not verify with the signing key, so what it lists may have been altered: {source}"
    )]
    ContentSignature {
        repo: String,
        channel: String,
        package: String,
        #[source]
        source: Box<SignError>,
    },
    #[error(
        "`{key}` in `{repo}` is a directory inside a channel's directory: it is not part of a repository, and a signed write, which rebuilds the channel's directory, cannot keep it"
    )]
    StrayDirectory { repo: String, key: String },
    #[error(
        "blob {sha256} was not stored in `{repo}`: the data read for it hashes to {found}, so it changed after it was hashed"
    )]
    ChangedWhileStored {
        repo: String,
        sha256: String,
        found: String,
    },
    #[error("cannot reach `{key}` at `{repo}`: {reason}")]
    Remote {
        repo: String,
        key: String,
        reason: String,
    },
    #[error("the repository `{repo}` cannot be written here: {reason}")]
    ReadOnly { repo: String, reason: String },
    #[error("cannot sign the index of `{package}` in channel `{channel}`: {source}")]
    Sign {
        channel: String,
        package: String,
        #[source]
        source: SignError,
    },
}

impl Diagnose for RepoError {
    fn fault(&self) -> Fault {
        match self {
            RepoError::Sign { source, .. } => source.fault(),
            RepoError::Io(_)
            | RepoError::Invalid { .. }
            | RepoError::TooLarge { .. }
            | RepoError::Vanished { .. }
            | RepoError::Remote { .. }
            | RepoError::Aborted => Fault::Failure,
            _ => Fault::Input,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            RepoError::UnsupportedUrl { .. } => Some(
                "give a directory path, a `file:///absolute/path`, an `http(s)://host/path` or an `s3://bucket/prefix` URL (docs/repository.md)".into(),
            ),
            RepoError::Remote { .. } => Some(
                "check the URL, the network and the credentials; an https:// server whose certificate comes from a private CA needs that CA's certificate (the agent's `--ca-cert`); the request was tried again with backoff before this error (the `retries` setting)".into(),
            ),
            RepoError::ReadOnly { .. } => Some(
                "publish into the storage the server serves (a directory or an s3:// bucket); agents read it over HTTP".into(),
            ),
            RepoError::NotARepository { .. } | RepoError::NotADirectory { .. } => Some(
                "point `--repo` at an existing repository, or at a missing or empty directory for `packager publish` to create one".into(),
            ),
            RepoError::NoRepository { .. } => Some(
                "check `--repo`; `packager publish` creates a repository in a missing or empty directory".into(),
            ),
            RepoError::Name(e) => Some(e.hint().into()),
            RepoError::BadConfig { .. } => Some(
                "fix the file by hand; its keys are described in docs/repository.md".into(),
            ),
            RepoError::Invalid { .. } | RepoError::TooLarge { .. } => Some(
                "the repository was changed by hand or by another tool; restore the file from a backup or fix it".into(),
            ),
            RepoError::SigningKeyNeeded { .. } => Some(
                "pass `--sign-key FILE` (or set BERTH_SIGN_KEY) with the channel's secret key; to stop signing it on purpose, delete its `.minisig` first".into(),
            ),
            RepoError::Sign { source, .. } => source.hint(),
            RepoError::StrayDirectory { key, .. } => Some(format!(
                "move `{key}` out of the repository, then run the command again; nothing was written"
            )),
            RepoError::Vanished { .. } => Some(
                "a `packager gc` removed it while this command ran; nothing was left half done: run the command again (or once no gc is running)".into(),
            ),
            RepoError::ChangedWhileStored { .. } => Some(
                "the artifact was modified while it was being published (is a build writing the same file?); publish it again once it is complete".into(),
            ),
            RepoError::UnsignedContent { channel, .. } => Some(format!(
                "if its content is what you published (`packager list --channel {channel}`), adopt it on purpose: `packager resign --channel {channel} --sign-key KEY`"
            )),
            RepoError::ContentSignature { channel, .. } => Some(format!(
                "if the channel was signed with an earlier key, re-sign it with the current one (`packager resign --channel {channel}`, docs/trust.md); otherwise check the repository before promoting anything"
            )),
            _ => None,
        }
    }
}

/// What [`Backend::update`] writes: the object's new content, and other
/// small objects that go with it (an index's signature), while the update
/// still excludes every other writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub data: Vec<u8>,
    pub then: Vec<(String, Vec<u8>)>,
}

/// The read-modify-write step of [`Backend::update`]: current content in,
/// what to write (or `None` for no change) out.
pub type UpdateFn<'a> = dyn FnMut(Option<&[u8]>) -> Result<Option<Write>, RepoError> + 'a;

/// Storage for a repository. Keys are `/`-separated paths from the root.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Where the repository is, for messages.
    fn location(&self) -> String;
    /// The whole content of a small object (repo.toml, an index).
    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, RepoError>;
    /// The content of a small object unless it is still the one `known`
    /// describes (an HTTP conditional GET: `If-None-Match` with the ETag,
    /// `If-Modified-Since` with the date). A backend without validators
    /// reads the object as [`Backend::read`] does and returns empty
    /// [`Validators`], which a caller has nothing to keep of.
    fn read_if_changed(
        &self,
        key: &str,
        known: Option<&Validators>,
    ) -> Result<Conditional, RepoError> {
        let _ = known;
        Ok(match self.read(key)? {
            None => Conditional::Missing,
            Some(bytes) => Conditional::Changed {
                bytes,
                validators: Validators::default(),
            },
        })
    }
    /// A stream of an object's content (a blob).
    fn open(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>, RepoError>;
    /// The size of an object, or `None` when it does not exist.
    fn size(&self, key: &str) -> Result<Option<u64>, RepoError>;
    /// Streams `data` into `key` unless `key` exists; the object appears
    /// whole or not at all. Returns whether it was written.
    fn put_new(&self, key: &str, data: &mut dyn Read) -> Result<bool, RepoError>;
    /// Compare-and-swap of a small object: `f` sees the current content and
    /// returns the new one (`None` leaves it as it is). The write happens only
    /// if nobody else wrote in between; `f` may be called again to retry.
    /// The objects of [`Write::then`] are written with it, before any other
    /// writer's update of the same key: where the backend can, they appear
    /// together (a local directory swaps the directory that holds them),
    /// else after it. Returns whether it wrote.
    fn update(&self, key: &str, f: &mut UpdateFn<'_>) -> Result<bool, RepoError>;
    /// Deletes an object; a missing one is not an error.
    fn delete(&self, key: &str) -> Result<(), RepoError>;
    /// Every key under `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>, RepoError>;
    /// Holds off every other writer's [`Backend::update`] until dropped: gc
    /// sweeps blobs under it so no index can start referencing one it
    /// deletes. Not to be held while calling `update` or
    /// `sweep_abandoned` on the same backend.
    fn lock(&self) -> Result<Box<dyn Send>, RepoError>;
    /// Removes what writers that died left of writes they never finished
    /// (on a directory, a killed publisher's temp files; on object
    /// storage, its multipart uploads never completed), and never a write
    /// a live writer is still making; reports both. With `dry_run`,
    /// removes nothing.
    fn sweep_abandoned(&self, dry_run: bool) -> Result<Sweep, RepoError>;
}

/// What a server said identifies one version of an object: its ETag and
/// its modification time, for a conditional read
/// ([`Backend::read_if_changed`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<jiff::Timestamp>,
}

impl Validators {
    /// Whether there is anything to revalidate with.
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// What a conditional read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional {
    /// The object does not exist.
    Missing,
    /// The object is still the one the validators describe (HTTP 304).
    NotModified,
    /// The object's content, and what identifies this version of it.
    Changed {
        bytes: Vec<u8>,
        validators: Validators,
    },
}

/// A write that was begun and never finished, and whose writer is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abandoned {
    /// Where it is, from the repository's root (a `.tmp-` name).
    pub key: String,
    /// The bytes its removal frees.
    pub size: u64,
}

/// What [`Backend::sweep_abandoned`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Removed (or, in a dry run, to be removed).
    pub abandoned: Vec<Abandoned>,
    /// Writes in progress, left alone.
    pub in_progress: Vec<String>,
}

/// An index's bytes as stored, and its signature's, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIndex {
    pub bytes: Vec<u8>,
    pub signature: Option<Vec<u8>>,
}

/// A repository opened on a backend, with its policies read.
#[derive(Debug)]
pub struct Repository {
    backend: Box<dyn Backend>,
    config: RepoConfig,
    signer: Option<IndexSigner>,
}

/// How a repository location was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// It must exist.
    Existing,
    /// Create it when the location is missing or empty.
    CreateIfMissing,
}

impl Repository {
    /// Opens the repository at `url` (a path or `file://` URL). With
    /// [`Open::CreateIfMissing`] a missing or empty directory becomes a new
    /// repository; the second value says whether that happened.
    pub fn open(url: &str, how: Open) -> Result<(Repository, bool), RepoError> {
        Repository::open_with(url, how, &RemoteOptions::default())
    }

    /// [`Repository::open`] with the client settings for a remote
    /// repository (`http(s)://`, `s3://`).
    pub fn open_with(
        url: &str,
        how: Open,
        remote: &RemoteOptions,
    ) -> Result<(Repository, bool), RepoError> {
        let (backend, created): (Box<dyn Backend>, bool) =
            match ObjectBackend::for_url(url, remote)? {
                Some(backend) => (Box::new(backend), false),
                None => {
                    let path = local_path(url)?;
                    let (backend, created) = FsBackend::open(&path, how)?;
                    (Box::new(backend), created)
                }
            };
        let config = match backend.read(REPO_TOML)? {
            Some(bytes) => RepoConfig::parse(&bytes).map_err(|reason| RepoError::BadConfig {
                repo: backend.location(),
                reason,
            })?,
            None => {
                return Err(RepoError::NoRepository {
                    path: backend.location(),
                });
            }
        };
        Ok((
            Repository {
                backend,
                config,
                signer: None,
            },
            created,
        ))
    }

    /// Signs every index this repository writes from now on. Without a
    /// signer, a write to an index that has a signature is refused.
    pub fn set_signer(&mut self, signer: Option<IndexSigner>) {
        self.signer = signer;
    }

    /// A channel's index of a package to copy entries from into an index
    /// this repository signs: with a signer, it must be signed by that
    /// same key, or the copy would sign what an intruder wrote. Without a
    /// signer, [`Repository::index`].
    pub fn index_to_copy_from(
        &self,
        channel: &str,
        package: &str,
    ) -> Result<Option<ChannelIndex>, RepoError> {
        let Some(signer) = &self.signer else {
            return self.index(channel, package);
        };
        // The index and its signature, read while no writer is between
        // the two.
        let stored = {
            let _lock = self.backend.lock()?;
            self.index_bytes(channel, package)?
        };
        let Some(stored) = stored else {
            return Ok(None);
        };
        self.check_signed_by(signer, channel, package, &stored)?;
        self.parse_index(
            &index_key(channel, package),
            &stored.bytes,
            channel,
            package,
        )
        .map(Some)
    }

    /// Refuses an index that `signer`'s own key did not sign as it is.
    fn check_signed_by(
        &self,
        signer: &IndexSigner,
        channel: &str,
        package: &str,
        stored: &StoredIndex,
    ) -> Result<(), RepoError> {
        let Some(signature) = &stored.signature else {
            return Err(RepoError::UnsignedContent {
                repo: self.location(),
                channel: channel.to_owned(),
                package: package.to_owned(),
            });
        };
        let origin = format!("`{}`", signature_key(channel, package));
        let checked = crate::sign::Signature::parse_bytes(signature, &origin)
            .and_then(|sig| crate::sign::verify(&[signer.public_key()], &stored.bytes[..], &sig));
        match checked {
            Ok(_) => Ok(()),
            Err(source) => Err(RepoError::ContentSignature {
                repo: self.location(),
                channel: channel.to_owned(),
                package: package.to_owned(),
                source: Box::new(source),
            }),
        }
    }

    /// The key that signs this repository's writes, if one does.
    pub fn signer_key_id(&self) -> Option<crate::sign::KeyId> {
        self.signer.as_ref().map(IndexSigner::key_id)
    }

    /// A channel's index of a package as stored, with its signature if it
    /// has one: the bytes to verify. They are two reads: a reader that
    /// races a writer may get the index of one write and the signature of
    /// another (and should read again).
    pub fn index_bytes(
        &self,
        channel: &str,
        package: &str,
    ) -> Result<Option<StoredIndex>, RepoError> {
        name::check_channel(channel)?;
        name::check_package_name(package)?;
        let Some(bytes) = self.backend.read(&index_key(channel, package))? else {
            return Ok(None);
        };
        let signature = self.backend.read(&signature_key(channel, package))?;
        Ok(Some(StoredIndex { bytes, signature }))
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The channels that hold at least one index, sorted.
    pub fn channels(&self) -> Result<Vec<String>, RepoError> {
        let mut out: Vec<String> = self
            .backend
            .list("channels/")?
            .iter()
            .filter_map(|k| parse_index_key(k).map(|(c, _)| c.to_owned()))
            .collect();
        out.dedup();
        Ok(out)
    }

    /// Every (channel, package) that has an index, sorted.
    pub fn indexes(&self) -> Result<Vec<(String, String)>, RepoError> {
        Ok(self
            .backend
            .list("channels/")?
            .iter()
            .filter_map(|k| parse_index_key(k).map(|(c, p)| (c.to_owned(), p.to_owned())))
            .collect())
    }

    /// A channel's index of a package, if it has one.
    pub fn index(&self, channel: &str, package: &str) -> Result<Option<ChannelIndex>, RepoError> {
        name::check_channel(channel)?;
        name::check_package_name(package)?;
        let key = index_key(channel, package);
        match self.backend.read(&key)? {
            None => Ok(None),
            Some(bytes) => self.parse_index(&key, &bytes, channel, package).map(Some),
        }
    }

    fn parse_index(
        &self,
        key: &str,
        bytes: &[u8],
        channel: &str,
        package: &str,
    ) -> Result<ChannelIndex, RepoError> {
        ChannelIndex::parse(bytes, channel, package).map_err(|reason| RepoError::Invalid {
            repo: self.location(),
            key: key.to_owned(),
            reason,
        })
    }

    /// Changes a channel's index of a package by compare-and-swap: `f` gets
    /// the current index (a new empty one for a first publish) and returns
    /// whether it changed it; a changed index gets the next sequence number
    /// and is written only if no other writer got in first, else `f` runs
    /// again on the newer index. With a signer the index gets a new expiry
    /// and its signature is written after it; without one, an index that
    /// has a signature is not written ([`RepoError::SigningKeyNeeded`]).
    /// Returns the index as written (or as found, when `f` changed nothing)
    /// and whether it was written.
    pub fn update_index<E: From<RepoError>>(
        &self,
        channel: &str,
        package: &str,
        f: &mut dyn FnMut(&mut ChannelIndex) -> Result<bool, E>,
    ) -> Result<(ChannelIndex, bool), E> {
        self.update(channel, package, false, f)
    }

    /// [`Repository::update_index`] for `packager resign`: with a signer,
    /// the index is signed as it is found, whoever signed it before (or
    /// nobody): the operator's explicit act of adopting its content, as
    /// after a key rotation. Every other write refuses to sign a change to
    /// an index its key did not sign as it is.
    pub fn adopt_index<E: From<RepoError>>(
        &self,
        channel: &str,
        package: &str,
        f: &mut dyn FnMut(&mut ChannelIndex) -> Result<bool, E>,
    ) -> Result<(ChannelIndex, bool), E> {
        self.update(channel, package, true, f)
    }

    fn update<E: From<RepoError>>(
        &self,
        channel: &str,
        package: &str,
        adopt: bool,
        f: &mut dyn FnMut(&mut ChannelIndex) -> Result<bool, E>,
    ) -> Result<(ChannelIndex, bool), E> {
        name::check_channel(channel).map_err(RepoError::from)?;
        name::check_package_name(package).map_err(RepoError::from)?;
        let key = index_key(channel, package);
        let mut result = None;
        // The backend's closure speaks RepoError; the caller's own error
        // waits here while the backend unwinds.
        let mut refused: Option<E> = None;
        let wrote = self.backend.update(&key, &mut |current| {
            let mut index = match current {
                Some(bytes) => self.parse_index(&key, bytes, channel, package)?,
                None => ChannelIndex::new(channel, package),
            };
            let changed = match f(&mut index) {
                Ok(changed) => changed,
                Err(e) => {
                    refused = Some(e);
                    return Err(RepoError::Aborted);
                }
            };
            if changed
                && !adopt
                && let (Some(signer), Some(bytes)) = (&self.signer, current)
            {
                let stored = StoredIndex {
                    bytes: bytes.to_vec(),
                    signature: self.backend.read(&signature_key(channel, package))?,
                };
                self.check_signed_by(signer, channel, package, &stored)?;
            }
            let write = if changed {
                index.sequence += 1;
                index.updated = jiff::Timestamp::now();
                index.sort();
                Some(self.signed_write(&mut index)?)
            } else {
                None
            };
            result = Some(index);
            Ok(write)
        });
        if let Some(e) = refused {
            return Err(e);
        }
        let wrote = wrote?;
        let index = result.expect("update calls its closure at least once");
        Ok((index, wrote))
    }

    /// Refuses early what [`Repository::update_index`] would refuse about
    /// signing (no key for a signed index; a key that did not sign the
    /// index as it is), before a command uploads anything.
    pub fn check_signing(&self, channel: &str, package: &str) -> Result<(), RepoError> {
        if let Some(signer) = &self.signer {
            // The index and its signature are two objects: read them while
            // no writer is between the two.
            let _lock = self.backend.lock()?;
            if let Some(stored) = self.index_bytes(channel, package)? {
                self.check_signed_by(signer, channel, package, &stored)?;
            }
        } else if self
            .backend
            .size(&signature_key(channel, package))?
            .is_some()
        {
            return Err(RepoError::SigningKeyNeeded {
                repo: self.location(),
                channel: channel.to_owned(),
                package: package.to_owned(),
            });
        }
        Ok(())
    }

    /// The bytes of a changed index, and its signature when signing.
    fn signed_write(&self, index: &mut ChannelIndex) -> Result<Write, RepoError> {
        let sig_key = signature_key(&index.channel, &index.package);
        match &self.signer {
            Some(signer) => {
                let (data, signature) =
                    signer
                        .sign(index, index.updated)
                        .map_err(|source| RepoError::Sign {
                            channel: index.channel.clone(),
                            package: index.package.clone(),
                            source,
                        })?;
                Ok(Write {
                    data,
                    then: vec![(sig_key, signature)],
                })
            }
            None => {
                if self.backend.size(&sig_key)?.is_some() {
                    return Err(RepoError::SigningKeyNeeded {
                        repo: self.location(),
                        channel: index.channel.clone(),
                        package: index.package.clone(),
                    });
                }
                index.expires = None;
                Ok(Write {
                    data: index.to_json(),
                    then: Vec::new(),
                })
            }
        }
    }

    /// Every channel's entry for one release, sorted by channel.
    pub fn find_release(
        &self,
        package: &str,
        version: &str,
        build: u64,
    ) -> Result<Vec<(String, ReleaseEntry)>, RepoError> {
        let mut found = Vec::new();
        for (channel, p) in self.indexes()? {
            if p != package {
                continue;
            }
            if let Some(index) = self.index(&channel, &p)?
                && let Some(e) = index.get(version, build)
            {
                found.push((channel, e.clone()));
            }
        }
        Ok(found)
    }

    /// Whether the blob of `sha256` is in the repository.
    pub fn has_blob(&self, sha256: &str) -> Result<bool, RepoError> {
        Ok(self.backend.size(&blob_key(sha256))?.is_some())
    }

    /// Stores a blob unless it is there. `data` is hashed as it is stored,
    /// and a blob whose bytes do not hash to `sha256` (a file that changed
    /// since the caller hashed it) is not stored
    /// ([`RepoError::ChangedWhileStored`]). Returns whether it was written.
    pub fn put_blob(&self, sha256: &str, data: &mut dyn Read) -> Result<bool, RepoError> {
        assert!(is_sha256_hex(sha256), "blob keys are sha256 digests");
        let mut checked = CheckedReader {
            inner: HashingReader::new(data),
            expected: sha256,
            found: None,
        };
        let result = self.backend.put_new(&blob_key(sha256), &mut checked);
        match checked.found {
            Some(found) => Err(RepoError::ChangedWhileStored {
                repo: self.location(),
                sha256: sha256.to_owned(),
                found,
            }),
            None => result,
        }
    }

    /// A stream of the blob of `sha256`.
    pub fn open_blob(&self, sha256: &str) -> Result<Option<Box<dyn Read + Send>>, RepoError> {
        self.backend.open(&blob_key(sha256))
    }

    /// Every blob's digest, sorted.
    pub fn blobs(&self) -> Result<Vec<String>, RepoError> {
        Ok(self
            .backend
            .list("blobs/sha256/")?
            .iter()
            .filter_map(|k| {
                let name = k.rsplit('/').next()?;
                let sha = name.strip_suffix(".tar.zst")?;
                (is_sha256_hex(sha) && blob_key(sha) == *k).then(|| sha.to_owned())
            })
            .collect())
    }
}

/// A reader that hashes what passes and fails at the end of the data when
/// it does not hash to `expected`, so a writer stops before the data
/// becomes an object.
struct CheckedReader<'a, R> {
    inner: HashingReader<R>,
    expected: &'a str,
    /// The digest found, when it was not the expected one.
    found: Option<String>,
}

impl<R: Read> Read for CheckedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let digest = self.inner.digest();
            if digest != self.expected {
                self.found = Some(digest);
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the data does not hash to the blob's name",
                ));
            }
        }
        Ok(n)
    }
}

/// `channels/<channel>/<package>.json` to (channel, package); anything else
/// (signatures, stray files) is `None`.
fn parse_index_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("channels/")?;
    let (channel, file) = rest.split_once('/')?;
    let package = file.strip_suffix(".json")?;
    (name::check_channel(channel).is_ok() && name::check_package_name(package).is_ok())
        .then_some((channel, package))
}

/// The directory a `--repo` value names: a path, or a `file://` URL with an
/// absolute path.
fn local_path(url: &str) -> Result<std::path::PathBuf, RepoError> {
    if let Some(rest) = url.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(RepoError::UnsupportedUrl {
                url: url.into(),
                reason: "a file:// URL needs an absolute path, e.g. `file:///srv/berth`".into(),
            });
        }
        return Ok(rest.into());
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(RepoError::UnsupportedUrl {
            url: url.into(),
            reason: format!(
                "the `{scheme}://` scheme is not supported: berth reads and writes local directories, `http(s)://` servers (read only) and `s3://` buckets"
            ),
        });
    }
    if url.is_empty() {
        return Err(RepoError::UnsupportedUrl {
            url: url.into(),
            reason: "the location is empty".into(),
        });
    }
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_urls() {
        let sha = "ab".repeat(32);
        assert_eq!(blob_key(&sha), format!("blobs/sha256/ab/{sha}.tar.zst"));
        assert_eq!(
            parse_index_key("channels/staging/webapp.json"),
            Some(("staging", "webapp"))
        );
        assert_eq!(
            parse_index_key("channels/staging/webapp.json.minisig"),
            None
        );
        assert_eq!(parse_index_key("channels/Bad/webapp.json"), None);
        assert_eq!(
            local_path("file:///srv/r").unwrap(),
            std::path::PathBuf::from("/srv/r")
        );
        assert!(local_path("file://srv/r").is_err());
        assert!(local_path("ftp://x").is_err());
        assert_eq!(
            local_path("rel/dir").unwrap(),
            std::path::PathBuf::from("rel/dir")
        );
    }
}
