//! Recovery: what every changing command does first under the node lock,
//! and `agent recover` does alone and says out loud. A transaction still
//! `running` belongs to a process that died (SIGKILL, power loss, the OOM
//! killer). Its journal and the target link on disk decide what happens:
//!
//! - install or rollback, the target on the new release and the `healthy`
//!   step done (post_install and health had passed): finished, committed
//!   as the dead process would have;
//! - the target on the new release without it: undone, switched back to
//!   the release it replaced (whose post_install runs again to restart
//!   it), the new release marked failed;
//! - the target not on the new release (killed before the switch, or
//!   after switching back): undone, what the transaction made before the
//!   switch removed (its snapshot, a release dir it unpacked);
//! - gc: the removal in progress is finished, the rest left to the next
//!   `agent gc`.
//!
//! Then, whatever was interrupted: the release the target link points at
//! is current in the database (the link on disk is the truth), and
//! `.staging-*`, `.trash-*`, cut-short downloads (`.tmp-*` in the cache)
//! and switch links never renamed are removed.

use std::fs;
use std::path::PathBuf;

use berth_core::fsutil::{self, IoResultExt};
use berth_core::manifest::Manifest;
use berth_core::name::ReleaseId;
use berth_core::unpack;

use crate::error::Error;
use crate::node::Node;
use crate::ops::txn::{self, HEALTHY_STEP, Journal, TRASH_PREFIX, UNPACKED_DETAIL};
use crate::store::{
    EventLevel, Release, ReleaseState, SnapshotId, StepState, Store, StoreError, TxnKind,
    TxnRecord, TxnResult, Writer,
};

/// How recovery ended an interrupted transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Completed as the dead process would have.
    Finished,
    /// Reversed: the node is where the transaction found it.
    Undone,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Finished => "finished",
            Outcome::Undone => "undone",
        }
    }
}

/// One interrupted transaction and what recovery did about it.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub txn: TxnRecord,
    pub outcome: Outcome,
    /// What was done, in one sentence.
    pub detail: String,
}

/// What [`recover_node`] did.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    pub closed: Vec<Recovered>,
    /// Per package of a closed transaction: the release the target link
    /// points at, now current in the database (`None`: it points at no
    /// release the node knows, or there is no link).
    pub current: Vec<(String, Option<ReleaseId>)>,
    /// Temporary, staging and trash paths removed.
    pub removed: Vec<PathBuf>,
}

impl Recovery {
    pub fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.removed.is_empty()
    }
}

/// `agent recover`: recovers the node; a node with no state database has
/// nothing to recover (and none is created).
pub fn recover(node: &Node) -> Result<Recovery, Error> {
    if node.existing_store()?.is_none() {
        return Ok(Recovery::default());
    }
    let _lock = node.lock("recover")?;
    let Some(mut store) = node.existing_store()? else {
        return Ok(Recovery::default());
    };
    recover_node(node, &mut store)
}

/// Finishes or undoes what an interrupted command left. The caller holds
/// the node lock, so a transaction still `running` is a dead process's.
pub fn recover_node(node: &Node, store: &mut Store) -> Result<Recovery, Error> {
    let mut done = Recovery::default();
    for txn in store.unfinished_transactions()? {
        let package = txn.package.clone();
        let recovered = match txn.kind {
            TxnKind::Install | TxnKind::Rollback => recover_switch(node, store, txn)?,
            TxnKind::Gc | TxnKind::Rebuild => close_removals(store, txn)?,
        };
        done.closed.push(recovered);
        let current = reconcile_current(node, store, &package)?;
        done.current.push((package, current));
    }
    done.removed.extend(remove_leftovers(node, store)?);
    Ok(done)
}

/// The install target of `package`, from the newest manifest the node
/// recorded for it.
fn target_of_package(node: &Node, releases: &[Release]) -> Option<PathBuf> {
    releases
        .iter()
        .find_map(|r| Manifest::parse(&r.manifest).ok())
        .map(|m| node.layout.path(&m.install.target))
}

/// Makes the release the target link points at current in the database.
fn reconcile_current(
    node: &Node,
    store: &mut Store,
    package: &str,
) -> Result<Option<ReleaseId>, Error> {
    let releases = store.releases(package)?;
    let Some(target) = target_of_package(node, &releases) else {
        return Ok(None);
    };
    let on_disk = txn::target_of(&target);
    let found = releases
        .iter()
        .find(|r| on_disk.as_deref() == Some(unpack::tree_dir(&r.dir).as_path()));
    if let Some(r) = found
        && !r.current
    {
        let row = r.id;
        store.write(|w| w.set_current_release(row))?;
    }
    Ok(found.map(|r| r.release.clone()))
}

fn step_done(txn: &TxnRecord, name: &str) -> bool {
    txn.steps
        .iter()
        .any(|s| s.name == name && s.state == StepState::Done)
}

/// An install or rollback: finished when its health check had passed on
/// the new release, else undone.
fn recover_switch(node: &Node, store: &mut Store, txn: TxnRecord) -> Result<Recovered, Error> {
    let id = txn.id;
    let lookup = |store: &Store, r: &Option<ReleaseId>| -> Result<Option<Release>, Error> {
        Ok(match r {
            Some(r) => store.release(r)?,
            None => None,
        })
    };
    let from = lookup(store, &txn.from)?;
    let to = lookup(store, &txn.to)?;
    let releases = store.releases(&txn.package)?;
    let target = target_of_package(node, &releases);
    if let Some(target) = &target {
        // A link made for the switch and never renamed over the target.
        fsutil::remove_file_synced(&txn::switch_link(target, id))?;
    }
    let link = target.as_deref().and_then(txn::target_of);
    let on_new = to
        .as_ref()
        .is_some_and(|r| link.as_deref() == Some(unpack::tree_dir(&r.dir).as_path()));
    let mut journal = Journal { store, txn: id };

    // Installing the current release again (to repair its dir): the
    // target never left it, so there is nothing to switch back or finish.
    if let (Some(f), Some(t)) = (&from, &to)
        && f.id == t.id
    {
        let row = t.id;
        let detail = format!(
            "undone: interrupted while repairing {}; the target still points at it",
            t.release.version_build()
        );
        let was_installing = t.state == ReleaseState::Installing;
        return close(
            journal.store,
            txn,
            TxnResult::Failed,
            Outcome::Undone,
            detail,
            |w| {
                if was_installing {
                    w.set_release_state(row, ReleaseState::Healthy)?;
                }
                Ok(())
            },
        );
    }

    if let (true, Some(to)) = (on_new, &to) {
        if step_done(&txn, HEALTHY_STEP) {
            // Only the commit was missing.
            let (to_row, from_row) = (to.id, from.as_ref().map(|f| f.id));
            let left = match txn.kind {
                TxnKind::Rollback => ReleaseState::RolledBack,
                _ => ReleaseState::Superseded,
            };
            let detail = format!(
                "finished: {} had passed its health check; committed",
                to.release.version_build()
            );
            return close(
                journal.store,
                txn,
                TxnResult::Committed,
                Outcome::Finished,
                detail,
                |w| {
                    w.set_release_state(to_row, ReleaseState::Healthy)?;
                    w.set_current_release(to_row)?;
                    if let Some(f) = from_row.filter(|f| *f != to_row) {
                        w.set_release_state(f, left)?;
                    }
                    Ok(())
                },
            );
        }
        // Switched, never proven: back to what it replaced.
        let target = target.as_deref().expect("the link was read from it");
        let back_to = match &from {
            Some(f) => {
                journal.step("switch back", || {
                    txn::switch(target, &unpack::tree_dir(&f.dir), id)
                })?;
                txn::restart_previous(node, &mut journal, f);
                f.release.version_build()
            }
            None => {
                journal.step("switch back", || txn::unswitch(target))?;
                "no release (it was the first install)".to_owned()
            }
        };
        let detail = format!(
            "undone: interrupted after the switch to {}, before its health check passed; switched back to {back_to}",
            to.release.version_build()
        );
        let (to_row, from_row) = (to.id, from.as_ref().map(|f| f.id));
        let install = txn.kind == TxnKind::Install;
        return close(
            journal.store,
            txn,
            TxnResult::RolledBack,
            Outcome::Undone,
            detail,
            |w| {
                if install {
                    w.set_release_state(to_row, ReleaseState::Failed)?;
                }
                if let Some(f) = from_row {
                    w.set_current_release(f)?;
                }
                Ok(())
            },
        );
    }

    // Not on the new release: interrupted before the switch, or after
    // switching back. What the transaction made before the switch goes,
    // unless the new release ran (its snapshot holds the data as it was
    // before).
    let switched = step_done(&txn, "switch");
    let mut undid = Vec::new();
    if !switched {
        let snapshot_dir = node.layout.snapshots_dir().join(id.to_string());
        let recorded: Vec<SnapshotId> = journal
            .store
            .snapshots(&txn.package)?
            .into_iter()
            .filter(|s| s.txn == id)
            .map(|s| s.id)
            .collect();
        if snapshot_dir.exists() || !recorded.is_empty() {
            for s in recorded {
                journal.store.write(|w| w.delete_snapshot(s))?;
            }
            fsutil::remove_dir_all_if_exists(&snapshot_dir)?;
            undid.push("its snapshot removed".to_owned());
        }
        if let Some(to) = &to
            && txn.kind == TxnKind::Install
            && !to.current
        {
            let made = txn
                .steps
                .iter()
                .any(|s| s.name == "unpack" && s.detail.as_deref() == Some(UNPACKED_DETAIL));
            if made && to.dir.exists() {
                fsutil::remove_dir_all_if_exists(&to.dir)?;
                undid.push(format!("{} unpacked by it removed", to.dir.display()));
            }
        }
    }
    // An install's release ends failed (it never ran, or was switched
    // away from).
    let failed = to
        .as_ref()
        .filter(|t| {
            txn.kind == TxnKind::Install && (t.state == ReleaseState::Installing || switched)
        })
        .map(|t| t.id);
    let mut detail = if switched {
        "undone: interrupted after switching back".to_owned()
    } else {
        "undone: interrupted before the switch".to_owned()
    };
    for u in &undid {
        detail.push_str("; ");
        detail.push_str(u);
    }
    let result = if switched {
        TxnResult::RolledBack
    } else {
        TxnResult::Failed
    };
    close(journal.store, txn, result, Outcome::Undone, detail, |w| {
        if let Some(row) = failed {
            w.set_release_state(row, ReleaseState::Failed)?;
        }
        Ok(())
    })
}

/// A gc: every removal is a rename to a trash dir first, so the one in
/// progress is finished by [`remove_leftovers`]; the rest waits for the
/// next `agent gc`.
fn close_removals(store: &mut Store, txn: TxnRecord) -> Result<Recovered, Error> {
    let done = txn
        .steps
        .iter()
        .filter(|s| s.state == StepState::Done)
        .count();
    let detail = format!(
        "finished: interrupted after {done} removal(s); the one in progress completed, `agent gc` removes the rest"
    );
    close(
        store,
        txn,
        TxnResult::Failed,
        Outcome::Finished,
        detail,
        |_| Ok(()),
    )
}

/// Ends the interrupted `txn` as `result`, with `changes` in the same
/// SQLite transaction and an event saying `detail` (also its error,
/// unless it is committed).
fn close(
    store: &mut Store,
    txn: TxnRecord,
    result: TxnResult,
    outcome: Outcome,
    detail: String,
    changes: impl FnOnce(&Writer<'_>) -> Result<(), StoreError>,
) -> Result<Recovered, Error> {
    let id = txn.id;
    let error = (result != TxnResult::Committed).then_some(detail.as_str());
    store.write(|w| {
        changes(w)?;
        w.record_event(&txn.package, Some(id), EventLevel::Warn, &detail)?;
        w.finish_transaction(id, result, error)
    })?;
    Ok(Recovered {
        txn,
        outcome,
        detail,
    })
}

/// What no transaction is writing any more (the caller holds the lock and
/// every transaction is closed): cut-short downloads, staging dirs and
/// trash dirs (a snapshot's row is forgotten first). A snapshot dir no
/// row holds is left alone: only the transaction that made it (undone
/// above) knows it is debris, and `agent recover --rebuild` may need it.
fn remove_leftovers(node: &Node, store: &mut Store) -> Result<Vec<PathBuf>, Error> {
    let mut removed = Vec::new();
    let cache = node.layout.cache_dir();
    for e in txn::entries(&cache) {
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            fs::remove_file(e.path()).at("cannot remove", &e.path())?;
            removed.push(e.path());
        }
    }
    let snapshots_dir = node.layout.snapshots_dir();
    for package in store.packages()? {
        removed.extend(txn::clean_staging(node, &package)?);
        for e in txn::entries(&node.layout.releases_dir(&package)) {
            if e.file_name().to_string_lossy().starts_with(TRASH_PREFIX) {
                fsutil::remove_dir_all_if_exists(&e.path())?;
                removed.push(e.path());
            }
        }
    }
    for e in txn::entries(&snapshots_dir) {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_prefix(TRASH_PREFIX) {
            if let Ok(id) = id.parse::<i64>() {
                let _ = store.write(|w| w.delete_snapshot(SnapshotId(id)));
            }
            fsutil::remove_dir_all_if_exists(&e.path())?;
            removed.push(e.path());
        }
    }
    Ok(removed)
}
