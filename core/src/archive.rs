//! The artifact file: a tar stream compressed with zstd, holding
//! `MANIFEST.toml` first, then `hooks/`, then `files/`.
//!
//! [`pack`] writes it deterministically (entries in the manifest's sorted
//! order, owner 0, one mtime, fixed modes), so the same tree gives the same
//! bytes. [`read`] walks an artifact entry by entry, checking each against
//! the manifest before and after handing its bytes to a [`Visitor`]; it never
//! trusts the archive to say where anything goes.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use crate::digest::{HashingReader, HashingWriter};
use crate::manifest::{
    Entry, FILES_DIR, HOOKS_DIR, MANIFEST_PATH, Manifest, ManifestError, Mode, check_entry_path,
    check_symlink_target,
};
use crate::progress::Progress;
use crate::{Diagnose, Fault};

/// The zstd level artifacts are written at: the `zstd` CLI's default.
pub const ZSTD_LEVEL: i32 = 3;
/// The largest manifest a reader accepts (it is held in memory).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// What [`pack`] needs besides the manifest: where each entry's bytes are.
#[derive(Debug, Clone)]
pub struct PackSources {
    /// Hook name to the executable to ship as `hooks/<name>`.
    pub hooks: Vec<(String, PathBuf)>,
    /// The directory whose entries the manifest's `[files]` lists.
    pub payload_root: PathBuf,
    /// The mtime of every entry (`SOURCE_DATE_EPOCH`, or 0).
    pub mtime: u64,
}

/// The artifact that was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub sha256: String,
    pub size: u64,
}

/// Why packing failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("cannot read `{}`: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("`{}` changed while it was being packed", path.display())]
    Changed { path: PathBuf },
    #[error("cannot write the artifact: {0}")]
    Write(io::Error),
}

impl Diagnose for PackError {
    fn fault(&self) -> Fault {
        Fault::Failure
    }

    fn hint(&self) -> Option<String> {
        match self {
            PackError::Changed { .. } => Some(
                "something is still writing to the payload; build again once it is finished".into(),
            ),
            _ => None,
        }
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Writes the artifact for `manifest` to `out`, reading hook and payload
/// bytes from `sources`. Every file is re-hashed as it streams and must match
/// the manifest, so a tree that changes under the packer is caught.
pub fn pack<W: Write>(
    manifest: &Manifest,
    sources: &PackSources,
    out: W,
    threads: u32,
    progress: &dyn Progress,
) -> Result<(W, Packed), PackError> {
    let hashing = HashingWriter::new(out);
    let mut zstd =
        zstd::stream::write::Encoder::new(hashing, ZSTD_LEVEL).map_err(PackError::Write)?;
    zstd.include_checksum(true).map_err(PackError::Write)?;
    // Always in multi-threaded mode, even with one worker: its output does
    // not depend on the number of workers, so every machine packs the same
    // bytes.
    zstd.multithread(threads.max(1)).map_err(PackError::Write)?;
    let mut tar = tar::Builder::new(zstd);
    let mtime = sources.mtime;
    let w = PackError::Write;

    let manifest_text = manifest.to_toml();
    let mut h = header(
        tar::EntryType::Regular,
        0o644,
        manifest_text.len() as u64,
        mtime,
    );
    tar.append_data(&mut h, MANIFEST_PATH, manifest_text.as_bytes())
        .map_err(w)?;

    progress.start("packing", manifest.payload_bytes());
    if !manifest.hook_files.is_empty() {
        let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
        tar.append_data(&mut h, format!("{HOOKS_DIR}/"), io::empty())
            .map_err(w)?;
        for (name, path) in &sources.hooks {
            let Some(entry) = manifest.hook_files.get(name) else {
                continue;
            };
            append_file(
                &mut tar,
                &format!("{HOOKS_DIR}/{name}"),
                entry,
                path,
                mtime,
                &crate::progress::Silent,
            )?;
        }
    }
    let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
    tar.append_data(&mut h, format!("{FILES_DIR}/"), io::empty())
        .map_err(w)?;
    for (rel, entry) in &manifest.files {
        let name = format!("{FILES_DIR}/{rel}");
        match entry {
            Entry::Dir { mode } => {
                let mut h = header(tar::EntryType::Directory, mode.0, 0, mtime);
                tar.append_data(&mut h, format!("{name}/"), io::empty())
                    .map_err(w)?;
            }
            Entry::Symlink { target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0, mtime);
                tar.append_link(&mut h, &name, target).map_err(w)?;
            }
            Entry::File { .. } => {
                let path = sources.payload_root.join(rel);
                append_file(&mut tar, &name, entry, &path, mtime, progress)?;
            }
        }
    }
    progress.finish();
    let zstd = tar.into_inner().map_err(w)?;
    let hashing = zstd.finish().map_err(w)?;
    let (mut out, sha256, size) = hashing.finish();
    out.flush().map_err(w)?;
    Ok((out, Packed { sha256, size }))
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    entry: &Entry,
    path: &std::path::Path,
    mtime: u64,
    progress: &dyn Progress,
) -> Result<(), PackError> {
    let Entry::File { sha256, size, mode } = entry else {
        return Ok(());
    };
    let read_err = |source| PackError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut reader = HashingReader::new(crate::progress::ProgressReader::new(
        file.take(*size),
        progress,
    ));
    let mut h = header(tar::EntryType::Regular, mode.0, *size, mtime);
    tar.append_data(&mut h, name, &mut reader).map_err(|e| {
        // The tar crate reports a short read as an I/O error; a file that
        // shrank is a change, not a disk fault.
        if e.kind() == io::ErrorKind::UnexpectedEof {
            PackError::Changed {
                path: path.to_owned(),
            }
        } else {
            PackError::Write(e)
        }
    })?;
    let (actual, count) = reader.finish();
    if &actual != sha256 || count != *size {
        return Err(PackError::Changed {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Why an artifact was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the artifact cannot be read (truncated or not tar+zstd): {0}")]
    Corrupt(io::Error),
    #[error("the artifact is empty")]
    Empty,
    #[error("the first entry is `{0}`, but an artifact starts with `{MANIFEST_PATH}`")]
    ManifestNotFirst(String),
    #[error(
        "`{MANIFEST_PATH}` is {0} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have"
    )]
    ManifestTooLarge(u64),
    #[error("`{MANIFEST_PATH}` is invalid: {0}")]
    Manifest(#[from] ManifestError),
    #[error("entry `{path}` is refused: {rule}")]
    Refused { path: String, rule: String },
    #[error(
        "entry `{path}` differs from the manifest: {what} is {actual}, the manifest says {expected}"
    )]
    Mismatch {
        path: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("`{path}` is in the manifest but not in the artifact")]
    Missing { path: String },
    #[error("after the end of the tar archive there are {0} bytes that are not zero padding")]
    TrailingData(u64),
    #[error("{0}")]
    Visitor(io::Error),
}

impl Diagnose for ArchiveError {
    fn fault(&self) -> Fault {
        match self {
            ArchiveError::Visitor(_) => Fault::Failure,
            _ => Fault::Input,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            ArchiveError::Visitor(_) => None,
            _ => Some(
                "the artifact is damaged or was not written by `packager build`; build it again, or fetch it again if it was copied"
                    .into(),
            ),
        }
    }
}

/// Receives each entry of an artifact after it passed every check that can
/// be made before its bytes are read. The reader checks size and digest
/// after `data` is consumed (whatever the visitor leaves is drained), so a
/// visitor that writes must treat its output as unverified until [`read`]
/// returns `Ok`.
pub trait Visitor {
    /// The manifest, before any other entry.
    fn manifest(&mut self, _manifest: &Manifest) -> io::Result<()> {
        Ok(())
    }
    /// A hook executable `hooks/<name>`.
    fn hook(&mut self, _name: &str, _entry: &Entry, _data: &mut dyn Read) -> io::Result<()> {
        Ok(())
    }
    /// A payload entry; `path` is relative to the release root. For
    /// directories and symlinks `data` is empty.
    fn payload(&mut self, _path: &str, _entry: &Entry, _data: &mut dyn Read) -> io::Result<()> {
        Ok(())
    }
}

/// A visitor that only lets the reader check.
#[derive(Debug, Default)]
pub struct CheckOnly;
impl Visitor for CheckOnly {}

/// Reads an artifact from `input`, checking its structure, every entry's
/// path, type, size, mode and digest against the manifest, and that nothing
/// is missing or extra. Returns the manifest.
pub fn read<R: Read>(input: R, visitor: &mut dyn Visitor) -> Result<Manifest, ArchiveError> {
    let decoder = zstd::stream::read::Decoder::new(input).map_err(ArchiveError::Corrupt)?;
    let mut archive = tar::Archive::new(decoder);
    let manifest = {
        let mut entries = archive.entries().map_err(ArchiveError::Corrupt)?;
        let mut first = match entries.next() {
            None => return Err(ArchiveError::Empty),
            Some(e) => e.map_err(ArchiveError::Corrupt)?,
        };
        let manifest = read_manifest_entry(&mut first)?;
        drop(first);
        visitor.manifest(&manifest).map_err(ArchiveError::Visitor)?;

        let mut seen: HashSet<String> = HashSet::new();
        let mut in_files = false;
        for entry in entries {
            let mut entry = entry.map_err(ArchiveError::Corrupt)?;
            let path = entry_path(&entry)?;
            let refused = |rule: &str| ArchiveError::Refused {
                path: path.clone(),
                rule: rule.to_owned(),
            };
            let kind = entry.header().entry_type();
            if path == HOOKS_DIR || path == FILES_DIR {
                if kind != tar::EntryType::Directory {
                    return Err(refused("it must be a directory"));
                }
                if path == HOOKS_DIR && in_files {
                    return Err(refused("`hooks/` must come before `files/`"));
                }
                in_files |= path == FILES_DIR;
                continue;
            }
            let (section, rel) = match path.split_once('/') {
                Some((s, rel)) if s == HOOKS_DIR || s == FILES_DIR => (s, rel),
                _ => {
                    return Err(refused(
                        "only `hooks/` and `files/` may follow the manifest",
                    ));
                }
            };
            check_entry_path(rel).map_err(refused)?;
            if !seen.insert(path.clone()) {
                return Err(refused("it appears twice in the artifact"));
            }
            let expected = if section == HOOKS_DIR {
                if in_files {
                    return Err(refused("hooks must come before `files/`"));
                }
                manifest.hook_files.get(rel)
            } else {
                in_files = true;
                if let Some((parent, _)) = rel.rsplit_once('/')
                    && !seen.contains(&format!("{FILES_DIR}/{parent}"))
                {
                    return Err(refused("its parent directory does not come before it"));
                }
                manifest.files.get(rel)
            };
            let Some(expected) = expected else {
                return Err(refused("it is not listed in the manifest"));
            };
            let actual_kind = match kind {
                tar::EntryType::Regular => "file",
                tar::EntryType::Directory => "dir",
                tar::EntryType::Symlink => "symlink",
                tar::EntryType::Link => return Err(refused("hard links are not allowed")),
                tar::EntryType::Char | tar::EntryType::Block => {
                    return Err(refused("device nodes are not allowed"));
                }
                tar::EntryType::Fifo => return Err(refused("fifos are not allowed")),
                tar::EntryType::GNUSparse => return Err(refused("sparse files are not allowed")),
                _ => return Err(refused("only files, directories and symlinks are allowed")),
            };
            let mismatch = |what, expected: String, actual: String| ArchiveError::Mismatch {
                path: path.clone(),
                what,
                expected,
                actual,
            };
            if actual_kind != expected.kind() {
                return Err(mismatch("type", expected.kind().into(), actual_kind.into()));
            }
            let mode = Mode(entry.header().mode().map_err(ArchiveError::Corrupt)? & 0o7777);
            match expected {
                Entry::File {
                    sha256,
                    size,
                    mode: want,
                } => {
                    if entry.size() != *size {
                        return Err(mismatch("size", size.to_string(), entry.size().to_string()));
                    }
                    if mode != *want {
                        return Err(mismatch("mode", want.to_string(), mode.to_string()));
                    }
                    let mut data = HashingReader::new(&mut entry);
                    if section == HOOKS_DIR {
                        visitor.hook(rel, expected, &mut data)
                    } else {
                        visitor.payload(rel, expected, &mut data)
                    }
                    .map_err(ArchiveError::Visitor)?;
                    io::copy(&mut data, &mut io::sink()).map_err(ArchiveError::Corrupt)?;
                    let (actual, count) = data.finish();
                    if count != *size {
                        return Err(mismatch("size", size.to_string(), count.to_string()));
                    }
                    if &actual != sha256 {
                        return Err(mismatch("sha256", sha256.clone(), actual));
                    }
                }
                Entry::Dir { mode: want } => {
                    if mode != *want {
                        return Err(mismatch("mode", want.to_string(), mode.to_string()));
                    }
                    visitor
                        .payload(rel, expected, &mut io::empty())
                        .map_err(ArchiveError::Visitor)?;
                }
                Entry::Symlink { target } => {
                    let link = entry
                        .link_name_bytes()
                        .ok_or_else(|| refused("the symlink has no target"))?;
                    let link = std::str::from_utf8(&link)
                        .map_err(|_| refused("the symlink target is not UTF-8"))?
                        .to_owned();
                    check_symlink_target(rel, &link).map_err(|r| refused(&r))?;
                    if &link != target {
                        return Err(mismatch("symlink target", target.clone(), link));
                    }
                    visitor
                        .payload(rel, expected, &mut io::empty())
                        .map_err(ArchiveError::Visitor)?;
                }
            }
        }
        let missing = manifest
            .hook_files
            .keys()
            .map(|k| format!("{HOOKS_DIR}/{k}"))
            .chain(manifest.files.keys().map(|k| format!("{FILES_DIR}/{k}")))
            .find(|p| !seen.contains(p));
        if let Some(path) = missing {
            return Err(ArchiveError::Missing { path });
        }
        manifest
    };
    // Read to the end of the zstd stream: it checks the frame checksum and
    // finds anything appended after the tar archive.
    let mut rest = archive.into_inner();
    let mut buf = [0u8; 8192];
    let mut extra = 0u64;
    loop {
        let n = rest.read(&mut buf).map_err(ArchiveError::Corrupt)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            extra += n as u64;
        }
    }
    if extra > 0 {
        return Err(ArchiveError::TrailingData(extra));
    }
    Ok(manifest)
}

fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, ArchiveError> {
    let raw = entry.path_bytes();
    let mut path = String::from_utf8(raw.into_owned()).map_err(|e| ArchiveError::Refused {
        path: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        rule: "entry names must be UTF-8".into(),
    })?;
    if entry.header().entry_type() == tar::EntryType::Directory && path.ends_with('/') {
        path.pop();
    }
    Ok(path)
}

/// Reads only the manifest, the first entry, without checking the rest:
/// for showing what an artifact is, never for trusting it.
pub fn read_manifest<R: Read>(input: R) -> Result<Manifest, ArchiveError> {
    let decoder = zstd::stream::read::Decoder::new(input).map_err(ArchiveError::Corrupt)?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive.entries().map_err(ArchiveError::Corrupt)?;
    let mut first = match entries.next() {
        None => return Err(ArchiveError::Empty),
        Some(e) => e.map_err(ArchiveError::Corrupt)?,
    };
    read_manifest_entry(&mut first)
}

fn read_manifest_entry<R: Read>(first: &mut tar::Entry<'_, R>) -> Result<Manifest, ArchiveError> {
    let path = entry_path(first)?;
    if path != MANIFEST_PATH || first.header().entry_type() != tar::EntryType::Regular {
        return Err(ArchiveError::ManifestNotFirst(path));
    }
    if first.size() > MAX_MANIFEST_BYTES {
        return Err(ArchiveError::ManifestTooLarge(first.size()));
    }
    let mut text = String::new();
    first
        .read_to_string(&mut text)
        .map_err(ArchiveError::Corrupt)?;
    Ok(Manifest::parse(&text)?)
}
