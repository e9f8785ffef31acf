//! Unpacking an artifact into a fresh staging directory, and finding how an
//! unpacked release drifted from its manifest (`agent verify`).
//!
//! # Layout
//!
//! A release directory mirrors the artifact, so berth's own files never mix
//! with the application's and no payload name is reserved:
//!
//! ```text
//! <release>/MANIFEST.toml   the manifest (re-serialized; parses to the one in the artifact)
//! <release>/hooks/<name>    the hook executables
//! <release>/files/...       the release tree, exactly the manifest's [files]
//! ```
//!
//! `install.target` points at `<release>/files` (see [`tree_dir`]), so the
//! application sees only its own tree, while the manifest and the hooks move
//! with the release in the one `rename(2)` from staging to `releases/`, stay
//! with it for rollback and for the `restore` hook, and are out of reach of
//! anything that writes into the application's tree. The three directories
//! are mode 0755.
//!
//! # What [`unpack`] guarantees
//!
//! - Every check of [`archive::read`] applies (paths, types, sizes, modes,
//!   symlink targets, parents before children, digests); on top of it the
//!   [`Limits`] and the special-mode rule are checked against the manifest
//!   before any entry is written.
//! - Nothing is created outside `staging`: every entry is created relative
//!   to a handle of a directory this unpacker created (never by resolving a
//!   path), with `O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat` or `symlinkat`, and
//!   symlinks only after every file and directory, so none is ever passed
//!   through.
//! - Modes are exactly the manifest's, whatever the umask: files are written
//!   at 0600 and directories made at 0700, then set with `fchmod`;
//!   directories last, children before parents, so a read-only directory
//!   still gets its entries.
//! - On success every file, then every directory, then `staging` and its
//!   parent's entry for it are fsynced, so the install can switch to it.
//! - On any error `staging` is removed entirely and its parent is as before.
//!
//! Not kept from the artifact: owners (everything belongs to the unpacking
//! user) and mtimes (entries get the time of unpacking). The artifact's
//! mtime is one fixed time for every entry of every build (often 0); as an
//! mtime it would make a web server's `Last-Modified` and mtime+size `ETag`
//! say that a changed file did not change across releases. Nothing in berth
//! needs them: [`drift`] compares digests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode as FsMode, OFlags};
use rustix::io::Errno;

use crate::archive::{self, ArchiveError, Visitor};
use crate::fsutil::{IoResultExt, PathError};
use crate::manifest::{Entry, FILES_DIR, HOOKS_DIR, MANIFEST_PATH, Manifest, Mode};
use crate::progress::Progress;
use crate::rules;
use crate::{Diagnose, Fault};

/// The release tree of the release directory `release`: what
/// `install.target` points to.
pub fn tree_dir(release: &Path) -> PathBuf {
    release.join(FILES_DIR)
}

/// The hook executable `name` of the release directory `release`.
pub fn hook_path(release: &Path, name: &str) -> PathBuf {
    release.join(HOOKS_DIR).join(name)
}

/// The manifest of the release directory `release`.
pub fn manifest_path(release: &Path) -> PathBuf {
    release.join(MANIFEST_PATH)
}

/// Caps on what one artifact may unpack to, checked against the manifest
/// before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries: hooks plus the payload's files, directories and symlinks.
    pub max_entries: u64,
    /// Bytes of all hooks and payload files together.
    pub max_total_bytes: u64,
    /// Components of a payload path (`a/b/c` is 3).
    pub max_depth: usize,
    /// Bytes of a payload path, relative to the release root.
    pub max_path_len: usize,
}

impl Default for Limits {
    /// Far above any real release (the 20,000-file benchmark artifact is
    /// 2% of the entry cap), low enough to stop an artifact built to
    /// exhaust the node; the agent's free-space check is the tighter one.
    fn default() -> Self {
        Limits {
            max_entries: 1_000_000,
            max_total_bytes: 64 << 30,
            max_depth: 128,
            // PATH_MAX: a longer path could not be opened by its full name.
            max_path_len: 4096,
        }
    }
}

/// Which of the [`Limits`] an artifact went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Entries,
    TotalBytes,
    PathDepth,
    PathLength,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Entries => "entry count",
            Limit::TotalBytes => "total bytes",
            Limit::PathDepth => "path depth",
            Limit::PathLength => "path length (bytes)",
        })
    }
}

/// How to unpack. Which payload paths may have setuid, setgid, sticky or
/// world-write bits is the package's to say (`[install]
/// allow_special_modes` in its manifest), not the node's.
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    pub limits: Limits,
}

/// A release that was unpacked and verified.
#[derive(Debug)]
pub struct Unpacked {
    pub manifest: Manifest,
    /// Hooks and payload entries created.
    pub entries: u64,
    /// Bytes of the hooks and payload files written.
    pub bytes: u64,
}

/// Why unpacking failed. Whatever it is, the staging directory is gone,
/// unless the error is [`UnpackError::StagingExists`] (it was not ours) or
/// [`UnpackError::Cleanup`].
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the staging directory `{}` already exists", .0.display())]
    StagingExists(PathBuf),
    #[error("`{}` cannot be a staging directory: it has no file name", .0.display())]
    BadStaging(PathBuf),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Io(#[from] PathError),
    #[error(
        "entry `{}` goes past the {limit} limit: {actual}, at most {max} allowed",
        rules::printable(entry)
    )]
    Limit {
        entry: String,
        limit: Limit,
        actual: u64,
        max: u64,
    },
    #[error("entry `{}` is refused: {rule}", rules::printable(entry))]
    SpecialMode { entry: String, rule: String },
    #[error("entry `{}` is refused: {rule}", rules::printable(entry))]
    Refused { entry: String, rule: &'static str },
    #[error("{error}; and the staging directory `{}` could not be removed: {cleanup}", staging.display())]
    Cleanup {
        error: Box<UnpackError>,
        staging: PathBuf,
        cleanup: io::Error,
    },
}

impl Diagnose for UnpackError {
    fn fault(&self) -> Fault {
        match self {
            UnpackError::Archive(e) => e.fault(),
            UnpackError::Limit { .. }
            | UnpackError::SpecialMode { .. }
            | UnpackError::Refused { .. } => Fault::Input,
            UnpackError::Cleanup { error, .. } => error.fault(),
            UnpackError::StagingExists(_) | UnpackError::BadStaging(_) | UnpackError::Io(_) => {
                Fault::Failure
            }
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            UnpackError::StagingExists(path) => Some(format!(
                "an interrupted install may have left it; `agent recover` cleans up, or remove `{}`",
                path.display()
            )),
            UnpackError::Archive(e) => e.hint(),
            UnpackError::Limit { .. } => Some(
                "if the artifact is trusted and really this large, raise the agent's unpack limit"
                    .into(),
            ),
            UnpackError::SpecialMode { .. } => Some(
                "if the package really needs this mode, list the path in package.toml's [install] allow_special_modes and build again"
                    .into(),
            ),
            UnpackError::Cleanup { staging, .. } => {
                Some(format!("remove `{}` by hand", staging.display()))
            }
            UnpackError::BadStaging(_) | UnpackError::Io(_) | UnpackError::Refused { .. } => None,
        }
    }
}

/// Directory handles kept open at once while unpacking; past it they are
/// dropped and reopened (one `openat` per path component) on demand. Well
/// under the usual soft limit of 1024 descriptors.
const MAX_OPEN_DIRS: usize = 256;
/// The copy buffer for file data.
const BUFFER: usize = 256 << 10;

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn fs_mode(bits: u32) -> FsMode {
    FsMode::from_raw_mode(bits)
}

fn errno<T>(r: rustix::io::Result<T>) -> io::Result<T> {
    r.map_err(io::Error::from)
}

/// `rel`'s parent (`""` for the release root) and its last component.
fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

/// Unpacks `artifact` (tar+zstd) into `staging`, which must not exist and
/// whose parent must: see the module docs for the layout and what is
/// guaranteed. Progress is reported as one "unpacking" phase over the bytes
/// of the hooks and payload files.
pub fn unpack(
    artifact: impl Read,
    staging: &Path,
    options: &UnpackOptions,
    progress: &dyn Progress,
) -> Result<Unpacked, UnpackError> {
    let name = staging
        .file_name()
        .ok_or_else(|| UnpackError::BadStaging(staging.to_owned()))?;
    let parent = staging
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // The parent is the agent's own directory: following links there is
    // fine (`/var/lib` may be a link to another disk); below it, never.
    let parent_fd = errno(rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        FsMode::empty(),
    ))
    .at("cannot open the staging directory's parent", parent)?;
    match rustix::fs::mkdirat(&parent_fd, name, fs_mode(0o700)) {
        Ok(()) => {}
        Err(Errno::EXIST) => return Err(UnpackError::StagingExists(staging.to_owned())),
        Err(e) => {
            return Err(
                PathError::new("cannot create the staging directory", staging, e.into()).into(),
            );
        }
    }
    let mut started = false;
    let result = fill(
        artifact,
        staging,
        &parent_fd,
        name,
        options,
        progress,
        &mut started,
    );
    if started {
        progress.finish();
    }
    result.map_err(|error| match remove_tree(parent_fd.as_fd(), name) {
        Ok(()) => error,
        Err(cleanup) => UnpackError::Cleanup {
            error: Box::new(error),
            staging: staging.to_owned(),
            cleanup,
        },
    })
}

/// Everything after the staging directory was made: on error the caller
/// removes it.
fn fill(
    artifact: impl Read,
    staging: &Path,
    parent_fd: &OwnedFd,
    name: &OsStr,
    options: &UnpackOptions,
    progress: &dyn Progress,
    started: &mut bool,
) -> Result<Unpacked, UnpackError> {
    let root = errno(rustix::fs::openat(
        parent_fd,
        name,
        dir_flags(),
        FsMode::empty(),
    ))
    .at("cannot open", staging)?;
    let make = |dir: &str| -> Result<(OwnedFd, PathBuf), PathError> {
        let path = staging.join(dir);
        errno(rustix::fs::mkdirat(&root, dir, fs_mode(0o700))).at("cannot create", &path)?;
        let fd = errno(rustix::fs::openat(&root, dir, dir_flags(), FsMode::empty()))
            .at("cannot open", &path)?;
        Ok((fd, path))
    };
    let (files, files_path) = make(FILES_DIR)?;
    let (hooks, hooks_path) = make(HOOKS_DIR)?;

    let mut unpacker = Unpacker {
        options,
        progress,
        staging,
        root: &root,
        hooks: &hooks,
        tree: Tree {
            root: Rc::new(files),
            base: files_path,
            open: HashMap::new(),
            created: BTreeMap::new(),
        },
        symlinks: Vec::new(),
        failure: None,
        started,
        buf: vec![0; BUFFER],
        syncer: Syncer::new(),
        entries: 0,
        bytes: 0,
    };
    let manifest = match archive::read(artifact, &mut unpacker) {
        Ok(manifest) => manifest,
        // The visitor's own error, typed, rather than its io::Error stand-in.
        Err(ArchiveError::Visitor(e)) => {
            return Err(unpacker
                .failure
                .take()
                .unwrap_or(UnpackError::Archive(ArchiveError::Visitor(e))));
        }
        Err(e) => return Err(e.into()),
    };
    // Only now is every byte verified: make it durable and final.
    let (entries, bytes) = (unpacker.entries, unpacker.bytes);
    unpacker.finish()?;
    set_mode_and_sync(&hooks, 0o755, &hooks_path)?;
    set_mode_and_sync(&root, 0o755, staging)?;
    errno(rustix::fs::fsync(parent_fd))
        .at("cannot sync", staging.parent().unwrap_or(Path::new(".")))?;
    Ok(Unpacked {
        manifest,
        entries,
        bytes,
    })
}

fn set_mode_and_sync(fd: &OwnedFd, mode: u32, path: &Path) -> Result<(), PathError> {
    errno(rustix::fs::fchmod(fd, fs_mode(mode))).at("cannot set the mode of", path)?;
    errno(rustix::fs::fsync(fd)).at("cannot sync", path)
}

/// Removes `name` in `dir` and everything under it, without following
/// symlinks.
fn remove_tree<P: rustix::path::Arg + Copy>(dir: BorrowedFd<'_>, name: P) -> io::Result<()> {
    let st = errno(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return errno(rustix::fs::unlinkat(dir, name, AtFlags::empty()));
    }
    // A directory whose final mode was already set may deny us entry when
    // unprivileged. `chmodat` cannot refuse symlinks on older kernels, but
    // this was just seen to be a directory, in a tree only we write to.
    if st.st_mode & 0o700 != 0o700 {
        errno(rustix::fs::chmodat(
            dir,
            name,
            fs_mode(0o700),
            AtFlags::empty(),
        ))?;
    }
    let sub = errno(rustix::fs::openat(dir, name, dir_flags(), FsMode::empty()))?;
    for child in list_dir(&sub)? {
        remove_tree(sub.as_fd(), child.as_c_str())?;
    }
    errno(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR))
}

/// The names in a directory, without `.` and `..`.
fn list_dir(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    let mut names = Vec::new();
    for entry in errno(rustix::fs::Dir::read_from(dir))? {
        let entry = errno(entry)?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// The handles of the payload's directories, all created by this unpacker.
struct Tree {
    /// `files/`, the release root.
    root: Rc<OwnedFd>,
    /// `staging/files`, for messages.
    base: PathBuf,
    /// Open handles, by payload path; bounded by [`MAX_OPEN_DIRS`].
    open: HashMap<String, Rc<OwnedFd>>,
    /// Every directory created so far and its final mode.
    created: BTreeMap<String, Mode>,
}

impl Tree {
    /// A handle of the directory `rel`, which must be one this unpacker
    /// created, for creating `entry` in it; reopened from its parent's
    /// handle, without following links, when it is not open.
    fn dir(&mut self, rel: &str, entry: &str) -> Result<Rc<OwnedFd>, UnpackError> {
        if rel.is_empty() {
            return Ok(Rc::clone(&self.root));
        }
        if let Some(fd) = self.open.get(rel) {
            return Ok(Rc::clone(fd));
        }
        // The reader checked that the parent came first and the manifest
        // that it is a directory; this does not rely on either.
        if !self.created.contains_key(rel) {
            return Err(UnpackError::Refused {
                entry: format!("{FILES_DIR}/{entry}"),
                rule: "its parent is not a directory unpacked before it",
            });
        }
        let (parent, name) = split(rel);
        let parent = self.dir(parent, entry)?;
        let fd = errno(rustix::fs::openat(
            &*parent,
            name,
            dir_flags(),
            FsMode::empty(),
        ))
        .at("cannot open", &self.base.join(rel))?;
        if self.open.len() >= MAX_OPEN_DIRS {
            self.open.clear();
        }
        let fd = Rc::new(fd);
        self.open.insert(rel.to_owned(), Rc::clone(&fd));
        Ok(fd)
    }
}

/// The [`Visitor`] that writes the release as the reader checks it.
struct Unpacker<'a> {
    options: &'a UnpackOptions,
    progress: &'a dyn Progress,
    staging: &'a Path,
    root: &'a OwnedFd,
    hooks: &'a OwnedFd,
    tree: Tree,
    /// (path, target), created once every file and directory exists.
    symlinks: Vec<(String, String)>,
    /// The typed error behind the last `Err` returned to the reader.
    failure: Option<UnpackError>,
    started: &'a mut bool,
    buf: Vec<u8>,
    syncer: Syncer,
    entries: u64,
    bytes: u64,
}

impl Unpacker<'_> {
    /// Hands `result` to the reader as an `io::Result`, keeping the typed
    /// error for [`unpack`] to return.
    fn keep(&mut self, result: Result<(), UnpackError>) -> io::Result<()> {
        result.map_err(|e| {
            let stand_in = io::Error::other(e.to_string());
            self.failure = Some(e);
            stand_in
        })
    }

    fn start(&mut self, manifest: &Manifest) -> Result<(), UnpackError> {
        let total = check_manifest(manifest, self.options)?;
        let path = self.staging.join(MANIFEST_PATH);
        let text = manifest.to_toml();
        let (_, file) = write_file(
            self.root.as_fd(),
            MANIFEST_PATH,
            MANIFEST_PATH,
            &mut text.as_bytes(),
            text.len() as u64,
            Mode(0o644),
            &path,
            &mut self.buf,
            &crate::progress::Silent,
        )?;
        self.syncer.submit(file, &path)?;
        self.progress.start("unpacking", total);
        *self.started = true;
        Ok(())
    }

    fn hook_entry(
        &mut self,
        name: &str,
        entry: &Entry,
        data: &mut dyn Read,
    ) -> Result<(), UnpackError> {
        let label = format!("{HOOKS_DIR}/{name}");
        let Entry::File { size, mode, .. } = entry else {
            return Err(UnpackError::Refused {
                entry: label,
                rule: "a hook must be a regular file",
            });
        };
        // Hook names are checked by the manifest against a fixed list;
        // a `/` would create below `hooks/` through a path.
        if name.contains('/') {
            return Err(UnpackError::Refused {
                entry: label,
                rule: "a hook name is one path component",
            });
        }
        let path = self.staging.join(HOOKS_DIR).join(name);
        let (written, file) = write_file(
            self.hooks.as_fd(),
            name,
            &label,
            data,
            *size,
            *mode,
            &path,
            &mut self.buf,
            self.progress,
        )?;
        self.syncer.submit(file, &path)?;
        self.bytes += written;
        self.entries += 1;
        Ok(())
    }

    fn payload_entry(
        &mut self,
        rel: &str,
        entry: &Entry,
        data: &mut dyn Read,
    ) -> Result<(), UnpackError> {
        let (parent, name) = split(rel);
        let dir = self.tree.dir(parent, rel)?;
        let path = self.tree.base.join(rel);
        match entry {
            Entry::Dir { mode } => {
                // 0700 while it fills; the manifest's mode is set last.
                errno(rustix::fs::mkdirat(&*dir, name, fs_mode(0o700)))
                    .at("cannot create directory", &path)?;
                self.tree.created.insert(rel.to_owned(), *mode);
            }
            Entry::File { size, mode, .. } => {
                let label = format!("{FILES_DIR}/{rel}");
                let (written, file) = write_file(
                    dir.as_fd(),
                    name,
                    &label,
                    data,
                    *size,
                    *mode,
                    &path,
                    &mut self.buf,
                    self.progress,
                )?;
                self.syncer.submit(file, &path)?;
                self.bytes += written;
            }
            // Last, so that no later entry can be created through one.
            Entry::Symlink { target } => self.symlinks.push((rel.to_owned(), target.clone())),
        }
        self.entries += 1;
        Ok(())
    }

    /// Once the reader verified everything: the symlinks, then each
    /// directory's mode and fsync, children before parents (reverse
    /// order), then the release root's.
    fn finish(mut self) -> Result<(), UnpackError> {
        // Every file's data first, then the directories that name them.
        self.syncer.finish()?;
        for (rel, target) in std::mem::take(&mut self.symlinks) {
            let (parent, name) = split(&rel);
            let dir = self.tree.dir(parent, &rel)?;
            errno(rustix::fs::symlinkat(target.as_str(), &*dir, name))
                .at("cannot create symlink", &self.tree.base.join(&rel))?;
        }
        let dirs: Vec<(String, Mode)> = self
            .tree
            .created
            .iter()
            .rev()
            .map(|(rel, mode)| (rel.clone(), *mode))
            .collect();
        for (rel, mode) in dirs {
            let fd = self.tree.dir(&rel, &rel)?;
            set_mode_and_sync(&fd, mode.0, &self.tree.base.join(&rel))?;
        }
        set_mode_and_sync(&self.tree.root, 0o755, &self.tree.base)?;
        Ok(())
    }
}

impl Visitor for Unpacker<'_> {
    fn manifest(&mut self, manifest: &Manifest) -> io::Result<()> {
        let result = self.start(manifest);
        self.keep(result)
    }

    fn hook(&mut self, name: &str, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let result = self.hook_entry(name, entry, data);
        self.keep(result)
    }

    fn payload(&mut self, path: &str, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let result = self.payload_entry(path, entry, data);
        self.keep(result)
    }
}

/// Checks the [`Limits`] and the special-mode rule against the manifest,
/// in the artifact's order (hooks, then the payload), naming the first
/// entry past a limit. Returns the total bytes to unpack.
fn check_manifest(manifest: &Manifest, options: &UnpackOptions) -> Result<u64, UnpackError> {
    let limits = &options.limits;
    let mut entries = 0u64;
    let mut total = 0u64;
    let hooks = manifest.hook_files.iter().map(|(n, e)| (HOOKS_DIR, n, e));
    let files = manifest.files.iter().map(|(p, e)| (FILES_DIR, p, e));
    for (section, rel, entry) in hooks.chain(files) {
        let label = || format!("{section}/{rel}");
        let past = |limit, actual: u64, max: u64| UnpackError::Limit {
            entry: label(),
            limit,
            actual,
            max,
        };
        entries += 1;
        if entries > limits.max_entries {
            return Err(past(Limit::Entries, entries, limits.max_entries));
        }
        let depth = rel.split('/').count();
        if depth > limits.max_depth {
            return Err(past(
                Limit::PathDepth,
                depth as u64,
                limits.max_depth as u64,
            ));
        }
        if rel.len() > limits.max_path_len {
            return Err(past(
                Limit::PathLength,
                rel.len() as u64,
                limits.max_path_len as u64,
            ));
        }
        let mode = match entry {
            Entry::File { size, mode, .. } => {
                total = total.saturating_add(*size);
                if total > limits.max_total_bytes {
                    return Err(past(Limit::TotalBytes, total, limits.max_total_bytes));
                }
                *mode
            }
            Entry::Dir { mode } => *mode,
            Entry::Symlink { .. } => continue,
        };
        // Checked by the manifest already; not relied upon.
        let refused = if section == FILES_DIR {
            rules::check_mode(rel, mode, &manifest.install.allow_special_modes).err()
        } else {
            (mode.0 & rules::SPECIAL_BITS != 0).then(|| rules::special_mode_hook(mode))
        };
        if let Some(rule) = refused {
            return Err(UnpackError::SpecialMode {
                entry: label(),
                rule,
            });
        }
    }
    Ok(total)
}

/// Creates `name` in `dir` (never over anything, never through a link),
/// copies `data` into it and sets `mode`. Returns the bytes written and
/// the file, for the caller to hand to the [`Syncer`]. `label` names the
/// entry in errors, `path` the file.
#[allow(clippy::too_many_arguments)]
fn write_file(
    dir: BorrowedFd<'_>,
    name: &str,
    label: &str,
    data: &mut dyn Read,
    size: u64,
    mode: Mode,
    path: &Path,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<(u64, File), UnpackError> {
    let fd = errno(rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        fs_mode(0o600),
    ))
    .at("cannot create", path)?;
    let mut file = File::from(fd);
    let mut written = 0u64;
    loop {
        let n = match data.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Reading the entry is reading the artifact.
            Err(e) => return Err(archive::corrupt_in(label, e).into()),
        };
        written += n as u64;
        // The reader gives exactly the manifest's size; not relied upon.
        if written > size {
            return Err(UnpackError::Refused {
                entry: label.to_owned(),
                rule: "it holds more bytes than the manifest says",
            });
        }
        file.write_all(&buf[..n]).at("cannot write", path)?;
        progress.advance(n as u64);
    }
    // After the data: writing would clear setuid and setgid bits.
    errno(rustix::fs::fchmod(&file, fs_mode(mode.0))).at("cannot set the mode of", path)?;
    Ok((written, file))
}

/// Fsyncs written files on a few background threads, so that writing the
/// next file never waits for the disk to take the last one (one fsync
/// after another made the disk the bottleneck of an install), while every
/// file is still fsynced before [`unpack`] returns: [`Syncer::finish`]
/// waits for them all and reports the first failure.
struct Syncer {
    jobs: Option<std::sync::mpsc::SyncSender<(File, PathBuf)>>,
    workers: Vec<std::thread::JoinHandle<Result<(), PathError>>>,
}

impl Syncer {
    /// Files waiting for their fsync at most; each holds a descriptor.
    const QUEUE: usize = 128;
    const THREADS: usize = 4;

    fn new() -> Syncer {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<(File, PathBuf)>(Self::QUEUE);
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        let workers = (0..Self::THREADS)
            .map(|_| {
                let queue = std::sync::Arc::clone(&queue);
                std::thread::spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return Ok(()),
                        };
                        let Ok((file, path)) = job else {
                            return Ok(());
                        };
                        file.sync_all().at("cannot sync", &path)?;
                    }
                })
            })
            .collect();
        Syncer {
            jobs: Some(jobs),
            workers,
        }
    }

    /// Queues `file` for its fsync; waits while the queue is full.
    fn submit(&mut self, file: File, path: &Path) -> Result<(), UnpackError> {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send((file, path.to_owned())).is_ok());
        if sent {
            Ok(())
        } else {
            // Every worker stopped: one of them failed.
            self.finish()?;
            Err(PathError::new(
                "cannot sync",
                path,
                io::Error::other("the fsync workers stopped"),
            )
            .into())
        }
    }

    /// Waits until every queued file is fsynced.
    fn finish(&mut self) -> Result<(), PathError> {
        self.jobs = None;
        let mut first = Ok(());
        for worker in self.workers.drain(..) {
            let result = worker.join().unwrap_or_else(|_| {
                Err(PathError::new(
                    "cannot sync",
                    Path::new("."),
                    io::Error::other("an fsync worker panicked"),
                ))
            });
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

/// Which part of a release a [`Drift`] is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// The release tree (`files/`); paths relative to it.
    Files,
    /// The hooks (`hooks/`); paths are hook names.
    Hooks,
    /// The release's own `MANIFEST.toml`.
    Manifest,
}

/// How an entry differs from the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Listed in the manifest, absent (entries under a missing or retyped
    /// directory are not reported on their own).
    Missing {
        expected: &'static str,
    },
    /// Present, not listed (the contents of an extra directory are not
    /// reported on their own).
    Extra {
        actual: &'static str,
    },
    Type {
        expected: &'static str,
        actual: &'static str,
    },
    Size {
        expected: u64,
        actual: u64,
    },
    /// Same size, different bytes.
    Content {
        expected: String,
        actual: String,
    },
    Mode {
        expected: Mode,
        actual: Mode,
    },
    Target {
        expected: String,
        actual: String,
    },
}

/// One difference between an unpacked release and its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub section: Section,
    pub path: String,
    pub change: Change,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.section {
            Section::Files => write!(f, "`{}`", self.path)?,
            Section::Hooks => write!(f, "hook `{}`", self.path)?,
            Section::Manifest => {
                let path = &self.path;
                return match &self.change {
                    Change::Type { actual, .. } => {
                        write!(f, "the release's `{path}` is a {actual}, not a file")
                    }
                    Change::Content { actual, .. } => write!(
                        f,
                        "the release's `{path}` no longer reads as the manifest installed (its sha256 is {actual})"
                    ),
                    _ => write!(f, "the release's `{path}` is missing"),
                };
            }
        }
        match &self.change {
            Change::Missing { expected } => {
                write!(f, " is missing (a {expected} in the manifest)")
            }
            Change::Extra { actual } => write!(f, " (a {actual}) is not in the manifest"),
            Change::Type { expected, actual } => {
                write!(f, " is a {actual}, the manifest says a {expected}")
            }
            Change::Size { expected, actual } => {
                write!(f, " is {actual} bytes, the manifest says {expected}")
            }
            Change::Content { expected, actual } => write!(
                f,
                " has changed: its sha256 is {actual}, the manifest says {expected}"
            ),
            Change::Mode { expected, actual } => {
                write!(f, " has mode {actual}, the manifest says {expected}")
            }
            Change::Target { expected, actual } => {
                write!(f, " points to `{actual}`, the manifest says `{expected}`")
            }
        }
    }
}

/// Compares the release directory `release_dir` (laid out as [`unpack`]
/// makes it) with `manifest`: every entry of `files/` and `hooks/`,
/// through directory handles, never following a symlink. Returns every
/// difference, sorted (hooks after the tree); empty when the release is
/// intact. File contents are hashed only when the size matches.
///
/// `MANIFEST.toml` is compared too: it must be there and parse to
/// `manifest`. Ignored: owners, mtimes, anything else beside
/// `MANIFEST.toml`, `files/` and `hooks/` (the agent's stamp); and in the tree, the node-local paths and what is
/// under them: the manifest's `install.shared` and `install.preserve`, and
/// `node_local` (what else the agent puts in a release, like the env file's
/// link).
pub fn drift(
    release_dir: &Path,
    manifest: &Manifest,
    node_local: &[&str],
) -> Result<Vec<Drift>, PathError> {
    let local: Vec<&str> = manifest
        .install
        .shared
        .iter()
        .chain(&manifest.install.preserve)
        .map(String::as_str)
        .chain(node_local.iter().copied())
        .collect();
    let is_local = |rel: &str| {
        local.iter().any(|p| {
            rel.strip_prefix(p)
                .is_some_and(|r| r.is_empty() || r.starts_with('/'))
        })
    };
    let mut out = Vec::new();
    // A missing `files/` or `hooks/` is compared as an empty one: every
    // entry (the topmost of each missing branch) is reported missing.
    let open = |dir: &Path| match rustix::fs::open(dir, dir_flags(), FsMode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(PathError::new("cannot open", dir, e.into())),
    };
    let tree = tree_dir(release_dir);
    compare(
        open(&tree)?.as_ref(),
        &tree,
        Section::Files,
        &manifest.files,
        &is_local,
        &mut out,
    )?;
    let hooks = release_dir.join(HOOKS_DIR);
    compare(
        open(&hooks)?.as_ref(),
        &hooks,
        Section::Hooks,
        &manifest.hook_files,
        &|_| false,
        &mut out,
    )?;
    out.extend(manifest_drift(release_dir, manifest)?);
    out.sort_by(|a, b| (a.section, &a.path).cmp(&(b.section, &b.path)));
    Ok(out)
}

/// How the release's `MANIFEST.toml` differs from `manifest`: missing,
/// not a file, or not parsing to it (its digest and that of `manifest`
/// as written); `None` when it reads as `manifest`.
pub fn manifest_drift(release_dir: &Path, manifest: &Manifest) -> Result<Option<Drift>, PathError> {
    let path = manifest_path(release_dir);
    let drift = |change| {
        Some(Drift {
            section: Section::Manifest,
            path: MANIFEST_PATH.to_owned(),
            change,
        })
    };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::open(&path, flags, FsMode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            return Ok(drift(Change::Missing { expected: "file" }));
        }
        // A symlink (O_NOFOLLOW) or something else in its place.
        Err(Errno::LOOP) => {
            return Ok(drift(Change::Type {
                expected: "file",
                actual: "symlink",
            }));
        }
        Err(e) => return Err(PathError::new("cannot open", &path, e.into())),
    };
    let st = errno(rustix::fs::fstat(&fd)).at("cannot inspect", &path)?;
    let actual = kind_of(st.st_mode);
    if actual != "file" {
        return Ok(drift(Change::Type {
            expected: "file",
            actual,
        }));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut bytes)
        .at("cannot read", &path)?;
    let same = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| Manifest::parse(text).ok())
        .is_some_and(|m| m == *manifest);
    Ok(if same {
        None
    } else {
        drift(Change::Content {
            expected: crate::digest::sha256_bytes(manifest.to_toml().as_bytes()),
            actual: crate::digest::sha256_bytes(&bytes),
        })
    })
}

/// State of one [`compare`].
struct Walk<'a> {
    base: &'a Path,
    section: Section,
    expected: &'a BTreeMap<String, Entry>,
    ignored: &'a dyn Fn(&str) -> bool,
    /// Listed entries that were found.
    found: HashSet<String>,
    /// Entries whose contents are not compared (a different type).
    pruned: HashSet<String>,
    out: &'a mut Vec<Drift>,
}

fn compare(
    root: Option<&OwnedFd>,
    base: &Path,
    section: Section,
    expected: &BTreeMap<String, Entry>,
    ignored: &dyn Fn(&str) -> bool,
    out: &mut Vec<Drift>,
) -> Result<(), PathError> {
    let mut walk = Walk {
        base,
        section,
        expected,
        ignored,
        found: HashSet::new(),
        pruned: HashSet::new(),
        out,
    };
    if let Some(root) = root {
        walk_dir(root, "", &mut walk)?;
    }
    // In sorted order a directory comes before its contents, so only the
    // topmost missing entry is reported.
    for (rel, entry) in expected {
        if walk.found.contains(rel) || ignored(rel) {
            continue;
        }
        let under_pruned = rel
            .rmatch_indices('/')
            .any(|(i, _)| walk.pruned.contains(&rel[..i]));
        if under_pruned {
            continue;
        }
        walk.pruned.insert(rel.clone());
        walk.out.push(Drift {
            section,
            path: rel.clone(),
            change: Change::Missing {
                expected: entry.kind(),
            },
        });
    }
    Ok(())
}

fn kind_of(st_mode: u32) -> &'static str {
    match FileType::from_raw_mode(st_mode) {
        FileType::RegularFile => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device",
        FileType::Unknown => "file of unknown type",
    }
}

fn walk_dir(dir: &OwnedFd, prefix: &str, walk: &mut Walk<'_>) -> Result<(), PathError> {
    let here = walk.base.join(prefix);
    for name in list_dir(dir).at("cannot read directory", &here)? {
        let shown = String::from_utf8_lossy(name.to_bytes()).into_owned();
        let rel = if prefix.is_empty() {
            shown
        } else {
            format!("{prefix}/{shown}")
        };
        if (walk.ignored)(&rel) {
            continue;
        }
        let path = here.join(OsStr::from_bytes(name.to_bytes()));
        let st = errno(rustix::fs::statat(
            dir,
            name.as_c_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        ))
        .at("cannot inspect", &path)?;
        let actual = kind_of(st.st_mode);
        let mut report = |change| {
            walk.out.push(Drift {
                section: walk.section,
                path: rel.clone(),
                change,
            })
        };
        // A name that is not UTF-8 cannot be in the manifest.
        let listed = std::str::from_utf8(name.to_bytes())
            .ok()
            .and_then(|_| walk.expected.get(&rel));
        let Some(want) = listed else {
            report(Change::Extra { actual });
            continue;
        };
        walk.found.insert(rel.clone());
        if want.kind() != actual {
            report(Change::Type {
                expected: want.kind(),
                actual,
            });
            walk.pruned.insert(rel);
            continue;
        }
        let mode = Mode(st.st_mode & 0o7777);
        match want {
            Entry::Dir { mode: expected } => {
                if mode != *expected {
                    report(Change::Mode {
                        expected: *expected,
                        actual: mode,
                    });
                }
                let sub = errno(rustix::fs::openat(
                    dir,
                    name.as_c_str(),
                    dir_flags(),
                    FsMode::empty(),
                ))
                .at("cannot open", &path)?;
                walk_dir(&sub, &rel, walk)?;
            }
            Entry::File {
                sha256,
                size,
                mode: expected,
            } => {
                let actual_size = u64::try_from(st.st_size).unwrap_or(0);
                if actual_size != *size {
                    report(Change::Size {
                        expected: *size,
                        actual: actual_size,
                    });
                } else {
                    let digest = file_digest(dir, name.as_c_str()).at("cannot read", &path)?;
                    if &digest != sha256 {
                        report(Change::Content {
                            expected: sha256.clone(),
                            actual: digest,
                        });
                    }
                }
                if mode != *expected {
                    report(Change::Mode {
                        expected: *expected,
                        actual: mode,
                    });
                }
            }
            Entry::Symlink { target } => {
                let link = errno(rustix::fs::readlinkat(dir, name.as_c_str(), Vec::new()))
                    .at("cannot read the symlink", &path)?;
                if link.as_bytes() != target.as_bytes() {
                    report(Change::Target {
                        expected: target.clone(),
                        actual: String::from_utf8_lossy(link.as_bytes()).into_owned(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The SHA-256 of the regular file `name` in `dir`: opened without
/// following a link, and non-blocking in case a fifo took its place.
fn file_digest(dir: &OwnedFd, name: &CStr) -> io::Result<String> {
    let fd = errno(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        FsMode::empty(),
    ))?;
    let file = File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("it is no longer a regular file"));
    }
    Ok(crate::digest::sha256_reader(file)?.0)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;
    use crate::archive::{PackSources, pack};
    use crate::manifest::{FORMAT, Hooks, Install, PackageInfo, Rollback, Source};
    use crate::progress::Silent;

    /// A payload entry to pack.
    enum Spec {
        File(&'static [u8], u32),
        Dir(u32),
        Link(&'static str),
    }

    fn manifest(files: BTreeMap<String, Entry>) -> Manifest {
        Manifest {
            format: FORMAT,
            package: PackageInfo {
                name: "webapp".into(),
                version: "1.0.0".into(),
                build: 1,
                description: None,
            },
            source: Source::default(),
            install: Install {
                target: "/srv/webapp".into(),
                keep_releases: 3,
                shared: vec!["log".into()],
                preserve: vec![],
                env_file: false,
                allow_special_modes: vec![],
            },
            hooks: Hooks::default(),
            rollback: Rollback::default(),
            hook_files: BTreeMap::new(),
            files,
        }
    }

    /// An artifact packed by [`pack`] from `specs`, with a `health` hook.
    fn packed(dir: &Path, specs: &[(&str, Spec)]) -> (Vec<u8>, Manifest) {
        packed_with(dir, specs, |_| {})
    }

    /// [`packed`], with `edit` applied to the manifest before packing.
    fn packed_with(
        dir: &Path,
        specs: &[(&str, Spec)],
        edit: impl FnOnce(&mut Manifest),
    ) -> (Vec<u8>, Manifest) {
        let root = dir.join("payload");
        fs::create_dir_all(&root).unwrap();
        let mut files = BTreeMap::new();
        for (rel, spec) in specs {
            let path = root.join(rel);
            let entry = match spec {
                Spec::File(data, mode) => {
                    fs::write(&path, data).unwrap();
                    Entry::File {
                        sha256: String::new(),
                        size: data.len() as u64,
                        mode: Mode(*mode),
                    }
                }
                Spec::Dir(mode) => {
                    fs::create_dir(&path).unwrap();
                    Entry::Dir { mode: Mode(*mode) }
                }
                Spec::Link(target) => {
                    symlink(target, &path).unwrap();
                    Entry::Symlink {
                        target: (*target).into(),
                    }
                }
            };
            files.insert((*rel).to_owned(), entry);
        }
        let hook = dir.join("health");
        fs::write(&hook, b"#!/bin/sh\nexit 0\n").unwrap();
        let (sha256, size) = crate::digest::sha256_file(&hook).unwrap();
        let mut m = manifest(files);
        m.hooks.health = Some("hooks/health".into());
        m.hook_files.insert(
            "health".into(),
            Entry::File {
                sha256,
                size,
                mode: Mode(0o755),
            },
        );
        edit(&mut m);
        m.check().unwrap();
        let sources = PackSources {
            hooks: vec![("health".into(), hook)],
            payload_root: root,
            mtime: 0,
        };
        let scratch = tempfile::tempfile().unwrap();
        let (bytes, _) = pack(&mut m, &sources, scratch, Vec::new(), 1, &Silent).unwrap();
        (bytes, m)
    }

    /// A tree with every kind of entry and mode that matters, including
    /// modes a usual umask (022) would change and a read-only directory
    /// with contents.
    fn normal() -> Vec<(&'static str, Spec)> {
        vec![
            ("app", Spec::Dir(0o755)),
            ("app/run.sh", Spec::File(b"#!/bin/sh\necho hi\n", 0o755)),
            ("app/data.txt", Spec::File(b"group-writable\n", 0o664)),
            ("app/up", Spec::Link("../secret")),
            ("current", Spec::Link("app/run.sh")),
            ("empty", Spec::Dir(0o750)),
            ("private", Spec::Dir(0o700)),
            ("private/key", Spec::File(b"k", 0o600)),
            ("ro", Spec::Dir(0o555)),
            ("ro/inside", Spec::File(b"", 0o444)),
            ("secret", Spec::File(b"s3cret\n", 0o600)),
            ("team", Spec::Dir(0o775)),
        ]
    }

    /// A temp dir with `releases/` (the staging parent) and an empty
    /// `outside/` that hostile entries would aim at.
    struct Node {
        dir: tempfile::TempDir,
    }

    impl Node {
        fn new() -> Node {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("releases")).unwrap();
            fs::create_dir(dir.path().join("outside")).unwrap();
            Node { dir }
        }

        fn staging(&self) -> PathBuf {
            self.dir.path().join("releases/staging")
        }

        fn unpack(
            &self,
            artifact: &[u8],
            options: &UnpackOptions,
        ) -> Result<Unpacked, UnpackError> {
            unpack(artifact, &self.staging(), options, &Silent)
        }

        /// Asserts that a failed unpack left nothing anywhere.
        fn assert_untouched(&self) {
            for dir in ["releases", "outside"] {
                let left: Vec<_> = fs::read_dir(self.dir.path().join(dir))
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                assert!(left.is_empty(), "{dir} holds {left:?}");
            }
            let mut top: Vec<_> = fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n != "payload" && n != "health")
                .collect();
            top.sort();
            assert_eq!(top, ["outside", "releases"]);
        }
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn unpacks_exactly_the_tree() {
        let node = Node::new();
        let (artifact, m) = packed(node.dir.path(), &normal());
        let done = node.unpack(&artifact, &UnpackOptions::default()).unwrap();
        assert_eq!(done.manifest, m);
        assert_eq!(done.entries, 13);
        assert_eq!(done.bytes, m.payload_bytes() + 17);

        let staging = node.staging();
        assert_eq!(names(&staging), ["MANIFEST.toml", "files", "hooks"]);
        for dir in [&staging, &staging.join("files"), &staging.join("hooks")] {
            assert_eq!(mode_of(dir), 0o755, "{}", dir.display());
        }
        let text = fs::read_to_string(manifest_path(&staging)).unwrap();
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        let hook = hook_path(&staging, "health");
        assert_eq!(fs::read(&hook).unwrap(), b"#!/bin/sh\nexit 0\n");
        assert_eq!(mode_of(&hook), 0o755);

        let tree = tree_dir(&staging);
        assert_eq!(
            names(&tree),
            ["app", "current", "empty", "private", "ro", "secret", "team"]
        );
        assert_eq!(names(&tree.join("app")), ["data.txt", "run.sh", "up"]);
        assert!(names(&tree.join("empty")).is_empty());
        for (rel, spec) in normal() {
            let path = tree.join(rel);
            match spec {
                Spec::File(data, mode) => {
                    assert_eq!(fs::read(&path).unwrap(), data, "{rel}");
                    assert_eq!(mode_of(&path), mode, "{rel}");
                }
                Spec::Dir(mode) => {
                    assert!(fs::symlink_metadata(&path).unwrap().is_dir(), "{rel}");
                    assert_eq!(mode_of(&path), mode, "{rel}");
                }
                Spec::Link(target) => {
                    assert_eq!(fs::read_link(&path).unwrap(), Path::new(target), "{rel}");
                }
            }
        }
        assert!(drift(&staging, &m, &[]).unwrap().is_empty());
    }

    #[test]
    fn special_modes_are_refused_unless_the_package_allows_them() {
        let node = Node::new();
        let specs = vec![
            ("tmp", Spec::Dir(0o1777)),
            ("tool", Spec::File(b"#!/bin/sh\n", 0o4755)),
            ("shared.txt", Spec::File(b"", 0o666)),
        ];
        let allowed = |m: &mut Manifest| {
            m.install.allow_special_modes = vec!["shared.txt".into(), "tmp".into(), "tool".into()];
        };
        let (artifact, m) = packed_with(node.dir.path(), &specs, allowed);
        node.unpack(&artifact, &UnpackOptions::default()).unwrap();
        let tree = tree_dir(&node.staging());
        assert_eq!(mode_of(&tree.join("tmp")), 0o1777);
        assert_eq!(mode_of(&tree.join("tool")), 0o4755);
        assert_eq!(mode_of(&tree.join("shared.txt")), 0o666);
        assert!(drift(&node.staging(), &m, &[]).unwrap().is_empty());

        // The same artifact with one path less allowed: the manifest is
        // refused, before anything is written.
        let node = Node::new();
        let mut m = m;
        m.install.allow_special_modes.retain(|p| p != "tool");
        let artifact = raw_artifact(
            &m,
            &[
                file("files/shared.txt", b""),
                dir("files/tmp/"),
                file("files/tool", b"#!/bin/sh\n"),
            ],
        );
        let err = node
            .unpack(&artifact, &UnpackOptions::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "`MANIFEST.toml` is invalid: the manifest lists `tool`: {}",
                rules::special_mode(Mode(0o4755))
            )
        );
        assert_eq!(err.fault(), Fault::Input);
        node.assert_untouched();

        // Not relied upon: a manifest that was never checked is refused by
        // the unpacker's own check, and a hook never may.
        let err = check_manifest(&m, &UnpackOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "entry `files/tool` is refused: {}",
                rules::special_mode(Mode(0o4755))
            )
        );
        m.hook_files.insert(
            "health".into(),
            Entry::File {
                sha256: "0".repeat(64),
                size: 0,
                mode: Mode(0o4755),
            },
        );
        m.install.allow_special_modes.push("tool".into());
        let err = check_manifest(&m, &UnpackOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entry `hooks/health` is refused: its mode 4755 has setuid, setgid, sticky or world-write bits, which a hook never may"
        );
    }

    #[test]
    fn an_existing_staging_dir_is_refused_and_left_alone() {
        let node = Node::new();
        let (artifact, _) = packed(node.dir.path(), &normal());
        let staging = node.staging();
        fs::create_dir(&staging).unwrap();
        fs::write(staging.join("keep"), b"mine").unwrap();
        let err = node
            .unpack(&artifact, &UnpackOptions::default())
            .unwrap_err();
        assert!(
            matches!(err, UnpackError::StagingExists(ref p) if p == &staging),
            "{err}"
        );
        assert_eq!(names(&staging), ["keep"]);
        assert_eq!(fs::read(staging.join("keep")).unwrap(), b"mine");

        // A missing parent is an I/O error naming it, and creates nothing.
        let orphan = node.dir.path().join("nowhere/staging");
        let err = unpack(&artifact[..], &orphan, &UnpackOptions::default(), &Silent).unwrap_err();
        assert!(err.to_string().contains("nowhere"), "{err}");
        assert!(!node.dir.path().join("nowhere").exists());
    }

    #[test]
    fn caps_are_checked_before_anything_is_written() {
        let node = Node::new();
        let (artifact, _) = packed(node.dir.path(), &normal());
        let cases = [
            (
                Limits {
                    max_entries: 4,
                    ..Limits::default()
                },
                "entry `files/app/up` goes past the entry count limit: 5, at most 4 allowed",
            ),
            (
                Limits {
                    max_total_bytes: 40,
                    ..Limits::default()
                },
                "entry `files/app/run.sh` goes past the total bytes limit: 50, at most 40 allowed",
            ),
            (
                Limits {
                    max_depth: 1,
                    ..Limits::default()
                },
                "entry `files/app/data.txt` goes past the path depth limit: 2, at most 1 allowed",
            ),
            (
                Limits {
                    max_path_len: 10,
                    ..Limits::default()
                },
                "entry `files/app/data.txt` goes past the path length (bytes) limit: 12, at most 10 allowed",
            ),
        ];
        for (limits, message) in cases {
            let options = UnpackOptions { limits };
            let err = node.unpack(&artifact, &options).unwrap_err();
            assert_eq!(err.to_string(), message);
            assert!(err.hint().is_some());
            node.assert_untouched();
        }
    }

    /// Writes a tar header for `name` (raw bytes, so the tar crate's own
    /// path checks do not interfere) and `data`.
    fn append(
        tar: &mut tar::Builder<Vec<u8>>,
        name: &[u8],
        kind: tar::EntryType,
        mode: u32,
        data: &[u8],
        link: Option<&[u8]>,
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_cksum();
        tar.append(&h, data).unwrap();
    }

    /// An entry of a hand-made artifact.
    struct Raw {
        name: &'static str,
        kind: tar::EntryType,
        mode: u32,
        data: &'static [u8],
        link: Option<&'static str>,
    }

    fn dir(name: &'static str) -> Raw {
        Raw {
            name,
            kind: tar::EntryType::Directory,
            mode: 0o755,
            data: b"",
            link: None,
        }
    }

    fn file(name: &'static str, data: &'static [u8]) -> Raw {
        Raw {
            name,
            kind: tar::EntryType::Regular,
            mode: 0o644,
            data,
            link: None,
        }
    }

    fn link(name: &'static str, kind: tar::EntryType, target: &'static str) -> Raw {
        Raw {
            name,
            kind,
            mode: 0o777,
            data: b"",
            link: Some(target),
        }
    }

    /// An artifact written by hand: `m`'s manifest, `files/`, then
    /// `entries` exactly as given.
    fn raw_artifact(m: &Manifest, entries: &[Raw]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let text = m.to_toml();
        let regular = tar::EntryType::Regular;
        append(
            &mut tar,
            b"MANIFEST.toml",
            regular,
            0o644,
            text.as_bytes(),
            None,
        );
        append(
            &mut tar,
            b"files/",
            tar::EntryType::Directory,
            0o755,
            b"",
            None,
        );
        for e in entries {
            let link = e.link.map(str::as_bytes);
            append(&mut tar, e.name.as_bytes(), e.kind, e.mode, e.data, link);
        }
        zstd::stream::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap()
    }

    fn file_entry(data: &[u8]) -> Entry {
        Entry::File {
            sha256: crate::digest::sha256_bytes(data),
            size: data.len() as u64,
            mode: Mode(0o644),
        }
    }

    fn listing(entries: &[(&str, Entry)]) -> Manifest {
        let m = manifest(
            entries
                .iter()
                .map(|(p, e)| ((*p).to_owned(), e.clone()))
                .collect(),
        );
        m.check().unwrap();
        m
    }

    /// Asserts that unpacking `artifact` is refused with a message holding
    /// `words`, leaving nothing behind.
    fn refused_with(artifact: &[u8], words: &str) {
        let node = Node::new();
        let err = node
            .unpack(artifact, &UnpackOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains(words), "{err}");
        node.assert_untouched();
    }

    #[test]
    fn data_behind_a_directory_or_symlink_header_is_refused() {
        let m = listing(&[
            ("d", Entry::Dir { mode: Mode(0o755) }),
            ("l", Entry::Symlink { target: "d".into() }),
        ]);
        let mut hidden = dir("files/d/");
        hidden.data = &[7u8; 4096];
        refused_with(
            &raw_artifact(&m, &[hidden, link("files/l", tar::EntryType::Symlink, "d")]),
            "entry `files/d` is refused: only regular files may carry data",
        );
        let mut hidden = link("files/l", tar::EntryType::Symlink, "d");
        hidden.data = b"smuggled";
        refused_with(
            &raw_artifact(&m, &[dir("files/d/"), hidden]),
            "entry `files/l` is refused: only regular files may carry data",
        );
    }

    #[test]
    fn a_repeated_files_directory_entry_is_refused() {
        let m = listing(&[("a", file_entry(b"one"))]);
        refused_with(
            &raw_artifact(&m, &[dir("files/"), file("files/a", b"one")]),
            "entry `files` is refused: it appears twice",
        );
    }

    #[test]
    fn padding_past_the_cap_after_the_archive_is_refused() {
        let m = listing(&[("a", file_entry(b"one"))]);
        let mut artifact = raw_artifact(&m, &[file("files/a", b"one")]);
        // A few KiB of zeros, as GNU tar pads, are fine.
        let padded = [
            artifact.clone(),
            zstd::stream::encode_all(&[0u8; 10240][..], 3).unwrap(),
        ]
        .concat();
        let node = Node::new();
        node.unpack(&padded, &UnpackOptions::default()).unwrap();
        // A frame of 2 MiB of zeros after the archive is not.
        let zeros = vec![0u8; 2 << 20];
        artifact.extend(zstd::stream::encode_all(&zeros[..], 3).unwrap());
        refused_with(&artifact, "not zero padding of at most 1048576 bytes");
    }

    #[test]
    fn a_digest_mismatch_in_the_last_file_removes_everything() {
        let node = Node::new();
        let mut m = listing(&[("a", file_entry(b"one")), ("b", file_entry(b"two"))]);
        m.files.insert("b".into(), file_entry(b"TWO"));
        let artifact = raw_artifact(&m, &[file("files/a", b"one"), file("files/b", b"two")]);
        let err = node
            .unpack(&artifact, &UnpackOptions::default())
            .unwrap_err();
        assert!(
            matches!(
                &err,
                UnpackError::Archive(ArchiveError::Mismatch { path, what: "sha256", .. })
                    if path == "files/b"
            ),
            "{err}"
        );
        assert_eq!(err.fault(), Fault::Input);
        node.assert_untouched();
    }

    #[test]
    fn hostile_entries_are_refused_and_nothing_is_left() {
        use tar::EntryType as T;
        let x = || file_entry(b"x");
        let dir_entry = || Entry::Dir { mode: Mode(0o755) };
        let to = |target: &str| Entry::Symlink {
            target: target.into(),
        };
        let cases: Vec<(&str, Manifest, Vec<Raw>, &str)> = vec![
            (
                "dot-dot inside files/",
                listing(&[("x", x())]),
                vec![file("files/../../outside/x", b"x")],
                "`..` components are not allowed",
            ),
            (
                "dot-dot at the top",
                listing(&[("x", x())]),
                vec![file("../outside/x", b"x")],
                "only `hooks/` and `files/` may follow the manifest",
            ),
            (
                "absolute",
                listing(&[("x", x())]),
                vec![file("/tmp/x", b"x")],
                "only `hooks/` and `files/` may follow the manifest",
            ),
            (
                "absolute inside files/",
                listing(&[("x", x())]),
                vec![file("files//etc/x", b"x")],
                "entry `files//etc/x` is refused: absolute paths are not allowed",
            ),
            (
                "a symlink to .. then a file through it",
                listing(&[("d", dir_entry()), ("d/a", to(".."))]),
                vec![
                    dir("files/d/"),
                    link("files/d/a", T::Symlink, ".."),
                    file("files/d/a/x", b"x"),
                ],
                "entry `files/d/a/x` is refused: it is not listed in the manifest",
            ),
            (
                "a symlink where the manifest has a directory",
                listing(&[("a", dir_entry()), ("a/x", x())]),
                vec![link("files/a", T::Symlink, ".."), file("files/a/x", b"x")],
                "entry `files/a` differs from the manifest: type is symlink, the manifest says dir",
            ),
            (
                "a child before its parent",
                listing(&[("a", dir_entry()), ("a/x", x())]),
                vec![file("files/a/x", b"x"), dir("files/a/")],
                "entry `files/a/x` is refused: its parent directory does not come before it",
            ),
            (
                "a symlink then a file of the same name",
                listing(&[("a", to("b")), ("b", x())]),
                vec![
                    link("files/a", T::Symlink, "b"),
                    file("files/b", b"x"),
                    file("files/a", b"x"),
                ],
                "entry `files/a` is refused: it appears twice in the artifact",
            ),
            (
                "an absolute symlink",
                listing(&[("a", to("b"))]),
                vec![link("files/a", T::Symlink, "/outside")],
                "points to the absolute path",
            ),
            (
                "a hard link",
                listing(&[("x", x()), ("y", x())]),
                vec![file("files/x", b"x"), link("files/y", T::Link, "files/x")],
                "entry `files/y` is refused: hard links are not allowed",
            ),
            (
                "a fifo",
                listing(&[("x", x())]),
                vec![Raw {
                    name: "files/x",
                    kind: T::Fifo,
                    mode: 0o644,
                    data: b"",
                    link: None,
                }],
                "entry `files/x` is refused: fifos are not allowed",
            ),
            (
                "a device",
                listing(&[("x", x())]),
                vec![Raw {
                    name: "files/x",
                    kind: T::Char,
                    mode: 0o644,
                    data: b"",
                    link: None,
                }],
                "entry `files/x` is refused: device nodes are not allowed",
            ),
            (
                "an entry not in the manifest",
                listing(&[("x", x())]),
                vec![file("files/x", b"x"), file("files/extra", b"x")],
                "entry `files/extra` is refused: it is not listed in the manifest",
            ),
            (
                "an entry missing from the artifact",
                listing(&[("x", x()), ("y", x())]),
                vec![file("files/x", b"x")],
                "`files/y` is in the manifest but not in the artifact",
            ),
        ];
        for (what, m, entries, message) in cases {
            let node = Node::new();
            let artifact = raw_artifact(&m, &entries);
            let err = node
                .unpack(&artifact, &UnpackOptions::default())
                .expect_err(what);
            assert!(
                err.to_string().contains(message),
                "{what}: got `{err}`, expected `{message}`"
            );
            assert_eq!(err.fault(), Fault::Input, "{what}");
            node.assert_untouched();
        }
    }

    #[test]
    fn many_directories_reopen_their_handles() {
        let node = Node::new();
        let names: Vec<(String, String)> = (0..MAX_OPEN_DIRS + 40)
            .map(|i| (format!("d{i:04}"), format!("d{i:04}/f")))
            .collect();
        let mut specs = vec![];
        for (d, f) in &names {
            specs.push((d.as_str(), Spec::Dir(0o755)));
            specs.push((f.as_str(), Spec::File(b"data", 0o644)));
        }
        // A symlink in the first directory, created after every handle
        // was dropped at least once.
        specs.push(("d0000/l", Spec::Link("f")));
        let (artifact, m) = packed(node.dir.path(), &specs);
        node.unpack(&artifact, &UnpackOptions::default()).unwrap();
        assert!(drift(&node.staging(), &m, &[]).unwrap().is_empty());
    }

    #[test]
    fn drift_finds_every_kind_of_change() {
        let node = Node::new();
        let (artifact, m) = packed(node.dir.path(), &normal());
        node.unpack(&artifact, &UnpackOptions::default()).unwrap();
        let release = node.staging();
        let tree = tree_dir(&release);
        assert_eq!(drift(&release, &m, &[]).unwrap(), []);

        // Node-local paths are not drift.
        symlink("/var/log/webapp", tree.join("log")).unwrap();
        fs::write(tree.join(".env"), b"SECRET=1").unwrap();
        assert_eq!(drift(&release, &m, &[".env"]).unwrap(), []);

        fs::write(tree.join("app/data.txt"), b"group-writablE\n").unwrap();
        fs::write(tree.join("secret"), b"longer secret\n").unwrap();
        fs::set_permissions(tree.join("app/run.sh"), fs::Permissions::from_mode(0o777)).unwrap();
        fs::remove_file(tree.join("private/key")).unwrap();
        fs::write(tree.join("empty/extra"), b"").unwrap();
        fs::remove_file(tree.join("ro/inside")).unwrap();
        fs::remove_dir(tree.join("ro")).unwrap();
        fs::remove_file(tree.join("current")).unwrap();
        symlink("secret", tree.join("current")).unwrap();
        fs::remove_file(tree.join("app/up")).unwrap();
        fs::write(tree.join("app/up"), b"").unwrap();
        fs::remove_dir(tree.join("team")).unwrap();
        symlink("app", tree.join("team")).unwrap();
        fs::write(hook_path(&release, "health"), b"#!/bin/sh\nexit 1\n").unwrap();

        let found = drift(&release, &m, &[".env"]).unwrap();
        let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
        let digest = |data: &[u8]| crate::digest::sha256_bytes(data);
        assert_eq!(
            shown,
            [
                format!(
                    "`app/data.txt` has changed: its sha256 is {}, the manifest says {}",
                    digest(b"group-writablE\n"),
                    digest(b"group-writable\n")
                ),
                "`app/run.sh` has mode 0777, the manifest says 0755".to_owned(),
                "`app/up` is a file, the manifest says a symlink".to_owned(),
                "`current` points to `secret`, the manifest says `app/run.sh`".to_owned(),
                "`empty/extra` (a file) is not in the manifest".to_owned(),
                "`private/key` is missing (a file in the manifest)".to_owned(),
                "`ro` is missing (a dir in the manifest)".to_owned(),
                "`secret` is 14 bytes, the manifest says 7".to_owned(),
                "`team` is a symlink, the manifest says a dir".to_owned(),
                format!(
                    "hook `health` has changed: its sha256 is {}, the manifest says {}",
                    digest(b"#!/bin/sh\nexit 1\n"),
                    digest(b"#!/bin/sh\nexit 0\n")
                ),
            ]
        );
        assert_eq!(
            found[6],
            Drift {
                section: Section::Files,
                path: "ro".into(),
                change: Change::Missing { expected: "dir" },
            }
        );

        // Without the hooks directory, every hook is missing.
        fs::remove_dir_all(release.join("hooks")).unwrap();
        let found = drift(&release, &m, &[".env"]).unwrap();
        assert_eq!(
            found.last().unwrap().to_string(),
            "hook `health` is missing (a file in the manifest)"
        );
    }

    #[test]
    fn drift_finds_a_damaged_manifest_and_a_missing_tree() {
        let node = Node::new();
        let (artifact, m) = packed(node.dir.path(), &normal());
        node.unpack(&artifact, &UnpackOptions::default()).unwrap();
        let release = node.staging();
        let shown = |release: &Path| -> Vec<String> {
            drift(release, &m, &[])
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        // Written again as it was, byte for byte or not, it is the same.
        let text = fs::read_to_string(manifest_path(&release)).unwrap();
        fs::write(manifest_path(&release), format!("{text}\n\n")).unwrap();
        assert_eq!(shown(&release), Vec::<String>::new());

        let edited = text.replacen("version = ", "version = \"9\"\nx = ", 1);
        fs::write(manifest_path(&release), &edited).unwrap();
        assert_eq!(
            shown(&release),
            [format!(
                "the release's `MANIFEST.toml` no longer reads as the manifest installed (its sha256 is {})",
                crate::digest::sha256_bytes(edited.as_bytes())
            )]
        );
        fs::remove_file(manifest_path(&release)).unwrap();
        symlink("/etc/passwd", manifest_path(&release)).unwrap();
        assert_eq!(
            shown(&release),
            ["the release's `MANIFEST.toml` is a symlink, not a file"]
        );
        fs::remove_file(manifest_path(&release)).unwrap();
        assert_eq!(
            shown(&release),
            ["the release's `MANIFEST.toml` is missing"]
        );

        // Without files/, each topmost entry is missing.
        fs::write(manifest_path(&release), &text).unwrap();
        fs::remove_dir_all(tree_dir(&release)).unwrap();
        let top: Vec<&String> = m.files.keys().filter(|k| !k.contains('/')).collect();
        let found = drift(&release, &m, &[]).unwrap();
        assert_eq!(found.len(), top.len(), "{found:?}");
        assert!(found.iter().all(|d| d.section == Section::Files
            && matches!(d.change, Change::Missing { .. })
            && top.contains(&&d.path)));
    }
}
