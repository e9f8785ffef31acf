//! `agent status`, `agent history`, `agent snapshots`: what the node's
//! state says, read only. A node without a state database has nothing
//! installed; reading never creates one.

use std::path::PathBuf;

use berth_core::manifest::Manifest;
use berth_core::unpack;

use crate::error::Error;
use crate::node::Node;
use crate::ops::txn;
use crate::store::{Release, Snapshot, TxnRecord};

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
