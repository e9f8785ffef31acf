//! A channel's index of one package (`channels/<channel>/<package>.json`):
//! a sequence number that grows with every write, and one entry per release
//! in the channel, sorted oldest first.

use serde::{Deserialize, Serialize};

use crate::digest::is_sha256_hex;
use crate::manifest::Source;
use crate::name;

/// The index format this code writes and reads.
pub const INDEX_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelIndex {
    pub format: u32,
    pub channel: String,
    pub package: String,
    /// Grows by one with every write; agents refuse to go backwards.
    pub sequence: u64,
    pub updated: jiff::Timestamp,
    /// When agents that check signatures stop accepting this index; set on
    /// every signed write (`packager publish --expires`, `packager resign`).
    /// Absent from an unsigned index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<jiff::Timestamp>,
    pub releases: Vec<ReleaseEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseEntry {
    pub version: String,
    pub build: u64,
    pub sha256: String,
    pub size: u64,
    /// When the release entered this channel.
    pub published: jiff::Timestamp,
    /// The channel it was promoted from, if it was.
    #[serde(default)]
    pub promoted_from: Option<String>,
    #[serde(default)]
    pub yanked: bool,
    #[serde(default)]
    pub source: Source,
}

impl ReleaseEntry {
    /// `1.4.2+173`.
    pub fn version_build(&self) -> String {
        format!("{}+{}", self.version, self.build)
    }

    pub fn is(&self, version: &str, build: u64) -> bool {
        self.version == version && self.build == build
    }
}

impl ChannelIndex {
    pub fn new(channel: &str, package: &str) -> ChannelIndex {
        ChannelIndex {
            format: INDEX_FORMAT,
            channel: channel.into(),
            package: package.into(),
            sequence: 0,
            updated: jiff::Timestamp::UNIX_EPOCH,
            expires: None,
            releases: Vec::new(),
        }
    }

    /// Parses and checks an index read from `channels/<channel>/<package>.json`.
    pub fn parse(bytes: &[u8], channel: &str, package: &str) -> Result<ChannelIndex, String> {
        let index = Self::parse_unchecked_names(bytes)?;
        if index.channel != channel || index.package != package {
            return Err(format!(
                "it says it is the index of `{}` in channel `{}`",
                index.package, index.channel
            ));
        }
        Ok(index)
    }

    /// Parses and checks an index without comparing the channel and package
    /// it names with where it was found: for callers that report a
    /// mismatch themselves.
    pub fn parse_unchecked_names(bytes: &[u8]) -> Result<ChannelIndex, String> {
        let index: ChannelIndex = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if index.format != INDEX_FORMAT {
            return Err(format!(
                "index format {} is not the format {INDEX_FORMAT} this berth reads",
                index.format
            ));
        }
        name::check_channel(&index.channel).map_err(|e| e.to_string())?;
        name::check_package_name(&index.package).map_err(|e| e.to_string())?;
        for r in &index.releases {
            name::check_version(&r.version).map_err(|e| e.to_string())?;
            if r.build == 0 || !is_sha256_hex(&r.sha256) {
                return Err(format!(
                    "release {} has a bad build or sha256",
                    r.version_build()
                ));
            }
        }
        Ok(index)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("an index always serializes");
        out.push(b'\n');
        out
    }

    /// Sorts releases oldest first.
    pub fn sort(&mut self) {
        self.releases
            .sort_by(|a, b| name::compare_releases((&a.version, a.build), (&b.version, b.build)));
    }

    pub fn get(&self, version: &str, build: u64) -> Option<&ReleaseEntry> {
        self.releases.iter().find(|r| r.is(version, build))
    }

    pub fn get_mut(&mut self, version: &str, build: u64) -> Option<&mut ReleaseEntry> {
        self.releases.iter_mut().find(|r| r.is(version, build))
    }

    /// The newest release that is not yanked.
    pub fn newest(&self) -> Option<&ReleaseEntry> {
        self.releases
            .iter()
            .filter(|r| !r.yanked)
            .max_by(|a, b| name::compare_releases((&a.version, a.build), (&b.version, b.build)))
    }
}
