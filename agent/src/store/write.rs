//! Every change to the state database, made inside one [`Store::write`]
//! transaction.
//!
//! Transactions and steps follow their state machines (docs/state.md): a
//! change that does not fit, such as finishing a transaction twice, is
//! refused with [`StoreError::BadTransition`] rather than recorded, because
//! recovery after a crash trusts these states.
//!
//! [`Store::write`]: super::Store::write

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::output::bounded;
use super::records::{
    EventLevel, HookExit, NewHookRun, NewRelease, NewSnapshot, ReleaseRowId, ReleaseState,
    SnapshotId, StepId, StepState, TxnId, TxnKind, TxnResult, now_millis, signed,
};

/// Writes within one SQLite transaction; see [`Store::write`].
///
/// [`Store::write`]: super::Store::write
#[derive(Debug)]
pub struct Writer<'t> {
    conn: &'t Connection,
    path: &'t Path,
}

impl<'t> Writer<'t> {
    pub(super) fn new(conn: &'t Connection, path: &'t Path) -> Self {
        Writer { conn, path }
    }

    /// Journals the start of an install or rollback, as run by this process.
    /// `to` may be set later, once the release is resolved.
    pub fn begin_transaction(
        &self,
        kind: TxnKind,
        package: &str,
        from: Option<ReleaseRowId>,
        to: Option<ReleaseRowId>,
    ) -> Result<TxnId, StoreError> {
        self.conn
            .execute(
                "INSERT INTO transactions (kind, package, from_release, to_release, started_at, pid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    kind,
                    package,
                    from.map(|r| r.0),
                    to.map(|r| r.0),
                    now_millis(),
                    std::process::id()
                ],
            )
            .map_err(self.sql())?;
        Ok(TxnId(self.conn.last_insert_rowid()))
    }

    /// Makes the next transaction number higher than `highest`: numbers
    /// name snapshot directories, so a rebuilt database must not reuse
    /// one that a directory on disk still has.
    pub fn reserve_transaction_ids(&self, highest: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO sqlite_sequence (name, seq)
                 SELECT 'transactions', 0
                 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'transactions')",
                [],
            )
            .and_then(|_| {
                self.conn.execute(
                    "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'transactions'",
                    [highest],
                )
            })
            .map_err(self.sql())?;
        Ok(())
    }

    /// Records which release a running transaction replaces and installs.
    pub fn set_transaction_releases(
        &self,
        txn: TxnId,
        from: Option<ReleaseRowId>,
        to: ReleaseRowId,
    ) -> Result<(), StoreError> {
        self.require_running(txn, "change its releases")?;
        self.conn
            .execute(
                "UPDATE transactions SET from_release = ?2, to_release = ?3 WHERE id = ?1",
                params![txn.0, from.map(|r| r.0), to.0],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Ends a running transaction. `error` says what went wrong, for any
    /// result but `Committed`.
    pub fn finish_transaction(
        &self,
        txn: TxnId,
        result: TxnResult,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let change = format!("be finished as {result}");
        self.require_running(txn, &change)?;
        if result == TxnResult::Running {
            return Err(self.bad_transition(format!("transaction {txn}"), "running", &change));
        }
        self.conn
            .execute(
                "UPDATE transactions SET result = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
                params![txn.0, result, error, now_millis()],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Journals the start of the next step of a running transaction.
    pub fn step_started(&self, txn: TxnId, name: &str) -> Result<StepId, StoreError> {
        self.require_running(txn, "take a new step")?;
        let seq: u32 = self
            .conn
            .query_row(
                "INSERT INTO steps (txn_id, seq, name, state, started_at)
                 SELECT ?1, coalesce(max(seq), 0) + 1, ?2, 'started', ?3 FROM steps WHERE txn_id = ?1
                 RETURNING seq",
                params![txn.0, name, now_millis()],
                |row| row.get(0),
            )
            .map_err(self.sql())?;
        Ok(StepId { txn, seq })
    }

    pub fn step_done(&self, step: StepId, detail: Option<&str>) -> Result<(), StoreError> {
        self.move_step(step, &[StepState::Started], StepState::Done, detail)
    }

    pub fn step_failed(&self, step: StepId, detail: Option<&str>) -> Result<(), StoreError> {
        self.move_step(step, &[StepState::Started], StepState::Failed, detail)
    }

    /// A step that was done, or failed half way, has been reversed.
    pub fn step_undone(&self, step: StepId, detail: Option<&str>) -> Result<(), StoreError> {
        self.move_step(
            step,
            &[StepState::Done, StepState::Failed],
            StepState::Undone,
            detail,
        )
    }

    /// Inserts a release, or updates every column of the same
    /// `name@version+build` when it is installed again. Whether it is
    /// current does not change here; see [`Writer::set_current_release`].
    pub fn upsert_release(&self, new: &NewRelease<'_>) -> Result<ReleaseRowId, StoreError> {
        let id = self
            .conn
            .query_row(
                "INSERT INTO releases
                     (package, version, build, sha256, manifest, dir, state, installed_at, data_epoch)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (package, version, build) DO UPDATE SET
                     sha256 = excluded.sha256, manifest = excluded.manifest, dir = excluded.dir,
                     state = excluded.state, installed_at = excluded.installed_at,
                     data_epoch = excluded.data_epoch
                 RETURNING id",
                params![
                    new.release.name,
                    new.release.version,
                    signed(new.release.build).map_err(self.sql())?,
                    new.sha256,
                    new.manifest,
                    self.path_text(new.dir)?,
                    new.state,
                    now_millis(),
                    signed(new.data_epoch).map_err(self.sql())?,
                ],
                |row| row.get(0),
            )
            .map_err(self.sql())?;
        Ok(ReleaseRowId(id))
    }

    pub fn set_release_state(
        &self,
        release: ReleaseRowId,
        state: ReleaseState,
    ) -> Result<(), StoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE releases SET state = ?2 WHERE id = ?1",
                params![release.0, state],
            )
            .map_err(self.sql())?;
        self.require_row(changed, || format!("release row {}", release.0))
    }

    /// Makes `release` the current one of its package, and no other.
    pub fn set_current_release(&self, release: ReleaseRowId) -> Result<(), StoreError> {
        // Clear first: the unique index allows one current row per package
        // at every statement, not only at commit.
        self.conn
            .execute(
                "UPDATE releases SET is_current = 0
                 WHERE is_current = 1 AND id <> ?1
                   AND package = (SELECT package FROM releases WHERE id = ?1)",
                [release.0],
            )
            .map_err(self.sql())?;
        let changed = self
            .conn
            .execute(
                "UPDATE releases SET is_current = 1 WHERE id = ?1",
                [release.0],
            )
            .map_err(self.sql())?;
        self.require_row(changed, || format!("release row {}", release.0))
    }

    /// Records a snapshot whose directory is complete: tree or reference,
    /// and whatever the backup and dump hooks wrote.
    pub fn record_snapshot(&self, new: &NewSnapshot<'_>) -> Result<SnapshotId, StoreError> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "INSERT INTO snapshots (package, release_id, created_at, kind, dir,
                     artifact_sha256, bytes, has_backup, has_dumps, txn_id)
                 SELECT package, id, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 FROM releases WHERE id = ?1
                 RETURNING id",
                params![
                    new.release.0,
                    new.created_at
                        .map_or_else(now_millis, |t| t.as_millisecond()),
                    new.kind,
                    self.path_text(new.dir)?,
                    new.artifact_sha256,
                    signed(new.bytes).map_err(self.sql())?,
                    new.has_backup,
                    new.has_dumps,
                    new.txn.0,
                ],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.sql())?;
        id.map(SnapshotId).ok_or_else(|| StoreError::NotFound {
            path: self.path.to_owned(),
            what: format!("release row {}", new.release.0),
        })
    }

    /// Forgets a snapshot, once its directory is gone (`agent gc`).
    pub fn delete_snapshot(&self, snapshot: SnapshotId) -> Result<(), StoreError> {
        let changed = self
            .conn
            .execute("DELETE FROM snapshots WHERE id = ?1", [snapshot.0])
            .map_err(self.sql())?;
        self.require_row(changed, || format!("snapshot {snapshot}"))
    }

    pub fn record_hook_run(&self, run: &NewHookRun<'_>) -> Result<(), StoreError> {
        let (code, signal) = match run.exit {
            Some(HookExit::Code(code)) => (Some(code), None),
            Some(HookExit::Signal(signal)) => (None, Some(signal)),
            None => (None, None),
        };
        self.conn
            .execute(
                "INSERT INTO hook_runs (txn_id, hook, started_at, finished_at, exit_code, signal,
                     timed_out, output, output_bytes_total)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    run.txn.0,
                    run.hook,
                    run.started_at.as_millisecond(),
                    run.finished_at.as_millisecond(),
                    code,
                    signal,
                    run.timed_out,
                    bounded(run.output),
                    signed(run.output_bytes_total).map_err(self.sql())?,
                ],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    pub fn record_event(
        &self,
        package: &str,
        txn: Option<TxnId>,
        level: EventLevel,
        message: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO events (time, package, txn_id, level, message)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![now_millis(), package, txn.map(|t| t.0), level, message],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Remembers the highest index `sequence` accepted from a channel for a
    /// package; a lower one never replaces it.
    pub fn accept_channel_sequence(
        &self,
        channel: &str,
        package: &str,
        sequence: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO channel_sequences (channel, package, sequence) VALUES (?1, ?2, ?3)
                 ON CONFLICT (channel, package) DO UPDATE
                     SET sequence = max(sequence, excluded.sequence)",
                params![channel, package, signed(sequence).map_err(self.sql())?],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    fn move_step(
        &self,
        step: StepId,
        from: &[StepState],
        to: StepState,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let what = || format!("step {} of transaction {}", step.seq, step.txn);
        let state: Option<StepState> = self
            .conn
            .query_row(
                "SELECT state FROM steps WHERE txn_id = ?1 AND seq = ?2",
                params![step.txn.0, step.seq],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.sql())?;
        let state = state.ok_or_else(|| StoreError::NotFound {
            path: self.path.to_owned(),
            what: what(),
        })?;
        if !from.contains(&state) {
            return Err(self.bad_transition(what(), state.as_str(), &format!("become {to}")));
        }
        // A step undone without a new detail keeps the one it had.
        self.conn
            .execute(
                "UPDATE steps SET state = ?3, finished_at = ?4, detail = coalesce(?5, detail)
                 WHERE txn_id = ?1 AND seq = ?2",
                params![step.txn.0, step.seq, to, now_millis(), detail],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// Only a running transaction may change; `change` words the refusal.
    fn require_running(&self, txn: TxnId, change: &str) -> Result<(), StoreError> {
        let result: Option<TxnResult> = self
            .conn
            .query_row(
                "SELECT result FROM transactions WHERE id = ?1",
                [txn.0],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.sql())?;
        match result {
            Some(TxnResult::Running) => Ok(()),
            Some(result) => {
                Err(self.bad_transition(format!("transaction {txn}"), result.as_str(), change))
            }
            None => Err(StoreError::NotFound {
                path: self.path.to_owned(),
                what: format!("transaction {txn}"),
            }),
        }
    }

    fn require_row(&self, changed: usize, what: impl FnOnce() -> String) -> Result<(), StoreError> {
        if changed == 0 {
            return Err(StoreError::NotFound {
                path: self.path.to_owned(),
                what: what(),
            });
        }
        Ok(())
    }

    fn bad_transition(&self, what: String, state: &str, change: &str) -> StoreError {
        StoreError::BadTransition {
            path: self.path.to_owned(),
            what,
            state: state.to_owned(),
            change: change.to_owned(),
        }
    }

    fn path_text<'p>(&self, value: &'p Path) -> Result<&'p str, StoreError> {
        value.to_str().ok_or_else(|| StoreError::NotUtf8 {
            path: self.path.to_owned(),
            value: value.to_owned(),
        })
    }

    fn sql(&self) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        StoreError::sql(self.path)
    }
}
