//! The node's state in SQLite: releases and their states, transactions and
//! their steps, snapshots, hook runs with their output, events, and the
//! highest channel index sequence seen. docs/state.md documents the file,
//! its pragmas and every table for people reading it with `sqlite3`.
//!
//! Reads are methods of [`Store`]. Writes go through [`Store::write`], which
//! runs a closure over a [`Writer`] in one SQLite transaction: what belongs
//! together (a release becoming healthy and current, the one before it
//! superseded, the transaction committed) commits together or not at all.
//!
//! The target symlink on disk is the truth of what is installed; the store
//! is the record of how it got there and what can be rolled back to.

mod error;
mod open;
mod output;
mod read;
mod records;
mod schema;
mod write;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, TransactionBehavior};

pub use error::StoreError;
pub(crate) use open::{files_of, sidecar};
pub use output::{OUTPUT_KEEP_BYTES, omission_marker};
pub use records::{
    Event, EventLevel, HookExit, HookRun, NewHookRun, NewRelease, NewSnapshot, Release,
    ReleaseRowId, ReleaseState, Snapshot, SnapshotId, SnapshotKind, Step, StepId, StepState, TxnId,
    TxnKind, TxnRecord, TxnResult,
};
pub use write::Writer;

/// The schema version this agent writes; docs/state.md describes it.
pub const SCHEMA_VERSION: u32 = schema::LATEST;

/// An open state database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens the database at `path` (`<root>/var/lib/berth/state.db`),
    /// creating it when it is missing; its directory must exist already.
    ///
    /// Refuses, leaving the file as it was: a file that is not a SQLite
    /// database or fails `PRAGMA quick_check` ([`StoreError::NotADatabase`],
    /// [`StoreError::Corrupt`]), and a database from a newer agent
    /// ([`StoreError::TooNew`]). It never starts afresh over such a file.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = open::open(path)?;
        Ok(Store {
            conn,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one SQLite transaction: committed when `f` returns `Ok`,
    /// rolled back when it returns `Err`.
    ///
    /// The transaction is IMMEDIATE: it takes the write lock on entry, so
    /// it waits (up to the busy timeout) for another writer instead of
    /// failing half way when a read turns into a write. Keep `f` to
    /// database work; run hooks and copy files outside it.
    pub fn write<T>(
        &mut self,
        f: impl FnOnce(&Writer<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sql(&self.path))?;
        let value = f(&Writer::new(&tx, &self.path))?;
        tx.commit().map_err(StoreError::sql(&self.path))?;
        Ok(value)
    }
}
