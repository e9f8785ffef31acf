//! `packager build`: reads `package.toml`, scans the payload (refusing what
//! must not ship: secrets, special files, symlinks that leave it), and packs
//! `<name>_<version>+<build>.tar.zst` deterministically, hashing every file
//! in the same read that packs it. The artifact appears under its final
//! name only once complete.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, mpsc};

use berth_core::archive::{self, PackSources};
use berth_core::digest;
use berth_core::fsutil::{self, IoResultExt, PathError};
use berth_core::manifest::{self, Entry, Manifest, ManifestError, Mode, PackageInfo, Source};
use berth_core::name::{self, ReleaseId};
use berth_core::package::{PACKAGE_FILE, PackageFile};
use berth_core::progress::Progress;
use berth_core::rules;

use crate::Error;

/// Where the build number, source and timestamps come from besides flags.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The directory holding package.toml.
    pub dir: PathBuf,
    /// `--build`, if given.
    pub build: Option<String>,
    /// Where the artifact goes.
    pub out_dir: PathBuf,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub artifact: PathBuf,
    pub release: ReleaseId,
    pub sha256: String,
    pub size: u64,
    pub files: usize,
    pub payload_bytes: u64,
}

/// The CI variables that give a build number, in order of preference.
pub const BUILD_VARS: [&str; 2] = ["BUILD_NUMBER", "CI_PIPELINE_IID"];

/// Builds the artifact described by `<dir>/package.toml`.
pub fn build(
    opts: &BuildOptions,
    env: Env<'_>,
    progress: &dyn Progress,
) -> Result<BuildReport, Error> {
    let package_path = opts.dir.join(PACKAGE_FILE);
    let package = PackageFile::load(&package_path)?;
    let build = build_number(opts.build.as_deref(), env)?;
    let mtime = match env("SOURCE_DATE_EPOCH") {
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| Error::SourceDateEpoch { value: v })?,
        None => 0,
    };
    let release = ReleaseId::new(
        package.package.name.get_ref(),
        package.package.version.get_ref(),
        build,
    )?;

    let hooks = package.hooks();
    let mut hook_sources = Vec::new();
    let mut hook_files = BTreeMap::new();
    for (hook, rel) in hooks.iter() {
        let path = opts.dir.join(rel);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::HookMissing { hook, path });
            }
            Err(e) => return Err(PathError::new("cannot read hook", &path, e).into()),
        };
        if !meta.is_file() {
            return Err(Error::HookNotFile { hook, path });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o111 == 0 {
            return Err(Error::HookNotExecutable { hook, path });
        }
        let (sha256, size) = digest::sha256_file(&path).at("cannot read hook", &path)?;
        hook_files.insert(
            hook.to_owned(),
            Entry::File {
                sha256,
                size,
                mode: Mode(mode),
            },
        );
        hook_sources.push((hook.to_owned(), path));
    }

    let payload_root = opts.dir.join(package.payload());
    // The files' digests are filled in by `archive::pack`, from the bytes
    // it packs. Git, asked about the source, answers meanwhile.
    let (files, source) = std::thread::scope(|s| {
        let allow = Allow {
            secrets: &package.package.allow_secrets,
            special_modes: &package.install.get_ref().allow_special_modes,
        };
        let root = &payload_root;
        let scan = s.spawn(move || scan_payload(root, allow));
        let source = source_info(&opts.dir, package.source.url.as_deref(), env);
        (scan.join().expect("no panics while scanning"), source)
    });
    let files = files?;

    let mut manifest = Manifest {
        format: manifest::FORMAT,
        package: PackageInfo {
            name: release.name.clone(),
            version: release.version.clone(),
            build,
            description: package.package.description.clone(),
        },
        source,
        install: package.install.get_ref().clone(),
        hooks: hooks.in_artifact(),
        rollback: package.rollback.clone(),
        hook_files,
        files,
    };
    // What the agent would refuse, the packager refuses first, in the same
    // words (names equal once normalized, a hook with special bits).
    manifest.check().map_err(|e| match e {
        ManifestError::Entry { path, reason } => Error::PayloadEntry { path, reason },
        e => Error::PayloadEntry {
            path: manifest::MANIFEST_PATH.into(),
            reason: e.to_string(),
        },
    })?;

    fsutil::create_dir_all_synced(&opts.out_dir)?;
    let artifact = opts.out_dir.join(release.artifact_file_name());
    let tmp = fsutil::temp_file_in(&opts.out_dir)?;
    // Where the payload is compressed before the manifest can be written:
    // anonymous, so it vanishes with the process whatever happens.
    let scratch =
        tempfile::tempfile_in(&opts.out_dir).at("cannot create a temp file in", &opts.out_dir)?;
    let sources = PackSources {
        hooks: hook_sources,
        payload_root,
        mtime,
    };
    // One zstd worker per core, up to 8: each worker adds buffers (see
    // `archive::ZSTD_JOB_SIZE`), and the one thread that reads, hashes and
    // feeds them could not keep many more busy. The bytes do not depend on
    // the count.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8) as u32);
    let sync_file = tmp.as_file().try_clone().at("cannot write", tmp.path())?;
    let (tmp, packed) = std::thread::scope(|s| -> Result<_, Error> {
        let (kick, requests) = mpsc::sync_channel::<()>(1);
        let syncer = s.spawn(move || -> std::io::Result<()> {
            for () in requests {
                sync_file.sync_data()?;
            }
            Ok(())
        });
        let out = SyncAhead {
            inner: tmp,
            unsynced: 0,
            kick,
        };
        // `pack` writes in large chunks: no buffering needed.
        let packed = archive::pack(&mut manifest, &sources, scratch, out, threads, progress)
            .map_err(Error::from)
            .map(|(out, packed)| (out.inner, packed));
        // The sender is gone with the writer: the syncer ends after its last
        // request.
        let synced = syncer.join().expect("no panics while syncing");
        let (tmp, packed) = packed?;
        synced.at("cannot sync", tmp.path())?;
        Ok((tmp, packed))
    })?;
    fsutil::persist(tmp, &artifact)?;
    Ok(BuildReport {
        artifact,
        release,
        sha256: packed.sha256,
        size: packed.size,
        files: manifest.files.len(),
        payload_bytes: manifest.payload_bytes(),
    })
}

/// Bytes written between two background `fdatasync` calls of [`SyncAhead`].
const SYNC_EVERY: u64 = 16 << 20;

/// Writes the artifact's temp file and, every [`SYNC_EVERY`] bytes, asks a
/// background thread to `fdatasync` it. The build still ends with a full
/// `fsync` before the rename that publishes the artifact, but by then
/// little is left to flush: the disk wrote while the CPUs compressed. A
/// failed background sync fails the build (the kernel may report a write
/// error to only one `fsync` caller).
struct SyncAhead<W> {
    inner: W,
    unsynced: u64,
    kick: mpsc::SyncSender<()>,
}

impl<W: Write> Write for SyncAhead<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY {
            self.unsynced = 0;
            // Full means a sync is already pending, which will cover this.
            let _ = self.kick.try_send(());
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn build_number(flag: Option<&str>, env: Env<'_>) -> Result<u64, Error> {
    if let Some(b) = flag {
        return Ok(name::parse_build(b)?);
    }
    for var in BUILD_VARS {
        if let Some(v) = env(var).filter(|v| !v.trim().is_empty()) {
            return name::parse_build(&v).map_err(|invalid| Error::BuildFromEnv { var, invalid });
        }
    }
    Err(Error::NoBuildNumber)
}

/// Walks the payload in sorted order, refusing what must not ship, and
/// returns the manifest's `[files]` table with each regular file's size and
/// mode as found now and its digest still empty, for `archive::pack`.
fn scan_payload(root: &Path, allow: Allow<'_>) -> Result<BTreeMap<String, Entry>, Error> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::PayloadNotDir {
                path: root.to_owned(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::PayloadMissing {
                path: root.to_owned(),
            });
        }
        Err(e) => return Err(PathError::new("cannot read payload", root, e).into()),
    }
    // Directories are listed and their entries checked on all cores; the
    // results are then put together in the order of a sequential walk, so
    // the first refusal reported is the same as one thread would find.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let work = Mutex::new(Work {
        queue: vec![(root.to_owned(), String::new())],
        busy: 0,
    });
    let changed = Condvar::new();
    let listed = Mutex::new(HashMap::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let mut w = work.lock().expect("no panics while scanning");
                    let (dir, rel) = loop {
                        if let Some(next) = w.queue.pop() {
                            break next;
                        }
                        if w.busy == 0 {
                            return;
                        }
                        w = changed.wait(w).expect("no panics while scanning");
                    };
                    w.busy += 1;
                    drop(w);
                    let (result, subdirs) = list_dir(&dir, &rel, allow);
                    listed
                        .lock()
                        .expect("no panics while scanning")
                        .insert(rel, result);
                    let mut w = work.lock().expect("no panics while scanning");
                    w.queue.extend(subdirs);
                    w.busy -= 1;
                    changed.notify_all();
                }
            });
        }
    });
    let mut listed = listed.into_inner().expect("no panics while scanning");
    let mut files = BTreeMap::new();
    let mut secrets = Vec::new();
    assemble(&mut listed, "", &mut files, &mut secrets)?;
    if !secrets.is_empty() {
        return Err(Error::Secrets { paths: secrets });
    }
    Ok(files)
}

/// What package.toml allows by path: files that look like secrets, and
/// special mode bits.
#[derive(Debug, Clone, Copy)]
struct Allow<'a> {
    secrets: &'a [String],
    special_modes: &'a [String],
}

/// Directories waiting to be listed, and how many are being listed.
struct Work {
    queue: Vec<ToList>,
    busy: usize,
}

/// A directory to list: its path, and the same relative to the payload root.
type ToList = (PathBuf, String);

/// A directory's entries, sorted by name, or why it could not be read.
type Listing = Result<Vec<Listed>, Error>;

/// An entry of a listed directory: its path relative to the payload root,
/// what it is or why it is refused, and whether it looks like a secret.
struct Listed {
    rel: String,
    entry: Result<Entry, Error>,
    secret: bool,
}

/// Puts the listing of the directory `rel` and, after each subdirectory,
/// its own, into `files` and `secrets`: the order of a sequential walk.
fn assemble(
    listed: &mut HashMap<String, Listing>,
    rel: &str,
    files: &mut BTreeMap<String, Entry>,
    secrets: &mut Vec<String>,
) -> Result<(), Error> {
    let entries = listed.remove(rel).expect("every directory was listed")?;
    for Listed { rel, entry, secret } in entries {
        let entry = entry?;
        if secret {
            secrets.push(rel.clone());
        }
        let is_dir = matches!(entry, Entry::Dir { .. });
        files.insert(rel.clone(), entry);
        if is_dir {
            assemble(listed, &rel, files, secrets)?;
        }
    }
    Ok(())
}

/// Lists the directory `dir`, whose path relative to the payload root is
/// `prefix`, sorted by name, checking each entry; returns the listing and
/// the subdirectories to list next. `std::fs` reads metadata relative to
/// the open directory, which is cheaper than resolving each full path.
fn list_dir(dir: &Path, prefix: &str, allow: Allow<'_>) -> (Listing, Vec<ToList>) {
    let children = fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| (e.file_name(), e)))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .at("cannot read payload", dir);
    let mut children = match children {
        Ok(c) => c,
        Err(e) => return (Err(e.into()), Vec::new()),
    };
    children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(children.len());
    let mut subdirs = Vec::new();
    for (name, child) in children {
        let rel = match name.to_str() {
            Some(name) if prefix.is_empty() => name.to_owned(),
            Some(name) => format!("{prefix}/{name}"),
            None => Path::new(prefix).join(&name).to_string_lossy().into_owned(),
        };
        let entry = check_entry(
            &rel,
            name.to_str().is_some(),
            &child.path(),
            || child.metadata(),
            allow.special_modes,
        );
        let secret = matches!(&entry, Ok(e) if !matches!(e, Entry::Dir { .. }))
            && looks_like_secret(name.to_str().unwrap_or_default())
            && !allowed(&rel, allow.secrets);
        if let Ok(Entry::Dir { .. }) = entry {
            subdirs.push((child.path(), rel.clone()));
        }
        out.push(Listed { rel, entry, secret });
    }
    (Ok(out), subdirs)
}

/// What the payload entry at `path` (`rel` from the root) is, or why it
/// must not ship: in the words of [`rules`], which the agent uses too.
fn check_entry(
    rel: &str,
    utf8: bool,
    path: &Path,
    metadata: impl FnOnce() -> std::io::Result<fs::Metadata>,
    allow_special_modes: &[String],
) -> Result<Entry, Error> {
    let refused = |reason: String| Error::PayloadEntry {
        path: rel.to_owned(),
        reason,
    };
    if !utf8 {
        return Err(refused(rules::NAME_NOT_UTF8.into()));
    }
    if let Err(reason) = manifest::check_entry_path(rel) {
        return Err(refused(reason.into()));
    }
    let meta = metadata().at("cannot read payload entry", path)?;
    let ft = meta.file_type();
    let mode = Mode(meta.permissions().mode() & 0o7777);
    let entry = if ft.is_dir() {
        Entry::Dir { mode }
    } else if ft.is_symlink() {
        let target = fs::read_link(path).at("cannot read symlink", path)?;
        let Some(target) = target.to_str().map(str::to_owned) else {
            return Err(refused(rules::TARGET_NOT_UTF8.into()));
        };
        if let Err(reason) = manifest::check_symlink_target(rel, &target) {
            return Err(Error::EscapingSymlink {
                path: rel.to_owned(),
                target,
                reason,
            });
        }
        return Ok(Entry::Symlink { target });
    } else if ft.is_file() {
        Entry::File {
            sha256: String::new(),
            size: meta.len(),
            mode,
        }
    } else {
        let rule = if ft.is_socket() {
            rules::SOCKET
        } else if ft.is_fifo() {
            rules::FIFO
        } else if ft.is_block_device() || ft.is_char_device() {
            rules::DEVICE
        } else {
            rules::OTHER_TYPE
        };
        return Err(refused(rule.into()));
    };
    if let Err(reason) = rules::check_mode(rel, mode, allow_special_modes) {
        return Err(Error::SpecialMode {
            path: rel.to_owned(),
            reason,
        });
    }
    Ok(entry)
}

/// File names that usually hold credentials.
pub fn looks_like_secret(file_name: &str) -> bool {
    let n = file_name.to_ascii_lowercase();
    let env_template = [".env.example", ".env.sample", ".env.template", ".env.dist"];
    if n == ".env" || (n.starts_with(".env.") && !env_template.contains(&n.as_str())) {
        return true;
    }
    if [".pem", ".key", ".p12", ".pfx"]
        .iter()
        .any(|ext| n.ends_with(ext))
    {
        return true;
    }
    ["id_rsa", "id_dsa", "id_ecdsa", "id_ed25519"]
        .iter()
        .any(|p| n.starts_with(p))
        && !n.ends_with(".pub")
}

/// Whether `rel` is allowed by path: listed itself or below a listed directory.
fn allowed(rel: &str, allow: &[String]) -> bool {
    allow.iter().any(|a| {
        rel == a
            || rel
                .strip_prefix(a.as_str())
                .is_some_and(|r| r.starts_with('/'))
    })
}

/// `[source]` from CI variables, falling back to git in the package's
/// directory. Credentials in URLs are dropped.
fn source_info(dir: &Path, url: Option<&str>, env: Env<'_>) -> Source {
    let first = |vars: &[&str]| {
        vars.iter()
            .find_map(|v| env(v).filter(|s| !s.trim().is_empty()))
    };
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    let commit = first(&["GIT_COMMIT", "CI_COMMIT_SHA", "GITHUB_SHA"])
        .or_else(|| git(&["rev-parse", "HEAD"]));
    let branch = first(&["GIT_BRANCH", "CI_COMMIT_REF_NAME", "GITHUB_REF_NAME"])
        .or_else(|| git(&["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD"));
    let url = url
        .map(str::to_owned)
        .or_else(|| first(&["GIT_URL", "CI_PROJECT_URL"]))
        .or_else(|| {
            let server = env("GITHUB_SERVER_URL")?;
            let repo = env("GITHUB_REPOSITORY")?;
            Some(format!("{server}/{repo}"))
        })
        .or_else(|| git(&["config", "--get", "remote.origin.url"]))
        .map(|u| strip_credentials(&u));
    Source {
        commit,
        branch,
        url,
    }
}

/// `https://user:token@host/x` -> `https://host/x`.
fn strip_credentials(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if let Some((_, host)) = authority.rsplit_once('@') {
            let sep = if path.is_empty() && !rest.contains('/') {
                ""
            } else {
                "/"
            };
            return format!("{scheme}://{host}{sep}{path}");
        }
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for s in [
            ".env",
            ".env.production",
            "server.pem",
            "tls.KEY",
            "id_rsa",
            "id_ed25519_deploy",
            "cert.p12",
        ] {
            assert!(looks_like_secret(s), "{s}");
        }
        for s in [
            ".env.example",
            "id_rsa.pub",
            "keys.txt",
            "environment.js",
            "monkey",
            "env",
        ] {
            assert!(!looks_like_secret(s), "{s}");
        }
        assert!(allowed("certs/ca.pem", &["certs".into()]));
        assert!(allowed("certs/ca.pem", &["certs/ca.pem".into()]));
        assert!(!allowed("certsx/ca.pem", &["certs".into()]));
    }

    #[test]
    fn credentials_are_stripped() {
        assert_eq!(
            strip_credentials("https://u:t@git.example.com/a.git"),
            "https://git.example.com/a.git"
        );
        assert_eq!(
            strip_credentials("https://git.example.com/a.git"),
            "https://git.example.com/a.git"
        );
        assert_eq!(strip_credentials("git@host:a.git"), "git@host:a.git");
    }

    #[test]
    fn build_number_sources() {
        let none = |_: &str| None;
        assert_eq!(build_number(Some("7"), &none).unwrap(), 7);
        assert!(matches!(
            build_number(None, &none),
            Err(Error::NoBuildNumber)
        ));
        let jenkins = |v: &str| (v == "BUILD_NUMBER").then(|| "12".to_owned());
        assert_eq!(build_number(None, &jenkins).unwrap(), 12);
        let gitlab = |v: &str| (v == "CI_PIPELINE_IID").then(|| "0".to_owned());
        assert!(matches!(
            build_number(None, &gitlab),
            Err(Error::BuildFromEnv {
                var: "CI_PIPELINE_IID",
                ..
            })
        ));
    }
}
