//! `agent status`, `agent history`, `agent snapshots`: what the node's
//! state says, read only. A node without a state database has nothing
//! installed; reading never creates one.

use std::path::PathBuf;

use berth_core::manifest::Manifest;
use berth_core::unpack;

use crate::error::Error;
use crate::node::Node;
use crate::ops::txn;
use crate::store::{Event, HookRun, Release, Snapshot, TxnId, TxnRecord};

/// One package's state on the node.
#[derive(Debug, Clone)]
pub struct PackageStatus {
    pub package: String,
    /// The current release, if any.
    pub current: Option<Release>,
    /// The target symlink and where it points.
    pub target: Option<PathBuf>,
    pub points_to: Option<PathBuf>,
    /// The target points at the current release's tree.
    pub consistent: bool,
    /// Every release the node knows, most recent first.
    pub releases: Vec<Release>,
}

/// The status of `package`, or of every package.
pub fn status(node: &Node, package: Option<&str>) -> Result<Vec<PackageStatus>, Error> {
    let Some(store) = node.existing_store()? else {
        return match package {
            Some(p) => Err(Error::NotInstalled { package: p.into() }),
            None => Ok(Vec::new()),
        };
    };
    let packages = match package {
        Some(p) => vec![p.to_owned()],
        None => store.packages()?,
    };
    let mut out = Vec::new();
    for package in packages {
        let releases = store.releases(&package)?;
        if releases.is_empty() {
            return Err(Error::NotInstalled { package });
        }
        let current = releases.iter().find(|r| r.current).cloned();
        let target = releases
            .iter()
            .find_map(|r| Manifest::parse(&r.manifest).ok())
            .map(|m| node.layout.path(&m.install.target));
        let points_to = target.as_deref().and_then(txn::target_of);
        let consistent = match (&current, &points_to) {
            (Some(c), Some(p)) => *p == unpack::tree_dir(&c.dir),
            (None, None) => true,
            _ => false,
        };
        out.push(PackageStatus {
            package,
            current,
            target,
            points_to,
            consistent,
            releases,
        });
    }
    Ok(out)
}

/// The transactions of `package`, newest first.
pub fn history(node: &Node, package: &str) -> Result<Vec<TxnRecord>, Error> {
    match node.existing_store()? {
        Some(store) => Ok(store.history(package)?),
        None => Ok(Vec::new()),
    }
}

/// The snapshots of `package`, newest first.
pub fn snapshots(node: &Node, package: &str) -> Result<Vec<Snapshot>, Error> {
    match node.existing_store()? {
        Some(store) => Ok(store.snapshots(package)?),
        None => Ok(Vec::new()),
    }
}

/// What `agent verify` found for a package.
#[derive(Debug, Clone)]
pub struct Verified {
    pub package: String,
    pub release: Release,
    /// The target points at the current release's tree.
    pub target_ok: bool,
    pub drift: Vec<unpack::Drift>,
}

/// Compares the current release's tree with its manifest (node-local parts
/// ignored): every file missing, added or changed, by digest.
pub fn verify(node: &Node, package: &str) -> Result<Verified, Error> {
    let status = status(node, Some(package))?;
    let s = status
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotInstalled {
            package: package.into(),
        })?;
    let release = s.current.ok_or_else(|| Error::NotInstalled {
        package: package.into(),
    })?;
    let manifest = Manifest::parse(&release.manifest).map_err(|e| Error::Artifact {
        path: release.dir.clone(),
        source: e.into(),
    })?;
    let local = txn::node_local(&manifest);
    let local: Vec<&str> = local.iter().map(String::as_str).collect();
    let drift = unpack::drift(&release.dir, &manifest, &local)?;
    Ok(Verified {
        package: package.into(),
        release,
        target_ok: s.consistent,
        drift,
    })
}

/// One transaction with its hook runs and events, for `agent logs`.
#[derive(Debug, Clone)]
pub struct Logs {
    pub txn: TxnRecord,
    pub hooks: Vec<HookRun>,
    pub events: Vec<Event>,
}

pub fn logs(node: &Node, txn: i64) -> Result<Logs, Error> {
    let not_found = || Error::UnknownTransaction { txn };
    let store = node.existing_store()?.ok_or_else(not_found)?;
    let id = TxnId(txn);
    let record = store.transaction(id)?.ok_or_else(not_found)?;
    Ok(Logs {
        txn: record,
        hooks: store.hook_runs(id)?,
        events: store.transaction_events(id)?,
    })
}
