//! `packager gc`: applies each channel's retention (`--keep N`, or `keep` in
//! repo.toml) to its indexes, then deletes the blobs that no index
//! references any more, and what killed writers left of unfinished writes.
//! The sweep runs under the repository lock, so a blob an index starts
//! referencing meanwhile is never deleted; a write in progress is never
//! taken for an abandoned one.

use std::collections::HashSet;

use berth_core::fault;
use berth_core::name;
use berth_core::repo::{Abandoned, ChannelIndex, blob_key};

use crate::Error;
use crate::ops::sign::SignOptions;

#[derive(Debug, Clone)]
pub struct GcOptions {
    pub repo: String,
    /// Releases per package and channel to keep; overrides repo.toml.
    pub keep: Option<u32>,
    pub dry_run: bool,
    pub sign: SignOptions,
}

#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub repository: String,
    /// (channel, package, version+build) dropped from indexes.
    pub dropped: Vec<(String, String, String)>,
    /// (sha256, size) of deleted blobs.
    pub deleted: Vec<(String, u64)>,
    pub kept_blobs: usize,
    /// Unfinished writes of writers that are gone, removed.
    pub abandoned: Vec<Abandoned>,
    /// Writes in progress that were left alone.
    pub in_progress: Vec<String>,
    pub dry_run: bool,
}

impl GcReport {
    /// Bytes of deleted blobs.
    pub fn bytes_freed(&self) -> u64 {
        self.deleted.iter().map(|d| d.1).sum()
    }

    /// Bytes of removed abandoned writes.
    pub fn abandoned_bytes(&self) -> u64 {
        self.abandoned.iter().map(|a| a.size).sum()
    }
}

/// The entries retention drops: walking from the newest, everything older
/// than the `keep`-th release that is not yanked. Yanked releases newer
/// than that stay, as recent history.
pub fn retention(index: &ChannelIndex, keep: u32) -> Vec<(String, u64)> {
    let mut sorted = index.releases.clone();
    sorted.sort_by(|a, b| name::compare_releases((&b.version, b.build), (&a.version, a.build)));
    let mut live = 0;
    let mut drop = Vec::new();
    for r in sorted {
        if live >= keep {
            drop.push((r.version.clone(), r.build));
        } else if !r.yanked {
            live += 1;
        }
    }
    drop
}

pub fn gc(opts: &GcOptions) -> Result<GcReport, Error> {
    let repo = opts.sign.open(&opts.repo)?;
    let mut report = GcReport {
        repository: repo.location(),
        dry_run: opts.dry_run,
        ..GcReport::default()
    };
    // In a dry run the drops are only remembered, so the sweep must not count
    // the dropped entries as references.
    let mut dropped_refs: HashSet<(String, String, String, u64)> = HashSet::new();
    // A signed index gc would rewrite without a key stops it before any
    // index is touched.
    if !opts.dry_run {
        for (channel, package) in repo.indexes()? {
            if opts.keep.or(repo.config().policy(&channel).keep).is_some() {
                repo.check_signing(&channel, &package)?;
            }
        }
    }
    for (channel, package) in repo.indexes()? {
        let Some(keep) = opts.keep.or(repo.config().policy(&channel).keep) else {
            continue;
        };
        let mut drops = Vec::new();
        if opts.dry_run {
            if let Some(index) = repo.index(&channel, &package)? {
                drops = retention(&index, keep);
            }
        } else {
            repo.update_index(&channel, &package, &mut |index| -> Result<bool, Error> {
                drops = retention(index, keep);
                index
                    .releases
                    .retain(|r| !drops.iter().any(|(v, b)| r.is(v, *b)));
                Ok(!drops.is_empty())
            })?;
        }
        for (v, b) in drops {
            report
                .dropped
                .push((channel.clone(), package.clone(), format!("{v}+{b}")));
            dropped_refs.insert((channel.clone(), package.clone(), v, b));
        }
    }

    {
        let _lock = repo.backend().lock()?;
        let mut referenced = HashSet::new();
        for (channel, package) in repo.indexes()? {
            if let Some(index) = repo.index(&channel, &package)? {
                for r in index.releases {
                    let key = (channel.clone(), package.clone(), r.version.clone(), r.build);
                    if !dropped_refs.contains(&key) {
                        referenced.insert(r.sha256);
                    }
                }
            }
        }
        fault::point("gc:sweep");
        for sha in repo.blobs()? {
            if referenced.contains(&sha) {
                report.kept_blobs += 1;
                continue;
            }
            let key = blob_key(&sha);
            let size = repo.backend().size(&key)?.unwrap_or(0);
            if !opts.dry_run {
                repo.backend().delete(&key)?;
                fault::point("blob:deleted");
            }
            report.deleted.push((sha, size));
        }
    }
    let sweep = repo.backend().sweep_abandoned(opts.dry_run)?;
    report.abandoned = sweep.abandoned;
    report.in_progress = sweep.in_progress;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::repo::ReleaseEntry;

    fn entry(v: &str, b: u64, yanked: bool) -> ReleaseEntry {
        ReleaseEntry {
            version: v.into(),
            build: b,
            sha256: "a".repeat(64),
            size: 1,
            published: jiff::Timestamp::UNIX_EPOCH,
            promoted_from: None,
            yanked,
            source: Default::default(),
        }
    }

    #[test]
    fn retention_keeps_the_newest_live_releases() {
        let mut index = ChannelIndex::new("staging", "webapp");
        index.releases = vec![
            entry("1.0", 1, false),
            entry("1.0", 2, true),
            entry("1.1", 3, false),
            entry("1.2", 4, true),
            entry("1.10", 5, false),
        ];
        assert_eq!(
            retention(&index, 2),
            vec![("1.0".to_owned(), 2), ("1.0".to_owned(), 1)]
        );
        assert!(retention(&index, 3).is_empty());
        assert_eq!(retention(&index, 1).len(), 4);
    }
}
