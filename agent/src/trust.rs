//! Which channel indexes the node believes. With trusted keys (agent.toml's
//! `trusted_keys`, or `--trusted-key`), an index is used only when it is
//! signed by one of them, names the channel and package asked for, has not
//! expired, and its sequence is not below the highest this node accepted
//! for that channel and package (kept in the state database). Without
//! keys the repository is unauthenticated, and the agent says so once per
//! run.
//!
//! Reading an index and its signature is two reads; a publisher that
//! writes both between them (it swaps them in together, or on some file
//! systems writes the signature right after the index) leaves the reader
//! an index of one write and a signature of another. A signature that
//! does not match is therefore read again (a few times, briefly) while
//! either file is changing; one that does not match bytes that stay put is
//! refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_core::repo::{
    ChannelIndex, IndexOrigin, RepoError, Repository, TrustError, index_key, verify_index,
};
use berth_core::sign::{PublicKey, SignError};

use crate::index_cache::{Entry, IndexCache, Read};
use crate::node::Node;
use crate::resolve::{IndexSource, ResolveError};
use crate::store::{Store, StoreError};

/// Reads of an index whose signature did not match, while it changed.
const RACE_RETRIES: u32 = 5;
const RACE_PAUSE: Duration = Duration::from_millis(100);
/// An accepted index that expires sooner than this is worth a warning: the
/// publisher's `packager resign` is late.
const EXPIRY_WARNING: jiff::SignedDuration = jiff::SignedDuration::from_hours(3 * 24);

static WARNED_UNAUTHENTICATED: AtomicBool = AtomicBool::new(false);

/// The node's trusted keys: empty means the repository is unauthenticated.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<PublicKey>,
}

/// A trusted key that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("trusted key `{}` cannot be used: {source}", path.display())]
pub struct KeyError {
    pub path: PathBuf,
    #[source]
    pub source: SignError,
}

impl Trust {
    /// agent.toml's `trusted_keys` (paths on the node, under `--root`)
    /// and the `--trusted-key` files.
    pub fn load(node: &Node) -> Result<Trust, KeyError> {
        let from_config = node
            .config
            .trusted_keys
            .iter()
            .map(|p| node.layout.path(&p.display().to_string()));
        let from_flags = node.options.trusted_keys.iter().cloned();
        let mut keys: Vec<PublicKey> = Vec::new();
        for path in from_config.chain(from_flags) {
            let key = PublicKey::read(&path).map_err(|source| KeyError {
                path: path.clone(),
                source,
            })?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(Trust { keys })
    }

    pub fn is_authenticated(&self) -> bool {
        !self.keys.is_empty()
    }
}

/// Reads indexes from a repository the way the node's trust says, and
/// remembers the sequences of the signed ones it accepted.
#[derive(Debug)]
pub struct IndexReader<'a> {
    repo: &'a Repository,
    trust: &'a Trust,
    /// The node's copies of the indexes, revalidated with the server.
    cache: IndexCache,
    /// The highest sequence accepted before, per (channel, package).
    highest: HashMap<(String, String), u64>,
    accepted: std::cell::RefCell<Vec<Accepted>>,
    /// The indexes read, to keep once the command succeeds.
    keep: std::cell::RefCell<Vec<Entry>>,
}

/// A signed index that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub channel: String,
    pub package: String,
    pub sequence: u64,
}

impl<'a> IndexReader<'a> {
    /// `store` is the node's state, when it has one yet: the sequences it
    /// accepted before.
    pub fn new(
        repo: &'a Repository,
        trust: &'a Trust,
        cache: IndexCache,
        store: Option<&Store>,
        package: &str,
        channels: &[String],
    ) -> Result<IndexReader<'a>, StoreError> {
        let mut highest = HashMap::new();
        if let Some(store) = store {
            for channel in channels {
                if let Some(seq) = store.channel_sequence(channel, package)? {
                    highest.insert((channel.clone(), package.to_owned()), seq);
                }
            }
        }
        if !trust.is_authenticated() && !WARNED_UNAUTHENTICATED.swap(true, Ordering::Relaxed) {
            berth_cli::warn(&format!(
                "the repository `{}` is not authenticated: this node has no trusted_keys, so it cannot tell a forged or replayed index from a real one (docs/trust.md)",
                repo.location()
            ));
        }
        Ok(IndexReader {
            repo,
            trust,
            cache,
            highest,
            accepted: Default::default(),
            keep: Default::default(),
        })
    }

    /// The signed indexes accepted so far.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.accepted.borrow().clone()
    }

    /// The indexes used so far that the node may keep a copy of
    /// ([`crate::index_cache`]), to be saved once the command succeeds.
    pub fn kept(&self) -> Vec<Entry> {
        self.keep.borrow().clone()
    }

    fn used(&self, read: Read) {
        if let Some(entry) = read.keep {
            self.keep.borrow_mut().push(entry);
        }
    }

    /// An unsigned repository's index: parsed, and read again from the
    /// server when the node's copy does not parse.
    fn unverified(
        &self,
        channel: &str,
        package: &str,
    ) -> Result<Option<ChannelIndex>, ResolveError> {
        let mut use_copy = true;
        loop {
            let Some(read) = self
                .cache
                .read(self.repo, channel, package, false, use_copy)?
            else {
                return Ok(None);
            };
            match ChannelIndex::parse(&read.stored.bytes, channel, package) {
                Ok(index) => {
                    self.used(read);
                    return Ok(Some(index));
                }
                Err(_) if read.from_copy => use_copy = false,
                Err(reason) => {
                    return Err(RepoError::Invalid {
                        repo: self.repo.location(),
                        key: index_key(channel, package),
                        reason,
                    }
                    .into());
                }
            }
        }
    }

    fn verified(&self, channel: &str, package: &str) -> Result<Option<ChannelIndex>, ResolveError> {
        let location = self.repo.location();
        let origin = IndexOrigin {
            repo: &location,
            channel,
            package,
        };
        let highest = self
            .highest
            .get(&(channel.to_owned(), package.to_owned()))
            .copied();
        let mut last = None;
        // The node's copy is used for the first read only: when the copy is
        // refused, the server's current bytes decide.
        let mut use_copy = true;
        for attempt in 0..=RACE_RETRIES {
            let Some(read) = self
                .cache
                .read(self.repo, channel, package, true, use_copy)?
            else {
                return Ok(None);
            };
            let from_copy = std::mem::replace(&mut use_copy, false) && read.from_copy;
            let stored = &read.stored;
            let now = jiff::Timestamp::now();
            match verify_index(
                &self.trust.keys,
                origin,
                &stored.bytes,
                stored.signature.as_deref(),
                now,
                highest,
            ) {
                Ok(index) => {
                    if let Some(expires) = index.expires
                        && expires.duration_since(now) < EXPIRY_WARNING
                    {
                        berth_cli::warn(&format!(
                            "the index of `{package}` in channel `{channel}` expires at {expires}; after that this node refuses it: the publisher should run `packager resign`"
                        ));
                    }
                    self.accepted.borrow_mut().push(Accepted {
                        channel: channel.to_owned(),
                        package: package.to_owned(),
                        sequence: index.sequence,
                    });
                    self.used(read);
                    return Ok(Some(index));
                }
                Err(_) if from_copy => {}
                Err(TrustError::Signature { source, .. })
                    if matches!(*source, SignError::BadSignature { .. })
                        && attempt < RACE_RETRIES
                        && last.as_ref() != Some(stored) =>
                {
                    last = Some(read.stored);
                    std::thread::sleep(RACE_PAUSE);
                }
                Err(e) => return Err(e.into()),
            }
        }
        unreachable!("the last attempt returns")
    }
}

impl IndexSource for IndexReader<'_> {
    fn index(&self, channel: &str, package: &str) -> Result<Option<ChannelIndex>, ResolveError> {
        if self.trust.is_authenticated() {
            self.verified(channel, package)
        } else {
            self.unverified(channel, package)
        }
    }
}

/// Records the sequences of `accepted` indexes under the node lock,
/// refusing one that another run of the agent has meanwhile gone past.
pub fn record(
    node: &crate::node::Node,
    store: &mut Store,
    accepted: &[Accepted],
    repo: &str,
) -> Result<(), crate::error::Error> {
    for a in accepted {
        if let Some(highest) = store.channel_sequence(&a.channel, &a.package)?
            && a.sequence < highest
        {
            return Err(TrustError::Rollback {
                repo: repo.to_owned(),
                channel: a.channel.clone(),
                package: a.package.clone(),
                sequence: a.sequence,
                highest,
            }
            .into());
        }
    }
    store.write(|w| {
        for a in accepted {
            w.accept_channel_sequence(&a.channel, &a.package, a.sequence)?;
        }
        Ok(())
    })?;
    if !accepted.is_empty() {
        write_sequences(node, store)?;
    }
    Ok(())
}

/// One `[[accepted]]` table of [`SEQUENCES_FILE`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceRecord {
    pub channel: String,
    pub package: String,
    pub sequence: u64,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequencesFile {
    #[serde(default)]
    pub accepted: Vec<SequenceRecord>,
}

/// The copy of the accepted sequences kept beside the state database, so
/// that `agent recover --rebuild` does not lower the node's floor.
pub const SEQUENCES_FILE: &str = "channel-sequences.toml";

/// Writes [`SEQUENCES_FILE`] from the database (atomically).
pub fn write_sequences(node: &crate::node::Node, store: &Store) -> Result<(), crate::error::Error> {
    let file = SequencesFile {
        accepted: store
            .channel_sequences()?
            .into_iter()
            .map(|(channel, package, sequence)| SequenceRecord {
                channel,
                package,
                sequence,
            })
            .collect(),
    };
    let text = toml::to_string(&file).expect("sequences serialize");
    let path = node.layout.state_dir().join(SEQUENCES_FILE);
    // A re-poll that accepted the same sequences leaves the file alone.
    if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    berth_core::fsutil::write_atomic(&path, text.as_bytes())?;
    Ok(())
}
