//! Where everything lives on a node, under `--root` (`BERTH_ROOT`), so a
//! test or a demo runs unprivileged in a temp directory and a real node
//! uses `/`. Nothing outside these paths is written, except the install
//! targets that packages name, which are also taken under the root.

use std::path::{Path, PathBuf};

/// The node's paths. Every absolute path is re-rooted under `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root` (`/` on a real node).
    /// A relative root is made absolute first: hooks run in the release
    /// directory, and every path handed to them must still hold there.
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        Layout { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An absolute node path (`/srv/webapp`) under the root.
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// `/etc/berth/agent.toml`
    pub fn config_file(&self) -> PathBuf {
        self.path("/etc/berth/agent.toml")
    }

    /// `/etc/berth/hooks/<pkg>/<hook>.d/`: the node's own hooks, run after
    /// the package's.
    pub fn node_hooks_dir(&self, package: &str, hook: &str) -> PathBuf {
        self.path(&format!("/etc/berth/hooks/{package}/{hook}.d"))
    }

    /// `/var/lib/berth`
    pub fn state_dir(&self) -> PathBuf {
        self.path("/var/lib/berth")
    }

    /// `/var/lib/berth/state.db`
    pub fn state_db(&self) -> PathBuf {
        self.state_dir().join("state.db")
    }

    /// `/var/lib/berth/lock`
    pub fn lock_file(&self) -> PathBuf {
        self.state_dir().join("lock")
    }

    /// `/var/lib/berth/cache/`: downloaded artifacts by sha256.
    pub fn cache_dir(&self) -> PathBuf {
        self.state_dir().join("cache")
    }

    /// The cached artifact of `sha256`.
    pub fn cached_artifact(&self, sha256: &str) -> PathBuf {
        self.cache_dir().join(format!("{sha256}.tar.zst"))
    }

    /// `/var/lib/berth/releases/<pkg>/`
    pub fn releases_dir(&self, package: &str) -> PathBuf {
        self.state_dir().join("releases").join(package)
    }

    /// `/var/lib/berth/releases/<pkg>/<version>+<build>/`
    pub fn release_dir(&self, package: &str, version: &str, build: u64) -> PathBuf {
        self.releases_dir(package)
            .join(format!("{version}+{build}"))
    }

    /// `/var/lib/berth/snapshots/`
    pub fn snapshots_dir(&self) -> PathBuf {
        self.state_dir().join("snapshots")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_under_the_root() {
        let l = Layout::new("/tmp/node");
        assert_eq!(l.config_file(), Path::new("/tmp/node/etc/berth/agent.toml"));
        assert_eq!(l.state_db(), Path::new("/tmp/node/var/lib/berth/state.db"));
        assert_eq!(
            l.release_dir("webapp", "1.4.2", 173),
            Path::new("/tmp/node/var/lib/berth/releases/webapp/1.4.2+173")
        );
        assert_eq!(l.path("/srv/webapp"), Path::new("/tmp/node/srv/webapp"));
        assert_eq!(
            l.node_hooks_dir("webapp", "health"),
            Path::new("/tmp/node/etc/berth/hooks/webapp/health.d")
        );
        assert_eq!(
            Layout::new("/").path("/srv/webapp"),
            Path::new("/srv/webapp")
        );
    }
}
