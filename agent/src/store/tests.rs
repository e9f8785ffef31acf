//! Tests of the state store: opening (fresh, again, damaged, too new,
//! concurrently), the pragmas in effect, the typed API end to end, and the
//! `sqlite3` command line reading what the agent wrote.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};

use berth_core::Diagnose;
use berth_core::name::ReleaseId;
use jiff::{SignedDuration, Timestamp};
use tempfile::TempDir;

use super::*;

const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    (dir, path)
}

fn webapp(version: &str, build: u64) -> ReleaseId {
    ReleaseId::new("webapp", version, build).unwrap()
}

fn add_release(store: &mut Store, release: &ReleaseId, data_epoch: u64) -> ReleaseRowId {
    let dir = PathBuf::from(format!(
        "/var/lib/berth/releases/webapp/{}",
        release.version_build()
    ));
    store
        .write(|w| {
            w.upsert_release(&NewRelease {
                release,
                sha256: SHA_A,
                manifest: "format = 1\n",
                dir: &dir,
                data_epoch,
                state: ReleaseState::Installing,
            })
        })
        .unwrap()
}

fn pragma(store: &Store, name: &str) -> String {
    store
        .conn
        .query_row(&format!("PRAGMA {name}"), [], |row| {
            row.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(t) => t,
            other => format!("{other:?}"),
        })
        .unwrap()
}

fn sqlite3(path: &Path, sql: &str) -> String {
    let out = Command::new("/usr/bin/sqlite3")
        .arg(path)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Files in `dir` other than the database and its WAL sidecars.
fn strays(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !["state.db", "state.db-wal", "state.db-shm"].contains(&n.as_str()))
        .collect()
}

#[test]
fn a_missing_database_is_created_with_the_schema() {
    let (dir, path) = temp_db();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 2);
    let tables: Vec<String> = store
        .conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tables,
        [
            "channel_sequences",
            "events",
            "hook_runs",
            "releases",
            "snapshots",
            "steps",
            "transactions"
        ]
    );
    assert!(strays(dir.path()).is_empty(), "{:?}", strays(dir.path()));
}

#[test]
fn reopening_keeps_everything_and_changes_nothing() {
    let (dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    let id = add_release(&mut store, &webapp("1.0", 1), 0);
    drop(store);
    for _ in 0..3 {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let releases = store.releases("webapp").unwrap();
        assert_eq!(releases.len(), 1);
        assert_eq!(releases[0].id, id);
    }
    assert!(strays(dir.path()).is_empty());
}

#[test]
fn wal_full_sync_foreign_keys_and_busy_timeout_are_in_effect() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path).unwrap();
    assert_eq!(pragma(&store, "journal_mode"), "wal");
    assert_eq!(pragma(&store, "synchronous"), "2", "2 is FULL");
    assert_eq!(pragma(&store, "foreign_keys"), "1");
    assert_eq!(pragma(&store, "busy_timeout"), "5000");
    // The journal mode is in the file: a plain reader sees it too.
    assert_eq!(sqlite3(&path, "PRAGMA journal_mode").trim(), "wal");
}

#[test]
fn a_database_from_a_newer_agent_is_refused_and_left_as_it_was() {
    let (_dir, path) = temp_db();
    drop(Store::open(&path).unwrap());
    sqlite3(
        &path,
        &format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1),
    );
    let before = fs::read(&path).unwrap();

    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::TooNew { found, known, .. } if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("newer agent"), "{message}");
    assert!(err.hint().unwrap().contains("upgrade the agent"));
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_never_replaced() {
    let (_dir, path) = temp_db();
    let cases: [&[u8]; 3] = [
        &b"this is the operator's notes, not a database\n".repeat(100),
        b"",
        b"SQLite format 3\0short",
    ];
    for garbage in cases {
        fs::write(&path, garbage).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
        let hint = err.hint().unwrap();
        assert!(
            hint.contains("restore the file from a backup")
                && hint.contains("agent recover --rebuild")
        );
        assert_eq!(fs::read(&path).unwrap(), garbage);
    }
}

#[test]
fn a_corrupted_database_is_refused() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    store
        .write(|w| {
            let message = "x".repeat(200);
            (0..2000).try_for_each(|_| w.record_event("webapp", None, EventLevel::Info, &message))
        })
        .unwrap();
    drop(store);
    assert!(
        !path.with_file_name("state.db-wal").exists(),
        "checkpointed on close"
    );

    let mut bytes = fs::read(&path).unwrap();
    assert!(bytes.len() > 40 * 4096);
    let middle = bytes.len() / 2;
    bytes[middle..middle + 3 * 4096].fill(0xA5);
    fs::write(&path, &bytes).unwrap();

    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));
    assert!(err.hint().unwrap().contains("never starts afresh"));
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn no_database_is_created_beside_a_stray_wal() {
    let (dir, path) = temp_db();
    let wal = dir.path().join("state.db-wal");
    fs::write(&wal, b"the last commits of a database that was moved away").unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::StrayWal { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("put the database back"));
    assert!(!path.exists());
    assert!(strays(dir.path()).is_empty());
}

#[test]
fn a_missing_directory_is_the_callers_job() {
    let (dir, _) = temp_db();
    let path = dir.path().join("var/lib/berth/state.db");
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("directory must exist"));
    assert!(!path.exists());
}

#[test]
fn an_install_and_its_rollback_round_trip() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    let (v1, v2) = (webapp("1.0", 1), webapp("2.0", 2));

    // v1: a first install with nothing to replace.
    let r1 = add_release(&mut store, &v1, 1);
    let t1 = store
        .write(|w| w.begin_transaction(TxnKind::Install, "webapp", None, Some(r1)))
        .unwrap();
    store
        .write(|w| {
            let step = w.step_started(t1, "unpack")?;
            w.step_done(step, Some("12 files"))?;
            w.set_release_state(r1, ReleaseState::Healthy)?;
            w.set_current_release(r1)?;
            w.finish_transaction(t1, TxnResult::Committed, None)
        })
        .unwrap();
    assert_eq!(store.current_release("webapp").unwrap().unwrap().id, r1);

    // v2: resolved after the transaction began; snapshot v1; health fails.
    let t2 = store
        .write(|w| w.begin_transaction(TxnKind::Install, "webapp", None, None))
        .unwrap();
    assert_eq!(store.unfinished_transactions().unwrap()[0].id, t2);
    let r2 = add_release(&mut store, &v2, 2);
    let snap_dir = PathBuf::from(format!("/var/lib/berth/snapshots/{t2}"));
    let snapshot = store
        .write(|w| {
            w.set_transaction_releases(t2, Some(r1), r2)?;
            let step = w.step_started(t2, "snapshot")?;
            let id = w.record_snapshot(&NewSnapshot {
                release: r1,
                txn: t2,
                created_at: None,
                kind: SnapshotKind::ArtifactRef,
                dir: &snap_dir,
                artifact_sha256: Some(SHA_B),
                bytes: 4096,
                has_backup: true,
                has_dumps: false,
            })?;
            w.step_done(step, None)?;
            Ok(id)
        })
        .unwrap();
    let switch = store.write(|w| w.step_started(t2, "switch")).unwrap();
    store
        .write(|w| {
            w.step_done(switch, None)?;
            let health = w.step_started(t2, "health")?;
            w.step_failed(health, Some("exit 1"))?;
            w.step_undone(switch, Some("target points at 1.0+1 again"))?;
            w.set_release_state(r2, ReleaseState::Failed)?;
            w.record_event("webapp", Some(t2), EventLevel::Error, "health failed")?;
            w.finish_transaction(t2, TxnResult::RolledBack, Some("health check failed"))
        })
        .unwrap();

    assert!(store.unfinished_transactions().unwrap().is_empty());
    let current = store.current_release("webapp").unwrap().unwrap();
    assert_eq!((current.id, current.state), (r1, ReleaseState::Healthy));
    let releases = store.releases("webapp").unwrap();
    assert_eq!(releases.len(), 2);
    let failed = store.release(&v2).unwrap().unwrap();
    assert_eq!(failed.state, ReleaseState::Failed);
    assert!(!failed.current);
    assert_eq!(failed.data_epoch, 2);
    assert_eq!(
        failed.dir,
        Path::new("/var/lib/berth/releases/webapp/2.0+2")
    );
    assert_eq!(failed.manifest, "format = 1\n");

    let history = store.history("webapp").unwrap();
    assert_eq!(history.iter().map(|t| t.id).collect::<Vec<_>>(), [t2, t1]);
    let last = &history[0];
    assert_eq!(last.result, TxnResult::RolledBack);
    assert_eq!(last.error.as_deref(), Some("health check failed"));
    assert_eq!(last.from.as_ref(), Some(&v1));
    assert_eq!(last.to.as_ref(), Some(&v2));
    assert_eq!(last.pid, std::process::id());
    assert!(last.finished_at.unwrap() >= last.started_at);
    let steps: Vec<_> = last
        .steps
        .iter()
        .map(|s| (s.seq, s.name.as_str(), s.state, s.detail.as_deref()))
        .collect();
    assert_eq!(
        steps,
        [
            (1, "snapshot", StepState::Done, None),
            (
                2,
                "switch",
                StepState::Undone,
                Some("target points at 1.0+1 again")
            ),
            (3, "health", StepState::Failed, Some("exit 1")),
        ]
    );
    assert_eq!(history[1].steps[0].detail.as_deref(), Some("12 files"));
    assert_eq!(store.transaction(t1).unwrap().unwrap(), history[1]);

    let events = store.transaction_events(t2).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].level, events[0].message.as_str()),
        (EventLevel::Error, "health failed")
    );

    let snapshots = store.snapshots("webapp").unwrap();
    assert_eq!(snapshots.len(), 1);
    let s = &snapshots[0];
    assert_eq!(
        (s.id, &s.release, s.release_row, s.txn),
        (snapshot, &v1, r1, t2)
    );
    assert_eq!(
        (s.kind, s.artifact_sha256.as_deref()),
        (SnapshotKind::ArtifactRef, Some(SHA_B))
    );
    assert_eq!(
        (s.bytes, s.has_backup, s.has_dumps, s.data_epoch),
        (4096, true, false, 1)
    );
    assert_eq!(s.dir, snap_dir);

    // A rollback is a transaction of its own.
    let t3 = store
        .write(|w| w.begin_transaction(TxnKind::Rollback, "webapp", Some(r1), Some(r2)))
        .unwrap();
    store
        .write(|w| w.finish_transaction(t3, TxnResult::Failed, Some("refused")))
        .unwrap();
    assert_eq!(store.history("webapp").unwrap()[0].kind, TxnKind::Rollback);
}

#[test]
fn a_failing_write_leaves_nothing_behind() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    let err = store
        .write(|w| {
            w.begin_transaction(TxnKind::Install, "webapp", None, None)?;
            w.set_release_state(ReleaseRowId(99), ReleaseState::Healthy)
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert!(store.history("webapp").unwrap().is_empty());
    assert!(store.unfinished_transactions().unwrap().is_empty());
}

#[test]
fn transactions_and_steps_refuse_moves_their_state_machines_forbid() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    let txn = store
        .write(|w| w.begin_transaction(TxnKind::Install, "webapp", None, None))
        .unwrap();
    let step = store.write(|w| w.step_started(txn, "fetch")).unwrap();
    let refused = |store: &mut Store, f: &dyn Fn(&Writer<'_>) -> Result<(), StoreError>| {
        let err = store.write(f).unwrap_err();
        assert!(matches!(err, StoreError::BadTransition { .. }), "{err:?}");
        err.to_string()
    };

    refused(&mut store, &|w| w.step_undone(step, None));
    refused(&mut store, &|w| {
        w.finish_transaction(txn, TxnResult::Running, None)
    });
    store.write(|w| w.step_done(step, None)).unwrap();
    let message = refused(&mut store, &|w| w.step_failed(step, None));
    assert!(
        message.contains("step 1 of transaction 1 is done, so it cannot become failed"),
        "{message}"
    );

    store
        .write(|w| w.finish_transaction(txn, TxnResult::Committed, None))
        .unwrap();
    let message = refused(&mut store, &|w| {
        w.finish_transaction(txn, TxnResult::Failed, None)
    });
    assert!(
        message.contains("is committed, so it cannot be finished as failed"),
        "{message}"
    );
    refused(&mut store, &|w| w.step_started(txn, "late").map(drop));
}

#[test]
fn one_release_is_current_per_package() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    let r1 = add_release(&mut store, &webapp("1.0", 1), 0);
    let r2 = add_release(&mut store, &webapp("2.0", 2), 0);
    let other = add_release(&mut store, &ReleaseId::new("api", "1.0", 1).unwrap(), 0);
    store.write(|w| w.set_current_release(other)).unwrap();
    for current in [r1, r2, r1] {
        store.write(|w| w.set_current_release(current)).unwrap();
        assert_eq!(
            store.current_release("webapp").unwrap().unwrap().id,
            current
        );
        let flags: Vec<bool> = store
            .releases("webapp")
            .unwrap()
            .iter()
            .map(|r| r.current)
            .collect();
        assert_eq!(flags.iter().filter(|&&c| c).count(), 1);
    }
    assert_eq!(store.current_release("api").unwrap().unwrap().id, other);
    assert_eq!(store.packages().unwrap(), ["api", "webapp"]);

    // Installing the same release again updates its row.
    let again = add_release(&mut store, &webapp("1.0", 1), 3);
    assert_eq!(again, r1);
    let row = store.release(&webapp("1.0", 1)).unwrap().unwrap();
    assert_eq!(
        (row.state, row.data_epoch, row.current),
        (ReleaseState::Installing, 3, true)
    );
}

#[test]
fn hook_output_is_bounded_and_its_total_recorded() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    let txn = store
        .write(|w| w.begin_transaction(TxnKind::Install, "webapp", None, None))
        .unwrap();
    let total = 10 * 1024 * 1024;
    let mut output = String::from("starting\n");
    while output.len() + 64 < total - 6 {
        output.push_str("a line of a very chatty hook, printed again and again and again\n");
    }
    output.push_str(&".".repeat(total - 6 - output.len()));
    output.push_str("\ndone\n");
    assert_eq!(output.len(), total);

    let started_at = Timestamp::from_second(1_700_000_000).unwrap();
    let finished_at = started_at + SignedDuration::from_millis(1500);
    let run = |hook, exit, timed_out, output| NewHookRun {
        txn,
        hook,
        started_at,
        finished_at,
        exit,
        timed_out,
        output,
        output_bytes_total: output.len() as u64,
    };
    store
        .write(|w| {
            w.record_hook_run(&run(
                "post_install",
                Some(HookExit::Code(0)),
                false,
                &output,
            ))?;
            w.record_hook_run(&run("health", Some(HookExit::Signal(9)), false, ""))?;
            w.record_hook_run(&run("health", None, true, "waiting...\n"))
        })
        .unwrap();

    let runs = store.hook_runs(txn).unwrap();
    assert_eq!(runs.len(), 3);
    let big = &runs[0];
    assert_eq!(big.output_bytes_total, total as u64);
    assert!(
        big.output.len() <= 2 * OUTPUT_KEEP_BYTES + 200,
        "{}",
        big.output.len()
    );
    assert!(big.output.starts_with("starting\na line"));
    assert!(big.output.ends_with("...\ndone\n"));
    assert!(big.output.contains("bytes of output omitted here"));
    assert_eq!((big.started_at, big.finished_at), (started_at, finished_at));
    assert_eq!((big.exit, big.timed_out), (Some(HookExit::Code(0)), false));
    assert_eq!(
        (runs[1].exit, runs[1].output.as_str()),
        (Some(HookExit::Signal(9)), "")
    );
    assert_eq!((runs[2].exit, runs[2].timed_out), (None, true));
    assert_eq!(
        sqlite3(
            &path,
            "SELECT length(output) < 140000, output_bytes_total FROM hook_runs WHERE id = 1"
        ),
        format!("1|{total}\n")
    );
}

#[test]
fn channel_sequences_only_go_up() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.channel_sequence("staging", "webapp").unwrap(), None);
    for seq in [5, 3, 9, 7] {
        store
            .write(|w| w.accept_channel_sequence("staging", "webapp", seq))
            .unwrap();
    }
    assert_eq!(
        store.channel_sequence("staging", "webapp").unwrap(),
        Some(9)
    );
    assert_eq!(
        store.channel_sequence("production", "webapp").unwrap(),
        None
    );
}

#[test]
fn two_threads_open_and_write_at_once() {
    let (_dir, path) = temp_db();
    let start = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|n| {
            let (path, start) = (path.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let mut store = Store::open(&path).unwrap();
                for i in 0..50 {
                    store
                        .write(|w| {
                            let txn =
                                w.begin_transaction(TxnKind::Install, "webapp", None, None)?;
                            w.record_event(
                                "webapp",
                                Some(txn),
                                EventLevel::Info,
                                &format!("{n}/{i}"),
                            )?;
                            w.finish_transaction(txn, TxnResult::Committed, None)
                        })
                        .unwrap();
                    // Reads proceed while the other thread writes.
                    store.history("webapp").unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let store = Store::open(&path).unwrap();
    let history = store.history("webapp").unwrap();
    assert_eq!(history.len(), 100);
    assert!(history.iter().all(|t| t.result == TxnResult::Committed));
}

#[test]
fn the_sqlite3_command_line_reads_the_database() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    let r1 = add_release(&mut store, &webapp("1.4.2", 173), 7);
    let txn = store
        .write(|w| {
            w.set_release_state(r1, ReleaseState::Healthy)?;
            w.set_current_release(r1)?;
            let txn = w.begin_transaction(TxnKind::Install, "webapp", None, Some(r1))?;
            let step = w.step_started(txn, "unpack")?;
            w.step_done(step, None)?;
            w.finish_transaction(txn, TxnResult::Committed, None)?;
            Ok(txn)
        })
        .unwrap();

    // While the agent holds the database open, as during an install.
    assert_eq!(
        sqlite3(
            &path,
            "SELECT package, version, build, state, data_epoch FROM releases WHERE is_current = 1"
        ),
        "webapp|1.4.2|173|healthy|7\n"
    );
    assert_eq!(
        sqlite3(
            &path,
            "SELECT t.id, t.kind, t.result, s.seq, s.name, s.state,
                    datetime(t.started_at / 1000, 'unixepoch') >= '2020'
             FROM transactions t JOIN steps s ON s.txn_id = t.id"
        ),
        format!("{txn}|install|committed|1|unpack|done|1\n")
    );
    assert_eq!(
        sqlite3(&path, "PRAGMA user_version"),
        format!("{SCHEMA_VERSION}\n")
    );
    drop(store);
    assert_eq!(sqlite3(&path, "PRAGMA quick_check"), "ok\n");
}

/// A database written by the first schema, as a node that ran an older
/// agent has it: migrated to the latest with every row and every reference
/// kept, the transaction counter carried over, and `gc` transactions allowed.
#[test]
fn a_version_1_database_is_migrated_keeping_every_row_and_the_counter() {
    let (_dir, path) = temp_db();
    let v1 = super::schema::v1_for_tests();
    sqlite3(
        &path,
        &format!(
            "{v1}
             INSERT INTO releases (package, version, build, sha256, manifest, dir, state, is_current, installed_at, data_epoch)
                 VALUES ('webapp', '1.0', 1, '{sha}', 'm', '/d', 'healthy', 1, 1, 0);
             INSERT INTO transactions (kind, package, to_release, started_at, finished_at, result, pid)
                 VALUES ('install', 'webapp', 1, 1, 2, 'committed', 7), ('install', 'webapp', 1, 3, 4, 'failed', 7);
             INSERT INTO steps (txn_id, seq, name, state, started_at, finished_at) VALUES (2, 1, 'unpack', 'done', 3, 4);
             INSERT INTO snapshots (package, release_id, created_at, kind, dir, bytes, has_backup, has_dumps, txn_id)
                 VALUES ('webapp', 1, 3, 'tree-tarball', '/s/2', 0, 0, 0, 2);
             UPDATE sqlite_sequence SET seq = 9 WHERE name = 'transactions';
             PRAGMA user_version = 1;",
            sha = "a".repeat(64)
        ),
    );
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let history = store.history("webapp").unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].steps.len(), 1);
    assert_eq!(store.snapshots("webapp").unwrap().len(), 1);
    // The counter went on from 9, not from the highest row (2): snapshot
    // directories are named by transaction number.
    let txn = store
        .write(|w| w.begin_transaction(TxnKind::Gc, "webapp", None, None))
        .unwrap();
    assert_eq!(txn.0, 10);
    drop(store);
    assert_eq!(sqlite3(&path, "PRAGMA foreign_key_check"), "");
    assert_eq!(sqlite3(&path, "PRAGMA integrity_check"), "ok\n");
}
