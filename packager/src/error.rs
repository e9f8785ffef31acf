//! Everything a packager operation can fail with. Each error knows its
//! exit-code family (bad input: 2, failure: 1) and the way out.

use std::path::PathBuf;

use berth_core::archive::{ArchiveError, PackError};
use berth_core::fsutil::PathError;
use berth_core::name::{InvalidName, ReleaseId};
use berth_core::package::PackageFileError;
use berth_core::repo::RepoError;
use berth_core::rules;
use berth_core::sign::SignError;
use berth_core::{Diagnose, Fault};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    PackageFile(#[from] PackageFileError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("`{}` is not a valid artifact: {source}", path.display())]
    Artifact { path: PathBuf, source: ArchiveError },
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error(transparent)]
    Name(#[from] InvalidName),
    #[error(transparent)]
    Io(#[from] PathError),
    #[error(transparent)]
    Sign(#[from] SignError),

    #[error("{0}")]
    Lifetime(String),
    #[error(
        "`--expires {expires}` sets the expiry of signed indexes, and no signing key was given"
    )]
    ExpiresWithoutKey { expires: String },
    #[error("no password for the new secret key: BERTH_SIGN_PASSWORD is not set")]
    KeygenNoPassword,
    #[error("BERTH_SIGN_PASSWORD is set and `--unencrypted` asks for no password")]
    KeygenPasswordConflict,
    #[error("`packager resign` needs the signing key")]
    ResignWithoutKey,
    #[error("no index to sign in `{repo}`{}", scope(.channels, .packages))]
    NothingToResign {
        repo: String,
        channels: Vec<String>,
        packages: Vec<String>,
    },
    #[error("no build number")]
    NoBuildNumber,
    #[error("invalid build number `{}` in `{var}`: {}", invalid.value, invalid.reason)]
    BuildFromEnv {
        var: &'static str,
        invalid: InvalidName,
    },
    #[error("SOURCE_DATE_EPOCH is `{value}`, not a whole number of seconds since 1970")]
    SourceDateEpoch { value: String },
    #[error("the payload directory `{}` does not exist", path.display())]
    PayloadMissing { path: PathBuf },
    #[error("the payload `{}` is not a directory", path.display())]
    PayloadNotDir { path: PathBuf },
    #[error("hook `{hook}` is `{}`, which does not exist", path.display())]
    HookMissing { hook: &'static str, path: PathBuf },
    #[error("hook `{hook}` is `{}`, which is not a regular file", path.display())]
    HookNotFile { hook: &'static str, path: PathBuf },
    #[error("hook `{hook}` is `{}`, which is not executable", path.display())]
    HookNotExecutable { hook: &'static str, path: PathBuf },
    #[error("payload entry `{}` is refused: {reason}", rules::printable(path))]
    PayloadEntry { path: String, reason: String },
    #[error("payload entry `{}` is refused: {reason}", rules::printable(path))]
    SpecialMode { path: String, reason: String },
    #[error("payload symlink `{path}` -> `{target}` leaves the payload: {reason}")]
    EscapingSymlink {
        path: String,
        target: String,
        reason: String,
    },
    #[error("the payload holds {}: {}", if .paths.len() == 1 { "a file that looks like a secret".to_owned() } else { format!("{} files that look like secrets", .paths.len()) }, list(.paths))]
    Secrets { paths: Vec<String> },

    #[error("channel `{channel}` is promote-only: {release} cannot be published into it directly")]
    PromoteOnly { channel: String, release: ReleaseId },
    #[error(
        "{release} is already in the repository (channel `{channel}`) with sha256 {existing}, and this artifact's sha256 is {new}: a release is immutable"
    )]
    Immutable {
        release: Box<ReleaseId>,
        channel: String,
        existing: String,
        new: String,
    },
    #[error("{release} is not in channel `{channel}`")]
    NotInChannel {
        release: ReleaseId,
        channel: String,
        repo: String,
    },
    #[error("{release} is yanked in channel `{channel}`")]
    Yanked {
        release: ReleaseId,
        channel: String,
        repo: String,
    },
    #[error("{release} is in no channel of the repository")]
    ReleaseNotFound { release: ReleaseId, repo: String },
    #[error("`--from` and `--to` are both `{0}`")]
    SameChannel(String),
    #[error(
        "{release} in channel `{channel}` points at blob {sha256}, which is not in the repository"
    )]
    BlobMissing {
        release: ReleaseId,
        channel: String,
        sha256: String,
    },
    #[error("`{}` already exists", path.display())]
    InitExists { path: PathBuf },
    #[error("there is no artifact at `{}`", path.display())]
    ArtifactMissing { path: PathBuf },
    #[error("package `{package}` is in no channel of the repository")]
    UnknownPackage { package: String, repo: String },
}

fn scope(channels: &[String], packages: &[String]) -> String {
    let mut s = String::new();
    if !channels.is_empty() {
        s.push_str(&format!(" in channel {}", channels.join(", ")));
    }
    if !packages.is_empty() {
        s.push_str(&format!(" for package {}", packages.join(", ")));
    }
    s
}

fn list(paths: &[String]) -> String {
    let shown: Vec<String> = paths.iter().take(10).map(|p| format!("`{p}`")).collect();
    let more = paths.len().saturating_sub(10);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

impl Error {
    /// The process exit code: 2 for bad input, 1 for failures.
    pub fn exit_code(&self) -> u8 {
        match self.fault() {
            Fault::Input => 2,
            Fault::Failure => 1,
        }
    }
}

impl Diagnose for Error {
    fn fault(&self) -> Fault {
        match self {
            Error::PackageFile(e) => e.fault(),
            Error::Repo(e) => e.fault(),
            Error::Artifact { source, .. } => source.fault(),
            Error::Pack(e) => e.fault(),
            Error::Sign(e) => e.fault(),
            Error::Io(_) | Error::BlobMissing { .. } => Fault::Failure,
            _ => Fault::Input,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Error::PackageFile(e) => return e.hint(),
            Error::Repo(e) => return e.hint(),
            Error::Artifact { source, .. } => return source.hint(),
            Error::Pack(e) => return e.hint(),
            Error::Sign(e) => return e.hint(),
            Error::Name(e) => e.hint().into(),
            Error::Lifetime(_) => {
                "e.g. `--expires 30d`; agents refuse an index after it expires, so re-sign well before (`packager resign`)".into()
            }
            Error::ExpiresWithoutKey { .. } | Error::ResignWithoutKey => {
                "pass `--sign-key FILE` or set BERTH_SIGN_KEY (`packager keygen` makes a key pair)".into()
            }
            Error::KeygenNoPassword => {
                "set BERTH_SIGN_PASSWORD to encrypt the secret key (it is never read from the command line), or pass `--unencrypted` to write it unencrypted on purpose".into()
            }
            Error::KeygenPasswordConflict => {
                "unset BERTH_SIGN_PASSWORD, or drop `--unencrypted`".into()
            }
            Error::NothingToResign { repo, .. } => {
                format!("`packager list --repo {repo}` shows the channels and packages")
            }
            Error::Io(_) => return None,
            Error::NoBuildNumber | Error::BuildFromEnv { .. } => {
                "pass `--build N`, or set BUILD_NUMBER (Jenkins) or CI_PIPELINE_IID (GitLab) to a whole number from 1 up".into()
            }
            Error::SourceDateEpoch { .. } => {
                "unset it (entries are then dated 1970-01-01) or set it to the commit's time: `SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)`".into()
            }
            Error::PayloadMissing { .. } | Error::PayloadNotDir { .. } => {
                "build the application first, or set `payload` in [package] to the directory to ship".into()
            }
            Error::HookMissing { .. } | Error::HookNotFile { .. } => {
                "hook paths in [hooks] are relative to package.toml; fix the path or remove the hook".into()
            }
            Error::HookNotExecutable { path, .. } => {
                format!("make it executable: `chmod +x {}`", path.display())
            }
            Error::PayloadEntry { .. } => {
                "remove it from the payload; an artifact holds only files, directories and symlinks that stay inside it".into()
            }
            Error::SpecialMode { path, .. } => format!(
                "clear the bits (`chmod ug-s,o-tw` on it), or, if the package needs them, allow the path in package.toml: [install] allow_special_modes = [\"{path}\"]"
            ),
            Error::EscapingSymlink { .. } => {
                "make the symlink relative and pointing inside the payload (e.g. `ln -s ../lib/x`), or copy the file it points to".into()
            }
            Error::Secrets { paths } => format!(
                "remove them from the payload, or, if they are meant to ship, allow them by path in package.toml: [package] allow_secrets = [{}]",
                paths.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ")
            ),
            Error::PromoteOnly { release, channel } => format!(
                "publish to the channel before it, then promote the same bytes, e.g. `packager promote {release} --from staging --to {channel}` (promote-only channels are set in the repository's repo.toml)"
            ),
            Error::Immutable { .. } => {
                "publish the new build under a new build number (`packager build --build N`)".into()
            }
            Error::NotInChannel {
                release,
                channel,
                repo,
            } => format!(
                "`packager list --repo {repo} --channel {channel}` shows what the channel holds; `packager show {} --repo {repo}` shows where the package is",
                release.name
            ),
            Error::Yanked {
                release,
                channel,
                repo,
            } => format!(
                "undo the yank first if it is safe: `packager yank {release} --channel {channel} --repo {repo} --undo`"
            ),
            Error::ReleaseNotFound { release, repo } => format!(
                "`packager show {} --repo {repo}` lists the releases of the package",
                release.name
            ),
            Error::SameChannel(_) => "promote between two different channels".into(),
            Error::BlobMissing { .. } => {
                "the repository lost an artifact; publish it again from the artifact file".into()
            }
            Error::ArtifactMissing { .. } => {
                "check the path; `packager build` prints the artifact's path when it finishes".into()
            }
            Error::InitExists { .. } => {
                "edit the existing file, or pass `--force` to replace it".into()
            }
            Error::UnknownPackage { repo, .. } => {
                format!("`packager list --repo {repo}` shows what the repository holds")
            }
        })
    }
}
