//! `agent gc`: what install's pruning does, for every package on demand,
//! plus the cache: release dirs past `keep_releases` (never the current
//! release, never the last healthy one before it, and a failed release
//! never counts as a kept good one), snapshots past retention, and cached
//! artifacts that no kept release or snapshot needs.

use std::collections::HashSet;
use std::fs;

use berth_core::fsutil::IoResultExt;
use berth_core::manifest::Manifest;

use crate::error::Error;
use crate::node::Node;
use crate::ops::txn::{self, Pruned};
use crate::store::ReleaseState;

#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub packages: Vec<(String, Pruned)>,
    /// Cached artifacts removed: (sha256, bytes).
    pub cache: Vec<(String, u64)>,
    pub dry_run: bool,
}

impl GcReport {
    pub fn bytes(&self) -> u64 {
        self.packages.iter().map(|(_, p)| p.bytes).sum::<u64>()
            + self.cache.iter().map(|(_, b)| b).sum::<u64>()
    }
}

pub fn gc(node: &Node, dry_run: bool) -> Result<GcReport, Error> {
    let mut report = GcReport {
        dry_run,
        ..GcReport::default()
    };
    let Some(mut store) = node.existing_store()? else {
        return Ok(report);
    };
    let _lock = if dry_run {
        None
    } else {
        Some(node.lock("gc")?)
    };
    if !dry_run {
        crate::ops::recover::recover_node(node, &mut store)?;
    }
    for package in store.packages()? {
        let releases = store.releases(&package)?;
        let current = releases.iter().find(|r| r.current);
        let keep = node
            .config
            .packages
            .get(&package)
            .and_then(|p| p.keep_releases)
            .or_else(|| {
                current
                    .and_then(|c| Manifest::parse(&c.manifest).ok())
                    .map(|m| m.install.keep_releases)
            })
            .unwrap_or(3);
        let last_healthy = releases
            .iter()
            .find(|r| {
                !r.current && matches!(r.state, ReleaseState::Healthy | ReleaseState::Superseded)
            })
            .map(|r| r.id);
        let pruned = txn::prune(node, &mut store, &package, keep, last_healthy, dry_run)?;
        report.packages.push((package, pruned));
    }
    // The cache keeps what a kept release or a snapshot may be rebuilt from.
    let mut needed = HashSet::new();
    for package in store.packages()? {
        let pruned: HashSet<_> = report
            .packages
            .iter()
            .filter(|(p, _)| *p == package)
            .flat_map(|(_, pr)| pr.releases.iter().cloned())
            .collect();
        for r in store.releases(&package)? {
            if r.dir.exists() && !pruned.contains(&r.release) {
                needed.insert(r.sha256);
            }
        }
        let dropped: HashSet<i64> = report
            .packages
            .iter()
            .filter(|(p, _)| *p == package)
            .flat_map(|(_, pr)| pr.snapshots.iter().map(|(id, _)| *id))
            .collect();
        for s in store.snapshots(&package)? {
            if !dropped.contains(&s.id.0) {
                needed.extend(s.artifact_sha256);
                if let Some(r) = store.release(&s.release)? {
                    needed.insert(r.sha256);
                }
            }
        }
    }
    let cache = node.layout.cache_dir();
    if let Ok(entries) = fs::read_dir(&cache) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(sha) = name.strip_suffix(".tar.zst") else {
                continue;
            };
            if needed.contains(sha) {
                continue;
            }
            let bytes = e.metadata().map_or(0, |m| m.len());
            if !dry_run {
                fs::remove_file(e.path()).at("cannot remove", &e.path())?;
            }
            report.cache.push((sha.to_owned(), bytes));
        }
    }
    Ok(report)
}
