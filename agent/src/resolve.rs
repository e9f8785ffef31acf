//! Which release to install: `NAME`, `NAME@VERSION` or
//! `NAME@VERSION+BUILD`, looked up in the node's channels in priority order
//! (overlays: `hotfix` over `production`). For the newest release the first
//! channel that holds the package wins; for a version, the first channel
//! that holds that version. Yanked releases are skipped, and an exact
//! request for one is refused.

use std::fmt;
use std::str::FromStr;

use berth_core::name::{self, InvalidName};
use berth_core::repo::{ChannelIndex, ReleaseEntry, RepoError, Repository, TrustError};

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub package: String,
    pub version: Option<String>,
    pub build: Option<u64>,
}

impl FromStr for Wanted {
    type Err = InvalidName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (package, rest) = match s.split_once('@') {
            Some((p, rest)) => (p, Some(rest)),
            None => (s, None),
        };
        name::check_package_name(package)?;
        let (version, build) = match rest {
            None => (None, None),
            Some(rest) => match rest.rsplit_once('+') {
                Some((v, b)) => (Some(v), Some(name::parse_build(b)?)),
                None => (Some(rest), None),
            },
        };
        if let Some(v) = version {
            name::check_version(v)?;
        }
        Ok(Wanted {
            package: package.to_owned(),
            version: version.map(str::to_owned),
            build,
        })
    }
}

impl fmt::Display for Wanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.package)?;
        if let Some(v) = &self.version {
            write!(f, "@{v}")?;
        }
        if let Some(b) = self.build {
            write!(f, "+{b}")?;
        }
        Ok(())
    }
}

/// The release found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub package: String,
    pub channel: String,
    pub entry: ReleaseEntry,
    /// The sequence of the channel index it came from.
    pub sequence: u64,
}

/// Why nothing was found.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no channel to read `{package}` from")]
    NoChannels { package: String },
    #[error("`{package}` is not in channel{} {}", plural(.channels), list(.channels))]
    UnknownPackage {
        package: String,
        channels: Vec<String>,
    },
    #[error("{wanted} is not in channel{} {}", plural(.channels), list(.channels))]
    UnknownRelease {
        wanted: String,
        channels: Vec<String>,
    },
    #[error("{wanted} is yanked in channel `{channel}`")]
    Yanked { wanted: String, channel: String },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Trust(Box<TrustError>),
}

impl From<TrustError> for ResolveError {
    fn from(e: TrustError) -> Self {
        ResolveError::Trust(Box::new(e))
    }
}

/// Where channel indexes come from: a repository as it is, or through the
/// node's trust checks ([`crate::trust::IndexReader`]).
pub trait IndexSource {
    fn index(&self, channel: &str, package: &str) -> Result<Option<ChannelIndex>, ResolveError>;
}

impl IndexSource for Repository {
    fn index(&self, channel: &str, package: &str) -> Result<Option<ChannelIndex>, ResolveError> {
        Ok(Repository::index(self, channel, package)?)
    }
}

fn plural(channels: &[String]) -> &'static str {
    if channels.len() == 1 { "" } else { "s" }
}

fn list(channels: &[String]) -> String {
    let quoted: Vec<String> = channels.iter().map(|c| format!("`{c}`")).collect();
    quoted.join(", ")
}

/// Looks `wanted` up in `channels`, first to last.
pub fn resolve(
    repo: &dyn IndexSource,
    wanted: &Wanted,
    channels: &[String],
) -> Result<Resolved, ResolveError> {
    if channels.is_empty() {
        return Err(ResolveError::NoChannels {
            package: wanted.package.clone(),
        });
    }
    let mut package_seen = false;
    for channel in channels {
        let Some(index) = repo.index(channel, &wanted.package)? else {
            continue;
        };
        package_seen = true;
        let found = match (&wanted.version, wanted.build) {
            (None, _) => index.newest().cloned(),
            (Some(v), Some(b)) => match index.get(v, b) {
                Some(e) if e.yanked => {
                    return Err(ResolveError::Yanked {
                        wanted: wanted.to_string(),
                        channel: channel.clone(),
                    });
                }
                other => other.cloned(),
            },
            (Some(v), None) => index
                .releases
                .iter()
                .filter(|r| &r.version == v && !r.yanked)
                .max_by_key(|r| r.build)
                .cloned(),
        };
        if let Some(entry) = found {
            return Ok(Resolved {
                package: wanted.package.clone(),
                channel: channel.clone(),
                entry,
                sequence: index.sequence,
            });
        }
        if wanted.version.is_none() {
            // The first channel holding the package decides, even when all
            // its releases are yanked: falling through to a lower-priority
            // channel would silently undo the yank.
            break;
        }
    }
    if package_seen {
        Err(ResolveError::UnknownRelease {
            wanted: wanted.to_string(),
            channels: channels.to_vec(),
        })
    } else {
        Err(ResolveError::UnknownPackage {
            package: wanted.package.clone(),
            channels: channels.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::repo::{Open, ReleaseEntry};

    fn entry(version: &str, build: u64, yanked: bool) -> ReleaseEntry {
        ReleaseEntry {
            version: version.into(),
            build,
            sha256: format!("{build:064x}"),
            size: 1,
            published: jiff::Timestamp::UNIX_EPOCH,
            promoted_from: None,
            yanked,
            source: Default::default(),
        }
    }

    fn repo_with(dir: &std::path::Path, indexes: &[(&str, Vec<ReleaseEntry>)]) -> Repository {
        let (repo, _) = Repository::open(dir.to_str().unwrap(), Open::CreateIfMissing).unwrap();
        for (channel, releases) in indexes {
            repo.update_index(channel, "webapp", &mut |index| -> Result<bool, RepoError> {
                index.releases = releases.clone();
                Ok(true)
            })
            .unwrap();
        }
        repo
    }

    fn channels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wanted_parses_every_form() {
        let w: Wanted = "webapp".parse().unwrap();
        assert_eq!((w.version, w.build), (None, None));
        let w: Wanted = "webapp@1.4.2".parse().unwrap();
        assert_eq!((w.version.as_deref(), w.build), (Some("1.4.2"), None));
        let w: Wanted = "webapp@1.4.2+7".parse().unwrap();
        assert_eq!((w.version.as_deref(), w.build), (Some("1.4.2"), Some(7)));
        assert_eq!(w.to_string(), "webapp@1.4.2+7");
        for bad in ["Web", "webapp@", "webapp@1.0+0", "webapp@1.0+x", "@1.0"] {
            assert!(bad.parse::<Wanted>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_channel_holding_the_package_wins() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with(
            dir.path(),
            &[
                (
                    "production",
                    vec![entry("1.0", 1, false), entry("1.1", 2, false)],
                ),
                ("hotfix", vec![entry("1.0.1", 3, false)]),
            ],
        );
        let newest = |w: &str, c: &[&str]| resolve(&repo, &w.parse().unwrap(), &channels(c));
        let r = newest("webapp", &["hotfix", "production"]).unwrap();
        assert_eq!((r.channel.as_str(), r.entry.build), ("hotfix", 3));
        let r = newest("webapp", &["production"]).unwrap();
        assert_eq!(r.entry.build, 2);
        // A version the overlay lacks comes from the next channel.
        let r = newest("webapp@1.0", &["hotfix", "production"]).unwrap();
        assert_eq!((r.channel.as_str(), r.entry.build), ("production", 1));
        let r = newest("webapp@1.1+2", &["hotfix", "production"]).unwrap();
        assert_eq!(r.entry.build, 2);
    }

    #[test]
    fn yanked_and_unknown_releases_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with(
            dir.path(),
            &[
                ("production", vec![entry("1.0", 1, false)]),
                ("hotfix", vec![entry("1.0.1", 3, true)]),
            ],
        );
        let find = |w: &str, c: &[&str]| resolve(&repo, &w.parse().unwrap(), &channels(c));
        // Every release of the package in the first channel is yanked: the
        // yank is not undone by falling through to production.
        let err = find("webapp", &["hotfix", "production"]).unwrap_err();
        assert!(matches!(err, ResolveError::UnknownRelease { .. }), "{err}");
        let err = find("webapp@1.0.1+3", &["hotfix"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "webapp@1.0.1+3 is yanked in channel `hotfix`"
        );
        let err = find("webapp@9.9", &["hotfix", "production"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "webapp@9.9 is not in channels `hotfix`, `production`"
        );
        let err = find("api", &["production"]).unwrap_err();
        assert_eq!(err.to_string(), "`api` is not in channel `production`");
        let err = find("webapp", &[]).unwrap_err();
        assert!(matches!(err, ResolveError::NoChannels { .. }));
    }
}
