//! `repo.toml`: marks a directory as a berth repository and holds the
//! channel policies (promote-only channels, retention for gc).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The repository format this code reads and writes.
pub const REPO_FORMAT: u32 = 1;

/// A parsed `repo.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub format: u32,
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelPolicy>,
}

/// What a channel allows and keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelPolicy {
    /// Releases only arrive by `packager promote`, never by `publish`.
    #[serde(default)]
    pub promote_only: bool,
    /// Releases per package that `packager gc` keeps in this channel.
    #[serde(default)]
    pub keep: Option<u32>,
}

/// The `repo.toml` a new repository starts with.
pub const NEW_REPO_TOML: &str = r#"# berth repository. `channels/<channel>/<package>.json` index the artifacts
# in `blobs/sha256/`; every reader needs only GET, so any static file server
# can serve this tree.
format = 1

# Channel policies. A promote-only channel takes releases only through
# `packager promote`, so what reaches it is byte for byte what an earlier
# channel tested; `packager publish` into it is refused.
[channels.production]
promote_only = true
# keep = 10    # releases per package that `packager gc` keeps (default: all)

# [channels.staging]
# keep = 20
"#;

impl RepoConfig {
    /// Parses `repo.toml`; `Err` is the reason, for a message.
    pub fn parse(bytes: &[u8]) -> Result<RepoConfig, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "it is not UTF-8".to_owned())?;
        let config: RepoConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if config.format != REPO_FORMAT {
            return Err(format!(
                "format {} is not the repository format {REPO_FORMAT} this berth reads",
                config.format
            ));
        }
        for name in config.channels.keys() {
            crate::name::check_channel(name).map_err(|e| e.to_string())?;
        }
        Ok(config)
    }

    /// The policies a new repository starts with.
    pub fn new_repository() -> RepoConfig {
        RepoConfig::parse(NEW_REPO_TOML.as_bytes()).expect("the new repo.toml parses")
    }

    /// The policy of `channel` (the default when repo.toml does not name it).
    pub fn policy(&self, channel: &str) -> ChannelPolicy {
        self.channels.get(channel).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_repo_toml_parses() {
        let c = RepoConfig::parse(NEW_REPO_TOML.as_bytes()).unwrap();
        assert!(c.policy("production").promote_only);
        assert!(!c.policy("staging").promote_only);
        assert!(RepoConfig::parse(b"format = 2").is_err());
        assert!(RepoConfig::parse(b"format = 1\n[channels.Prod]\n").is_err());
        assert!(RepoConfig::parse(b"format = 1\nsurprise = true").is_err());
    }
}
