//! Everything an agent command can fail with, and the exit code of each:
//! 2 bad usage or input (nothing changed), 1 failed, 3 rolled back after a
//! failed health check, 4 another operation holds the node, 5 the trust
//! checks refused a channel index (nothing changed).

use std::path::PathBuf;

use berth_core::archive::ArchiveError;
use berth_core::fsutil::PathError;
use berth_core::name::InvalidName;
use berth_core::repo::{RepoError, TrustError};
use berth_core::unpack::UnpackError;
use berth_core::{Diagnose, Fault};

use crate::config::ConfigError;
use crate::fetch::FetchError;
use crate::lock::LockError;
use crate::resolve::ResolveError;
use crate::store::StoreError;
use crate::trust::KeyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Name(#[from] InvalidName),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Trust(Box<TrustError>),
    #[error(transparent)]
    TrustedKey(#[from] KeyError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("`{}` is not a valid artifact: {source}", path.display())]
    Artifact { path: PathBuf, source: ArchiveError },
    #[error(transparent)]
    Io(#[from] PathError),

    #[error("no repository to read `{package}` from")]
    NoRepository { package: String },
    #[error("http.{key} cannot be used: {reason}")]
    HttpSetting { key: String, reason: String },
    #[error("there is no artifact at `{}`", path.display())]
    ArtifactMissing { path: PathBuf },
    #[error("the artifact `{}` changed while it was being installed", path.display())]
    ArtifactChanged { path: PathBuf },
    #[error("the install target `{}` exists and is not a symlink", path.display())]
    TargetNotSymlink { path: PathBuf },
    #[error("the {hook} hook of {release} failed ({ending}); nothing was switched")]
    HookBeforeSwitch {
        hook: String,
        release: String,
        ending: String,
    },
    #[error(
        "the {hook} hook of {release} failed ({ending}) after the switch; the node is back on {back_to}"
    )]
    RolledBack {
        hook: String,
        release: String,
        ending: String,
        back_to: String,
    },
    #[error(
        "the {hook} hook of {release} failed ({ending}) after the switch; the node stays on it (--no-auto-rollback)"
    )]
    FailedInPlace {
        hook: String,
        release: String,
        ending: String,
    },
    #[error("`{package}` is not installed on this node")]
    NotInstalled { package: String },
    #[error("there is no transaction #{txn} on this node")]
    UnknownTransaction { txn: i64 },
    #[error("not enough free space in `{}`: {needed} bytes needed (the release's files in whole blocks of the file system, or the snapshot), {available} available", path.display())]
    NoSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("not enough free inodes in `{}`: {needed} needed (one per file, directory and link of the release), {available} available", path.display())]
    NoInodes {
        path: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("`{package}` has no earlier release to roll back to")]
    NothingToRollBack { package: String },
    #[error("{release} is not a release this node kept for `{package}`")]
    UnknownRollbackTarget { package: String, release: String },
    #[error(
        "{to} has data epoch {to_epoch} and the current {from} has {from_epoch}: a code-only rollback would run old code on newer data"
    )]
    EpochMismatch {
        from: String,
        from_epoch: u64,
        to: String,
        to_epoch: u64,
    },
    #[error("{release} has no restore hook, so its data cannot be put back")]
    NoRestoreHook { release: String },
    #[error(
        "the release directory of {release} is gone and the node's cache holds no intact artifact of it"
    )]
    ReleaseDirGone { release: String },
    #[error(
        "the state database `{}` is missing, but the node holds {found}: berth does not start afresh and forget them", path.display()
    )]
    StateMissing { path: PathBuf, found: String },
    #[error(
        "the state database `{}` is readable: --rebuild would replace its history with what the disk holds", path.display()
    )]
    RebuildHealthy { path: PathBuf },
}

impl From<TrustError> for Error {
    fn from(e: TrustError) -> Self {
        Error::Trust(Box::new(e))
    }
}

impl Error {
    /// The process exit code (documented in `agent --help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Lock(LockError::Busy { .. }) => 4,
            Error::RolledBack { .. } => 3,
            Error::Trust(e) | Error::Resolve(ResolveError::Trust(e))
                if e.fault() == Fault::Input =>
            {
                5
            }
            _ => match self.fault() {
                Fault::Input => 2,
                Fault::Failure => 1,
            },
        }
    }
}

impl Diagnose for Error {
    fn fault(&self) -> Fault {
        match self {
            Error::Store(e) => e.fault(),
            Error::Repo(e) => e.fault(),
            Error::Unpack(e) => e.fault(),
            Error::Resolve(ResolveError::Repo(e)) => e.fault(),
            Error::Resolve(ResolveError::Trust(e)) | Error::Trust(e) => e.fault(),
            Error::TrustedKey(_) => Fault::Input,
            Error::Artifact { source, .. } => source.fault(),
            Error::Fetch(FetchError::Repo(e)) => e.fault(),
            Error::Fetch(_)
            | Error::Io(_)
            | Error::Lock(_)
            | Error::HookBeforeSwitch { .. }
            | Error::RolledBack { .. }
            | Error::FailedInPlace { .. }
            | Error::ReleaseDirGone { .. }
            | Error::StateMissing { .. }
            | Error::NoSpace { .. }
            | Error::NoInodes { .. } => Fault::Failure,
            _ => Fault::Input,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Name(e) => e.hint().into(),
            Error::Store(e) => return e.hint(),
            Error::Repo(e) => return e.hint(),
            Error::Unpack(e) => return e.hint(),
            Error::Artifact { source, .. } => return source.hint(),
            Error::Resolve(ResolveError::Trust(e)) | Error::Trust(e) => return e.hint(),
            Error::TrustedKey(_) => {
                "fix the path in trusted_keys (agent.toml) or `--trusted-key`; a public key is the PREFIX.pub `packager keygen` or `minisign -G` wrote".into()
            }
            Error::Config(_) => "fix the file; its keys are described in docs/agent.md".into(),
            Error::Lock(LockError::Busy { .. }) => {
                "wait for it to finish, or pass `--wait SECS` to queue behind it".into()
            }
            Error::Lock(LockError::Io(_)) => {
                "the agent keeps its state under `<root>/var/lib/berth`, which must be writable: run it as root on a node, or pass `--root DIR`".into()
            }
            Error::Resolve(ResolveError::NoChannels { .. }) => {
                "pass `--channel C`, or list channels in agent.toml".into()
            }
            Error::Resolve(_) => "`packager list --repo REPO` shows what the repository holds".into(),
            Error::HttpSetting { .. } => {
                "fix the path in agent.toml's [http] table (docs/agent.md); the file holds the credential alone, on one line".into()
            }
            Error::Fetch(FetchError::Missing { .. }) => {
                "the repository's server does not have a file its index lists: the repository was copied or synced incompletely, or a `packager gc` ran on another copy; publish the release again, or fix the server's copy".into()
            }
            Error::Fetch(FetchError::Digest { .. }) => {
                "nothing was installed: the bytes that arrived are not the ones the index names (a download cut short, a proxy or CDN serving another copy, or an altered file); run the command again, and if it persists check the repository's blob".into()
            }
            Error::Fetch(FetchError::Download { .. }) => {
                "nothing was installed; the download was tried again with backoff before this error (agent.toml's [http] `retries`, `stall_timeout_secs`): check the server and the network, then run the command again".into()
            }
            Error::Fetch(FetchError::Repo(e)) => return e.hint(),
            Error::NoRepository { .. } => {
                "pass `--repo R`, set BERTH_REPO, or set `repository` in agent.toml; or install a file with `--file ARTIFACT`".into()
            }
            Error::ArtifactMissing { .. } => "check the path".into(),
            Error::ArtifactChanged { .. } => {
                "something is still writing it: wait until it is complete, then install again".into()
            }
            Error::TargetNotSymlink { path } => format!(
                "berth owns the target as a symlink; move `{}` aside (its content can go into the package's payload or a shared dir)",
                path.display()
            ),
            Error::HookBeforeSwitch { .. } => {
                "`agent history PACKAGE` shows the hook's output; fix the cause and run the command again".into()
            }
            Error::RolledBack { .. } | Error::FailedInPlace { .. } => {
                "`agent history PACKAGE` shows the hook's output".into()
            }
            Error::NotInstalled { .. } => "`agent status` lists what is installed".into(),
            Error::UnknownTransaction { .. } => {
                "`agent history PACKAGE` lists the transactions and their numbers".into()
            }
            Error::NoSpace { .. } | Error::NoInodes { .. } => {
                "free space (`agent gc` removes old releases, snapshots and cached artifacts), then install again".into()
            }
            Error::NothingToRollBack { .. } | Error::UnknownRollbackTarget { .. } => {
                "`agent history PACKAGE` lists the releases this node had".into()
            }
            Error::ReleaseDirGone { release } => format!(
                "install it again from the repository: `agent install {release}`"
            ),
            Error::NoRestoreHook { .. } => {
                "roll back the code only with `--force`, or restore the data by other means".into()
            }
            Error::StateMissing { .. } => {
                "run `agent recover --rebuild`: it makes the database again from the release dirs, snapshots and records the node keeps (the history of past transactions and their hook output is lost); or put state.db back from a backup".into()
            }
            Error::RebuildHealthy { .. } => {
                "`agent recover` without --rebuild finishes an interrupted command; to rebuild anyway, move state.db (with its -wal and -shm files) aside first".into()
            }
            Error::EpochMismatch { .. } => {
                "roll back with its data: `agent rollback PACKAGE --with-data` restores the snapshot's dumps (data written since is lost), or `--force` to run the old code on the new data anyway".into()
            }
            _ => return None,
        })
    }
}
