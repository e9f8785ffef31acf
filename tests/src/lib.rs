//! Support for berth's end-to-end tests: a hermetic environment (temp
//! root, cleared variables, fixed `SOURCE_DATE_EPOCH`) that runs the real
//! `packager` and `agent` binaries, plus helpers to lay out applications and
//! to prove that a refused command changed nothing on disk.
//!
//! The binaries are the ones cargo built next to the test executable
//! (`cargo build --workspace --bins` first; the README's test command does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod rawtar;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The directory holding the built binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its executable");
    // target/<profile>/deps/e2e-<hash>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps")
        .to_owned();
    for bin in ["packager", "agent"] {
        assert!(
            dir.join(bin).is_file(),
            "`{}` is missing: run `cargo build --workspace --bins` before the tests (the README's test command does)",
            dir.join(bin).display()
        );
    }
    dir
}

/// The path of a built binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// One test's world: a temp directory and a clean environment.
#[derive(Debug)]
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    vars: BTreeMap<String, String>,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-")
            .tempdir()
            .unwrap();
        let mut vars = BTreeMap::new();
        vars.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
        vars.insert("HOME".into(), dir.path().join("home").display().to_string());
        vars.insert("SOURCE_DATE_EPOCH".into(), "1700000000".into());
        vars.insert("LC_ALL".into(), "C".into());
        // Keep git from reading the machine's configuration.
        vars.insert("GIT_CONFIG_NOSYSTEM".into(), "1".into());
        fs::create_dir_all(dir.path().join("home")).unwrap();
        TestEnv { dir, vars }
    }

    /// The temp directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the temp directory.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Sets a variable for every command run from now on.
    pub fn set(&mut self, key: &str, value: &str) {
        self.vars.insert(key.into(), value.into());
    }

    /// Removes a variable for every command run from now on.
    pub fn unset(&mut self, key: &str) {
        self.vars.remove(key);
    }

    /// A command for a built binary with the cleared environment, run in
    /// the temp directory.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(bin(program));
        c.env_clear()
            .envs(&self.vars)
            .current_dir(self.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs `packager ARGS...`.
    pub fn packager<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Run::from(self.cmd("packager").args(args).output().unwrap())
    }

    /// A command for any program (tar, prlimit...) with the cleared
    /// environment, run in the temp directory.
    pub fn program(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .envs(&self.vars)
            .current_dir(self.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs any program (tar, zstd, git...) in the same environment.
    pub fn tool<I, S>(&self, program: &str, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self
            .program(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run `{program}`: {e} (the README's test command installs it)")
            });
        Run::from(out)
    }

    /// Writes an application at `rel` (payload `dist/` with a few files, a
    /// health hook) from a package.toml text; returns its directory.
    pub fn app(&self, rel: &str, package_toml: &str) -> PathBuf {
        let dir = self.join(rel);
        write(&dir.join("package.toml"), package_toml);
        write(&dir.join("dist/index.html"), "<h1>hello</h1>\n");
        write(&dir.join("dist/static/app.js"), "console.log('hi');\n");
        write(&dir.join("dist/VERSION"), "1.4.2\n");
        write_exec(&dir.join("hooks/health"), "#!/bin/sh\necho healthy\n");
        dir
    }
}

/// The package.toml of the issue, exactly as written there.
pub const MINIMAL_PACKAGE_TOML: &str = r#"[package]
name = "webapp"
version = "1.4.2"
description = "Example web application"
payload = "dist"            # directory shipped as files/

[install]
target = "/srv/webapp"

[hooks]
health = "hooks/health"

[rollback]
data_epoch = 1
"#;

/// Writes a file, creating its parents.
pub fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// Writes an executable file, creating its parents.
pub fn write_exec(path: &Path, text: &str) {
    write(path, text);
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A finished command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts exit 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success:\n{self}");
        self
    }

    /// Asserts the exit code and returns self.
    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "expected exit {code}:\n{self}");
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Everything under `root` that a command could change: each path with its
/// type, mode, size, mtime and content digest. Two equal snapshots mean
/// nothing was written, renamed, created or removed.
pub fn tree_state(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    for entry in walk(root) {
        let meta = fs::symlink_metadata(&entry).unwrap();
        let rel = entry.strip_prefix(root).unwrap().display().to_string();
        let content = if meta.is_file() {
            let bytes = fs::read(&entry).unwrap();
            format!("{:x}", Fingerprint::of(&bytes))
        } else if meta.file_type().is_symlink() {
            fs::read_link(&entry).unwrap().display().to_string()
        } else {
            String::new()
        };
        out.insert(
            rel,
            format!(
                "{:o} {} {}.{} {}",
                meta.mode(),
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec(),
                content
            ),
        );
    }
    out
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[derive(Debug)]
/// A cheap content fingerprint (FNV-1a over the bytes) for tree snapshots.
struct Fingerprint(u64);

impl Fingerprint {
    fn of(bytes: &[u8]) -> Fingerprint {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        Fingerprint(h)
    }
}

impl std::fmt::LowerHex for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::LowerHex::fmt(&self.0, f)
    }
}

/// Every file name in `dir` (not recursive), sorted; empty if it is missing.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A whole number from the environment (the kill harnesses' settings), or
/// `default` when the variable is unset.
pub fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}=`{v}` is not a whole number")),
        Err(_) => default,
    }
}

/// `len` bytes zstd cannot shrink, the same on every run (xorshift64 from
/// a fixed seed): payloads whose artifacts are as large as they are.
pub fn incompressible(len: usize) -> Vec<u8> {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// A small deterministic generator (xorshift), so that a failing random
/// run can be repeated from its printed seed.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is avoided).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
