//! `packager list` and `packager show`: what the repository holds, read
//! only.

use berth_core::manifest::Manifest;
use berth_core::name::{self, ReleaseId};
use berth_core::repo::{Open, ReleaseEntry, Repository};

use crate::Error;

/// One release in one channel.
#[derive(Debug, Clone)]
pub struct Listed {
    pub channel: String,
    pub package: String,
    pub entry: ReleaseEntry,
    /// The newest non-yanked release of the package in the channel.
    pub newest: bool,
}

/// Every release in the repository, or in one channel, sorted by channel,
/// package, then release.
pub fn list(repo: &str, channel: Option<&str>) -> Result<Vec<Listed>, Error> {
    if let Some(c) = channel {
        name::check_channel(c)?;
    }
    let (repo, _) = Repository::open(repo, Open::Existing)?;
    let mut out = Vec::new();
    for (c, package) in repo.indexes()? {
        if channel.is_some_and(|want| want != c) {
            continue;
        }
        let Some(index) = repo.index(&c, &package)? else {
            continue;
        };
        let newest = index.newest().map(|e| (e.version.clone(), e.build));
        for entry in index.releases {
            out.push(Listed {
                channel: c.clone(),
                package: package.clone(),
                newest: newest.as_ref().is_some_and(|(v, b)| entry.is(v, *b)),
                entry,
            });
        }
    }
    Ok(out)
}

/// What `show` found for one exact release.
#[derive(Debug, Clone)]
pub struct Shown {
    pub release: ReleaseId,
    /// The channels that hold it, with their entries.
    pub channels: Vec<(String, ReleaseEntry)>,
    /// The manifest, read from the blob's first entry.
    pub manifest: Manifest,
}

/// Every channel entry of a package (`NAME`).
pub fn show_package(repo: &str, package: &str) -> Result<Vec<Listed>, Error> {
    name::check_package_name(package)?;
    let found: Vec<Listed> = list(repo, None)?
        .into_iter()
        .filter(|l| l.package == package)
        .collect();
    if found.is_empty() {
        return Err(Error::UnknownPackage {
            package: package.to_owned(),
            repo: repo.to_owned(),
        });
    }
    Ok(found)
}

/// One release (`NAME@VERSION+BUILD`): where it is and its manifest.
pub fn show_release(repo_url: &str, release: &ReleaseId) -> Result<Shown, Error> {
    let (repo, _) = Repository::open(repo_url, Open::Existing)?;
    let channels = repo.find_release(&release.name, &release.version, release.build)?;
    let Some((channel, first)) = channels.first() else {
        return Err(Error::ReleaseNotFound {
            release: release.clone(),
            repo: repo_url.to_owned(),
        });
    };
    let blob = repo
        .open_blob(&first.sha256)?
        .ok_or_else(|| Error::BlobMissing {
            release: release.clone(),
            channel: channel.clone(),
            sha256: first.sha256.clone(),
        })?;
    let manifest =
        berth_core::archive::read_manifest(std::io::BufReader::new(blob)).map_err(|source| {
            Error::Artifact {
                path: repo.backend().location().into(),
                source,
            }
        })?;
    Ok(Shown {
        release: release.clone(),
        channels,
        manifest,
    })
}
