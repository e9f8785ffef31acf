//! The schema and its migrations. The version lives in `PRAGMA
//! user_version`; `MIGRATIONS[i]` takes a database from version `i` to
//! `i + 1`, each in one transaction together with the version bump, so a
//! crash leaves the database at one version or the next, never between.
//!
//! Append only: a script that shipped is never edited, because nodes already
//! ran it. docs/state.md documents the latest schema column by column.
//! A script that changes a table's constraints rebuilds it with SQLite's
//! copy-and-rename procedure: foreign keys are off while migrations run
//! (they cannot be turned off inside a transaction, and deferring them is
//! not enough: dropping the old table counts its children as violations
//! that the rename does not take back), and `PRAGMA foreign_key_check`
//! must find nothing before the version bump commits.
//!
//! The tables are plain (not STRICT) so that the `sqlite3` shipped by older
//! distributions can still read the file; CHECK constraints hold the types
//! and the allowed words instead.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::StoreError;

const V1: &str = "
CREATE TABLE releases (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    package      TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    build        INTEGER NOT NULL CHECK (typeof(build) = 'integer' AND build >= 1),
    sha256       TEXT    NOT NULL CHECK (length(sha256) = 64),
    manifest     TEXT    NOT NULL,
    dir          TEXT    NOT NULL,
    state        TEXT    NOT NULL
        CHECK (state IN ('installing', 'healthy', 'failed', 'rolled-back', 'superseded')),
    is_current   INTEGER NOT NULL DEFAULT 0 CHECK (is_current IN (0, 1)),
    installed_at INTEGER NOT NULL CHECK (typeof(installed_at) = 'integer'),
    data_epoch   INTEGER NOT NULL CHECK (typeof(data_epoch) = 'integer' AND data_epoch >= 0),
    UNIQUE (package, version, build)
);
CREATE UNIQUE INDEX releases_one_current ON releases (package) WHERE is_current = 1;

CREATE TABLE transactions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL CHECK (kind IN ('install', 'rollback')),
    package      TEXT    NOT NULL,
    from_release INTEGER REFERENCES releases (id),
    to_release   INTEGER REFERENCES releases (id),
    started_at   INTEGER NOT NULL CHECK (typeof(started_at) = 'integer'),
    finished_at  INTEGER CHECK (finished_at IS NULL OR typeof(finished_at) = 'integer'),
    result       TEXT    NOT NULL DEFAULT 'running'
        CHECK (result IN ('running', 'committed', 'rolled-back', 'failed')),
    error        TEXT,
    pid          INTEGER NOT NULL,
    CHECK ((result = 'running') = (finished_at IS NULL))
);
CREATE INDEX transactions_by_package ON transactions (package, id);
CREATE INDEX transactions_running ON transactions (id) WHERE result = 'running';

CREATE TABLE steps (
    txn_id      INTEGER NOT NULL REFERENCES transactions (id),
    seq         INTEGER NOT NULL CHECK (typeof(seq) = 'integer' AND seq >= 1),
    name        TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('started', 'done', 'failed', 'undone')),
    started_at  INTEGER NOT NULL CHECK (typeof(started_at) = 'integer'),
    finished_at INTEGER CHECK (finished_at IS NULL OR typeof(finished_at) = 'integer'),
    detail      TEXT,
    PRIMARY KEY (txn_id, seq),
    CHECK ((state = 'started') = (finished_at IS NULL))
);

CREATE TABLE snapshots (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    package         TEXT    NOT NULL,
    release_id      INTEGER NOT NULL REFERENCES releases (id),
    created_at      INTEGER NOT NULL CHECK (typeof(created_at) = 'integer'),
    kind            TEXT    NOT NULL CHECK (kind IN ('artifact-ref', 'tree-tarball')),
    dir             TEXT    NOT NULL,
    artifact_sha256 TEXT    CHECK (artifact_sha256 IS NULL OR length(artifact_sha256) = 64),
    bytes           INTEGER NOT NULL CHECK (typeof(bytes) = 'integer' AND bytes >= 0),
    has_backup      INTEGER NOT NULL CHECK (has_backup IN (0, 1)),
    has_dumps       INTEGER NOT NULL CHECK (has_dumps IN (0, 1)),
    txn_id          INTEGER NOT NULL REFERENCES transactions (id),
    CHECK ((kind = 'artifact-ref') = (artifact_sha256 IS NOT NULL))
);
CREATE INDEX snapshots_by_package ON snapshots (package, id);

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time    INTEGER NOT NULL CHECK (typeof(time) = 'integer'),
    package TEXT    NOT NULL,
    txn_id  INTEGER REFERENCES transactions (id),
    level   TEXT    NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    message TEXT    NOT NULL
);
CREATE INDEX events_by_package ON events (package, id);
CREATE INDEX events_by_txn ON events (txn_id) WHERE txn_id IS NOT NULL;

CREATE TABLE hook_runs (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    txn_id             INTEGER NOT NULL REFERENCES transactions (id),
    hook               TEXT    NOT NULL,
    started_at         INTEGER NOT NULL CHECK (typeof(started_at) = 'integer'),
    finished_at        INTEGER NOT NULL CHECK (typeof(finished_at) = 'integer'),
    exit_code          INTEGER,
    signal             INTEGER,
    timed_out          INTEGER NOT NULL CHECK (timed_out IN (0, 1)),
    output             TEXT    NOT NULL,
    output_bytes_total INTEGER NOT NULL
        CHECK (typeof(output_bytes_total) = 'integer' AND output_bytes_total >= 0),
    CHECK (exit_code IS NULL OR signal IS NULL),
    CHECK (exit_code IS NOT NULL OR signal IS NOT NULL OR timed_out = 1)
);
CREATE INDEX hook_runs_by_txn ON hook_runs (txn_id, id);

CREATE TABLE channel_sequences (
    channel  TEXT    NOT NULL,
    package  TEXT    NOT NULL,
    sequence INTEGER NOT NULL CHECK (typeof(sequence) = 'integer' AND sequence >= 0),
    PRIMARY KEY (channel, package)
);
";

/// Version 2: `gc` transactions (a journaled `agent gc`, one per package)
/// and `rebuild` ones (`agent recover --rebuild`). The table is rebuilt to
/// widen its CHECK; its AUTOINCREMENT counter is carried over, because
/// snapshot directories are named by transaction number and a number must
/// never be used twice.
const V2: &str = "
CREATE TABLE transactions_v2 (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL CHECK (kind IN ('install', 'rollback', 'gc', 'rebuild')),
    package      TEXT    NOT NULL,
    from_release INTEGER REFERENCES releases (id),
    to_release   INTEGER REFERENCES releases (id),
    started_at   INTEGER NOT NULL CHECK (typeof(started_at) = 'integer'),
    finished_at  INTEGER CHECK (finished_at IS NULL OR typeof(finished_at) = 'integer'),
    result       TEXT    NOT NULL DEFAULT 'running'
        CHECK (result IN ('running', 'committed', 'rolled-back', 'failed')),
    error        TEXT,
    pid          INTEGER NOT NULL,
    CHECK ((result = 'running') = (finished_at IS NULL))
);
INSERT INTO transactions_v2 SELECT * FROM transactions;
DELETE FROM sqlite_sequence WHERE name = 'transactions_v2';
UPDATE sqlite_sequence SET name = 'transactions_v2' WHERE name = 'transactions';
DROP TABLE transactions;
ALTER TABLE transactions_v2 RENAME TO transactions;
CREATE INDEX transactions_by_package ON transactions (package, id);
CREATE INDEX transactions_running ON transactions (id) WHERE result = 'running';
";

const MIGRATIONS: &[&str] = &[V1, V2];

/// The first schema, for the migration tests.
#[cfg(test)]
pub(super) fn v1_for_tests() -> &'static str {
    V1
}

/// The schema version this code writes.
pub(super) const LATEST: u32 = MIGRATIONS.len() as u32;

pub(super) fn user_version(conn: &Connection, path: &Path) -> Result<u32, StoreError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(StoreError::sql(path))
}

/// Brings the database up to [`LATEST`]. Another process may be migrating
/// the same file: each step takes the write lock first and reads the
/// version again under it, so every script runs exactly once.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    if user_version(conn, path)? >= LATEST {
        return Ok(());
    }
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(StoreError::sql(path))?;
    let result = run_migrations(conn, path);
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(StoreError::sql(path))?;
    result
}

fn run_migrations(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    for (target, script) in (1..).zip(MIGRATIONS) {
        if user_version(conn, path)? >= target {
            continue;
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sql(path))?;
        if user_version(&tx, path)? >= target {
            continue;
        }
        tx.execute_batch(script).map_err(StoreError::sql(path))?;
        let dangling: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
            .optional()
            .map_err(StoreError::sql(path))?;
        if let Some(table) = dangling {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail: format!(
                    "migrating to schema version {target} left rows of `{table}` pointing at nothing"
                ),
            });
        }
        tx.pragma_update(None, "user_version", target)
            .map_err(StoreError::sql(path))?;
        tx.commit().map_err(StoreError::sql(path))?;
    }
    Ok(())
}
