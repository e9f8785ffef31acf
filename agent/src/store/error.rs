//! What can go wrong with the state database. Every message names the
//! database file, because a node operator reading it has one question first:
//! which file, and is it damaged?

use std::io;
use std::path::{Path, PathBuf};

use berth_core::{Diagnose, Fault};
use rusqlite::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot open the state database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the state database {path} is not a SQLite database: {reason}")]
    NotADatabase { path: PathBuf, reason: String },
    #[error("the state database {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "the state database {path} has schema version {found}, and this agent knows versions up to {known}: a newer agent wrote it"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error(
        "the state database {path} is missing but its write-ahead log {wal} is there, holding the last changes of a database that was deleted or moved without it"
    )]
    StrayWal { path: PathBuf, wal: PathBuf },
    #[error("the state database {path} cannot use WAL journaling (SQLite kept `{mode}`)")]
    NoWal { path: PathBuf, mode: String },
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state database {path}: there is no {what}")]
    NotFound { path: PathBuf, what: String },
    #[error("state database {path}: {what} is {state}, so it cannot {change}")]
    BadTransition {
        path: PathBuf,
        what: String,
        state: String,
        change: String,
    },
    #[error("state database {path}: the path {value:?} is not valid UTF-8 and cannot be recorded")]
    NotUtf8 { path: PathBuf, value: PathBuf },
}

impl StoreError {
    /// Wraps a SQLite error of the database at `path`. SQLite reports damage
    /// it meets on the way (not only in `quick_check`) as CORRUPT or NOTADB;
    /// those become the damage errors, with their way out.
    pub(crate) fn sql(path: &Path) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
                path: path.to_owned(),
                detail: source.to_string(),
            },
            Some(ErrorCode::NotADatabase) => StoreError::NotADatabase {
                path: path.to_owned(),
                reason: source.to_string(),
            },
            _ => StoreError::Sqlite {
                path: path.to_owned(),
                source,
            },
        }
    }
}

impl Diagnose for StoreError {
    fn fault(&self) -> Fault {
        match self {
            StoreError::NotUtf8 { .. } => Fault::Input,
            _ => Fault::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        let damaged = "berth never starts afresh over a damaged database: restore the file from a backup, or run `agent recover --rebuild`, which moves it aside and makes it again from the release dirs, snapshots and records the node keeps (the history of past transactions and their hook output is lost)";
        match self {
            StoreError::NotADatabase { .. } | StoreError::Corrupt { .. } => Some(damaged.into()),
            StoreError::StrayWal { .. } => Some(
                "put the database back next to its -wal file, or run `agent recover --rebuild`, which moves the -wal aside and makes the database again from what the node keeps on disk".into(),
            ),
            StoreError::TooNew { .. } => Some(
                "upgrade the agent to the version that wrote this database or newer; berth never downgrades a database".into(),
            ),
            StoreError::NoWal { .. } | StoreError::Open { .. } => Some(
                "the database's directory must exist, be writable, and sit on a local file system (WAL needs shared memory maps)".into(),
            ),
            _ => None,
        }
    }
}
