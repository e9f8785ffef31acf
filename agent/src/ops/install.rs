//! `agent install`: the steps of DESIGN.md's "Install, in order". Lock;
//! recover; resolve in the channels (or take `--file`); fetch into the
//! cache; unchanged when installed and intact; unpack into a fresh staging
//! dir; snapshot the release being replaced and run backup and dump into
//! it; link node-local parts; pre_install; switch the target with one
//! rename; post_install and health, rolling back on failure; commit; prune.
//! A failure before the switch leaves the node as it was.

use std::fs;
use std::path::{Path, PathBuf};

use berth_core::archive;
use berth_core::digest;
use berth_core::fault;
use berth_core::fsutil::{self, IoResultExt};
use berth_core::manifest::Manifest;
use berth_core::name::ReleaseId;
use berth_core::progress::Progress;
use berth_core::repo::Repository;
use berth_core::unpack;
use berth_core::{Diagnose, Fault};

use crate::error::Error;
use crate::fetch;
use crate::index_cache::{self, IndexCache};
use crate::node::Node;
use crate::ops::recover;
use crate::ops::txn::{self, HookContext, Journal};
use crate::resolve::{self, Wanted};
use crate::store::{NewRelease, Release, ReleaseState, Store, TxnKind, TxnResult};
use crate::trust::{self, IndexReader, Trust};

#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// `NAME[@VERSION[+BUILD]]`, from the repository.
    pub wanted: Option<Wanted>,
    /// `--file ARTIFACT`, with no repository.
    pub file: Option<PathBuf>,
    pub dry_run: bool,
    /// Roll back to the previous release when post_install or health fails.
    pub auto_rollback: bool,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Installed,
    Unchanged,
    /// `--dry-run`: it would be installed.
    WouldInstall,
}

#[derive(Debug, Clone)]
pub struct InstallReport {
    pub outcome: Outcome,
    pub release: ReleaseId,
    pub channel: Option<String>,
    pub previous: Option<ReleaseId>,
    pub target: PathBuf,
    pub txn: Option<i64>,
    pub snapshot: Option<i64>,
}

/// The artifact to install, once found.
struct Source {
    path: PathBuf,
    sha256: String,
    manifest: Manifest,
    channel: Option<String>,
    /// This command put it in the cache (it was not there before).
    fresh: bool,
}

pub fn install(
    node: &Node,
    opts: &InstallOptions,
    progress: &dyn Progress,
) -> Result<InstallReport, Error> {
    let label = match (&opts.wanted, &opts.file) {
        (Some(w), _) => w.package.clone(),
        (None, Some(f)) => f.display().to_string(),
        (None, None) => String::new(),
    };
    if opts.dry_run {
        return dry_run(node, opts);
    }
    let located = locate(node, opts)?;
    if let Located::File { manifest, .. } = &located {
        txn::check_target(&node.layout.path(&manifest.install.target))?;
    }
    let _lock = node.lock(&format!("install {label}"))?;
    let mut store = node.store()?;
    recover::recover_node(node, &mut store)?;
    // The floor rises once the artifact the index names is in hand: an
    // artifact refused (too large, wrong digest) leaves the state as it was.
    let accepted = match &located {
        Located::Repo {
            repo,
            accepted,
            kept,
            ..
        } => Some((repo.location(), accepted.clone(), kept.clone())),
        Located::File { .. } => None,
    };
    let source = obtain(node, located, progress)?;
    if let Some((repo, accepted, (cache, kept))) = accepted {
        trust::record(node, &mut store, &accepted, &repo)?;
        index_cache::save_all(&cache, &kept);
    }
    let release = source.manifest.release();
    let package = release.name.clone();
    let target = node.layout.path(&source.manifest.install.target);
    txn::check_target(&target)?;

    let current = store.current_release(&package)?;
    if let Some(cur) = &current
        && is_installed_intact(cur, &release, &source.sha256, &target, &source.manifest)?
    {
        return Ok(InstallReport {
            outcome: Outcome::Unchanged,
            release,
            channel: source.channel,
            previous: None,
            target,
            txn: None,
            snapshot: None,
        });
    }

    // Room for the unpacked tree (its entries' metadata aside), checked
    // before anything is written.
    if !node
        .layout
        .release_dir(&package, &release.version, release.build)
        .is_dir()
    {
        txn::ensure_room_for(&node.layout.state_dir(), &source.manifest)?;
    }
    let txn_id = store.write(|w| {
        w.begin_transaction(
            TxnKind::Install,
            &package,
            current.as_ref().map(|c| c.id),
            None,
        )
    })?;
    let mut journal = Journal {
        store: &mut store,
        txn: txn_id,
    };
    match run(
        node,
        &mut journal,
        &source,
        current.as_ref(),
        &target,
        opts,
        progress,
    ) {
        Ok(snapshot) => Ok(InstallReport {
            outcome: Outcome::Installed,
            release,
            channel: source.channel,
            previous: current.map(|c| c.release),
            target,
            txn: Some(txn_id.0),
            snapshot,
        }),
        Err(e) => Err(e),
    }
}

/// Everything after the transaction began. On a failure before the switch
/// it undoes what it made and ends the transaction failed.
fn run(
    node: &Node,
    journal: &mut Journal<'_>,
    source: &Source,
    current: Option<&Release>,
    target: &Path,
    opts: &InstallOptions,
    progress: &dyn Progress,
) -> Result<Option<i64>, Error> {
    let manifest = &source.manifest;
    let release = manifest.release();
    let package = release.name.clone();
    let release_dir = node
        .layout
        .release_dir(&package, &release.version, release.build);
    let current_manifest = current.and_then(|c| Manifest::parse(&c.manifest).ok());

    // Unpack, unless the release is kept here intact already.
    let created = match journal.step_noting("unpack", || {
        let created = prepare_release_dir(source, &release_dir, progress)?;
        Ok((created, created.then(|| txn::UNPACKED_DETAIL.to_owned())))
    }) {
        Ok(created) => created,
        Err(e) => {
            // A refused artifact is of no use here: the cache is left as
            // it was (the journal keeps the refusal).
            if source.fresh && e.fault() == Fault::Input {
                let _ = fs::remove_file(&source.path);
            }
            return Err(journal.fail(TxnResult::Failed, e));
        }
    };
    let undo_unpack = |created: bool| {
        if created {
            let _ = fs::remove_dir_all(&release_dir);
        }
    };
    let manifest_text = manifest.to_toml();
    let row = journal.store.write(|w| {
        let row = w.upsert_release(&NewRelease {
            release: &release,
            sha256: &source.sha256,
            manifest: &manifest_text,
            dir: &release_dir,
            data_epoch: manifest.rollback.data_epoch,
            state: ReleaseState::Installing,
        })?;
        w.set_transaction_releases(journal.txn, current.map(|c| c.id), row)?;
        Ok(row)
    })?;

    // Snapshot what is being replaced, then backup and dump into it.
    let mut snapshot = None;
    let mut snapshot_dir = None;
    if let (Some(cur), Some(cur_manifest)) = (current, &current_manifest) {
        let txn_id = journal.txn;
        match journal.step("snapshot", || {
            txn::snapshot_tree(node, cur, cur_manifest, txn_id)
        }) {
            Ok((dir, kind)) => {
                snapshot_dir = Some((dir, kind));
            }
            Err(e) => {
                undo_unpack(created);
                mark_failed(journal, row);
                return Err(journal.fail(TxnResult::Failed, e));
            }
        }
    }
    let ctx = HookContext {
        action: "install",
        package: package.clone(),
        release: release.clone(),
        channel: source.channel.clone(),
        release_dir: release_dir.clone(),
        previous: current.map(|c| (c.release.clone(), c.dir.clone())),
        snapshot_dir: snapshot_dir.as_ref().map(|(d, _)| d.clone()),
        timeout_secs: manifest.hooks.timeout_secs,
    };
    // Undoes what was made before the switch: the unpacked dir, the
    // snapshot dir and, once recorded, the snapshot's row.
    let abort = |journal: &mut Journal<'_>, e: Error, recorded: Option<i64>| {
        undo_unpack(created);
        if let Some((dir, _)) = &snapshot_dir {
            let _ = fs::remove_dir_all(dir);
        }
        if let Some(id) = recorded {
            let _ = journal
                .store
                .write(|w| w.delete_snapshot(crate::store::SnapshotId(id)));
        }
        mark_failed(journal, row);
        journal.fail(TxnResult::Failed, e)
    };
    // Backup and dump write into the snapshot: with no release being
    // replaced there is none, and nothing of the package's to keep.
    if snapshot_dir.is_some() {
        for hook in ["backup", "dump"] {
            if let Err(e) = txn::require_hook(node, journal, manifest, &ctx, hook) {
                return Err(abort(journal, e, None));
            }
        }
    }
    if let (Some(cur), Some((dir, kind))) = (current, &snapshot_dir) {
        snapshot = Some(txn::record_snapshot(
            journal,
            cur.id,
            dir,
            *kind,
            &cur.sha256,
        )?);
    }

    let tree = unpack::tree_dir(&release_dir);
    let previous_tree = current.map(|c| unpack::tree_dir(&c.dir));
    if let Err(e) = journal.step("link", || {
        txn::link_node_local(node, &package, manifest, &tree, previous_tree.as_deref())
    }) {
        return Err(abort(journal, e, snapshot));
    }
    if let Err(e) = txn::require_hook(node, journal, manifest, &ctx, "pre_install") {
        return Err(abort(journal, e, snapshot));
    }

    // The commit point.
    let txn_id = journal.txn;
    if let Err(e) = journal.step("switch", || txn::switch(target, &tree, txn_id)) {
        return Err(abort(journal, e, snapshot));
    }

    for hook in ["post_install", "health"] {
        let ending = match txn::run_hook(node, journal, manifest, &ctx, hook) {
            Ok(ending) if ending.success() => continue,
            Ok(ending) => ending.to_string(),
            // A hook that cannot even start fails like one that exits
            // non-zero: the node must not stay on an unchecked release.
            Err(e) => e.to_string(),
        };
        return Err(after_switch_failure(
            node, journal, hook, ending, &release, row, current, target, opts,
        ));
    }
    // The mark recovery goes by: from here an interruption is finished,
    // before it undone.
    journal.step(txn::HEALTHY_STEP, || Ok(()))?;

    let prev_id = current.map(|c| c.id);
    fault::point("commit:before");
    journal.store.write(|w| {
        w.set_release_state(row, ReleaseState::Healthy)?;
        w.set_current_release(row)?;
        if let Some(prev) = prev_id {
            w.set_release_state(prev, ReleaseState::Superseded)?;
        }
        w.finish_transaction(txn_id, TxnResult::Committed, None)
    })?;
    fault::point("commit:after");
    let keep = node
        .config
        .packages
        .get(&package)
        .and_then(|p| p.keep_releases)
        .unwrap_or(manifest.install.keep_releases);
    txn::prune(node, journal.store, &package, keep, prev_id, false)?;
    Ok(snapshot)
}

/// Records that the install of `row` failed before the switch (the
/// release stays out of `installing`). A store failure here must not hide
/// the error being reported.
fn mark_failed(journal: &mut Journal<'_>, row: crate::store::ReleaseRowId) {
    let _ = journal
        .store
        .write(|w| w.set_release_state(row, ReleaseState::Failed));
}

/// post_install or health failed after the switch: back to the previous
/// release (or to no release at all on a first install), unless told not to.
#[allow(clippy::too_many_arguments)]
fn after_switch_failure(
    node: &Node,
    journal: &mut Journal<'_>,
    hook: &str,
    ending: String,
    release: &ReleaseId,
    row: crate::store::ReleaseRowId,
    current: Option<&Release>,
    target: &Path,
    opts: &InstallOptions,
) -> Error {
    let txn_id = journal.txn;
    if !opts.auto_rollback {
        let _ = journal.store.write(|w| {
            w.set_release_state(row, ReleaseState::Failed)?;
            w.set_current_release(row)
        });
        let e = Error::FailedInPlace {
            hook: hook.into(),
            release: release.to_string(),
            ending,
        };
        return journal.fail(TxnResult::Failed, e);
    }
    let back = match current {
        Some(cur) => journal
            .step("switch back", || {
                txn::switch(target, &unpack::tree_dir(&cur.dir), txn_id)
            })
            .map(|()| cur.release.to_string()),
        None => journal
            .step("switch back", || txn::unswitch(target))
            .map(|()| "no release (it was the first install)".to_owned()),
    };
    let back_to = match back {
        Ok(b) => b,
        Err(e) => return journal.fail(TxnResult::Failed, e),
    };
    // The previous release is running again: its own post_install starts it.
    if let Some(cur) = current {
        txn::restart_previous(node, journal, cur);
    }
    let _ = journal.store.write(|w| {
        w.set_release_state(row, ReleaseState::Failed)?;
        if let Some(cur) = current {
            w.set_current_release(cur.id)?;
        }
        Ok(())
    });
    let e = Error::RolledBack {
        hook: hook.into(),
        release: release.to_string(),
        ending,
        back_to,
    };
    journal.fail(TxnResult::RolledBack, e)
}

/// Unpacks into `releases/<pkg>/.staging-…` and moves it into place; a kept
/// release dir that is intact is used as it is. Returns whether it made
/// the release dir.
fn prepare_release_dir(
    source: &Source,
    release_dir: &Path,
    progress: &dyn Progress,
) -> Result<bool, Error> {
    if release_dir.is_dir() && txn::intact(release_dir, &source.manifest)? {
        return Ok(false);
    }
    // Not current here (installing the current release again when it is
    // intact is `unchanged`), so a damaged copy can simply be replaced.
    txn::unpack_into_place(&source.path, &source.sha256, release_dir, progress, |_| {
        Ok(())
    })?;
    Ok(true)
}

/// Whether `cur` is `release` with these bytes, the target points at its
/// tree, and the tree still matches `manifest` (by digest): `unchanged`.
fn is_installed_intact(
    cur: &Release,
    release: &ReleaseId,
    sha256: &str,
    target: &Path,
    manifest: &Manifest,
) -> Result<bool, Error> {
    Ok(cur.release == *release
        && cur.sha256 == sha256
        && txn::target_of(target).as_deref() == Some(unpack::tree_dir(&cur.dir).as_path())
        && txn::intact(&cur.dir, manifest)?)
}

/// Where the artifact is, found without writing anything: a checked file,
/// or a release resolved in the repository's channels.
enum Located {
    File {
        path: PathBuf,
        sha256: String,
        manifest: Box<Manifest>,
    },
    Repo {
        repo: Box<Repository>,
        resolved: Box<resolve::Resolved>,
        /// The signed indexes the resolution accepted: their sequences
        /// become the node's floor once it holds the lock.
        accepted: Vec<trust::Accepted>,
        /// The indexes read, for the node's copies (conditional GET next
        /// time), saved with the floor.
        kept: (IndexCache, Vec<index_cache::Entry>),
    },
}

impl Located {
    fn release(&self) -> Result<ReleaseId, Error> {
        Ok(match self {
            Located::File { manifest, .. } => manifest.release(),
            Located::Repo { resolved, .. } => ReleaseId::new(
                &resolved.package,
                &resolved.entry.version,
                resolved.entry.build,
            )?,
        })
    }

    fn sha256(&self) -> &str {
        match self {
            Located::File { sha256, .. } => sha256,
            Located::Repo { resolved, .. } => &resolved.entry.sha256,
        }
    }
}

/// Finds the artifact, read only: bad input is refused before the node is
/// touched (no lock file, no state database created).
fn locate(node: &Node, opts: &InstallOptions) -> Result<Located, Error> {
    if let Some(path) = &opts.file {
        let (sha256, _) = digest::sha256_file(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::ArtifactMissing { path: path.clone() }
            } else {
                berth_core::fsutil::PathError::new("cannot read", path, e).into()
            }
        })?;
        let manifest = read_manifest(path)?;
        return Ok(Located::File {
            path: path.clone(),
            sha256,
            manifest: Box::new(manifest),
        });
    }
    let wanted = opts
        .wanted
        .as_ref()
        .expect("the command line gives a name or a file");
    let url = node.repository().ok_or_else(|| Error::NoRepository {
        package: wanted.package.clone(),
    })?;
    let trust = Trust::load(node)?;
    let repo = crate::remote::open(node, url)?;
    let channels = node.channels(&wanted.package);
    let store = node.existing_store()?;
    let cache = IndexCache::new(&node.layout, &repo.location());
    let reader = IndexReader::new(
        &repo,
        &trust,
        cache.clone(),
        store.as_ref(),
        &wanted.package,
        &channels,
    )?;
    let resolved = resolve::resolve(&reader, wanted, &channels)?;
    let accepted = reader.accepted();
    let kept = reader.kept();
    Ok(Located::Repo {
        repo: Box::new(repo),
        resolved: Box::new(resolved),
        accepted,
        kept: (cache, kept),
    })
}

/// Puts the located artifact in the node's cache (under the node lock).
fn obtain(node: &Node, located: Located, progress: &dyn Progress) -> Result<Source, Error> {
    match located {
        Located::File {
            path,
            sha256,
            manifest,
        } => {
            let cached = node.layout.cached_artifact(&sha256);
            let fresh = !cached.is_file();
            if fresh {
                fsutil::create_dir_all_synced(&node.layout.cache_dir())?;
                let mut tmp = fsutil::temp_file_in(&node.layout.cache_dir())?;
                let from = fs::File::open(&path).at("cannot open", &path)?;
                // Hashed again as it is copied: the file may have changed
                // since it was first read, and the cache is named by digest.
                let mut from = digest::HashingReader::new(from);
                std::io::copy(&mut from, tmp.as_file_mut()).at("cannot write", tmp.path())?;
                let (copied, _) = from.finish();
                if copied != sha256 {
                    return Err(Error::ArtifactChanged { path });
                }
                fsutil::persist(tmp, &cached)?;
            }
            Ok(Source {
                path: cached,
                sha256,
                manifest: *manifest,
                channel: None,
                fresh,
            })
        }
        Located::Repo { repo, resolved, .. } => {
            let fetched = fetch::fetch(&repo, &resolved, &node.layout, progress)?;
            let manifest = read_manifest(&fetched.path)?;
            Ok(Source {
                fresh: !fetched.cached,
                path: fetched.path,
                sha256: resolved.entry.sha256,
                manifest,
                channel: Some(resolved.channel),
            })
        }
    }
}

fn read_manifest(path: &Path) -> Result<Manifest, Error> {
    let file = fs::File::open(path).at("cannot open", path)?;
    archive::read_manifest(std::io::BufReader::new(file)).map_err(|source| Error::Artifact {
        path: path.to_owned(),
        source,
    })
}

/// `--dry-run`: what would happen, changing nothing (no lock, no store
/// created, nothing fetched).
fn dry_run(node: &Node, opts: &InstallOptions) -> Result<InstallReport, Error> {
    let located = locate(node, opts)?;
    let release = located.release()?;
    let sha256 = located.sha256().to_owned();
    let (channel, target_rel) = match &located {
        Located::File { manifest, .. } => (None, Some(manifest.install.target.clone())),
        Located::Repo { resolved, .. } => (Some(resolved.channel.clone()), None),
    };
    let store: Option<Store> = node.existing_store()?;
    let current = match &store {
        Some(s) => s.current_release(&release.name)?,
        None => None,
    };
    let target_rel = target_rel.or_else(|| {
        current
            .as_ref()
            .and_then(|c| Manifest::parse(&c.manifest).ok())
            .map(|m| m.install.target)
    });
    let target = target_rel.map(|t| node.layout.path(&t)).unwrap_or_default();
    // The same release has the same manifest: the current one's will do.
    let unchanged = match &current {
        Some(c) => match Manifest::parse(&c.manifest) {
            Ok(m) => is_installed_intact(c, &release, &sha256, &target, &m)?,
            Err(_) => false,
        },
        None => false,
    };
    Ok(InstallReport {
        outcome: if unchanged {
            Outcome::Unchanged
        } else {
            Outcome::WouldInstall
        },
        release,
        channel,
        previous: current.map(|c| c.release),
        target,
        txn: None,
        snapshot: None,
    })
}
