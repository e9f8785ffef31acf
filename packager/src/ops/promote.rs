//! `packager promote`: copies a release's index entry from one channel to
//! another. No rebuild, no upload: what reaches the next channel is byte for
//! byte what the previous one tested.

use crate::Error;
use crate::ops::publish::already_there;
use crate::ops::sign::SignOptions;
use berth_core::name::{self, ReleaseId};

#[derive(Debug, Clone)]
pub struct PromoteOptions {
    pub release: ReleaseId,
    pub from: String,
    pub to: String,
    pub repo: String,
    pub sign: SignOptions,
}

#[derive(Debug, Clone)]
pub struct PromoteReport {
    pub repository: String,
    pub release: ReleaseId,
    pub from: String,
    pub to: String,
    pub sha256: String,
    pub changed: bool,
    pub sequence: u64,
    /// The key that signed the index written (none when unchanged or
    /// unsigned).
    pub signed_by: Option<String>,
}

pub fn promote(opts: &PromoteOptions) -> Result<PromoteReport, Error> {
    name::check_channel(&opts.from)?;
    name::check_channel(&opts.to)?;
    if opts.from == opts.to {
        return Err(Error::SameChannel(opts.from.clone()));
    }
    let repo = opts.sign.open(&opts.repo)?;
    let release = &opts.release;
    let not_in = || Error::NotInChannel {
        release: release.clone(),
        channel: opts.from.clone(),
        repo: opts.repo.clone(),
    };
    let source = repo
        .index_to_copy_from(&opts.from, &release.name)?
        .ok_or_else(not_in)?;
    let entry = source
        .get(&release.version, release.build)
        .ok_or_else(not_in)?
        .clone();
    if entry.yanked {
        return Err(Error::Yanked {
            release: release.clone(),
            channel: opts.from.clone(),
            repo: opts.repo.clone(),
        });
    }
    let (index, changed) = repo.update_index(&opts.to, &release.name, &mut |index| -> Result<
        bool,
        Error,
    > {
        if already_there(index, release, &entry.sha256)? {
            return Ok(false);
        }
        // Checked again under the index lock, which gc also holds: a gc
        // that ran since the first read may have dropped the release from
        // the source channel and swept its blob; nothing can go between
        // this check and the write.
        let still_there = repo
            .index(&opts.from, &release.name)?
            .and_then(|i| i.get(&release.version, release.build).cloned())
            .is_some_and(|e| e.sha256 == entry.sha256);
        if !still_there {
            return Err(not_in());
        }
        if !repo.has_blob(&entry.sha256)? {
            return Err(Error::BlobMissing {
                release: release.clone(),
                channel: opts.from.clone(),
                sha256: entry.sha256.clone(),
            });
        }
        let mut promoted = entry.clone();
        promoted.published = jiff::Timestamp::now();
        promoted.promoted_from = Some(opts.from.clone());
        index.releases.push(promoted);
        Ok(true)
    })?;
    Ok(PromoteReport {
        repository: repo.location(),
        release: release.clone(),
        from: opts.from.clone(),
        to: opts.to.clone(),
        sha256: entry.sha256,
        changed,
        sequence: index.sequence,
        signed_by: repo
            .signer_key_id()
            .filter(|_| changed)
            .map(|k| k.to_string()),
    })
}
