//! Argument definitions (with the examples `--help` shows) and the error
//! printer: `error:`, the cause chain, then `hint:`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands;

#[derive(Debug, Parser)]
#[command(
    name = "packager",
    version,
    about = "Build, publish and promote berth artifacts",
    long_about = "Build, publish and promote berth artifacts.\n\n\
        `packager` runs in CI: it builds a reproducible tar+zstd artifact from an \
        application's package.toml, publishes it into a channel of a repository and \
        promotes the very same bytes from channel to channel.",
    after_help = "Exit codes: 0 ok or unchanged, 1 failed, 2 bad usage or input.\n\n\
        Examples:\n  \
        packager init\n  \
        packager build --build \"$BUILD_NUMBER\" --out dist/\n  \
        packager publish dist/webapp_1.4.2+173.tar.zst --repo /srv/berth --channel staging\n  \
        packager promote webapp@1.4.2+173 --from staging --to production --repo /srv/berth\n\n\
        Signing: give `--sign-key` (or BERTH_SIGN_KEY) to publish, promote, yank, gc and resign, \
        and every channel index they write is signed; the key's password comes from \
        BERTH_SIGN_PASSWORD, never from the command line."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented package.toml to start from
    #[command(after_help = "Examples:\n  \
        packager init\n  \
        packager init services/api --name api")]
    Init {
        /// The application's directory
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The package name (default: the directory's name)
        #[arg(long)]
        name: Option<String>,
        /// Replace an existing package.toml
        #[arg(long)]
        force: bool,
    },
    /// Build the artifact described by DIR/package.toml
    #[command(
        after_help = "The build number comes from --build, else BUILD_NUMBER (Jenkins), else \
        CI_PIPELINE_IID (GitLab). [source] is filled from GIT_COMMIT / CI_COMMIT_SHA / GITHUB_SHA \
        (or `git rev-parse HEAD`). Entries are sorted, owned by root and dated \
        SOURCE_DATE_EPOCH (or 0): the same tree gives the same sha256.\n\n\
        Prints `SHA256  PATH` on stdout (the format of sha256sum).\n\n\
        Examples:\n  \
        packager build --build 173\n  \
        BUILD_NUMBER=173 packager build examples/webapp --out dist/\n  \
        packager build --build 173 --json | jq -r .artifact"
    )]
    Build {
        /// The directory holding package.toml
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The build number, a whole number from 1 up
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        build: Option<String>,
        /// Where to write the artifact
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Check an artifact's structure, manifest and every file's digest
    #[command(after_help = "Examples:\n  packager verify webapp_1.4.2+173.tar.zst")]
    Verify {
        /// The artifact file (`NAME_VERSION+BUILD.tar.zst`)
        artifact: PathBuf,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Publish an artifact into a channel of a repository
    #[command(
        after_help = "A missing or empty directory becomes a new repository; a channel is \
        created by its first publish. The blob is uploaded only when absent, so a CI re-run \
        changes nothing. The same release with different bytes is refused.\n\n\
        Examples:\n  \
        packager publish webapp_1.4.2+173.tar.zst --repo /srv/berth --channel staging\n  \
        BERTH_REPO=file:///srv/berth packager publish webapp_1.4.2+173.tar.zst --channel dev --json\n  \
        BERTH_SIGN_PASSWORD=... packager publish webapp_1.4.2+173.tar.zst --repo /srv/berth --channel staging --sign-key ci.key"
    )]
    Publish {
        /// The artifact file (`NAME_VERSION+BUILD.tar.zst`)
        artifact: PathBuf,
        /// The repository: a directory or a file:// URL
        #[arg(long, env = "BERTH_REPO", value_name = "PATH_OR_URL")]
        repo: String,
        /// The channel to publish into, e.g. staging
        #[arg(long)]
        channel: String,
        #[command(flatten)]
        sign: SignArgs,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Copy a release from one channel to another, same bytes
    #[command(after_help = "Examples:\n  \
        packager promote webapp@1.4.2+173 --from staging --to production --repo /srv/berth")]
    Promote {
        /// NAME@VERSION+BUILD
        release: String,
        /// The channel that holds the release
        #[arg(long)]
        from: String,
        /// The channel to copy it into
        #[arg(long)]
        to: String,
        /// The repository: a directory or a file:// URL
        #[arg(long, env = "BERTH_REPO", value_name = "PATH_OR_URL")]
        repo: String,
        #[command(flatten)]
        sign: SignArgs,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Mark a release in a channel so agents skip it
    #[command(
        after_help = "The entry and its artifact stay in the repository; `--undo` clears the mark.\n\n\
        Examples:\n  \
        packager yank webapp@1.4.2+173 --channel production --repo /srv/berth\n  \
        packager yank webapp@1.4.2+173 --channel production --repo /srv/berth --undo"
    )]
    Yank {
        /// NAME@VERSION+BUILD
        release: String,
        /// The channel, e.g. production
        #[arg(long)]
        channel: String,
        /// The repository: a directory or a file:// URL
        #[arg(long, env = "BERTH_REPO", value_name = "PATH_OR_URL")]
        repo: String,
        /// Clear the yank mark instead
        #[arg(long)]
        undo: bool,
        #[command(flatten)]
        sign: SignArgs,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// List the releases in the repository or in one channel
    #[command(after_help = "Examples:\n  \
        packager list --repo /srv/berth\n  \
        packager list --repo /srv/berth --channel production --json")]
    List {
        /// The repository: a directory or a file:// URL
        #[arg(long, env = "BERTH_REPO", value_name = "PATH_OR_URL")]
        repo: String,
        /// Only this channel
        #[arg(long)]
        channel: Option<String>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show a package's releases, or one release with its manifest
    #[command(after_help = "Examples:\n  \
        packager show webapp --repo /srv/berth\n  \
        packager show webapp@1.4.2+173 --repo /srv/berth --json")]
    Show {
        /// NAME or NAME@VERSION+BUILD
        query: String,
        /// The repository: a directory or a file:// URL
        #[arg(long, env = "BERTH_REPO", value_name = "PATH_OR_URL")]
        repo: String,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Apply retention; delete unreferenced artifacts and abandoned uploads
    #[command(
        after_help = "With --keep N (or `keep` for a channel in repo.toml) each channel keeps \
        the newest N releases of each package that are not yanked; older entries leave the index. \
        Then every blob no index references is deleted. A blob any channel references is never \
        deleted. Last, the temp files of publishers that died before they finished (`.tmp-*`) \
        are removed; a temp file a running publisher is still writing is kept.\n\n\
        Examples:\n  \
        packager gc --repo /srv/berth --dry-run\n  \
        packager gc --repo /srv/berth --keep 10"
    )]
    Gc {
        /// The repository: a directory or a file:// URL
        #[arg(long, env = "BERTH_REPO", value_name = "PATH_OR_URL")]
        repo: String,
        /// Releases to keep per package in each channel
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        keep: Option<u32>,
        /// Say what would go, change nothing
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        sign: SignArgs,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Make a minisign key pair for signing channel indexes
    #[command(
        after_help = "Writes PREFIX.key (the secret key, mode 0600) and PREFIX.pub (the public \
        key agents trust), never over existing files. The secret key is encrypted with the \
        password in BERTH_SIGN_PASSWORD (minisign's scrypt cost, 1 GiB of memory for a moment); \
        `--unencrypted` writes it unencrypted, as `minisign -G -W` does. The files are \
        minisign's: `minisign -S -s PREFIX.key` and `minisign -V -p PREFIX.pub` use them.\n\n\
        Examples:\n  \
        BERTH_SIGN_PASSWORD=\"$(pass berth/ci)\" packager keygen --out /secure/berth-2026\n  \
        packager keygen --out ci --unencrypted --json"
    )]
    Keygen {
        /// Where to write: PREFIX.key and PREFIX.pub
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// Write the secret key without a password
        #[arg(long)]
        unencrypted: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Sign channel indexes again, with a new expiry
    #[command(
        after_help = "Each chosen index (default: all) is written again with the next sequence, \
        a new `expires` and a new signature. Run it on a schedule well within `--expires`, so \
        agents never see an expired index; and after moving to a new key (docs/trust.md). \
        After restoring the repository from a backup, `--sequence N` moves every index past the \
        sequences nodes already accepted. It is the one command that signs an index as it finds \
        it (every other write first checks that its key signed what is there): after anything \
        unusual, look at what it will sign (`packager list`) first.\n\n\
        Examples:\n  \
        packager resign --repo /srv/berth --sign-key ci.key\n  \
        packager resign --repo /srv/berth --sign-key ci.key --channel production --expires 7d\n  \
        packager resign --repo /srv/berth --sign-key ci.key --sequence 1000"
    )]
    Resign {
        /// The repository: a directory or a file:// URL
        #[arg(long, env = "BERTH_REPO", value_name = "PATH_OR_URL")]
        repo: String,
        /// Only this channel (repeatable)
        #[arg(long = "channel", value_name = "CHANNEL")]
        channels: Vec<String>,
        /// Only this package (repeatable)
        #[arg(long = "package", value_name = "NAME")]
        packages: Vec<String>,
        /// Give each index at least this sequence
        #[arg(long, value_name = "N")]
        sequence: Option<u64>,
        #[command(flatten)]
        sign: SignArgs,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
}

/// The signing flags of every command that writes channel indexes.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// Sign each channel index written with this minisign secret key
    /// (password from BERTH_SIGN_PASSWORD)
    #[arg(long, env = "BERTH_SIGN_KEY", value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// How long the signed indexes stay valid: a number and s, m, h, d or w
    /// [default: 30d]
    #[arg(long, value_name = "DURATION")]
    pub expires: Option<String>,
}

impl Command {
    fn json(&self) -> bool {
        match self {
            Command::Init { .. } => false,
            Command::Keygen { json, .. } | Command::Resign { json, .. } => *json,
            Command::Build { json, .. }
            | Command::Verify { json, .. }
            | Command::Publish { json, .. }
            | Command::Promote { json, .. }
            | Command::Yank { json, .. }
            | Command::List { json, .. }
            | Command::Show { json, .. }
            | Command::Gc { json, .. } => *json,
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.command.json();
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(commands::Failure::Pipe) => ExitCode::SUCCESS,
        Err(commands::Failure::Op(e)) => {
            berth_cli::report(&e, e.exit_code(), json);
            ExitCode::from(e.exit_code())
        }
    }
}
