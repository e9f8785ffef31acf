//! One node's context for a command: its layout under `--root`, its
//! configuration with the command line's overrides, and, for commands that
//! change it, the node lock and the state store.

use std::path::PathBuf;
use std::time::Duration;

use berth_core::fsutil;

use crate::config::Config;
use crate::error::Error;
use crate::layout::Layout;
use crate::lock::NodeLock;
use crate::store::Store;

/// What every command gets from the global options.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// `--root` / `BERTH_ROOT`; `/` when unset.
    pub root: Option<PathBuf>,
    /// `--config`; `<root>/etc/berth/agent.toml` when unset.
    pub config: Option<PathBuf>,
    /// `--repo` / `BERTH_REPO`.
    pub repo: Option<String>,
    /// `--channel`, repeatable, in priority order.
    pub channels: Vec<String>,
    /// `--wait SECS` for the node lock.
    pub wait: Duration,
    /// `--trusted-key FILE`, repeatable: public keys trusted on top of
    /// agent.toml's `trusted_keys`.
    pub trusted_keys: Vec<PathBuf>,
    /// `--ca-cert FILE`: CA certificates for an https:// repository, on
    /// top of the system's roots; overrides agent.toml's `http.ca_cert`.
    pub ca_cert: Option<PathBuf>,
}

/// A node opened for a command.
#[derive(Debug)]
pub struct Node {
    pub layout: Layout,
    pub config: Config,
    pub options: NodeOptions,
}

impl Node {
    pub fn open(options: NodeOptions) -> Result<Node, Error> {
        let layout = Layout::new(options.root.clone().unwrap_or_else(|| PathBuf::from("/")));
        let config = match &options.config {
            Some(path) => Config::load(path, true)?,
            None => Config::load(&layout.config_file(), false)?,
        };
        Ok(Node {
            layout,
            config,
            options,
        })
    }

    /// The repository to read: `--repo`, else agent.toml's.
    pub fn repository(&self) -> Option<&str> {
        self.options
            .repo
            .as_deref()
            .or(self.config.repository.as_deref())
    }

    /// The channels for `package`, in priority order.
    pub fn channels(&self, package: &str) -> Vec<String> {
        self.config
            .channels_for(package, &self.options.channels)
            .to_vec()
    }

    /// Takes the node lock for `operation`, creating the state directory.
    pub fn lock(&self, operation: &str) -> Result<NodeLock, Error> {
        Ok(NodeLock::acquire(
            &self.layout.lock_file(),
            operation,
            self.options.wait,
        )?)
    }

    /// Opens (creating when missing) the state store. A missing database
    /// on a node that holds releases or snapshots is refused: starting
    /// afresh would forget them ([`Error::StateMissing`]).
    pub fn store(&self) -> Result<Store, Error> {
        self.refuse_lost_state()?;
        fsutil::create_dir_all_synced(&self.layout.state_dir())?;
        Ok(Store::open(&self.layout.state_db())?)
    }

    /// Opens the state store only if the node has one (read-only commands
    /// on a fresh node report "nothing installed" rather than create it).
    pub fn existing_store(&self) -> Result<Option<Store>, Error> {
        if self.layout.state_db().exists() {
            Ok(Some(Store::open(&self.layout.state_db())?))
        } else {
            self.refuse_lost_state()?;
            Ok(None)
        }
    }

    /// With no database, what the node holds that one would have recorded:
    /// release dirs and snapshots. A fresh node holds neither.
    pub fn refuse_lost_state(&self) -> Result<(), Error> {
        let db = self.layout.state_db();
        if db.exists() {
            return Ok(());
        }
        let count = |dir: std::path::PathBuf| {
            std::fs::read_dir(dir).map_or(0, |d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
        };
        let releases: usize = std::fs::read_dir(self.layout.state_dir().join("releases"))
            .map(|d| d.flatten().map(|e| count(e.path())).sum())
            .unwrap_or(0);
        let snapshots = count(self.layout.snapshots_dir());
        if releases == 0 && snapshots == 0 {
            return Ok(());
        }
        Err(Error::StateMissing {
            path: db,
            found: format!("{releases} release dir(s) and {snapshots} snapshot(s)"),
        })
    }
}
