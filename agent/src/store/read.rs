//! Queries for `agent status`, `history`, `snapshots`, `logs`, for
//! rollback's choice of target and for recovery after a crash.
//!
//! "Newest first" orders by id, which only grows (AUTOINCREMENT), so a
//! clock stepped back by NTP cannot reorder history.

use berth_core::name::ReleaseId;
use rusqlite::{OptionalExtension, Params, Row, params};

use super::records::{
    Event, HookExit, HookRun, Release, ReleaseRowId, Snapshot, SnapshotId, Step, TxnId, TxnRecord,
    optional_timestamp, signed, timestamp, unsigned,
};
use super::{Store, StoreError};

const RELEASE_COLUMNS: &str = "id, package, version, build, sha256, manifest, dir, state,
    is_current, installed_at, data_epoch";

const TXN_SELECT: &str = "SELECT t.id, t.kind, t.package, f.version, f.build, o.version, o.build,
        t.started_at, t.finished_at, t.result, t.error, t.pid
    FROM transactions t
    LEFT JOIN releases f ON f.id = t.from_release
    LEFT JOIN releases o ON o.id = t.to_release";

const SNAPSHOT_SELECT: &str = "SELECT s.id, s.package, r.version, r.build, r.id, r.data_epoch,
        s.created_at, s.kind, s.dir, s.artifact_sha256, s.bytes, s.has_backup, s.has_dumps,
        s.txn_id
    FROM snapshots s JOIN releases r ON r.id = s.release_id";

impl Store {
    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        super::schema::user_version(&self.conn, &self.path)
    }

    /// Every package the node has a release of, by name.
    pub fn packages(&self) -> Result<Vec<String>, StoreError> {
        self.rows(
            "SELECT DISTINCT package FROM releases ORDER BY package",
            [],
            |row| row.get(0),
        )
    }

    pub fn release(&self, release: &ReleaseId) -> Result<Option<Release>, StoreError> {
        self.row(
            &format!(
                "SELECT {RELEASE_COLUMNS} FROM releases
                 WHERE package = ?1 AND version = ?2 AND build = ?3"
            ),
            params![
                release.name,
                release.version,
                signed(release.build).map_err(StoreError::sql(&self.path))?
            ],
            release_from_row,
        )
    }

    /// The release the store records as current for `package`.
    pub fn current_release(&self, package: &str) -> Result<Option<Release>, StoreError> {
        self.row(
            &format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE package = ?1 AND is_current = 1"
            ),
            [package],
            release_from_row,
        )
    }

    /// The releases of `package`, most recently installed first.
    pub fn releases(&self, package: &str) -> Result<Vec<Release>, StoreError> {
        self.rows(
            &format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE package = ?1
                 ORDER BY installed_at DESC, id DESC"
            ),
            [package],
            release_from_row,
        )
    }

    pub fn transaction(&self, txn: TxnId) -> Result<Option<TxnRecord>, StoreError> {
        let record = self.row(
            &format!("{TXN_SELECT} WHERE t.id = ?1"),
            [txn.0],
            txn_from_row,
        )?;
        record.map(|r| self.with_steps(r)).transpose()
    }

    /// The transactions of `package`, newest first, each with its steps.
    pub fn history(&self, package: &str) -> Result<Vec<TxnRecord>, StoreError> {
        let records = self.rows(
            &format!("{TXN_SELECT} WHERE t.package = ?1 ORDER BY t.id DESC"),
            [package],
            txn_from_row,
        )?;
        records.into_iter().map(|r| self.with_steps(r)).collect()
    }

    /// Transactions still `running`, oldest first: after a crash, what the
    /// next command must finish or undo. With the node lock there is at
    /// most one, unless a crash came during recovery itself.
    pub fn unfinished_transactions(&self) -> Result<Vec<TxnRecord>, StoreError> {
        let records = self.rows(
            &format!("{TXN_SELECT} WHERE t.result = 'running' ORDER BY t.id"),
            [],
            txn_from_row,
        )?;
        records.into_iter().map(|r| self.with_steps(r)).collect()
    }

    /// The snapshots of `package`, newest first.
    pub fn snapshots(&self, package: &str) -> Result<Vec<Snapshot>, StoreError> {
        self.rows(
            &format!("{SNAPSHOT_SELECT} WHERE s.package = ?1 ORDER BY s.id DESC"),
            [package],
            snapshot_from_row,
        )
    }

    /// The hook runs of a transaction, in the order they ran.
    pub fn hook_runs(&self, txn: TxnId) -> Result<Vec<HookRun>, StoreError> {
        self.rows(
            "SELECT txn_id, hook, started_at, finished_at, exit_code, signal, timed_out, output,
                 output_bytes_total
             FROM hook_runs WHERE txn_id = ?1 ORDER BY id",
            [txn.0],
            hook_run_from_row,
        )
    }

    /// The events of a transaction, oldest first.
    pub fn transaction_events(&self, txn: TxnId) -> Result<Vec<Event>, StoreError> {
        self.rows(
            "SELECT time, package, txn_id, level, message FROM events WHERE txn_id = ?1 ORDER BY id",
            [txn.0],
            |row| {
                Ok(Event {
                    time: timestamp(row, 0)?,
                    package: row.get(1)?,
                    txn: row.get::<_, Option<i64>>(2)?.map(TxnId),
                    level: row.get(3)?,
                    message: row.get(4)?,
                })
            },
        )
    }

    /// The highest index sequence accepted from `channel` for `package`.
    pub fn channel_sequence(
        &self,
        channel: &str,
        package: &str,
    ) -> Result<Option<u64>, StoreError> {
        self.row(
            "SELECT sequence FROM channel_sequences WHERE channel = ?1 AND package = ?2",
            [channel, package],
            |row| unsigned(row, 0),
        )
    }

    /// Every accepted sequence: `(channel, package, sequence)`.
    pub fn channel_sequences(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.rows(
            "SELECT channel, package, sequence FROM channel_sequences ORDER BY channel, package",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, unsigned(row, 2)?)),
        )
    }

    fn with_steps(&self, mut record: TxnRecord) -> Result<TxnRecord, StoreError> {
        record.steps = self.rows(
            "SELECT seq, name, state, started_at, finished_at, detail
             FROM steps WHERE txn_id = ?1 ORDER BY seq",
            [record.id.0],
            |row| {
                Ok(Step {
                    seq: row.get(0)?,
                    name: row.get(1)?,
                    state: row.get(2)?,
                    started_at: timestamp(row, 3)?,
                    finished_at: optional_timestamp(row, 4)?,
                    detail: row.get(5)?,
                })
            },
        )?;
        Ok(record)
    }

    fn row<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.query_row(params, map).optional())
            .map_err(StoreError::sql(&self.path))
    }

    fn rows<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.query_map(params, map)?.collect())
            .map_err(StoreError::sql(&self.path))
    }
}

fn release_id(package: &str, version: Option<String>, build: Option<i64>) -> Option<ReleaseId> {
    Some(ReleaseId {
        name: package.to_owned(),
        version: version?,
        build: u64::try_from(build?).ok()?,
    })
}

fn release_from_row(row: &Row<'_>) -> rusqlite::Result<Release> {
    Ok(Release {
        id: ReleaseRowId(row.get(0)?),
        release: ReleaseId {
            name: row.get(1)?,
            version: row.get(2)?,
            build: unsigned(row, 3)?,
        },
        sha256: row.get(4)?,
        manifest: row.get(5)?,
        dir: row.get::<_, String>(6)?.into(),
        state: row.get(7)?,
        current: row.get(8)?,
        installed_at: timestamp(row, 9)?,
        data_epoch: unsigned(row, 10)?,
    })
}

fn txn_from_row(row: &Row<'_>) -> rusqlite::Result<TxnRecord> {
    let package: String = row.get(2)?;
    Ok(TxnRecord {
        id: TxnId(row.get(0)?),
        kind: row.get(1)?,
        from: release_id(&package, row.get(3)?, row.get(4)?),
        to: release_id(&package, row.get(5)?, row.get(6)?),
        package,
        started_at: timestamp(row, 7)?,
        finished_at: optional_timestamp(row, 8)?,
        result: row.get(9)?,
        error: row.get(10)?,
        pid: row.get(11)?,
        steps: Vec::new(),
    })
}

fn snapshot_from_row(row: &Row<'_>) -> rusqlite::Result<Snapshot> {
    let package: String = row.get(1)?;
    Ok(Snapshot {
        id: SnapshotId(row.get(0)?),
        release: ReleaseId {
            name: package.clone(),
            version: row.get(2)?,
            build: unsigned(row, 3)?,
        },
        package,
        release_row: ReleaseRowId(row.get(4)?),
        data_epoch: unsigned(row, 5)?,
        created_at: timestamp(row, 6)?,
        kind: row.get(7)?,
        dir: row.get::<_, String>(8)?.into(),
        artifact_sha256: row.get(9)?,
        bytes: unsigned(row, 10)?,
        has_backup: row.get(11)?,
        has_dumps: row.get(12)?,
        txn: TxnId(row.get(13)?),
    })
}

fn hook_run_from_row(row: &Row<'_>) -> rusqlite::Result<HookRun> {
    let exit = match (row.get(4)?, row.get(5)?) {
        (Some(code), _) => Some(HookExit::Code(code)),
        (None, Some(signal)) => Some(HookExit::Signal(signal)),
        (None, None) => None,
    };
    Ok(HookRun {
        txn: TxnId(row.get(0)?),
        hook: row.get(1)?,
        started_at: timestamp(row, 2)?,
        finished_at: timestamp(row, 3)?,
        exit,
        timed_out: row.get(6)?,
        output: row.get(7)?,
        output_bytes_total: unsigned(row, 8)?,
    })
}
