//! `packager build`: reads `package.toml`, scans the payload (refusing what
//! must not ship: secrets, special files, symlinks that leave it), hashes
//! every file, and packs `<name>_<version>+<build>.tar.zst` deterministically.
//! The artifact appears under its final name only once complete.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

use berth_core::archive::{self, Fingerprint, HashedFile, PackSources};
use berth_core::digest;
use berth_core::fsutil::{self, IoResultExt, PathError};
use berth_core::manifest::{self, Entry, Manifest, Mode, PackageInfo, Source};
use berth_core::name::{self, ReleaseId};
use berth_core::package::{PACKAGE_FILE, PackageFile};
use berth_core::progress::Progress;

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
    let (files, fingerprints) =
        scan_and_hash(&payload_root, &package.package.allow_secrets, progress)?;

    let manifest = Manifest {
        format: manifest::FORMAT,
        package: PackageInfo {
            name: release.name.clone(),
            version: release.version.clone(),
            build,
            description: package.package.description.clone(),
        },
        source: source_info(&opts.dir, package.source.url.as_deref(), env),
        install: package.install.get_ref().clone(),
        hooks: hooks.in_artifact(),
        rollback: package.rollback.clone(),
        hook_files,
        files,
    };
    // What the agent would refuse, the packager refuses first.
    manifest.check().map_err(|e| Error::PayloadEntry {
        path: manifest::MANIFEST_PATH.into(),
        reason: e.to_string(),
    })?;

    fsutil::create_dir_all_synced(&opts.out_dir)?;
    let artifact = opts.out_dir.join(release.artifact_file_name());
    let tmp = fsutil::temp_file_in(&opts.out_dir)?;
    let sources = PackSources {
        hooks: hook_sources,
        payload_root,
        mtime,
        fingerprints,
    };
    // One zstd worker per core, up to 8: each worker adds buffers (see
    // `archive::ZSTD_JOB_SIZE`), and the one thread that reads, checks and
    // feeds them (about 1 GB/s) could not keep many more busy. The bytes do
    // not depend on the count.
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
        let out = std::io::BufWriter::with_capacity(1 << 20, out);
        let packed = archive::pack(&manifest, &sources, out, threads, progress)
            .map_err(Error::from)
            .and_then(|(out, packed)| {
                let out = out
                    .into_inner()
                    .map_err(|e| PathError::new("cannot write", &artifact, e.into_error()))?;
                Ok((out.inner, packed))
            });
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

/// A payload entry before hashing.
enum Scanned {
    Dir(Mode),
    Symlink(String),
    /// The mode and the file's number in the order `on_file` saw it.
    File(Mode, usize),
}

/// Walks the payload in sorted order, refusing what must not ship. Each
/// regular file that passes is handed to `on_file` (its number, its path,
/// its size) as soon as it is found, so that hashing overlaps the walk.
fn scan_payload(
    root: &Path,
    allow_secrets: &[String],
    on_file: &mut dyn FnMut(usize, PathBuf, u64),
) -> Result<BTreeMap<String, Scanned>, Error> {
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
    let mut out = BTreeMap::new();
    let mut secrets = Vec::new();
    let mut files = 0;
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_owned();
            PathError::new("cannot read payload", &path, e.into())
        })?;
        let rel_path = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let Some(rel) = rel_path.to_str().map(str::to_owned) else {
            return Err(Error::PayloadEntry {
                path: rel_path.to_string_lossy().into_owned(),
                reason: "its name is not valid UTF-8".into(),
            });
        };
        if let Err(reason) = manifest::check_entry_path(&rel) {
            return Err(Error::PayloadEntry {
                path: rel,
                reason: reason.into(),
            });
        }
        let meta = entry
            .path()
            .symlink_metadata()
            .at("cannot read payload entry", entry.path())?;
        let ft = meta.file_type();
        let mode = meta.permissions().mode() & 0o7777;
        let scanned = if ft.is_dir() {
            Scanned::Dir(Mode(mode))
        } else if ft.is_symlink() {
            let target = fs::read_link(entry.path()).at("cannot read symlink", entry.path())?;
            let Some(target) = target.to_str().map(str::to_owned) else {
                return Err(Error::PayloadEntry {
                    path: rel,
                    reason: "its symlink target is not valid UTF-8".into(),
                });
            };
            if let Err(reason) = manifest::check_symlink_target(&rel, &target) {
                return Err(Error::EscapingSymlink {
                    path: rel,
                    target,
                    reason,
                });
            }
            Scanned::Symlink(target)
        } else if ft.is_file() {
            // Numbered below, once it passed every check.
            Scanned::File(Mode(mode), 0)
        } else {
            let kind = if ft.is_socket() {
                "a socket"
            } else if ft.is_fifo() {
                "a fifo"
            } else if ft.is_block_device() || ft.is_char_device() {
                "a device node"
            } else {
                "not a file, directory or symlink"
            };
            return Err(Error::PayloadEntry {
                path: rel,
                reason: format!("it is {kind}"),
            });
        };
        if mode & 0o7000 != 0 && !ft.is_symlink() {
            return Err(Error::PayloadEntry {
                path: rel,
                reason: format!(
                    "its mode {:04o} has the setuid, setgid or sticky bit; clear it (`chmod ug-s,o-t`)",
                    mode
                ),
            });
        }
        if !ft.is_dir()
            && looks_like_secret(entry.file_name().to_str().unwrap_or_default())
            && !allowed(&rel, allow_secrets)
        {
            secrets.push(rel.clone());
        }
        let scanned = match scanned {
            Scanned::File(mode, _) => {
                on_file(files, entry.into_path(), meta.len());
                files += 1;
                Scanned::File(mode, files - 1)
            }
            other => other,
        };
        out.insert(rel, scanned);
    }
    if !secrets.is_empty() {
        return Err(Error::Secrets { paths: secrets });
    }
    Ok(out)
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

/// The manifest's `[files]` table, and each file's fingerprint by path.
type HashedPayload = (BTreeMap<String, Entry>, HashMap<String, Fingerprint>);

/// Scans the payload (see [`scan_payload`]) and hashes every regular file
/// on all cores while the scan goes on; returns the manifest's `[files]`
/// table and each file's fingerprint, with which packing checks that the
/// file did not change since (see [`archive::Fingerprint`]). A scan error
/// wins over a read error, as if the scan had come first.
fn scan_and_hash(
    root: &Path,
    allow_secrets: &[String],
    progress: &dyn Progress,
) -> Result<HashedPayload, Error> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let (tx, rx) = mpsc::channel::<(usize, PathBuf)>();
    let rx = Mutex::new(rx);
    let failed = AtomicBool::new(false);
    // The total is known only once the scan is over: bytes hashed before
    // then are held back and reported when the bar starts.
    let progress = DeferredProgress {
        inner: progress,
        pending: Mutex::new(Some(0)),
    };
    let (scanned, hashed) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<Vec<(usize, HashedFile)>, PathError> {
                    let mut buf = vec![0u8; archive::READ_BUFFER];
                    let mut done = Vec::new();
                    loop {
                        let job = rx.lock().expect("no panics while hashing").recv();
                        let Ok((i, path)) = job else {
                            return Ok(done);
                        };
                        if failed.load(Ordering::Relaxed) {
                            continue;
                        }
                        match archive::hash_file(&path, &mut buf, &progress) {
                            Ok(h) => done.push((i, h)),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(PathError::new("cannot read", &path, e));
                            }
                        }
                    }
                })
            })
            .collect();
        let mut total = 0u64;
        let scanned = scan_payload(root, allow_secrets, &mut |i, path, size| {
            // The receiving end is gone only if every worker failed; the
            // failure is reported below.
            let _ = tx.send((i, path));
            total += size;
        });
        drop(tx);
        if scanned.is_err() {
            failed.store(true, Ordering::Relaxed);
        } else {
            progress.start("hashing", total);
        }
        let hashed: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().expect("no panics while hashing"))
            .collect();
        (scanned, hashed)
    });
    let scanned = scanned?;
    progress.finish();
    let mut by_number: Vec<Option<HashedFile>> = Vec::new();
    for done in hashed {
        for (i, h) in done? {
            if by_number.len() <= i {
                by_number.resize(i + 1, None);
            }
            by_number[i] = Some(h);
        }
    }
    let mut fingerprints = HashMap::with_capacity(by_number.len());
    let mut out = BTreeMap::new();
    for (rel, s) in scanned {
        let entry = match s {
            Scanned::Dir(mode) => Entry::Dir { mode },
            Scanned::Symlink(target) => Entry::Symlink { target },
            Scanned::File(mode, i) => {
                let h = by_number
                    .get_mut(i)
                    .and_then(Option::take)
                    .expect("every file was hashed");
                fingerprints.insert(rel.clone(), h.fingerprint);
                Entry::File {
                    sha256: h.sha256,
                    size: h.size,
                    mode,
                }
            }
        };
        out.insert(rel, entry);
    }
    Ok((out, fingerprints))
}

/// Passes progress on once the phase has started, holding back (and then
/// reporting at once) what was done before its total was known.
struct DeferredProgress<'a> {
    inner: &'a dyn Progress,
    /// Bytes done before `start`; `None` once started.
    pending: Mutex<Option<u64>>,
}

impl Progress for DeferredProgress<'_> {
    fn start(&self, phase: &str, total_bytes: u64) {
        let mut pending = self.pending.lock().expect("no panics while reporting");
        self.inner.start(phase, total_bytes);
        if let Some(done) = pending.take().filter(|&n| n > 0) {
            self.inner.advance(done);
        }
    }

    fn advance(&self, bytes: u64) {
        let mut pending = self.pending.lock().expect("no panics while reporting");
        match pending.as_mut() {
            Some(done) => *done += bytes,
            None => self.inner.advance(bytes),
        }
    }

    fn finish(&self) {
        self.inner.finish();
    }
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
