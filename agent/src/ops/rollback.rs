//! `agent rollback`: back to the release a snapshot holds (the newest by
//! default, or `--to VERSION+BUILD`), code only unless `--with-data`. The
//! tree comes from the kept release dir (a symlink flip) or is unpacked
//! again from the cached artifact a snapshot references. A rollback is a
//! transaction of its own and snapshots what it leaves, so it can itself be
//! rolled back.

use std::fs;

use berth_core::fsutil::IoResultExt;
use berth_core::manifest::Manifest;
use berth_core::name::{self, ReleaseId};
use berth_core::progress::Progress;
use berth_core::unpack;

use crate::error::Error;
use crate::node::Node;
use crate::ops::txn::{self, HookContext, Journal};
use crate::store::{ReleaseState, Snapshot, SnapshotKind, TxnKind, TxnResult};

#[derive(Debug, Clone)]
pub struct RollbackOptions {
    pub package: String,
    /// `--to VERSION+BUILD`.
    pub to: Option<(String, u64)>,
    pub with_data: bool,
    pub force: bool,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub struct RollbackReport {
    pub package: String,
    pub from: ReleaseId,
    pub to: ReleaseId,
    pub with_data: bool,
    pub dry_run: bool,
    pub txn: Option<i64>,
}

/// Replaces the tree `files` with the content of a snapshot's
/// `tree.tar.zst` (made by the agent itself from a release tree).
fn restore_tree(tarball: &std::path::Path, files: &std::path::Path) -> Result<(), Error> {
    fs::remove_dir_all(files).at("cannot replace", files)?;
    fs::create_dir(files).at("cannot create", files)?;
    let file = fs::File::open(tarball).at("cannot open", tarball)?;
    let zstd = zstd::stream::read::Decoder::new(file).at("cannot read", tarball)?;
    let mut archive = tar::Archive::new(zstd);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(false);
    archive.unpack(files).at("cannot unpack", tarball)?;
    Ok(())
}

/// Parses `VERSION+BUILD`.
pub fn parse_to(text: &str) -> Result<(String, u64), Error> {
    let invalid = || name::InvalidName {
        what: "release",
        value: text.to_owned(),
        reason: "expected VERSION+BUILD, e.g. 1.4.2+173".into(),
    };
    let (v, b) = text.rsplit_once('+').ok_or_else(invalid)?;
    name::check_version(v)?;
    Ok((v.to_owned(), name::parse_build(b)?))
}

pub fn rollback(
    node: &Node,
    opts: &RollbackOptions,
    progress: &dyn Progress,
) -> Result<RollbackReport, Error> {
    name::check_package_name(&opts.package)?;
    let mut store = match node.existing_store()? {
        Some(s) => s,
        None => {
            return Err(Error::NotInstalled {
                package: opts.package.clone(),
            });
        }
    };
    let _lock = if opts.dry_run {
        None
    } else {
        Some(node.lock(&format!("rollback {}", opts.package))?)
    };
    if !opts.dry_run {
        crate::ops::recover::recover_node(node, &mut store)?;
    }
    let current = store
        .current_release(&opts.package)?
        .ok_or_else(|| Error::NotInstalled {
            package: opts.package.clone(),
        })?;
    let snapshots = store.snapshots(&opts.package)?;
    let snapshot: &Snapshot = match &opts.to {
        Some((v, b)) => snapshots
            .iter()
            .find(|s| s.release.version == *v && s.release.build == *b)
            .ok_or_else(|| Error::UnknownRollbackTarget {
                package: opts.package.clone(),
                release: format!("{v}+{b}"),
            })?,
        None => snapshots
            .iter()
            .find(|s| s.release != current.release)
            .ok_or_else(|| Error::NothingToRollBack {
                package: opts.package.clone(),
            })?,
    };
    let target_release =
        store
            .release(&snapshot.release)?
            .ok_or_else(|| Error::NothingToRollBack {
                package: opts.package.clone(),
            })?;
    if target_release.data_epoch != current.data_epoch && !opts.with_data && !opts.force {
        return Err(Error::EpochMismatch {
            from: current.release.to_string(),
            from_epoch: current.data_epoch,
            to: target_release.release.to_string(),
            to_epoch: target_release.data_epoch,
        });
    }
    let manifest = Manifest::parse(&target_release.manifest).map_err(|e| Error::Artifact {
        path: target_release.dir.clone(),
        source: e.into(),
    })?;
    if opts.with_data && !manifest.hooks.iter().any(|(n, _)| n == "restore") {
        return Err(Error::NoRestoreHook {
            release: target_release.release.to_string(),
        });
    }
    let report = RollbackReport {
        package: opts.package.clone(),
        from: current.release.clone(),
        to: target_release.release.clone(),
        with_data: opts.with_data,
        dry_run: opts.dry_run,
        txn: None,
    };
    if opts.dry_run {
        return Ok(report);
    }
    let current_manifest = Manifest::parse(&current.manifest).ok();
    let target = node.layout.path(&manifest.install.target);
    txn::check_target(&target)?;
    // `--to` the release already current, in place and intact (a rollback
    // run again): nothing to do, no transaction (`txn` is None). Running it
    // would restore the old dumps over what was written since and mark the
    // current release rolled-back.
    if target_release.id == current.id
        && txn::target_of(&target).as_deref()
            == Some(unpack::tree_dir(&target_release.dir).as_path())
        && txn::looks_intact(&target_release.dir, &manifest)?
    {
        return Ok(report);
    }
    let txn_id = store.write(|w| {
        w.begin_transaction(
            TxnKind::Rollback,
            &opts.package,
            Some(current.id),
            Some(target_release.id),
        )
    })?;
    let mut journal = Journal {
        store: &mut store,
        txn: txn_id,
    };

    // The tree: the kept dir, or unpacked again from the cached artifact.
    let dir = target_release.dir.clone();
    let existed = dir.is_dir();
    let rebuilt = journal.step("tree", || {
        if dir.is_dir() && txn::looks_intact(&dir, &manifest)? {
            return Ok(false);
        }
        let cached = snapshot
            .artifact_sha256
            .as_ref()
            .filter(|_| snapshot.kind == SnapshotKind::ArtifactRef)
            .map(|sha| node.layout.cached_artifact(sha))
            .or_else(|| Some(node.layout.cached_artifact(&target_release.sha256)))
            .filter(|p| p.is_file())
            .ok_or_else(|| Error::ReleaseDirGone {
                release: target_release.release.to_string(),
            })?;
        // Hashed before use, as fetch does: damaged or other bytes in the
        // cache are never unpacked as this release.
        let (sha256, _) = berth_core::digest::sha256_file(&cached)
            .map_err(|e| berth_core::fsutil::PathError::new("cannot read", &cached, e))?;
        if sha256 != target_release.sha256 {
            return Err(Error::ReleaseDirGone {
                release: target_release.release.to_string(),
            });
        }
        // A tree that was modified on the node when it was replaced comes
        // back as it was then, from the snapshot's tarball.
        let tarball = snapshot.dir.join("tree.tar.zst");
        txn::unpack_into_place(&cached, &target_release.sha256, &dir, progress, |staging| {
            if snapshot.kind == SnapshotKind::TreeTarball && tarball.is_file() {
                restore_tree(&tarball, &unpack::tree_dir(staging))?;
            }
            Ok(())
        })?;
        Ok(true)
    });
    let rebuilt = match rebuilt {
        Ok(rebuilt) => rebuilt,
        Err(e) => return Err(journal.fail(TxnResult::Failed, e)),
    };

    // What is left behind is snapshotted too, so this can be undone.
    let (snap_dir, kind) = match current_manifest.as_ref() {
        Some(m) => match journal.step("snapshot", || txn::snapshot_tree(node, &current, m, txn_id))
        {
            Ok(s) => (Some(s.0), Some(s.1)),
            Err(e) => return Err(journal.fail(TxnResult::Failed, e)),
        },
        None => (None, None),
    };
    let ctx = HookContext {
        action: "rollback",
        package: opts.package.clone(),
        release: target_release.release.clone(),
        channel: None,
        release_dir: target_release.dir.clone(),
        previous: Some((current.release.clone(), current.dir.clone())),
        snapshot_dir: snap_dir.clone(),
        timeout_secs: manifest.hooks.timeout_secs,
    };
    // Undoes what was made before the switch: the release dir when it was
    // not there before (a damaged one it replaced is kept repaired), the
    // snapshot dir and, once recorded, the snapshot's row.
    let abort = |journal: &mut Journal<'_>, e: Error, recorded: Option<i64>| {
        if rebuilt && !existed {
            let _ = fs::remove_dir_all(&dir);
        }
        if let Some(d) = &snap_dir {
            let _ = fs::remove_dir_all(d);
        }
        if let Some(id) = recorded {
            let _ = journal
                .store
                .write(|w| w.delete_snapshot(crate::store::SnapshotId(id)));
        }
        journal.fail(TxnResult::Failed, e)
    };
    // Backup and dump of the release being left, with its own hooks.
    let mut recorded = None;
    if let (Some(m), Some(dir)) = (&current_manifest, &snap_dir) {
        let leaving = HookContext {
            release: current.release.clone(),
            release_dir: current.dir.clone(),
            previous: None,
            snapshot_dir: Some(dir.clone()),
            timeout_secs: m.hooks.timeout_secs,
            ..ctx.clone()
        };
        for hook in ["backup", "dump"] {
            if let Err(e) = txn::require_hook(node, &mut journal, m, &leaving, hook) {
                return Err(abort(&mut journal, e, None));
            }
        }
        recorded = Some(txn::record_snapshot(
            &mut journal,
            current.id,
            dir,
            kind.unwrap_or(SnapshotKind::TreeTarball),
            &current.sha256,
        )?);
    }

    let tree = unpack::tree_dir(&target_release.dir);
    let previous_tree = unpack::tree_dir(&current.dir);
    if let Err(e) = journal.step("link", || {
        txn::link_node_local(node, &opts.package, &manifest, &tree, Some(&previous_tree))
    }) {
        return Err(abort(&mut journal, e, recorded));
    }
    if let Err(e) = txn::require_hook(node, &mut journal, &manifest, &ctx, "pre_install") {
        return Err(abort(&mut journal, e, recorded));
    }
    if opts.with_data {
        // The restore hook of the release being returned to, with the dumps
        // taken when it was replaced.
        let restore_ctx = HookContext {
            snapshot_dir: Some(snapshot.dir.clone()),
            ..ctx.clone()
        };
        if let Err(e) = txn::require_hook(node, &mut journal, &manifest, &restore_ctx, "restore") {
            return Err(abort(&mut journal, e, recorded));
        }
    }
    if let Err(e) = journal.step("switch", || txn::switch(&target, &tree, txn_id)) {
        return Err(abort(&mut journal, e, recorded));
    }
    for hook in ["post_install", "health"] {
        let ending = match txn::run_hook(node, &mut journal, &manifest, &ctx, hook) {
            Ok(ending) if ending.success() => None,
            Ok(ending) => Some(ending.to_string()),
            // A hook that cannot even start fails like one that exits non-zero.
            Err(e) => Some(e.to_string()),
        };
        if let Some(ending) = ending {
            // Back to where the rollback started.
            let back = journal.step("switch back", || {
                txn::switch(&target, &previous_tree, txn_id)
            });
            if let Err(e) = back {
                return Err(journal.fail(TxnResult::Failed, e));
            }
            // The release left is running again: its own post_install
            // starts it, as after a failed install.
            txn::restart_previous(node, &mut journal, &current);
            let e = Error::RolledBack {
                hook: hook.into(),
                release: target_release.release.to_string(),
                ending,
                back_to: current.release.to_string(),
            };
            return Err(journal.fail(TxnResult::RolledBack, e));
        }
    }
    // The mark recovery goes by: from here an interruption is finished.
    journal.step(txn::HEALTHY_STEP, || Ok(()))?;
    let (to_row, from_row) = (target_release.id, current.id);
    berth_core::fault::point("commit:before");
    journal.store.write(|w| {
        w.set_release_state(to_row, ReleaseState::Healthy)?;
        w.set_current_release(to_row)?;
        if from_row != to_row {
            w.set_release_state(from_row, ReleaseState::RolledBack)?;
        }
        w.finish_transaction(txn_id, TxnResult::Committed, None)
    })?;
    berth_core::fault::point("commit:after");
    Ok(RollbackReport {
        txn: Some(txn_id.0),
        ..report
    })
}
