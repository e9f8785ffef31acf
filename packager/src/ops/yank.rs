//! `packager yank`: marks a release in a channel so agents skip it (the
//! entry and its blob stay, for history and for nodes that run it), or
//! with `undo` clears the mark.

use crate::Error;
use crate::ops::sign::SignOptions;
use berth_core::name::{self, ReleaseId};

#[derive(Debug, Clone)]
pub struct YankOptions {
    pub release: ReleaseId,
    pub channel: String,
    pub repo: String,
    pub undo: bool,
    pub sign: SignOptions,
}

#[derive(Debug, Clone)]
pub struct YankReport {
    pub repository: String,
    pub release: ReleaseId,
    pub channel: String,
    pub yanked: bool,
    pub changed: bool,
    pub sequence: u64,
    /// The key that signed the index written (none when unchanged or
    /// unsigned).
    pub signed_by: Option<String>,
}

pub fn yank(opts: &YankOptions) -> Result<YankReport, Error> {
    name::check_channel(&opts.channel)?;
    let repo = opts.sign.open(&opts.repo)?;
    let release = &opts.release;
    let not_in = || Error::NotInChannel {
        release: release.clone(),
        channel: opts.channel.clone(),
        repo: opts.repo.clone(),
    };
    // Refuse before taking the index lock when it cannot succeed.
    repo.index(&opts.channel, &release.name)?
        .and_then(|i| i.get(&release.version, release.build).cloned())
        .ok_or_else(not_in)?;
    let want = !opts.undo;
    let (index, changed) =
        repo.update_index(&opts.channel, &release.name, &mut |index| -> Result<
            bool,
            Error,
        > {
            let entry = index
                .get_mut(&release.version, release.build)
                .ok_or_else(not_in)?;
            if entry.yanked == want {
                return Ok(false);
            }
            entry.yanked = want;
            Ok(true)
        })?;
    Ok(YankReport {
        repository: repo.location(),
        release: release.clone(),
        channel: opts.channel.clone(),
        yanked: want,
        changed,
        sequence: index.sequence,
        signed_by: repo
            .signer_key_id()
            .filter(|_| changed)
            .map(|k| k.to_string()),
    })
}
