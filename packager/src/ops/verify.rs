//! `packager verify`: reads an artifact end to end and checks its structure,
//! its manifest and every entry's type, size, mode and digest.

use std::fs::File;
use std::path::{Path, PathBuf};

use berth_core::archive;
use berth_core::digest::HashingReader;
use berth_core::fsutil::IoResultExt;
use berth_core::manifest::Manifest;
use berth_core::progress::{Progress, ProgressReader};

use crate::Error;

/// An artifact that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub sha256: String,
    pub size: u64,
}

/// Opens an artifact the user named; a missing one is bad input.
pub(crate) fn open_artifact(path: &Path) -> Result<File, Error> {
    match File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::ArtifactMissing {
            path: path.to_owned(),
        }),
        other => Ok(other.at("cannot open artifact", path)?),
    }
}

/// Checks the artifact at `path`, streaming it once.
pub fn verify(path: &Path, progress: &dyn Progress) -> Result<Verified, Error> {
    let file = open_artifact(path)?;
    let len = file.metadata().at("cannot read artifact", path)?.len();
    if len == 0 {
        return Err(Error::Artifact {
            path: path.to_owned(),
            source: archive::ArchiveError::Empty,
        });
    }
    progress.start("verifying", len);
    let mut hashing =
        HashingReader::new(ProgressReader::new(std::io::BufReader::new(file), progress));
    let manifest = archive::read(&mut hashing, &mut archive::CheckOnly).map_err(|source| {
        progress.finish();
        Error::Artifact {
            path: path.to_owned(),
            source,
        }
    })?;
    // Anything after the zstd stream is not part of the artifact.
    std::io::copy(&mut hashing, &mut std::io::sink()).at("cannot read artifact", path)?;
    progress.finish();
    let (sha256, size) = hashing.finish();
    Ok(Verified {
        path: path.to_owned(),
        manifest,
        sha256,
        size,
    })
}
