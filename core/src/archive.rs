//! The artifact file: a tar stream compressed with zstd, holding
//! `MANIFEST.toml` first, then `hooks/`, then `files/`.
//!
//! [`pack`] writes it deterministically (entries in the manifest's sorted
//! order, owner 0, one mtime, fixed modes), so the same tree gives the same
//! bytes. [`read`] walks an artifact entry by entry, checking each against
//! the manifest before and after handing its bytes to a [`Visitor`]; it never
//! trusts the archive to say where anything goes.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::digest::{HashingReader, HashingWriter};
use crate::manifest::{
    Entry, FILES_DIR, HOOKS_DIR, MANIFEST_PATH, Manifest, ManifestError, Mode, check_entry_path,
    check_symlink_target,
};
use crate::progress::Progress;
use crate::{Diagnose, Fault};

/// The zstd level artifacts are written at: the `zstd` CLI's default.
pub const ZSTD_LEVEL: i32 = 3;
/// The uncompressed bytes each zstd worker compresses at a time. Set
/// explicitly so the artifact's bytes depend neither on the number of
/// workers nor on zstd's default (derived from the window size: 8 MiB at
/// level 3). The encoder holds about (workers + 3) input and (workers + 2)
/// output buffers of this size; 4 MiB keeps that near 40 MiB with two
/// workers, for artifacts about 0.8% larger than with 8 MiB.
pub const ZSTD_JOB_SIZE: u32 = 4 << 20;
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
    /// Fingerprints from [`hash_file`], by payload path (the manifest's
    /// `[files]` key). A payload file listed here is checked against its
    /// fingerprint while it is packed; any other file (and every hook) is
    /// hashed again with SHA-256 and checked against the manifest.
    pub fingerprints: HashMap<String, Fingerprint>,
}

/// The artifact that was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub sha256: String,
    pub size: u64,
}

/// A fast 64-bit digest (XXH64) of the bytes of a file, taken by
/// [`hash_file`] from the very bytes that gave the manifest its SHA-256.
///
/// It exists so that [`pack`] need not compute SHA-256 a second time to find
/// out whether a file changed between hashing and packing. The safety
/// property kept is: the bytes packed for a file are the bytes whose digest
/// the manifest holds, or the build fails with [`PackError::Changed`]. Each
/// file is read twice (once for the manifest, which must come first in the
/// artifact, once to pack it), and the second read is compared, byte for
/// byte in effect, with the first: as a fingerprint of everything read, plus
/// the length (a file that shrank or grew is caught too). For an accidental
/// change, two different contents share a fingerprint with probability
/// 2^-64. It is not a defence against someone crafting a collision while the
/// packer runs, and need not be: whoever can write the payload can change
/// what gets hashed in the first place, and every consumer of the artifact
/// checks the SHA-256 of each file against the manifest anyway, so a
/// mismatch would be refused downstream, never installed.
///
/// Comparing metadata instead (size, mtime, ctime, inode) was rejected: it
/// costs about as many system calls, and it misses a same-size rewrite
/// within one timestamp tick (the kernel's coarse clock) or through a
/// writable memory mapping whose page is already dirty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(u64);

/// What [`hash_file`] learned about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedFile {
    /// Lowercase hex SHA-256, for the manifest.
    pub sha256: String,
    /// Bytes read.
    pub size: u64,
    /// For [`PackSources::fingerprints`].
    pub fingerprint: Fingerprint,
}

/// The read buffer [`hash_file`] callers should give it, and what [`pack`]
/// reads files with: large enough that a system call moves a lot, small
/// enough to stay in the CPU caches while it is hashed and compressed.
pub const READ_BUFFER: usize = 256 << 10;

/// Reads the file at `path` once, computing its SHA-256 and size for the
/// manifest and its [`Fingerprint`] for [`pack`]. `buf` is scratch space
/// (see [`READ_BUFFER`]), reused across calls to save allocations.
pub fn hash_file(path: &Path, buf: &mut [u8], progress: &dyn Progress) -> io::Result<HashedFile> {
    let mut file = File::open(path)?;
    let mut sha = Sha256::new();
    let mut xxh = Xxh64::new();
    let mut size = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha.update(&buf[..n]);
        xxh.update(&buf[..n]);
        size += n as u64;
        progress.advance(n as u64);
    }
    Ok(HashedFile {
        sha256: crate::digest::hex(&sha.finalize()),
        size,
        fingerprint: Fingerprint(xxh.finish()),
    })
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
/// bytes from `sources`. Every file is checked as it streams, against its
/// fingerprint in `sources` or else against the manifest's SHA-256, so a
/// tree that changes under the packer is caught (see [`Fingerprint`]).
///
/// `threads` is the number of zstd workers; the bytes written do not depend
/// on it, the memory used does (see [`ZSTD_JOB_SIZE`]).
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
    zstd.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))
        .map_err(PackError::Write)?;
    let mut tar = tar::Builder::new(zstd);
    let mtime = sources.mtime;
    let w = PackError::Write;
    let mut buf = vec![0u8; READ_BUFFER];

    let manifest_text = manifest.to_toml();
    let mut h = header(
        tar::EntryType::Regular,
        0o644,
        manifest_text.len() as u64,
        mtime,
    );
    tar.append_data(&mut h, MANIFEST_PATH, manifest_text.as_bytes())
        .map_err(w)?;
    drop(manifest_text);

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
                None,
                mtime,
                &mut buf,
                &crate::progress::Silent,
            )?;
        }
    }
    let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
    tar.append_data(&mut h, format!("{FILES_DIR}/"), io::empty())
        .map_err(w)?;
    let mut name = String::new();
    let mut path = sources.payload_root.clone();
    for (rel, entry) in &manifest.files {
        name.clear();
        name.push_str(FILES_DIR);
        name.push('/');
        name.push_str(rel);
        match entry {
            Entry::Dir { mode } => {
                name.push('/');
                let mut h = header(tar::EntryType::Directory, mode.0, 0, mtime);
                tar.append_data(&mut h, &name, io::empty()).map_err(w)?;
            }
            Entry::Symlink { target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0, mtime);
                tar.append_link(&mut h, &name, target).map_err(w)?;
            }
            Entry::File { .. } => {
                path.clone_from(&sources.payload_root);
                path.push(rel);
                let fingerprint = sources.fingerprints.get(rel).copied();
                append_file(
                    &mut tar,
                    &name,
                    entry,
                    &path,
                    fingerprint,
                    mtime,
                    &mut buf,
                    progress,
                )?;
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

/// How a file's bytes are checked while they stream into the artifact.
enum Check<'a> {
    Fingerprint(Xxh64, Fingerprint),
    Sha256(Sha256, &'a str),
}

#[allow(clippy::too_many_arguments)]
fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    entry: &Entry,
    path: &Path,
    fingerprint: Option<Fingerprint>,
    mtime: u64,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<(), PackError> {
    let Entry::File { sha256, size, mode } = entry else {
        return Ok(());
    };
    let size = *size;
    let read_err = |source| PackError::Read {
        path: path.to_owned(),
        source,
    };
    let changed = || PackError::Changed {
        path: path.to_owned(),
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut check = match fingerprint {
        Some(f) => Check::Fingerprint(Xxh64::new(), f),
        None => Check::Sha256(Sha256::new(), sha256),
    };

    // The tar crate writes the header (after a GNU long-name entry if the
    // name needs one) and, given no data, nothing else; the data and its
    // padding are written here, straight into the encoder in large chunks
    // rather than through `io::copy`'s 8 KiB buffer. The bytes are the same
    // as `append_data` with the file as reader would write.
    let mut h = header(tar::EntryType::Regular, mode.0, size, mtime);
    tar.append_data(&mut h, name, io::empty())
        .map_err(PackError::Write)?;
    let out = tar.get_mut();
    let mut done = 0u64;
    loop {
        // Ask for one byte more than is left, so that a file that grew is
        // seen, and a short read of exactly what is left is the end of the
        // file (as it is for regular files) without one more system call.
        let want = usize::try_from(size - done + 1).map_or(buf.len(), |n| n.min(buf.len()));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        if n as u64 > size - done {
            return Err(changed());
        }
        let chunk = &buf[..n];
        match &mut check {
            Check::Fingerprint(x, _) => x.update(chunk),
            Check::Sha256(s, _) => s.update(chunk),
        }
        out.write_all(chunk).map_err(PackError::Write)?;
        progress.advance(n as u64);
        done += n as u64;
        if done == size && n < want {
            break;
        }
    }
    let same = match check {
        Check::Fingerprint(x, f) => Fingerprint(x.finish()) == f,
        Check::Sha256(s, want) => crate::digest::hex(&s.finalize()) == want,
    };
    if done != size || !same {
        return Err(changed());
    }
    let pad = (512 - size % 512) % 512;
    out.write_all(&[0u8; 512][..pad as usize])
        .map_err(PackError::Write)?;
    Ok(())
}

/// XXH64 with seed 0, streaming: the fingerprint of [`Fingerprint`]. The
/// same function zstd uses for its frame checksum (the tests check it
/// against the checksum zstd writes).
#[derive(Clone)]
struct Xxh64 {
    acc: [u64; 4],
    /// Bytes of an incomplete 32-byte stripe.
    tail: [u8; 32],
    tail_len: usize,
    total: u64,
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

fn xxh_round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn xxh_merge(acc: u64, val: u64) -> u64 {
    (acc ^ xxh_round(0, val)).wrapping_mul(P1).wrapping_add(P4)
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

impl Xxh64 {
    fn new() -> Self {
        Xxh64 {
            acc: [P1.wrapping_add(P2), P2, 0, P1.wrapping_neg()],
            tail: [0; 32],
            tail_len: 0,
            total: 0,
        }
    }

    fn stripe(acc: &mut [u64; 4], s: &[u8]) {
        acc[0] = xxh_round(acc[0], le64(&s[0..]));
        acc[1] = xxh_round(acc[1], le64(&s[8..]));
        acc[2] = xxh_round(acc[2], le64(&s[16..]));
        acc[3] = xxh_round(acc[3], le64(&s[24..]));
    }

    fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.tail_len > 0 {
            let take = (32 - self.tail_len).min(data.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&data[..take]);
            self.tail_len += take;
            data = &data[take..];
            if self.tail_len < 32 {
                return;
            }
            let tail = self.tail;
            Self::stripe(&mut self.acc, &tail);
            self.tail_len = 0;
        }
        let mut stripes = data.chunks_exact(32);
        for s in &mut stripes {
            Self::stripe(&mut self.acc, s);
        }
        let rest = stripes.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    fn finish(&self) -> u64 {
        let [a, b, c, d] = self.acc;
        let mut h = if self.total >= 32 {
            let h = a
                .rotate_left(1)
                .wrapping_add(b.rotate_left(7))
                .wrapping_add(c.rotate_left(12))
                .wrapping_add(d.rotate_left(18));
            [a, b, c, d].into_iter().fold(h, xxh_merge)
        } else {
            P5
        };
        h = h.wrapping_add(self.total);
        let mut rest = &self.tail[..self.tail_len];
        while rest.len() >= 8 {
            h ^= xxh_round(0, le64(rest));
            h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
            rest = &rest[8..];
        }
        if rest.len() >= 4 {
            let mut a = [0u8; 4];
            a.copy_from_slice(&rest[..4]);
            h ^= u64::from(u32::from_le_bytes(a)).wrapping_mul(P1);
            h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
            rest = &rest[4..];
        }
        for &byte in rest {
            h ^= u64::from(byte).wrapping_mul(P5);
            h = h.rotate_left(11).wrapping_mul(P1);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^ (h >> 32)
    }
}

/// Why an artifact was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the artifact is corrupt, truncated or not tar+zstd: {0}")]
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
    let checked = read_entries(&mut archive, visitor);
    // Read to the end of the zstd stream: it checks the frame checksum and
    // finds anything appended after the tar archive. A damaged stream shows
    // up first as whatever it garbled (a manifest that does not parse, a
    // digest that differs), so on such an error the checksum decides whether
    // to call it corruption. A visitor's own failure (a full disk) is not
    // the stream's fault and is reported as it is.
    let mut rest = archive.into_inner();
    let trailing = match checked {
        Err(ArchiveError::Visitor(e)) => return Err(ArchiveError::Visitor(e)),
        Err(e) => {
            return Err(match drain(&mut rest) {
                Err(io) => ArchiveError::Corrupt(io),
                Ok(_) => e,
            });
        }
        Ok(_) => drain(&mut rest).map_err(ArchiveError::Corrupt)?,
    };
    if trailing > 0 {
        return Err(ArchiveError::TrailingData(trailing));
    }
    checked
}

/// Reads what is left of a stream; returns how many bytes were not zero.
fn drain(rest: &mut impl Read) -> io::Result<u64> {
    let mut buf = [0u8; 8192];
    let mut extra = 0u64;
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => return Ok(extra),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            extra += n as u64;
        }
    }
}

fn read_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    visitor: &mut dyn Visitor,
) -> Result<Manifest, ArchiveError> {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;

    use super::*;
    use crate::manifest::{FORMAT, Hooks, Install, PackageInfo, Rollback, Source};

    /// Deterministic bytes: text-like when `text`, else noise.
    fn bytes(seed: u64, len: usize, text: bool) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if text {
                let word = ["let ", "value", " = ", "(x);\n", "return ", "{ok}", "\n"];
                out.extend_from_slice(word[(x % 7) as usize].as_bytes());
            } else {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }

    const LONG: &str = "a-directory-name-long-enough/that-with-the-file-name/the-path-needs-the-gnu-long-name-extension-of-tar.txt";

    /// A payload under `dir` (files spanning several zstd jobs, an empty
    /// file, one of exactly 512 bytes, a name longer than tar's 100 bytes,
    /// a symlink, a hook), its manifest and its sources.
    fn fixture(dir: &Path) -> (Manifest, PackSources) {
        let root = dir.join("payload");
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("app/big.js", bytes(1, 9 << 20, true)),
            ("app/noise.bin", bytes(2, 5 << 20, false)),
            ("app/empty", Vec::new()),
            ("app/block", bytes(3, 512, true)),
            ("app/small.txt", b"hello\n".to_vec()),
            (LONG, bytes(4, 1000, true)),
        ];
        let mut entries = BTreeMap::new();
        let mut fingerprints = HashMap::new();
        let mut buf = vec![0u8; READ_BUFFER];
        for (rel, data) in &files {
            let path = root.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, data).unwrap();
            let h = hash_file(&path, &mut buf, &crate::progress::Silent).unwrap();
            assert_eq!(h.size, data.len() as u64);
            assert_eq!(h.sha256, crate::digest::sha256_bytes(data));
            fingerprints.insert(rel.to_string(), h.fingerprint);
            entries.insert(
                rel.to_string(),
                Entry::File {
                    sha256: h.sha256,
                    size: h.size,
                    mode: Mode(0o644),
                },
            );
        }
        for d in [
            "app",
            "a-directory-name-long-enough",
            "a-directory-name-long-enough/that-with-the-file-name",
        ] {
            entries.insert(d.into(), Entry::Dir { mode: Mode(0o755) });
        }
        std::os::unix::fs::symlink("app/small.txt", root.join("current")).unwrap();
        entries.insert(
            "current".into(),
            Entry::Symlink {
                target: "app/small.txt".into(),
            },
        );
        let hook = dir.join("health");
        fs::write(&hook, b"#!/bin/sh\nexit 0\n").unwrap();
        let (sha256, size) = crate::digest::sha256_file(&hook).unwrap();
        let mut hook_files = BTreeMap::new();
        hook_files.insert(
            "health".to_owned(),
            Entry::File {
                sha256,
                size,
                mode: Mode(0o755),
            },
        );
        let manifest = Manifest {
            format: FORMAT,
            package: PackageInfo {
                name: "webapp".into(),
                version: "1.4.2".into(),
                build: 7,
                description: None,
            },
            source: Source::default(),
            install: Install {
                target: "/srv/webapp".into(),
                keep_releases: 3,
                shared: vec![],
                preserve: vec![],
                env_file: false,
            },
            hooks: Hooks {
                health: Some("hooks/health".into()),
                ..Hooks::default()
            },
            rollback: Rollback::default(),
            hook_files,
            files: entries,
        };
        manifest.check().unwrap();
        let sources = PackSources {
            hooks: vec![("health".into(), hook)],
            payload_root: root,
            mtime: 1_700_000_000,
            fingerprints,
        };
        (manifest, sources)
    }

    fn pack_bytes(manifest: &Manifest, sources: &PackSources, threads: u32) -> (Vec<u8>, Packed) {
        pack(
            manifest,
            sources,
            Vec::new(),
            threads,
            &crate::progress::Silent,
        )
        .unwrap()
    }

    #[test]
    fn xxh64_is_zstds_checksum() {
        let h = |data: &[u8]| {
            let mut x = Xxh64::new();
            x.update(data);
            x.finish()
        };
        assert_eq!(h(b""), 0xEF46_DB37_51D8_E999);
        assert_eq!(h(b"abc"), 0x44BC_2CF5_AD77_0999);
        // A zstd frame ends with the low 32 bits of the XXH64 of its content.
        for len in [1, 3, 4, 7, 8, 31, 32, 33, 63, 64, 65, 100, 1000, 100_003] {
            let data = bytes(len as u64, len, false);
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
            enc.include_checksum(true).unwrap();
            enc.write_all(&data).unwrap();
            let frame = enc.finish().unwrap();
            let tail: [u8; 4] = frame[frame.len() - 4..].try_into().unwrap();
            assert_eq!(u32::from_le_bytes(tail), h(&data) as u32, "length {len}");
            // Fed in pieces of any size, the digest is the same.
            for step in [1, 5, 31, 32, 33, 4096] {
                let mut x = Xxh64::new();
                data.chunks(step).for_each(|c| x.update(c));
                assert_eq!(x.finish(), h(&data), "length {len}, pieces of {step}");
            }
        }
    }

    #[test]
    fn packs_deterministically_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, sources) = fixture(dir.path());
        let (a, packed) = pack_bytes(&manifest, &sources, 2);
        let (b, _) = pack_bytes(&manifest, &sources, 2);
        assert_eq!(a, b, "the same tree gives the same bytes");
        assert_eq!(packed.size, a.len() as u64);
        assert_eq!(packed.sha256, crate::digest::sha256_bytes(&a));
        let first = tar::Archive::new(zstd::stream::read::Decoder::new(&a[..]).unwrap())
            .entries()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .unwrap()
            .into_owned();
        assert_eq!(first, Path::new(MANIFEST_PATH));
        assert_eq!(read(&a[..], &mut CheckOnly).unwrap(), manifest);
    }

    #[test]
    fn bytes_do_not_depend_on_the_number_of_workers() {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, sources) = fixture(dir.path());
        // More than three jobs of input, so that workers do overlap.
        assert!(manifest.payload_bytes() > 3 * u64::from(ZSTD_JOB_SIZE));
        let (_, one) = pack_bytes(&manifest, &sources, 1);
        let (_, four) = pack_bytes(&manifest, &sources, 4);
        assert_eq!(one.sha256, four.sha256);
    }

    /// `pack` writes file data itself rather than through the tar crate;
    /// the bytes must be what the tar crate would have written.
    #[test]
    fn bytes_are_those_of_the_tar_crate() {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, sources) = fixture(dir.path());
        let (ours, _) = pack_bytes(&manifest, &sources, 2);

        let mut zstd = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).unwrap();
        zstd.include_checksum(true).unwrap();
        zstd.multithread(2).unwrap();
        zstd.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))
            .unwrap();
        let mut tar = tar::Builder::new(zstd);
        let mtime = sources.mtime;
        let text = manifest.to_toml();
        let mut h = header(tar::EntryType::Regular, 0o644, text.len() as u64, mtime);
        tar.append_data(&mut h, MANIFEST_PATH, text.as_bytes())
            .unwrap();
        let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
        tar.append_data(&mut h, "hooks/", io::empty()).unwrap();
        let (_, hook) = &sources.hooks[0];
        let data = fs::read(hook).unwrap();
        let mut h = header(tar::EntryType::Regular, 0o755, data.len() as u64, mtime);
        tar.append_data(&mut h, "hooks/health", &data[..]).unwrap();
        let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
        tar.append_data(&mut h, "files/", io::empty()).unwrap();
        for (rel, entry) in &manifest.files {
            let name = format!("files/{rel}");
            match entry {
                Entry::Dir { mode } => {
                    let mut h = header(tar::EntryType::Directory, mode.0, 0, mtime);
                    tar.append_data(&mut h, format!("{name}/"), io::empty())
                        .unwrap();
                }
                Entry::Symlink { target } => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0, mtime);
                    tar.append_link(&mut h, &name, target).unwrap();
                }
                Entry::File { size, mode, .. } => {
                    let data = fs::read(sources.payload_root.join(rel)).unwrap();
                    let mut h = header(tar::EntryType::Regular, mode.0, *size, mtime);
                    tar.append_data(&mut h, &name, &data[..]).unwrap();
                }
            }
        }
        let reference = tar.into_inner().unwrap().finish().unwrap();
        assert!(
            ours == reference,
            "pack differs from the tar crate's output"
        );
    }

    #[test]
    fn a_file_changed_since_hashing_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, mut sources) = fixture(dir.path());
        let path = sources.payload_root.join("app/big.js");
        let original = fs::read(&path).unwrap();
        let changed = |sources: &PackSources| match pack(
            &manifest,
            sources,
            io::sink(),
            2,
            &crate::progress::Silent,
        ) {
            Err(PackError::Changed { path: p }) => assert_eq!(p, path),
            other => panic!("expected a change to be caught, got {other:?}"),
        };

        // The same size, one byte different, deep inside the file.
        let mut edited = original.clone();
        edited[5 << 20] ^= 1;
        fs::write(&path, &edited).unwrap();
        changed(&sources);
        // Also without a fingerprint, by SHA-256.
        let without = PackSources {
            fingerprints: HashMap::new(),
            ..sources.clone()
        };
        changed(&without);

        // Grown and shrunk.
        let mut grown = original.clone();
        grown.push(b'\n');
        fs::write(&path, &grown).unwrap();
        changed(&sources);
        fs::write(&path, &original[..original.len() - 1]).unwrap();
        changed(&sources);

        // A wrong fingerprint is a change too.
        fs::write(&path, &original).unwrap();
        pack(&manifest, &sources, io::sink(), 1, &crate::progress::Silent).unwrap();
        sources
            .fingerprints
            .insert("app/big.js".into(), Fingerprint(0));
        changed(&sources);
    }
}
