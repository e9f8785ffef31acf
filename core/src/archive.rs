//! The artifact file: a tar stream compressed with zstd, holding
//! `MANIFEST.toml` first, then `hooks/`, then `files/`.
//!
//! [`pack`] writes it deterministically (entries in the manifest's sorted
//! order, owner 0, one mtime, fixed modes, a fixed zstd job size), so the
//! same tree gives the same bytes on any machine. It reads every payload
//! file once, hashing exactly the bytes it packs, so the manifest always
//! matches the artifact. [`read`] walks an artifact entry by entry, checking
//! each against the manifest before and after handing its bytes to a
//! [`Visitor`]; it never trusts the archive to say where anything goes.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, mpsc};

use sha2::{Digest, Sha256};

use crate::digest::HashingReader;
use crate::manifest::{
    Entry, FILES_DIR, HOOKS_DIR, MANIFEST_PATH, Manifest, ManifestError, Mode, check_entry_path,
    check_symlink_target,
};
use crate::progress::Progress;
use crate::rules;
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
/// The most bytes a reader accepts after tar's end-of-archive blocks (they
/// must be zero padding: GNU tar pads to 10 KiB records).
pub const MAX_TRAILING_BYTES: u64 = 1 << 20;
/// The longest GNU long name or long link name a reader accepts: a
/// payload path is at most 4096 bytes (`unpack::Limits`), plus `files/`,
/// a trailing `/` and a NUL, with room to spare.
pub const MAX_LONG_NAME_BYTES: u64 = 4096 + 512;
/// The largest PAX extended header a reader accepts (`pack` writes none;
/// other tars write one for a long name or a large file).
pub const MAX_PAX_BYTES: u64 = 64 << 10;
/// The largest zstd window a reader accepts, as a power of two: 16 MiB,
/// above what `zstd -19` uses and what [`pack`] writes (2 MiB), so a
/// decoder never needs more memory than that for its window.
pub const MAX_WINDOW_LOG: u32 = 24;

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
    /// Lowercase hex SHA-256 of every byte written to the output.
    pub sha256: String,
    /// Bytes written to the output.
    pub size: u64,
}

/// The read buffer for payload files: large enough that a system call
/// moves a lot, small enough to stay in the CPU caches while it is hashed
/// and compressed (1 MiB and 64 KiB measured the same).
const READ_BUFFER: usize = 256 << 10;
/// The buffers for copying and hashing the payload frame: 1 MiB measured
/// faster than 256 KiB, and 4 MiB (beyond the L2 cache) twice as slow.
const COPY_BUFFER: usize = 1 << 20;
/// How many of them: one being written, one being hashed, one spare.
const COPY_BUFFERS: usize = 3;

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

/// A zstd encoder with the artifact's settings: [`ZSTD_LEVEL`], a checksum,
/// and always the multi-threaded mode with [`ZSTD_JOB_SIZE`] jobs, even with
/// one worker, because its output does not depend on the number of workers.
fn encoder<W: Write>(out: W, threads: u32) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut zstd = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
    zstd.include_checksum(true)?;
    zstd.multithread(threads.max(1))?;
    zstd.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))?;
    Ok(zstd)
}

/// Writes the artifact for `manifest` to `out`, reading every payload file
/// once, and fills in the manifest's digests from the bytes it packed.
///
/// `manifest` comes from a scan of the payload: `[files]` lists every entry
/// with, for each regular file, the size and mode found then; the `sha256`
/// of those files is ignored and, on success, set to the digest of the
/// bytes packed. `[hook_files]` must already hold the hooks' digests, which
/// are checked. On failure the digests are left half filled in.
///
/// The artifact is one tar stream, written as two zstd frames one after
/// the other (which every zstd reader decompresses as one stream):
///
/// 1. The payload is packed first: the `files/` entry, every payload
///    entry, then tar's end-of-archive blocks, compressed into `scratch`,
///    while each file is hashed in the same read. The tar header needs a
///    file's size before its data, so the manifest's size is written and
///    exactly that many bytes are read; a file that turns out longer or
///    shorter (still being written) fails with [`PackError::Changed`].
/// 2. Then, with every digest known, the first frame: `MANIFEST.toml`,
///    `hooks/` and each hook (without end-of-archive blocks), written to
///    `out`, followed by a copy of `scratch`.
///
/// So each file's bytes are read once, and the manifest describes exactly
/// the bytes in the artifact even if the tree changes under the packer;
/// a file rewritten in place may be packed half old, half new, as `tar`
/// would, but consistently with its digest.
///
/// `scratch` should be an empty file open for reading and writing, best an
/// anonymous one ([`tempfile::tempfile_in`]) so nothing is ever left
/// behind; it needs room for the compressed payload. `threads` is the
/// number of zstd workers: the bytes written do not depend on it, the
/// memory used does (see [`ZSTD_JOB_SIZE`]). Progress is reported in two
/// phases: "hashing+packing" the payload's bytes, then "writing" the
/// artifact.
pub fn pack<W: Write>(
    manifest: &mut Manifest,
    sources: &PackSources,
    scratch: File,
    out: W,
    threads: u32,
    progress: &dyn Progress,
) -> Result<(W, Packed), PackError> {
    let w = PackError::Write;
    let mut buf = vec![0u8; READ_BUFFER];

    progress.start("hashing+packing", manifest.payload_bytes());
    let payload = pack_payload(manifest, sources, &scratch, threads, &mut buf, progress)?;
    progress.finish();
    // Every digest is known once the last byte went into the encoder: the
    // first frame is made while the workers compress the last jobs.
    let (payload_len, head) = std::thread::scope(|s| {
        let finishing = s.spawn(|| -> io::Result<u64> {
            // The end-of-archive blocks, then the end of the frame.
            let scratch = payload.into_inner()?.finish()?;
            Ok(scratch.metadata()?.len())
        });
        let head = pack_head(manifest, sources, &mut buf);
        (finishing.join().expect("no panics while compressing"), head)
    });
    let payload_len = payload_len.map_err(w)?;
    let head = head?;

    // The payload frame is read once: each chunk is written out while a
    // thread hashes it (hashing is the slower), then comes back for reuse.
    let size = head.len() as u64 + payload_len;
    progress.start("writing", size);
    let (written, digest) = std::thread::scope(|s| {
        let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(COPY_BUFFERS);
        let (back_tx, back_rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(COPY_BUFFERS);
        let hasher = s.spawn(move || {
            let mut sha = Sha256::new();
            for chunk in chunk_rx {
                sha.update(&chunk[..]);
                // Fails only once the copy is over.
                let _ = back_tx.send(chunk);
            }
            crate::digest::hex(&sha.finalize())
        });
        // Owns the channels' ends, so that the hasher ends with it.
        let copy = move |mut out: W| -> io::Result<W> {
            let mut chunk = Arc::new(head);
            let mut offset = 0u64;
            let mut spare = COPY_BUFFERS;
            loop {
                out.write_all(&chunk)?;
                progress.advance(chunk.len() as u64);
                if chunk_tx.send(chunk).is_err() {
                    break;
                }
                if offset == payload_len {
                    break;
                }
                let mut buf = if spare > 0 {
                    spare -= 1;
                    Vec::with_capacity(COPY_BUFFER)
                } else {
                    // The hasher is done with it: this is the only reference.
                    let back = back_rx.recv().map_err(|_| io::ErrorKind::BrokenPipe)?;
                    Arc::try_unwrap(back).unwrap_or_default()
                };
                buf.resize(COPY_BUFFER, 0);
                let n = read_at_most(&scratch, &mut buf, offset, payload_len - offset)?;
                buf.truncate(n);
                offset += n as u64;
                chunk = Arc::new(buf);
            }
            out.flush()?;
            Ok(out)
        };
        let written = copy(out);
        (written, hasher.join().expect("no panics while hashing"))
    });
    progress.finish();
    let out = written.map_err(w)?;
    Ok((
        out,
        Packed {
            sha256: digest,
            size,
        },
    ))
}

/// Reads from `file` at `offset` into `buf`, at most `left` bytes, at least
/// one: fewer than `left` left in the file is an error.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64, left: u64) -> io::Result<usize> {
    let want = usize::try_from(left).map_or(buf.len(), |n| n.min(buf.len()));
    loop {
        match file.read_at(&mut buf[..want], offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the packed payload came back shorter than written",
                ));
            }
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The first frame (see [`pack`]): `MANIFEST.toml`, then `hooks/` and each
/// hook, checked against its digest in the manifest; no end-of-archive
/// blocks. With one worker: it is made while the payload's encoder still
/// holds its buffers, and is usually smaller than one job anyway.
fn pack_head(
    manifest: &Manifest,
    sources: &PackSources,
    buf: &mut [u8],
) -> Result<Vec<u8>, PackError> {
    let w = PackError::Write;
    let mut zstd = encoder(Vec::new(), 1).map_err(w)?;
    let mut tar = tar::Builder::new(&mut zstd);
    let mtime = sources.mtime;
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
    if !manifest.hook_files.is_empty() {
        let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
        tar.append_data(&mut h, format!("{HOOKS_DIR}/"), io::empty())
            .map_err(w)?;
        for (name, path) in &sources.hooks {
            let Some(Entry::File { sha256, size, mode }) = manifest.hook_files.get(name) else {
                continue;
            };
            let name = format!("{HOOKS_DIR}/{name}");
            let digest = append_file(
                &mut tar,
                &name,
                *size,
                *mode,
                path,
                mtime,
                buf,
                &crate::progress::Silent,
            )?;
            if &digest != sha256 {
                return Err(PackError::Changed {
                    path: path.to_owned(),
                });
            }
        }
    }
    // The end-of-archive blocks are in the payload frame: the tar crate
    // must not write them here, as it would when finished or dropped.
    // Forgetting the builder leaks nothing (it holds a reference and flags).
    std::mem::forget(tar);
    zstd.finish().map_err(w)
}

/// Writes the payload's entries (see [`pack`]) through an encoder into
/// `scratch`, setting the digest of every payload file in `manifest`;
/// returns the archive to finish: `into_inner` adds the end-of-archive
/// blocks, the encoder's `finish` ends the frame.
fn pack_payload<'a>(
    manifest: &mut Manifest,
    sources: &PackSources,
    scratch: &'a File,
    threads: u32,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<tar::Builder<zstd::stream::write::Encoder<'static, &'a File>>, PackError> {
    let w = PackError::Write;
    let mtime = sources.mtime;
    let mut tar = tar::Builder::new(encoder(scratch, threads).map_err(w)?);
    let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
    tar.append_data(&mut h, format!("{FILES_DIR}/"), io::empty())
        .map_err(w)?;
    let mut name = String::new();
    let mut path = sources.payload_root.clone();
    for (rel, entry) in &mut manifest.files {
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
                tar.append_link(&mut h, &name, &*target).map_err(w)?;
            }
            Entry::File { sha256, size, mode } => {
                path.clone_from(&sources.payload_root);
                path.push(rel.as_str());
                *sha256 = append_file(&mut tar, &name, *size, *mode, &path, mtime, buf, progress)?;
            }
        }
    }
    Ok(tar)
}

/// Appends the regular file at `path` as `name`, with `size` bytes: reads
/// exactly that many, hashing them as they go into the archive, and
/// returns their SHA-256. A file with more or fewer bytes is
/// [`PackError::Changed`].
#[allow(clippy::too_many_arguments)]
fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    mode: Mode,
    path: &Path,
    mtime: u64,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<String, PackError> {
    let read_err = |source| PackError::Read {
        path: path.to_owned(),
        source,
    };
    let changed = || PackError::Changed {
        path: path.to_owned(),
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut sha = Sha256::new();

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
        sha.update(chunk);
        out.write_all(chunk).map_err(PackError::Write)?;
        progress.advance(n as u64);
        done += n as u64;
        if done == size && n < want {
            break;
        }
    }
    if done != size {
        return Err(changed());
    }
    let pad = (512 - size % 512) % 512;
    out.write_all(&[0u8; 512][..pad as usize])
        .map_err(PackError::Write)?;
    Ok(crate::digest::hex(&sha.finalize()))
}

/// Why an artifact was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the artifact is corrupt, truncated or not tar+zstd: {0}")]
    Corrupt(io::Error),
    #[error("the artifact is empty")]
    Empty,
    #[error("the first entry is `{}`, but an artifact starts with `{MANIFEST_PATH}`", rules::printable(.0))]
    ManifestNotFirst(String),
    #[error(
        "`{MANIFEST_PATH}` is {0} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have"
    )]
    ManifestTooLarge(u64),
    #[error("`{MANIFEST_PATH}` is invalid: {0}")]
    Manifest(#[from] ManifestError),
    #[error("entry `{}` is refused: {rule}", rules::printable(path))]
    Refused { path: String, rule: String },
    #[error(
        "entry `{}` differs from the manifest: {what} is {}, the manifest says {}",
        rules::printable(path),
        rules::printable(actual),
        rules::printable(expected)
    )]
    Mismatch {
        path: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error(
        "`{}` is in the manifest but not in the artifact",
        rules::printable(path)
    )]
    Missing { path: String },
    #[error(
        "after the end of the tar archive come {0} bytes or more that are not zero padding of at most {MAX_TRAILING_BYTES} bytes"
    )]
    TrailingData(u64),
    #[error(
        "the artifact's zstd stream needs a window larger than the {} MiB a reader allows",
        (1u64 << MAX_WINDOW_LOG) >> 20
    )]
    Window,
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
    let (mut archive, last) = open(input)?;
    let checked = Members::new(&mut archive, last).and_then(|mut m| read_entries(&mut m, visitor));
    // Read to the end of the zstd stream: it checks the frame checksum and
    // finds anything appended after the tar archive. A damaged stream shows
    // up first as whatever it garbled (a manifest that does not parse, a
    // digest that differs), so on such an error the checksum decides whether
    // to call it corruption. A visitor's own failure (a full disk) is not
    // the stream's fault and is reported as it is, and so is an error that
    // already says where the stream broke.
    // At most MAX_TRAILING_BYTES more are read, so a stream of zeros
    // after the archive cannot keep the reader busy.
    let mut rest = archive.into_inner().inner.take(MAX_TRAILING_BYTES + 1);
    let trailing = match checked {
        Err(e @ (ArchiveError::Visitor(_) | ArchiveError::Corrupt(_) | ArchiveError::Window)) => {
            return Err(e);
        }
        Err(e) => {
            return Err(match drain(&mut rest) {
                Err(io) => stream_error(io, None),
                Ok(_) => e,
            });
        }
        Ok(_) => drain(&mut rest)
            .map_err(|e| stream_error(e, Some("after the end of the tar archive")))?,
    };
    if trailing.non_zero > 0 || trailing.total > MAX_TRAILING_BYTES {
        return Err(ArchiveError::TrailingData(trailing.total));
    }
    checked
}

/// A zstd decoder for artifacts, with the window capped.
fn decoder<R: Read>(input: R) -> Result<Decoder<R>, ArchiveError> {
    let mut decoder = zstd::stream::read::Decoder::new(input).map_err(ArchiveError::Corrupt)?;
    decoder
        .window_log_max(MAX_WINDOW_LOG)
        .map_err(ArchiveError::Corrupt)?;
    Ok(decoder)
}

/// The zstd decoder of an artifact read from `R`.
type Decoder<R> = zstd::stream::read::Decoder<'static, io::BufReader<R>>;
/// The tar reader over it.
type Tar<R> = tar::Archive<LastBlock<Decoder<R>>>;
/// The last block a [`LastBlock`] read, shared with its [`Members`].
type Shared = Rc<RefCell<[u8; 512]>>;

/// What followed the tar archive.
struct Trailing {
    total: u64,
    non_zero: u64,
}

/// Reads what is left of a stream.
fn drain(rest: &mut impl Read) -> io::Result<Trailing> {
    let mut buf = [0u8; 8192];
    let mut t = Trailing {
        total: 0,
        non_zero: 0,
    };
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => return Ok(t),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        t.total += n as u64;
        if buf[..n].iter().any(|&b| b != 0) {
            t.non_zero += n as u64;
        }
    }
}

fn read_entries<R: Read>(
    members: &mut Members<'_, R>,
    visitor: &mut dyn Visitor,
) -> Result<Manifest, ArchiveError> {
    let mut first = match members.next()? {
        None => return Err(ArchiveError::Empty),
        Some(m) => m,
    };
    let manifest = read_manifest_entry(&mut first)?;
    drop(first);
    visitor.manifest(&manifest).map_err(ArchiveError::Visitor)?;

    let mut seen: HashSet<String> = HashSet::new();
    let mut in_files = false;
    while let Some(member) = members.next()? {
        let Member {
            mut entry,
            path,
            link,
        } = member;
        let refused = |rule: &str| ArchiveError::Refused {
            path: path.clone(),
            rule: rule.to_owned(),
        };
        let kind = entry.header().entry_type();
        // Refused by type before anything else, so that a device or a
        // fifo is called what it is wherever it is and whatever the
        // manifest lists.
        let actual_kind = match kind {
            tar::EntryType::Regular => "file",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => return Err(refused(rules::HARD_LINK)),
            tar::EntryType::Char | tar::EntryType::Block => return Err(refused(rules::DEVICE)),
            tar::EntryType::Fifo => return Err(refused(rules::FIFO)),
            tar::EntryType::GNUSparse => return Err(refused(rules::SPARSE)),
            _ => return Err(refused(rules::OTHER_TYPE)),
        };
        // Only regular files carry data. Data behind any other header
        // would be decompressed unchecked just to be skipped: a place to
        // hide a decompression bomb or smuggled bytes.
        if kind != tar::EntryType::Regular && entry.size() != 0 {
            return Err(refused("only regular files may carry data"));
        }
        if path == HOOKS_DIR || path == FILES_DIR {
            if kind != tar::EntryType::Directory {
                return Err(refused("it must be a directory"));
            }
            if path == HOOKS_DIR && in_files {
                return Err(refused("`hooks/` must come before `files/`"));
            }
            if !seen.insert(path.clone()) {
                return Err(refused("it appears twice in the artifact"));
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
        let mismatch = |what, expected: String, actual: String| ArchiveError::Mismatch {
            path: path.clone(),
            what,
            expected,
            actual,
        };
        if actual_kind != expected.kind() {
            return Err(mismatch("type", expected.kind().into(), actual_kind.into()));
        }
        let mode = Mode(entry.header().mode().map_err(|e| members.broken(e))? & 0o7777);
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
                io::copy(&mut data, &mut io::sink()).map_err(|e| corrupt_in(&path, e))?;
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
                let link = link.ok_or_else(|| refused("the symlink has no target"))?;
                let link = String::from_utf8(link).map_err(|_| refused(rules::TARGET_NOT_UTF8))?;
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
    Ok(manifest)
}

/// An archive member with its extension headers applied: the entry, and
/// the path and link target that stand for it (the header's own name and
/// link name are only the first 100 bytes, or a placeholder).
struct Member<'a, R: Read> {
    entry: tar::Entry<'a, LastBlock<R>>,
    path: String,
    link: Option<Vec<u8>>,
}

/// The extension headers read since the last member.
#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Pax>,
    /// The name of the last extension header, for messages.
    last: Option<String>,
}

/// The records of a PAX extended header that berth applies. Others
/// (times, owners, extended attributes) are ignored: berth sets none of
/// them.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
}

/// The members of an archive, read raw: the tar crate neither applies nor
/// reads extension headers itself (it would hold any size of them in
/// memory); here a GNU long name or long link and a PAX extended header
/// are read within [`MAX_LONG_NAME_BYTES`] and [`MAX_PAX_BYTES`] and
/// applied to the member after them, and anything ambiguous is refused:
/// two of one kind before a member, both a long name and a PAX path, a PAX
/// size other than the header's (tar readers would disagree on where the
/// member ends), a global PAX header, an extension header with no member
/// after it.
struct Members<'a, R: Read> {
    entries: tar::Entries<'a, LastBlock<R>>,
    /// The last 512 bytes read: the header the tar crate refused, if it did.
    last_block: Shared,
    /// The last member's path, to say where a damaged stream broke.
    previous: Option<String>,
}

impl<'a, R: Read> Members<'a, R> {
    fn new(
        archive: &'a mut tar::Archive<LastBlock<R>>,
        last_block: Shared,
    ) -> Result<Self, ArchiveError> {
        let entries = archive
            .entries()
            .map_err(|e| stream_error(e, None))?
            .raw(true);
        Ok(Members {
            entries,
            last_block,
            previous: None,
        })
    }

    /// An error of the tar crate or of the stream under it, as a refusal
    /// that says where.
    fn broken(&self, e: io::Error) -> ArchiveError {
        if e.to_string().contains("checksum mismatch") {
            let block = *self.last_block.borrow();
            let name = tar::Header::from_byte_slice(&block)
                .path_bytes()
                .into_owned();
            return ArchiveError::Refused {
                path: String::from_utf8_lossy(&name).into_owned(),
                rule: "its tar header's checksum is wrong (the header is damaged)".into(),
            };
        }
        let at = self.previous.as_ref().map(|p| format!("after entry `{p}`"));
        stream_error(e, at.as_deref())
    }

    fn next(&mut self) -> Result<Option<Member<'a, R>>, ArchiveError> {
        let mut ext = Extensions::default();
        loop {
            let mut entry = match self.entries.next() {
                None => {
                    return match ext.last {
                        Some(name) => Err(ArchiveError::Refused {
                            path: name,
                            rule: "no entry follows this extension header".into(),
                        }),
                        None => Ok(None),
                    };
                }
                Some(Err(e)) => return Err(self.broken(e)),
                Some(Ok(entry)) => entry,
            };
            let kind = entry.header().entry_type();
            let name = String::from_utf8_lossy(&entry.header().path_bytes()).into_owned();
            let refused = |rule: String| ArchiveError::Refused {
                path: name.clone(),
                rule,
            };
            match kind {
                tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
                    let (slot, what) = if kind == tar::EntryType::GNULongName {
                        (&mut ext.long_name, "GNU long name")
                    } else {
                        (&mut ext.long_link, "GNU long link name")
                    };
                    if slot.is_some() {
                        return Err(refused(format!("a second {what} comes before one entry")));
                    }
                    let mut bytes = read_extension(&mut entry, MAX_LONG_NAME_BYTES, what, &name)?;
                    // Written with one NUL at the end; any other NUL is
                    // refused with the name.
                    if bytes.last() == Some(&0) {
                        bytes.pop();
                    }
                    *slot = Some(bytes);
                }
                tar::EntryType::XHeader => {
                    if ext.pax.is_some() {
                        return Err(refused(
                            "a second PAX extended header comes before one entry".into(),
                        ));
                    }
                    let bytes =
                        read_extension(&mut entry, MAX_PAX_BYTES, "PAX extended header", &name)?;
                    ext.pax = Some(parse_pax(&bytes).map_err(refused)?);
                }
                tar::EntryType::XGlobalHeader => {
                    return Err(refused(
                        "global PAX headers are not allowed (they would apply to every entry after them)"
                            .into(),
                    ));
                }
                _ => return self.member(entry, ext, name).map(Some),
            }
            ext.last = Some(name);
        }
    }

    /// `entry` with the extension headers before it applied.
    fn member(
        &mut self,
        entry: tar::Entry<'a, LastBlock<R>>,
        ext: Extensions,
        header_name: String,
    ) -> Result<Member<'a, R>, ArchiveError> {
        let pax = ext.pax.unwrap_or_default();
        let (path, link) = {
            let raw_path = match (pax.path, ext.long_name) {
                (Some(_), Some(_)) => {
                    return Err(ArchiveError::Refused {
                        path: header_name,
                        rule: "both a GNU long name and a PAX path name it".into(),
                    });
                }
                (Some(p), None) | (None, Some(p)) => p,
                (None, None) => entry.header().path_bytes().into_owned(),
            };
            let link = match (pax.linkpath, ext.long_link) {
                (Some(_), Some(_)) => {
                    return Err(ArchiveError::Refused {
                        path: header_name,
                        rule: "both a GNU long link name and a PAX linkpath give its target".into(),
                    });
                }
                (Some(l), None) | (None, Some(l)) => Some(l),
                (None, None) => entry.header().link_name_bytes().map(|l| l.into_owned()),
            };
            (raw_path, link)
        };
        let mut path = String::from_utf8(path).map_err(|e| ArchiveError::Refused {
            path: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            rule: rules::NAME_NOT_UTF8.into(),
        })?;
        if entry.header().entry_type() == tar::EntryType::Directory && path.ends_with('/') {
            path.pop();
        }
        // The tar crate, read raw, takes the header's size; a reader that
        // applies the PAX record would see another member boundary.
        if let Some(size) = pax.size
            && size != entry.size()
        {
            return Err(ArchiveError::Refused {
                rule: format!(
                    "its PAX size record says {size} bytes and its tar header {} bytes",
                    entry.size()
                ),
                path,
            });
        }
        self.previous = Some(path.clone());
        Ok(Member { entry, path, link })
    }
}

/// Reads the body of the extension header `entry` (named `name`), refusing
/// one of more than `cap` bytes before reading it.
fn read_extension<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    cap: u64,
    what: &str,
    name: &str,
) -> Result<Vec<u8>, ArchiveError> {
    let size = entry.size();
    if size > cap {
        // Its start, to say which entry it was meant for.
        let mut start = Vec::new();
        let _ = entry.take(120).read_to_end(&mut start);
        let start = String::from_utf8_lossy(&start);
        let start = start.trim_end_matches('\0');
        return Err(ArchiveError::Refused {
            path: name.to_owned(),
            rule: format!(
                "its {what} is {size} bytes, more than the {cap} allowed (it starts `{}`)",
                start.escape_debug()
            ),
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| corrupt_in(name, e))?;
    Ok(bytes)
}

/// The records of a PAX extended header berth applies; `Err` is why the
/// header is refused.
fn parse_pax(bytes: &[u8]) -> Result<Pax, String> {
    let mut pax = Pax::default();
    let mut keys = HashSet::new();
    for record in tar::PaxExtensions::new(bytes) {
        let record = record.map_err(|_| "its PAX records are malformed".to_owned())?;
        let key = record
            .key()
            .map_err(|_| "a PAX record's key is not UTF-8".to_owned())?;
        if !keys.insert(key) {
            return Err(format!("its PAX record `{key}` appears twice"));
        }
        let value = record.value_bytes();
        match key {
            "path" => pax.path = Some(value.to_owned()),
            "linkpath" => pax.linkpath = Some(value.to_owned()),
            "size" => {
                let size = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| "its PAX size record is not a number".to_owned())?;
                pax.size = Some(size);
            }
            k if k.starts_with("GNU.sparse.") => return Err(rules::SPARSE.into()),
            _ => {}
        }
    }
    Ok(pax)
}

/// The zstd decoder's error for a frame whose window is past
/// [`MAX_WINDOW_LOG`] (zstd's `frameParameter_windowTooLarge`).
const WINDOW_TOO_LARGE: &str = "Frame requires too much memory for decoding";

/// An error reading the stream: a window past the cap, or corruption,
/// saying where when `at` is known ("after entry `x`").
fn stream_error(e: io::Error, at: Option<&str>) -> ArchiveError {
    if e.to_string().contains(WINDOW_TOO_LARGE) {
        return ArchiveError::Window;
    }
    match at {
        Some(at) => ArchiveError::Corrupt(io::Error::new(e.kind(), format!("{e} ({at})"))),
        None => ArchiveError::Corrupt(e),
    }
}

/// An error reading the data of `entry`: see [`stream_error`].
pub fn corrupt_in(entry: &str, e: io::Error) -> ArchiveError {
    stream_error(e, Some(&format!("in entry `{entry}`")))
}

/// Reads through to `inner`, keeping the last 512 bytes read: when the tar
/// crate refuses a header, those are the header, and its name can be said.
struct LastBlock<R> {
    inner: R,
    last: Shared,
}

impl<R: Read> Read for LastBlock<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut last = self.last.borrow_mut();
        if n >= 512 {
            last.copy_from_slice(&buf[n - 512..n]);
        } else {
            last.copy_within(n.., 0);
            last[512 - n..].copy_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

/// A tar reader over the zstd stream of `input`, and the handle of its
/// last block.
fn open<R: Read>(input: R) -> Result<(Tar<R>, Shared), ArchiveError> {
    let last = Rc::new(RefCell::new([0u8; 512]));
    let reader = LastBlock {
        inner: decoder(input)?,
        last: Rc::clone(&last),
    };
    Ok((tar::Archive::new(reader), last))
}

/// Reads only the manifest, the first entry, without checking the rest:
/// for showing what an artifact is, never for trusting it.
pub fn read_manifest<R: Read>(input: R) -> Result<Manifest, ArchiveError> {
    let (mut archive, last) = open(input)?;
    let mut members = Members::new(&mut archive, last)?;
    let mut first = match members.next()? {
        None => return Err(ArchiveError::Empty),
        Some(m) => m,
    };
    read_manifest_entry(&mut first)
}

fn read_manifest_entry<R: Read>(first: &mut Member<'_, R>) -> Result<Manifest, ArchiveError> {
    let path = first.path.clone();
    if path != MANIFEST_PATH || first.entry.header().entry_type() != tar::EntryType::Regular {
        return Err(ArchiveError::ManifestNotFirst(path));
    }
    if first.entry.size() > MAX_MANIFEST_BYTES {
        return Err(ArchiveError::ManifestTooLarge(first.entry.size()));
    }
    let mut text = String::new();
    first
        .entry
        .read_to_string(&mut text)
        .map_err(|e| corrupt_in(MANIFEST_PATH, e))?;
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
    const BIG: &str = "app/big.js";

    /// A payload under `dir` (files spanning several zstd jobs, an empty
    /// file, one of exactly 512 bytes, a name longer than tar's 100 bytes,
    /// a symlink, a hook), its sources, and its manifest as a scan gives it
    /// to `pack`: sizes and modes, digests still unknown (empty).
    fn fixture(dir: &Path) -> (Manifest, PackSources) {
        let root = dir.join("payload");
        let files: Vec<(&str, Vec<u8>)> = vec![
            (BIG, bytes(1, 9 << 20, true)),
            ("app/noise.bin", bytes(2, 5 << 20, false)),
            ("app/empty", Vec::new()),
            ("app/block", bytes(3, 512, true)),
            ("app/small.txt", b"hello\n".to_vec()),
            (LONG, bytes(4, 1000, true)),
        ];
        let mut entries = BTreeMap::new();
        for (rel, data) in &files {
            let path = root.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, data).unwrap();
            entries.insert(
                rel.to_string(),
                Entry::File {
                    sha256: String::new(),
                    size: data.len() as u64,
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
                allow_special_modes: vec![],
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
        };
        (manifest, sources)
    }

    fn try_pack(
        manifest: &Manifest,
        sources: &PackSources,
        threads: u32,
    ) -> Result<(Vec<u8>, Packed, Manifest), PackError> {
        let mut manifest = manifest.clone();
        let scratch = tempfile::tempfile().unwrap();
        let (bytes, packed) = pack(
            &mut manifest,
            sources,
            scratch,
            Vec::new(),
            threads,
            &crate::progress::Silent,
        )?;
        Ok((bytes, packed, manifest))
    }

    fn pack_bytes(
        manifest: &Manifest,
        sources: &PackSources,
        threads: u32,
    ) -> (Vec<u8>, Packed, Manifest) {
        try_pack(manifest, sources, threads).unwrap()
    }

    /// The names of the tar entries in `stream`, tar compressed with zstd.
    fn entry_names(stream: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(zstd::stream::read::Decoder::new(stream).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn packs_deterministically_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (skeleton, sources) = fixture(dir.path());
        let (a, packed, manifest) = pack_bytes(&skeleton, &sources, 2);
        let (b, _, _) = pack_bytes(&skeleton, &sources, 2);
        assert_eq!(a, b, "the same tree gives the same bytes");
        assert_eq!(packed.size, a.len() as u64);
        assert_eq!(packed.sha256, crate::digest::sha256_bytes(&a));
        // The digests were filled in from the files.
        for (rel, entry) in &manifest.files {
            if let Entry::File { sha256, .. } = entry {
                let data = fs::read(sources.payload_root.join(rel)).unwrap();
                assert_eq!(sha256, &crate::digest::sha256_bytes(&data), "{rel}");
            }
        }
        assert_eq!(read(&a[..], &mut CheckOnly).unwrap(), manifest);
        assert_eq!(read_manifest(&a[..]).unwrap(), manifest);

        // Two frames: the manifest and hooks, then the payload and the
        // end-of-archive blocks.
        let first = zstd::zstd_safe::find_frame_compressed_size(&a).unwrap();
        let second = zstd::zstd_safe::find_frame_compressed_size(&a[first..]).unwrap();
        assert_eq!(first + second, a.len(), "exactly two frames");
        assert_eq!(
            entry_names(&a[..first]),
            [MANIFEST_PATH, "hooks/", "hooks/health"]
        );
        let head = zstd::stream::decode_all(&a[..first]).unwrap();
        assert!(
            head[head.len() - 1024..].iter().any(|&b| b != 0),
            "no end-of-archive blocks in the first frame"
        );
        let names = entry_names(&a[first..]);
        assert_eq!(names[0], "files/");
        assert_eq!(names.len(), 1 + manifest.files.len());
        assert_eq!(entry_names(&a).len(), 3 + names.len());
    }

    #[test]
    fn bytes_do_not_depend_on_the_number_of_workers() {
        let dir = tempfile::tempdir().unwrap();
        let (skeleton, sources) = fixture(dir.path());
        // More than three jobs of input, so that workers do overlap.
        assert!(skeleton.payload_bytes() > 3 * u64::from(ZSTD_JOB_SIZE));
        let (_, one, _) = pack_bytes(&skeleton, &sources, 1);
        let (_, four, _) = pack_bytes(&skeleton, &sources, 4);
        assert_eq!(one.sha256, four.sha256);
    }

    /// `pack` writes file data itself rather than through the tar crate,
    /// and in two frames: decompressed, the bytes must be the tar crate's
    /// archive of the same entries, and compressed, that archive split
    /// before `files/` and each part compressed on its own.
    #[test]
    fn bytes_are_those_of_the_tar_crate() {
        let dir = tempfile::tempdir().unwrap();
        let (skeleton, sources) = fixture(dir.path());
        let (ours, _, manifest) = pack_bytes(&skeleton, &sources, 2);

        let mut tar = tar::Builder::new(Vec::new());
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
        let split = tar.get_ref().len();
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
        let archive = tar.into_inner().unwrap();
        assert!(
            zstd::stream::decode_all(&ours[..]).unwrap() == archive,
            "pack's tar stream differs from the tar crate's"
        );
        let mut reference = Vec::new();
        for part in [&archive[..split], &archive[split..]] {
            let mut zstd = encoder(Vec::new(), 2).unwrap();
            zstd.write_all(part).unwrap();
            reference.extend(zstd.finish().unwrap());
        }
        assert!(ours == reference, "pack's frames differ");
    }

    #[test]
    fn a_file_whose_size_changed_since_the_scan_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (skeleton, sources) = fixture(dir.path());
        let path = sources.payload_root.join(BIG);
        let original = fs::read(&path).unwrap();
        let changed = |sources: &PackSources| match try_pack(&skeleton, sources, 2) {
            Err(PackError::Changed { path: p }) => assert_eq!(p, path),
            other => panic!("expected a change to be caught, got {other:?}"),
        };
        // Grown, by one byte or by a whole read buffer.
        let mut grown = original.clone();
        grown.push(b'\n');
        fs::write(&path, &grown).unwrap();
        changed(&sources);
        grown.extend(bytes(5, READ_BUFFER, true));
        fs::write(&path, &grown).unwrap();
        changed(&sources);
        // Shrunk, by one byte or to nothing.
        fs::write(&path, &original[..original.len() - 1]).unwrap();
        changed(&sources);
        fs::write(&path, b"").unwrap();
        changed(&sources);
    }

    /// What is hashed is what is packed: a file edited since the scan
    /// (same size) gets the digest of the bytes packed, not of older ones,
    /// and the artifact reads back.
    #[test]
    fn the_manifest_describes_the_bytes_packed() {
        let dir = tempfile::tempdir().unwrap();
        let (skeleton, sources) = fixture(dir.path());
        let path = sources.payload_root.join(BIG);
        let (_, _, before) = pack_bytes(&skeleton, &sources, 2);
        let mut edited = fs::read(&path).unwrap();
        edited[5 << 20] ^= 1;
        fs::write(&path, &edited).unwrap();
        let (artifact, _, after) = pack_bytes(&skeleton, &sources, 2);
        assert_ne!(before.files[BIG], after.files[BIG]);
        let Entry::File { sha256, .. } = &after.files[BIG] else {
            panic!("{BIG} is a file");
        };
        assert_eq!(sha256, &crate::digest::sha256_bytes(&edited));
        assert_eq!(read(&artifact[..], &mut CheckOnly).unwrap(), after);
    }

    /// A file rewritten in place while it is being read: whatever mix of
    /// old and new bytes was packed, its digest in the manifest is theirs,
    /// so the artifact always passes every reader check.
    #[test]
    fn a_file_rewritten_while_packing_still_reads_back() {
        use std::sync::atomic::{AtomicBool, Ordering};

        let dir = tempfile::tempdir().unwrap();
        let (skeleton, sources) = fixture(dir.path());
        let path = sources.payload_root.join(BIG);
        let len = fs::metadata(&path).unwrap().len();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
                let mut writes = 0u64;
                let chunk = bytes(6, 64 << 10, false);
                while !stop.load(Ordering::Relaxed) {
                    let at = (writes * 7919 * 4096) % (len - chunk.len() as u64);
                    file.write_all_at(&chunk[..(writes as usize % chunk.len()) + 1], at)
                        .unwrap();
                    writes += 1;
                }
                writes
            });
            for _ in 0..3 {
                let (artifact, _, manifest) = pack_bytes(&skeleton, &sources, 2);
                assert_eq!(read(&artifact[..], &mut CheckOnly).unwrap(), manifest);
            }
            stop.store(true, Ordering::Relaxed);
            assert!(writer.join().unwrap() > 0);
        });
    }

    #[test]
    fn a_hook_changed_since_it_was_hashed_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (skeleton, sources) = fixture(dir.path());
        let (_, hook) = &sources.hooks[0];
        // The same size, one byte different.
        fs::write(hook, b"#!/bin/sh\nexit 1\n").unwrap();
        match try_pack(&skeleton, &sources, 2) {
            Err(PackError::Changed { path }) => assert_eq!(&path, hook),
            other => panic!("expected a change to be caught, got {other:?}"),
        }
    }

    /// What another tar writes for long names (PAX `path` and `linkpath`
    /// records, as GNU tar's posix format does) is applied, and a PAX
    /// `size` that agrees with the header is fine.
    #[test]
    fn pax_paths_are_applied() {
        let long_dir = "d".repeat(120);
        let long_file = format!("{long_dir}/{}", "f".repeat(120));
        let link = "l";
        let data = b"data";
        let mut files = BTreeMap::new();
        files.insert(long_dir.clone(), Entry::Dir { mode: Mode(0o755) });
        files.insert(
            long_file.clone(),
            Entry::File {
                sha256: crate::digest::sha256_bytes(data),
                size: 4,
                mode: Mode(0o644),
            },
        );
        files.insert(
            link.into(),
            Entry::Symlink {
                target: long_file.clone(),
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = fixture(dir.path());
        m.hooks = Hooks::default();
        m.hook_files.clear();
        m.files = files;
        m.check().unwrap();

        let mut tar = tar::Builder::new(Vec::new());
        let text = m.to_toml();
        let mut h = header(tar::EntryType::Regular, 0o644, text.len() as u64, 0);
        tar.append_data(&mut h, MANIFEST_PATH, text.as_bytes())
            .unwrap();
        let mut h = header(tar::EntryType::Directory, 0o755, 0, 0);
        tar.append_data(&mut h, "files/", io::empty()).unwrap();
        let pax = |tar: &mut tar::Builder<Vec<u8>>,
                   kind,
                   mode,
                   body: &[u8],
                   path: &str,
                   target: Option<&str>| {
            let path = format!("files/{path}");
            let size = body.len().to_string();
            let mut records = vec![("path", path.as_bytes()), ("size", size.as_bytes())];
            if let Some(t) = target {
                records.push(("linkpath", t.as_bytes()));
            }
            tar.append_pax_extensions(records).unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(body.len() as u64);
            h.set_path("placeholder").unwrap();
            if target.is_some() {
                h.set_link_name("placeholder").unwrap();
            }
            h.set_cksum();
            tar.append(&h, body).unwrap();
        };
        pax(
            &mut tar,
            tar::EntryType::Directory,
            0o755,
            b"",
            &long_dir,
            None,
        );
        pax(
            &mut tar,
            tar::EntryType::Regular,
            0o644,
            data,
            &long_file,
            None,
        );
        pax(
            &mut tar,
            tar::EntryType::Symlink,
            0o777,
            b"",
            link,
            Some(&long_file),
        );
        let artifact = zstd::stream::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap();
        assert_eq!(read(&artifact[..], &mut CheckOnly).unwrap(), m);
    }

    #[test]
    fn a_zstd_window_past_the_cap_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (skeleton, sources) = fixture(dir.path());
        let (artifact, _, _) = pack_bytes(&skeleton, &sources, 1);
        let tar = zstd::stream::decode_all(&artifact[..]).unwrap();
        let mut zstd = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        zstd.set_parameter(zstd::zstd_safe::CParameter::WindowLog(MAX_WINDOW_LOG + 1))
            .unwrap();
        zstd.write_all(&tar).unwrap();
        let wide = zstd.finish().unwrap();
        let err = read(&wide[..], &mut CheckOnly).unwrap_err();
        assert!(matches!(err, ArchiveError::Window), "{err}");
        assert_eq!(
            err.to_string(),
            "the artifact's zstd stream needs a window larger than the 16 MiB a reader allows"
        );
    }
}
