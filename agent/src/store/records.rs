//! The rows of the state database as Rust types: ids, the states each row
//! moves through, and what the install and rollback code writes and reads.
//!
//! States are stored as the lowercase words docs/state.md documents, so a
//! `sqlite3` session reads them as they are; times are stored as unix
//! milliseconds and handed out as [`Timestamp`]s.

use std::fmt;
use std::path::{Path, PathBuf};

use berth_core::name::ReleaseId;
use jiff::Timestamp;
use rusqlite::Row;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// A transaction's id: what `agent logs TXN` takes and `BERTH_TXN` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub i64);

/// A release's row in the store (not to be confused with
/// [`ReleaseId`], the `name@version+build` a person writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReleaseRowId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId(pub i64);

/// One step of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StepId {
    pub txn: TxnId,
    /// 1 for the transaction's first step, then up by one.
    pub seq: u32,
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An enum stored as one of a fixed set of words, the same words the
/// schema's CHECK constraints allow.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value written as `text`, if it is one.
            pub fn from_text(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                match value.as_str()? {
                    $($text => Ok($name::$variant),)+
                    other => Err(FromSqlError::Other(
                        format!("unknown {} `{other}`", stringify!($name)).into(),
                    )),
                }
            }
        }
    };
}

text_enum! {
    /// Where a release stands on this node.
    ReleaseState {
        /// Unpacked or being unpacked; not yet proven.
        Installing = "installing",
        /// Switched in and its health check passed (or it has none).
        Healthy = "healthy",
        /// Its install failed, before or after the switch.
        Failed = "failed",
        /// It was current and a rollback replaced it.
        RolledBack = "rolled-back",
        /// It was healthy and a newer install replaced it.
        Superseded = "superseded",
    }
}

text_enum! {
    TxnKind {
        Install = "install",
        Rollback = "rollback",
        /// `agent gc` on one package: release dirs, snapshots and cached
        /// artifacts removed, one step each.
        Gc = "gc",
        /// `agent recover --rebuild`: the state database made again from
        /// what the node keeps on disk.
        Rebuild = "rebuild",
    }
}

text_enum! {
    /// How a transaction ended; `Running` until it does.
    TxnResult {
        /// Begun and not finished: after a crash, what recovery looks for.
        Running = "running",
        /// Everything it set out to do is done.
        Committed = "committed",
        /// It failed after changing something and was undone.
        RolledBack = "rolled-back",
        /// It failed; nothing it did needed undoing, or undoing failed too.
        Failed = "failed",
    }
}

text_enum! {
    StepState {
        Started = "started",
        Done = "done",
        Failed = "failed",
        /// It was done (or half done) and has been reversed.
        Undone = "undone",
    }
}

text_enum! {
    /// How a snapshot holds the replaced release's tree.
    SnapshotKind {
        /// The tree was unmodified: the cached artifact holds it already.
        ArtifactRef = "artifact-ref",
        /// The tree was modified on the node: packed as a tar.zst.
        TreeTarball = "tree-tarball",
    }
}

text_enum! {
    EventLevel {
        Info = "info",
        Warn = "warn",
        Error = "error",
    }
}

/// A release to insert, or to update when the same `name@version+build`
/// is installed again.
#[derive(Debug, Clone, Copy)]
pub struct NewRelease<'a> {
    pub release: &'a ReleaseId,
    /// The artifact's sha256, lowercase hex.
    pub sha256: &'a str,
    /// The artifact's MANIFEST.toml, as text.
    pub manifest: &'a str,
    /// The unpacked tree: `<root>/var/lib/berth/releases/<pkg>/<version>+<build>`.
    pub dir: &'a Path,
    pub data_epoch: u64,
    pub state: ReleaseState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub id: ReleaseRowId,
    pub release: ReleaseId,
    pub sha256: String,
    pub manifest: String,
    pub dir: PathBuf,
    pub state: ReleaseState,
    /// The release the package's target symlink should point at.
    pub current: bool,
    pub installed_at: Timestamp,
    pub data_epoch: u64,
}

/// A transaction and its steps, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub id: TxnId,
    pub kind: TxnKind,
    pub package: String,
    pub from: Option<ReleaseId>,
    /// `None` until the release to install is resolved.
    pub to: Option<ReleaseId>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub result: TxnResult,
    pub error: Option<String>,
    /// The process that ran it.
    pub pid: u32,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub seq: u32,
    pub name: String,
    pub state: StepState,
    pub started_at: Timestamp,
    /// When it last changed state: done, failed, then maybe undone.
    pub finished_at: Option<Timestamp>,
    pub detail: Option<String>,
}

/// A snapshot to record once its directory is complete.
#[derive(Debug, Clone, Copy)]
pub struct NewSnapshot<'a> {
    /// The release it holds (the one being replaced); the package is its.
    pub release: ReleaseRowId,
    pub txn: TxnId,
    /// When it was taken: now, unless a rebuild gives the time its
    /// snapshot record kept.
    pub created_at: Option<Timestamp>,
    pub kind: SnapshotKind,
    pub dir: &'a Path,
    /// Set exactly when `kind` is [`SnapshotKind::ArtifactRef`].
    pub artifact_sha256: Option<&'a str>,
    /// Bytes on disk under `dir` (a referenced artifact is not counted).
    pub bytes: u64,
    pub has_backup: bool,
    pub has_dumps: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub package: String,
    pub release: ReleaseId,
    pub release_row: ReleaseRowId,
    /// The held release's data epoch, which decides whether a code-only
    /// rollback to it is allowed.
    pub data_epoch: u64,
    pub created_at: Timestamp,
    pub kind: SnapshotKind,
    pub dir: PathBuf,
    pub artifact_sha256: Option<String>,
    pub bytes: u64,
    pub has_backup: bool,
    pub has_dumps: bool,
    pub txn: TxnId,
}

/// How a hook process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookExit {
    Code(i32),
    Signal(i32),
}

#[derive(Debug, Clone, Copy)]
pub struct NewHookRun<'a> {
    pub txn: TxnId,
    pub hook: &'a str,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// `None` only when the hook was killed for its timeout and how it
    /// ended was not observed.
    pub exit: Option<HookExit>,
    pub timed_out: bool,
    /// What the hook printed, or what the runner kept of it; the store cuts
    /// it to the first and last [`OUTPUT_KEEP_BYTES`] either way.
    ///
    /// [`OUTPUT_KEEP_BYTES`]: super::OUTPUT_KEEP_BYTES
    pub output: &'a str,
    /// Every byte the hook printed, kept or not.
    pub output_bytes_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    pub txn: TxnId,
    pub hook: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub exit: Option<HookExit>,
    pub timed_out: bool,
    /// The bounded output.
    pub output: String,
    /// How many bytes the hook wrote in all.
    pub output_bytes_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub time: Timestamp,
    pub package: String,
    pub txn: Option<TxnId>,
    pub level: EventLevel,
    pub message: String,
}

/// Now, as stored.
pub(super) fn now_millis() -> i64 {
    Timestamp::now().as_millisecond()
}

pub(super) fn timestamp(row: &Row<'_>, idx: usize) -> rusqlite::Result<Timestamp> {
    let millis: i64 = row.get(idx)?;
    Timestamp::from_millisecond(millis).map_err(|e| conversion(idx, e))
}

pub(super) fn optional_timestamp(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Timestamp>> {
    let millis: Option<i64> = row.get(idx)?;
    millis
        .map(|ms| Timestamp::from_millisecond(ms).map_err(|e| conversion(idx, e)))
        .transpose()
}

/// SQLite integers are signed; counts, builds and epochs are not.
pub(super) fn unsigned(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(idx)?;
    u64::try_from(value).map_err(|e| conversion(idx, e))
}

/// The other way: refuses values past `i64::MAX` rather than wrapping.
pub(super) fn signed(value: u64) -> rusqlite::Result<i64> {
    i64::try_from(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn conversion(
    idx: usize,
    error: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Integer, Box::new(error))
}
