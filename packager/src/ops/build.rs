//! `packager build`: reads `package.toml`, scans the payload (refusing what
//! must not ship: secrets, special files, symlinks that leave it), hashes
//! every file, and packs `<name>_<version>+<build>.tar.zst` deterministically.
//! The artifact appears under its final name only once complete.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_core::archive::{self, PackSources};
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
    let files = scan_payload(&payload_root, &package.package.allow_secrets)?;
    let files = hash_files(&payload_root, files, progress)?;

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

    let mtime = match env("SOURCE_DATE_EPOCH") {
        Some(v) => v.trim().parse::<u64>().map_err(|_| Error::PayloadEntry {
            path: "SOURCE_DATE_EPOCH".into(),
            reason: format!("`{v}` is not a whole number of seconds since 1970"),
        })?,
        None => 0,
    };
    fsutil::create_dir_all_synced(&opts.out_dir)?;
    let artifact = opts.out_dir.join(release.artifact_file_name());
    let tmp = fsutil::temp_file_in(&opts.out_dir)?;
    let sources = PackSources {
        hooks: hook_sources,
        payload_root,
        mtime,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let out = std::io::BufWriter::with_capacity(1 << 20, tmp);
    let (out, packed) = archive::pack(&manifest, &sources, out, threads, progress)?;
    let tmp = out
        .into_inner()
        .map_err(|e| PathError::new("cannot write", &artifact, e.into_error()))?;
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

fn build_number(flag: Option<&str>, env: Env<'_>) -> Result<u64, Error> {
    if let Some(b) = flag {
        return Ok(name::parse_build(b)?);
    }
    for var in BUILD_VARS {
        if let Some(v) = env(var).filter(|v| !v.trim().is_empty()) {
            return name::parse_build(&v).map_err(|source| Error::BuildFromEnv { var, source });
        }
    }
    Err(Error::NoBuildNumber)
}

/// A payload entry before hashing.
enum Scanned {
    Dir(Mode),
    Symlink(String),
    File(Mode, u64),
}

/// Walks the payload in sorted order, refusing what must not ship.
fn scan_payload(root: &Path, allow_secrets: &[String]) -> Result<BTreeMap<String, Scanned>, Error> {
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
            Scanned::File(Mode(mode), meta.len())
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

/// Hashes every regular file, on all cores, and returns the manifest's
/// `[files]` table.
fn hash_files(
    root: &Path,
    scanned: BTreeMap<String, Scanned>,
    progress: &dyn Progress,
) -> Result<BTreeMap<String, Entry>, Error> {
    let files: Vec<(&String, u64)> = scanned
        .iter()
        .filter_map(|(rel, s)| match s {
            Scanned::File(_, size) => Some((rel, *size)),
            _ => None,
        })
        .collect();
    progress.start("hashing", files.iter().map(|f| f.1).sum());
    let next = AtomicUsize::new(0);
    let results: Mutex<BTreeMap<&String, (String, u64)>> = Mutex::new(BTreeMap::new());
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let first_error: Mutex<Option<PathError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((rel, _)) = files.get(i) else { break };
                    let path = root.join(rel);
                    let hashed = fs::File::open(&path).and_then(|f| {
                        digest::sha256_reader(berth_core::progress::ProgressReader::new(
                            f, progress,
                        ))
                    });
                    match hashed {
                        Ok(h) => {
                            results
                                .lock()
                                .expect("no panics while hashing")
                                .insert(rel, h);
                        }
                        Err(e) => {
                            first_error
                                .lock()
                                .expect("no panics while hashing")
                                .get_or_insert(PathError::new("cannot read", &path, e));
                            next.store(files.len(), Ordering::Relaxed);
                            break;
                        }
                    }
                }
            });
        }
    });
    progress.finish();
    if let Some(e) = first_error.into_inner().expect("no panics while hashing") {
        return Err(e.into());
    }
    let mut hashes = results.into_inner().expect("no panics while hashing");
    let mut out = BTreeMap::new();
    for (rel, s) in &scanned {
        let entry = match s {
            Scanned::Dir(mode) => Entry::Dir { mode: *mode },
            Scanned::Symlink(target) => Entry::Symlink {
                target: target.clone(),
            },
            Scanned::File(mode, _) => {
                let (sha256, size) = hashes.remove(rel).expect("every file was hashed");
                Entry::File {
                    sha256,
                    size,
                    mode: *mode,
                }
            }
        };
        out.insert(rel.clone(), entry);
    }
    Ok(out)
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
