//! `packager publish`: verifies an artifact, stores its blob when absent and
//! adds it to a channel's index by compare-and-swap. A release is immutable:
//! the same name, version and build with other bytes is refused.

use std::path::PathBuf;

use berth_core::name::{self, ReleaseId};
use berth_core::progress::{Progress, ProgressReader};
use berth_core::repo::{ChannelIndex, Open, ReleaseEntry, RepoConfig, RepoError, Repository};

use crate::Error;
use crate::ops::sign::SignOptions;
use crate::ops::verify::{open_artifact, verify};

#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub artifact: PathBuf,
    pub repo: String,
    pub channel: String,
    pub sign: SignOptions,
}

#[derive(Debug, Clone)]
pub struct PublishReport {
    pub repository: String,
    pub created_repository: bool,
    pub channel: String,
    pub release: ReleaseId,
    pub sha256: String,
    pub size: u64,
    /// The blob was uploaded (false: it was already there).
    pub blob_written: bool,
    /// The channel's index changed (false: the release was already in it).
    pub index_changed: bool,
    pub sequence: u64,
    /// The key that signed the index written (none when unchanged or
    /// unsigned).
    pub signed_by: Option<String>,
}

pub fn publish(opts: &PublishOptions, progress: &dyn Progress) -> Result<PublishReport, Error> {
    name::check_channel(&opts.channel)?;
    let signer = opts.sign.signer()?;
    let verified = verify(&opts.artifact, progress)?;
    let release = verified.manifest.release();

    // Refuse before anything is created: the policy of a repository that does
    // not exist yet is the one it would be created with.
    let existing = match Repository::open(&opts.repo, Open::Existing) {
        Ok((repo, _)) => Some(repo),
        Err(RepoError::NoRepository { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let policy = match &existing {
        Some(repo) => repo.config().policy(&opts.channel),
        None => RepoConfig::new_repository().policy(&opts.channel),
    };
    if policy.promote_only {
        return Err(Error::PromoteOnly {
            channel: opts.channel.clone(),
            release,
        });
    }
    if let Some(repo) = &existing {
        check_immutable(repo, &release, &verified.sha256)?;
    }
    let (mut repo, created) = match existing {
        Some(repo) => (repo, false),
        None => Repository::open(&opts.repo, Open::CreateIfMissing)?,
    };
    repo.set_signer(signer);
    repo.check_signing(&opts.channel, &release.name)?;

    let mut blob_written = false;
    // A blob can vanish between upload and index update only if a gc ran
    // in between (each vanishing is one more gc run that finished): upload
    // again then, up to UPLOAD_ATTEMPTS times.
    for attempt in 0.. {
        blob_written |= upload(
            &repo,
            &opts.artifact,
            &verified.sha256,
            verified.size,
            progress,
        )?;
        let entry = ReleaseEntry {
            version: release.version.clone(),
            build: release.build,
            sha256: verified.sha256.clone(),
            size: verified.size,
            published: jiff::Timestamp::now(),
            promoted_from: None,
            yanked: false,
            source: verified.manifest.source.clone(),
        };
        let result = repo.update_index(&opts.channel, &release.name, &mut |index| -> Result<
            bool,
            Error,
        > {
            if already_there(index, &release, &entry.sha256)? {
                return Ok(false);
            }
            // Again under the lock: another publisher of the same release
            // into another channel may have got in since the first check.
            check_immutable(&repo, &release, &entry.sha256)?;
            if !repo.has_blob(&entry.sha256)? {
                return Err(Error::Repo(RepoError::Vanished {
                    repo: repo.location(),
                    key: berth_core::repo::blob_key(&entry.sha256),
                    reason: "a concurrent `packager gc` removed it".into(),
                }));
            }
            index.releases.push(entry.clone());
            Ok(true)
        });
        match result {
            Ok((index, changed)) => {
                return Ok(PublishReport {
                    repository: repo.location(),
                    created_repository: created,
                    channel: opts.channel.clone(),
                    release,
                    sha256: verified.sha256,
                    size: verified.size,
                    blob_written,
                    index_changed: changed,
                    sequence: index.sequence,
                    signed_by: repo
                        .signer_key_id()
                        .filter(|_| changed)
                        .map(|k| k.to_string()),
                });
            }
            Err(Error::Repo(RepoError::Vanished { .. })) if attempt + 1 < UPLOAD_ATTEMPTS => {
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

/// How many times a publish uploads a blob that concurrent gc runs keep
/// removing before its index update, before it gives up (exit 1, nothing
/// changed). Three gc runs racing one publish were seen in the tests.
const UPLOAD_ATTEMPTS: u32 = 10;

fn upload(
    repo: &Repository,
    path: &std::path::Path,
    sha256: &str,
    size: u64,
    progress: &dyn Progress,
) -> Result<bool, Error> {
    if repo.has_blob(sha256)? {
        return Ok(false);
    }
    let file = open_artifact(path)?;
    progress.start("uploading", size);
    let mut reader = ProgressReader::new(file, progress);
    let written = repo.put_blob(sha256, &mut reader);
    progress.finish();
    Ok(written?)
}

/// Whether `index` already holds `release` with these bytes; the same
/// release with other bytes is refused, because a release is immutable.
pub(crate) fn already_there(
    index: &ChannelIndex,
    release: &ReleaseId,
    sha256: &str,
) -> Result<bool, Error> {
    match index.get(&release.version, release.build) {
        None => Ok(false),
        Some(found) if found.sha256 == sha256 => Ok(true),
        Some(found) => Err(Error::Immutable {
            release: Box::new(release.clone()),
            channel: index.channel.clone(),
            existing: found.sha256.clone(),
            new: sha256.to_owned(),
        }),
    }
}

/// Refuses a release whose version and build are already in some channel
/// with other bytes.
pub(crate) fn check_immutable(
    repo: &Repository,
    release: &ReleaseId,
    sha256: &str,
) -> Result<(), Error> {
    let found = repo.find_release(&release.name, &release.version, release.build)?;
    match found.into_iter().find(|(_, e)| e.sha256 != sha256) {
        Some((channel, e)) => Err(Error::Immutable {
            release: Box::new(release.clone()),
            channel,
            existing: e.sha256,
            new: sha256.to_owned(),
        }),
        None => Ok(()),
    }
}
