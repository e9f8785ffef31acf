//! Argument definitions, with the examples and exit codes `--help` shows.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands;

#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version,
    about = "Install berth releases atomically on a node and roll them back",
    long_about = "Install berth releases atomically on a node and roll them back.\n\n\
        The agent reads releases from a berth repository (or takes an artifact file), \
        unpacks each into its own directory, snapshots what it replaces, runs the \
        package's hooks, and switches the install target with one atomic rename. \
        Its state is a SQLite database under <root>/var/lib/berth.",
    after_help = "Exit codes: 0 done or unchanged, 1 failed, 2 bad usage or input (nothing \
        changed), 3 rolled back after a failed health check, 4 another berth operation holds \
        the node, 5 refused by the trust checks: a channel index that is unsigned, signed by an \
        unknown key, foreign, expired or older than one already accepted (nothing changed).\n\n\
        Examples:\n  \
        agent --repo /srv/berth --channel staging install webapp\n  \
        agent --trusted-key /etc/berth/keys/ci.pub --repo /srv/berth --channel staging install webapp\n  \
        agent --repo https://berth.example.com/repo --ca-cert /etc/berth/ca.pem --channel production install webapp\n  \
        agent install --file webapp_1.4.2+173.tar.zst\n  \
        agent status\n  \
        agent rollback webapp\n  \
        agent verify webapp",
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Prefix every node path with DIR (tests, demos, unprivileged use)
    #[arg(long, env = "BERTH_ROOT", value_name = "DIR", global = true)]
    pub root: Option<PathBuf>,
    /// The configuration file [default: <root>/etc/berth/agent.toml]
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The repository: a directory, a file:// URL, or an http:// or
    /// https:// URL of a server that serves one (overrides agent.toml)
    #[arg(long, env = "BERTH_REPO", value_name = "PATH_OR_URL", global = true)]
    pub repo: Option<String>,
    /// A channel to read, repeatable, first wins (overrides agent.toml)
    #[arg(long = "channel", value_name = "CHANNEL", global = true)]
    pub channels: Vec<String>,
    /// Wait up to SECS for another berth operation to finish
    #[arg(long, value_name = "SECS", default_value_t = 0, global = true)]
    pub wait: u64,
    /// Trust channel indexes signed by this minisign public key, repeatable
    /// (on top of agent.toml's trusted_keys)
    #[arg(long = "trusted-key", value_name = "FILE", global = true)]
    pub trusted_keys: Vec<PathBuf>,
    /// Trust the CA certificates of this PEM file for an https://
    /// repository, on top of the system's roots (overrides agent.toml's
    /// http.ca_cert)
    #[arg(long = "ca-cert", value_name = "FILE", global = true)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install a release (the newest in the channels, or the one named)
    #[command(
        after_help = "Steps: resolve in the channels, fetch into the cache, verify, unpack into a fresh \
    directory, snapshot the release being replaced (backup and dump hooks), pre_install, \
    switch the target with one atomic rename, post_install, health (a failure rolls back, \
    exit 3), commit, prune. Installing what is installed and intact says `unchanged` and \
    runs no hook.\n\n\
    Examples:\n  \
    agent --repo /srv/berth --channel staging install webapp\n  \
    agent install webapp@1.4.2+173 --dry-run --json\n  \
    agent --root /tmp/node install --file webapp_1.4.2+173.tar.zst"
    )]
    Install {
        /// NAME, NAME@VERSION or NAME@VERSION+BUILD
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        release: Option<String>,
        /// Install this artifact file, with no repository
        #[arg(long, value_name = "ARTIFACT")]
        file: Option<PathBuf>,
        /// Say what would be installed, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Stay on the new release when post_install or health fails
        #[arg(long)]
        no_auto_rollback: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Go back to an earlier release kept on this node
    #[command(
        after_help = "Code only by default: the tree of the earlier release comes back, \
        the data stays. Across a different data epoch that is refused unless --with-data \
        (runs the release's restore hook with the dumps taken when it was replaced; data \
        written since is lost) or --force. A rollback can itself be rolled back.\n\n\
        Examples:\n  \
        agent rollback webapp\n  \
        agent rollback webapp --to 1.4.2+173 --with-data"
    )]
    Rollback {
        package: String,
        /// The release to go back to, VERSION+BUILD [default: the previous one]
        #[arg(long, value_name = "VERSION+BUILD")]
        to: Option<String>,
        /// Also restore the data the release had when it was replaced
        #[arg(long)]
        with_data: bool,
        /// Roll back the code across a different data epoch anyway
        #[arg(long, conflicts_with = "with_data")]
        force: bool,
        /// Say what would happen, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// What is installed: current release, target, releases kept
    #[command(after_help = "Examples:\n  agent status\n  agent status webapp --json")]
    Status {
        package: Option<String>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// The installs and rollbacks of a package, newest first, with their steps
    #[command(after_help = "Examples:\n  agent history webapp\n  agent history webapp --json")]
    History {
        package: String,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Check the installed release's files against its manifest
    #[command(
        after_help = "Lists every file missing, added or changed (by digest, size, mode, \
        type or symlink target) in the current release's tree; node-local parts (shared dirs, \
        preserved files, the env file) are ignored. Exits 0 when the tree is intact, 1 when it \
        drifted.\n\n\
        Examples:\n  agent verify webapp\n  agent verify webapp --json"
    )]
    Verify {
        package: String,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one transaction: its steps, its hooks' output and its events
    #[command(
        after_help = "Examples:\n  agent history webapp   # the transaction numbers\n  agent logs 12"
    )]
    Logs {
        /// The transaction number, from `agent history`
        txn: i64,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove old releases, snapshots and cached artifacts past retention
    #[command(
        after_help = "Keeps per package: the current release, the last healthy one before \
        it, and the newest `keep_releases` (a failed release never counts as kept); snapshots \
        by `retention` in agent.toml (count and bytes, never the newest); cached artifacts any \
        kept release or snapshot may be rebuilt from.\n\n\
        Examples:\n  agent gc --dry-run\n  agent gc"
    )]
    Gc {
        /// Say what would be removed, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Finish or undo what an interrupted command left, and say what was done
    #[command(
        after_help = "Every command that changes the node does this first; `recover` does it \
        alone and reports it. Under the node lock, a transaction still running belongs to a \
        process that died. An install or rollback whose health check had passed on the new \
        release is finished (committed); one killed before that is undone: switched back to \
        the release it replaced (whose post_install runs again), or, before the switch, what \
        it made removed. An interrupted gc finishes the removal in progress. Then the release \
        the install target points at is current in the state database (the link on disk is \
        the truth), and staging, trash and temporary files are removed. Nothing to do: \
        `nothing to recover`, exit 0.\n\n\
        --rebuild makes the state database again when it is missing or damaged, from what the \
        node keeps on disk: release dirs (their MANIFEST.toml and .unpacked stamp), snapshot \
        dirs (SNAPSHOT.toml and MANIFEST.toml), channel-sequences.toml and the target links. \
        A damaged database is moved aside (state.db.damaged-TIME), never deleted; a readable \
        one is refused (exit 2). The history of earlier transactions is lost.\n\n\
        Examples:\n  agent recover\n  agent recover --json\n  agent recover --rebuild"
    )]
    Recover {
        /// Make the state database again from the disk (when it is missing or damaged)
        #[arg(long)]
        rebuild: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// The snapshots kept of a package's replaced releases
    #[command(after_help = "Examples:\n  agent snapshots webapp")]
    Snapshots {
        package: String,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    fn json(&self) -> bool {
        match self {
            Command::Install { json, .. }
            | Command::Rollback { json, .. }
            | Command::Status { json, .. }
            | Command::History { json, .. }
            | Command::Snapshots { json, .. }
            | Command::Verify { json, .. }
            | Command::Logs { json, .. }
            | Command::Gc { json, .. }
            | Command::Recover { json, .. } => *json,
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.command.json();
    match commands::run(cli.global, cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            berth_cli::report(&e, e.exit_code(), json);
            ExitCode::from(e.exit_code())
        }
    }
}
