//! Helpers shared by the repository tests: build tiny artifacts, publish
//! them, read what the repository holds, and prove a refusal changed nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use berth_tests::{MINIMAL_PACKAGE_TOML, Run, TestEnv, tree_state, write};
use serde_json::Value;

/// The repository directory most tests use, relative to the test's root.
pub const REPO: &str = "repo";

/// A built artifact.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Its path, relative to the test's root (the commands' working directory).
    pub path: String,
    pub version: String,
    pub build: u64,
    pub sha256: String,
    pub size: u64,
}

impl Artifact {
    /// `webapp@VERSION+BUILD`, as promote, yank and show take it.
    pub fn release(&self) -> String {
        format!("webapp@{}+{}", self.version, self.build)
    }

    /// `VERSION+BUILD`, as list and gc print it.
    pub fn version_build(&self) -> String {
        format!("{}+{}", self.version, self.build)
    }
}

/// Lays out the `webapp` application at `rel` with the given version.
pub fn app(env: &TestEnv, rel: &str, version: &str) -> PathBuf {
    env.app(
        rel,
        &MINIMAL_PACKAGE_TOML.replace("version = \"1.4.2\"", &format!("version = \"{version}\"")),
    )
}

/// Runs `packager build APP --build N --out OUT --json`.
pub fn build_into(env: &TestEnv, app_rel: &str, build: u64, out: &str) -> Artifact {
    let v = env
        .packager([
            "build",
            app_rel,
            "--build",
            &build.to_string(),
            "--out",
            out,
            "--json",
        ])
        .ok()
        .json();
    artifact_from(&v)
}

fn artifact_from(v: &Value) -> Artifact {
    Artifact {
        path: v["artifact"].as_str().expect("artifact path").to_owned(),
        version: v["version"].as_str().expect("version").to_owned(),
        build: v["build"].as_u64().expect("build"),
        sha256: v["sha256"].as_str().expect("sha256").to_owned(),
        size: v["size"].as_u64().expect("size"),
    }
}

/// Builds `webapp` VERSION for each build number into `out/`, all at once
/// (one app directory per version).
pub fn artifacts(
    env: &TestEnv,
    version: &str,
    builds: impl IntoIterator<Item = u64>,
) -> Vec<Artifact> {
    let app_rel = format!("app-{version}");
    if !env.join(&app_rel).exists() {
        app(env, &app_rel, version);
    }
    let commands: Vec<Vec<String>> = builds
        .into_iter()
        .map(|b| {
            args(&[
                "build",
                &app_rel,
                "--build",
                &b.to_string(),
                "--out",
                "out",
                "--json",
            ])
        })
        .collect();
    run_all(env, &commands)
        .into_iter()
        .map(|run| artifact_from(&run.ok().json()))
        .collect()
}

/// One artifact of `webapp` 1.4.2 with the given build number.
pub fn artifact(env: &TestEnv, build: u64) -> Artifact {
    artifacts(env, "1.4.2", [build]).remove(0)
}

/// Lays out `webapp` VERSION at `app-VERSION` (where [`artifacts`] builds
/// it) with `mib` MiB of incompressible bytes in its payload, so that
/// writing its blob takes a while and a kill can land in the middle.
pub fn big_app(env: &TestEnv, version: &str, mib: usize) {
    let dir = app(env, &format!("app-{version}"), version);
    fs::write(
        dir.join("dist/noise.bin"),
        berth_tests::incompressible(mib << 20),
    )
    .unwrap();
}

/// Builds 1.4.2+BUILD, then changes a payload file and builds 1.4.2+BUILD
/// again into `out2/`: the same release with other bytes.
pub fn same_release_twice(env: &TestEnv, build: u64) -> (Artifact, Artifact) {
    let first = artifact(env, build);
    write(&env.join("app-1.4.2/dist/index.html"), "<h1>changed</h1>\n");
    let second = build_into(env, "app-1.4.2", build, "out2");
    assert_ne!(first.sha256, second.sha256);
    (first, second)
}

/// Runs `packager publish ART --repo REPO --channel CHANNEL --json`.
pub fn publish(env: &TestEnv, art: &Artifact, repo: &str, channel: &str) -> Run {
    env.packager([
        "publish",
        &art.path,
        "--repo",
        repo,
        "--channel",
        channel,
        "--json",
    ])
}

/// Publishes into [`REPO`] and returns the JSON report.
pub fn published(env: &TestEnv, art: &Artifact, channel: &str) -> Value {
    publish(env, art, REPO, channel).ok().json()
}

/// Runs a packager command with `--json` that must succeed; its report.
pub fn ok_json(env: &TestEnv, args: &[&str]) -> Value {
    env.packager(args.iter().copied().chain(["--json"]))
        .ok()
        .json()
}

/// Runs `packager promote RELEASE --from FROM --to TO --repo repo --json`.
pub fn promoted(env: &TestEnv, art: &Artifact, from: &str, to: &str) -> Value {
    ok_json(
        env,
        &[
            "promote",
            &art.release(),
            "--from",
            from,
            "--to",
            to,
            "--repo",
            REPO,
        ],
    )
}

/// Runs `packager yank RELEASE --channel C --repo repo [--undo] --json`.
pub fn yanked(env: &TestEnv, art: &Artifact, channel: &str, undo: bool) -> Value {
    let release = art.release();
    let mut args = vec!["yank", &release, "--channel", channel, "--repo", REPO];
    if undo {
        args.push("--undo");
    }
    ok_json(env, &args)
}

/// `packager list --repo repo [--channel C] --json`.
pub fn list(env: &TestEnv, channel: Option<&str>) -> Vec<Value> {
    let mut args = vec!["list", "--repo", REPO];
    if let Some(c) = channel {
        args.extend(["--channel", c]);
    }
    ok_json(env, &args)
        .as_array()
        .expect("list --json prints an array")
        .clone()
}

/// The `VERSION+BUILD` that `list --json` marks newest in a channel.
pub fn newest(env: &TestEnv, channel: &str) -> Option<String> {
    let newest: Vec<String> = list(env, Some(channel))
        .iter()
        .filter(|e| e["newest"] == true)
        .map(|e| format!("{}+{}", e["version"].as_str().unwrap(), e["build"]))
        .collect();
    assert!(newest.len() <= 1, "at most one newest: {newest:?}");
    newest.into_iter().next()
}

/// A channel's index of `webapp`, parsed.
pub fn index(env: &TestEnv, channel: &str) -> Value {
    let path = env
        .join(REPO)
        .join(format!("channels/{channel}/webapp.json"));
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()));
    serde_json::from_str(&text).expect("an index is JSON")
}

/// The `VERSION+BUILD` of every release in a channel's index, in index order.
pub fn index_releases(env: &TestEnv, channel: &str) -> Vec<String> {
    index(env, channel)["releases"]
        .as_array()
        .expect("releases is an array")
        .iter()
        .map(|r| format!("{}+{}", r["version"].as_str().unwrap(), r["build"]))
        .collect()
}

/// `VERSION+BUILD` of artifacts, for comparing with [`index_releases`].
pub fn version_builds(arts: &[&Artifact]) -> Vec<String> {
    arts.iter().map(|a| a.version_build()).collect()
}

/// Every blob under `blobs/sha256/` by digest, sorted, checking that each
/// one sits at `<2 hex>/<64 hex>.tar.zst` (writers' dot-files are skipped).
pub fn blobs(repo: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in berth_tests::names(&repo.join("blobs/sha256")) {
        let dir = repo.join("blobs/sha256").join(&prefix);
        for name in berth_tests::names(&dir)
            .into_iter()
            .filter(|n| !n.starts_with('.'))
        {
            let sha = name
                .strip_suffix(".tar.zst")
                .unwrap_or_else(|| panic!("unexpected file `{prefix}/{name}` among the blobs"));
            assert!(
                sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "blob name `{name}` is not a sha256"
            );
            assert_eq!(&sha[..2], prefix, "blob `{name}` is under the wrong prefix");
            out.push(sha.to_owned());
        }
    }
    out.sort();
    out
}

/// The digests of artifacts, sorted, for comparing with [`blobs`].
pub fn digests(arts: &[&Artifact]) -> Vec<String> {
    let mut v: Vec<String> = arts.iter().map(|a| a.sha256.clone()).collect();
    v.sort();
    v.dedup();
    v
}

/// Where a blob lives in the repository.
pub fn blob_path(repo: &Path, sha256: &str) -> PathBuf {
    repo.join(format!("blobs/sha256/{}/{sha256}.tar.zst", &sha256[..2]))
}

/// Runs a packager command that must be refused with `code`, and proves it
/// changed nothing anywhere in the test's world (repository, artifacts,
/// out directories; a missing repository stays missing).
#[track_caller]
pub fn refused<S: AsRef<str>>(env: &TestEnv, args: &[S], code: i32) -> Run {
    let before = tree_state(env.path());
    let run = env.packager(args.iter().map(AsRef::as_ref)).code(code);
    assert_eq!(
        before,
        tree_state(env.path()),
        "a refused `packager {}` changed the disk",
        args.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" ")
    );
    run
}

/// Asserts that `text` contains every word, showing the whole run if not.
#[track_caller]
pub fn assert_says(run: &Run, stream: &str, words: &[&str]) {
    let text = match stream {
        "stdout" => &run.stdout,
        "stderr" => &run.stderr,
        _ => panic!("no stream `{stream}`"),
    };
    for w in words {
        assert!(text.contains(w), "{stream} lacks `{w}`:\n{run}");
    }
}

/// Rewrites the repository's repo.toml.
pub fn set_repo_toml(env: &TestEnv, text: &str) {
    write(&env.join(REPO).join("repo.toml"), text);
}

/// Every file under `dir` whose name starts with `.tmp-` (writers' temp
/// files, which must never be left behind).
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
            {
                out.push(p.clone());
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// `promote RELEASE --from staging --to production EXTRA...`.
pub fn promote_args(release: &str, extra: &[&str]) -> Vec<String> {
    let mut all = args(&[
        "promote",
        release,
        "--from",
        "staging",
        "--to",
        "production",
    ]);
    all.extend(args(extra));
    all
}

/// Owned command-line arguments, for [`run_all`].
pub fn args(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// Starts every command at once (each `packager ARGS`), then waits for all.
pub fn run_all(env: &TestEnv, commands: &[Vec<String>]) -> Vec<Run> {
    let children: Vec<Child> = commands
        .iter()
        .map(|args| {
            env.cmd("packager")
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("packager starts")
        })
        .collect();
    children
        .into_iter()
        .map(|c| Run::from(c.wait_with_output().expect("packager finishes")))
        .collect()
}

/// Runs `packager ARGS...` with `BERTH_FAULT=point`, which must kill it
/// there (SIGKILL); a point it never reaches fails the test.
#[track_caller]
pub fn killed_at<S: AsRef<str>>(env: &TestEnv, point: &str, args: &[S]) {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = env
        .cmd("packager")
        .args(&args)
        .env("BERTH_FAULT", point)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "`packager {}` was not killed at `{point}`: {}",
        args.join(" "),
        Run::from(out)
    );
}

/// A `packager` command that stopped itself at a fault point
/// (`BERTH_FAULT_STOP`), for a test to act at that exact moment. Killed if
/// dropped before [`Paused::resume`].
#[derive(Debug)]
pub struct Paused {
    child: Option<Child>,
}

/// Starts `packager ARGS...` with `BERTH_FAULT_STOP=point` and returns
/// once it has stopped there; a command that ends without reaching the
/// point fails the test.
#[track_caller]
pub fn paused_at<S: AsRef<str>>(env: &TestEnv, point: &str, args: &[S]) -> Paused {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let child = env
        .cmd("packager")
        .args(&args)
        .env("BERTH_FAULT_STOP", point)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("packager starts");
    let stat = format!("/proc/{}/stat", child.id());
    loop {
        let text = fs::read_to_string(&stat).unwrap_or_default();
        // The state is the field after the command name in parentheses.
        let state = text
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        match state {
            Some('T') => break,
            Some('Z' | 'X') | None => {
                let run = Run::from(child.wait_with_output().unwrap());
                panic!(
                    "`packager {}` ended before `{point}`: {run}",
                    args.join(" ")
                );
            }
            Some(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
        }
    }
    Paused { child: Some(child) }
}

impl Paused {
    /// Lets the command go on (SIGCONT) and waits for it to end.
    pub fn resume(mut self) -> Run {
        let child = self.child.take().expect("resumed once");
        let sent = Command::new("kill")
            .args(["-CONT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -CONT {}", child.id());
        Run::from(child.wait_with_output().unwrap())
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A channel index's content as the crash tests compare it: per
/// `channel/package`, each release's `VERSION+BUILD sha256 yanked
/// promoted_from` (not the times or the sequence).
pub type Content = BTreeMap<String, Vec<String>>;

/// The whole-repository checks every crash test makes after a kill: every
/// blob hashes to its name (`sha256sum`), every index parses, names its
/// channel and package and, in a signed repository, `minisign -V` verifies
/// it with the signature next to it (an unsigned one has none), every
/// entry's blob is there with the entry's size, and `packager list` and
/// `show` work. Blobs already hashed (same inode, size and mtime) are not
/// hashed again.
#[derive(Debug)]
pub struct RepoCheck {
    pub repo: PathBuf,
    /// The public key, in a signed repository.
    pub public: Option<PathBuf>,
    hashed: BTreeSet<(u64, u64, u64, i64, i64)>,
}

impl RepoCheck {
    pub fn new(repo: PathBuf, public: Option<PathBuf>) -> RepoCheck {
        RepoCheck {
            repo,
            public,
            hashed: BTreeSet::new(),
        }
    }

    /// Runs every check; the content of every index, or what is wrong.
    pub fn check(&mut self, env: &TestEnv) -> Result<Content, String> {
        self.check_blobs(env)?;
        let content = self.check_indexes(env)?;
        let listed = env.packager(["list", "--repo", self.repo.to_str().unwrap(), "--json"]);
        if listed.code != 0 {
            return Err(format!("`packager list` failed: {listed}"));
        }
        let rows = serde_json::from_str::<Value>(&listed.stdout)
            .map_err(|e| format!("`packager list --json` is not JSON ({e}): {listed}"))?;
        let entries: usize = content.values().map(Vec::len).sum();
        if rows.as_array().map(Vec::len) != Some(entries) {
            return Err(format!(
                "`packager list` shows {rows} but the indexes hold {entries} entries"
            ));
        }
        let packages: BTreeSet<&str> = content
            .keys()
            .filter_map(|k| k.split_once('/').map(|(_, p)| p))
            .collect();
        for package in packages {
            let shown = env.packager([
                "show",
                package,
                "--repo",
                self.repo.to_str().unwrap(),
                "--json",
            ]);
            if shown.code != 0 {
                return Err(format!("`packager show {package}` failed: {shown}"));
            }
        }
        Ok(content)
    }

    fn check_blobs(&mut self, env: &TestEnv) -> Result<(), String> {
        let root = self.repo.join("blobs/sha256");
        let mut unhashed = Vec::new();
        for prefix in berth_tests::names(&root) {
            if prefix.starts_with(".tmp-") {
                continue;
            }
            let dir = root.join(&prefix);
            if !dir.is_dir() || prefix.len() != 2 {
                return Err(format!("`blobs/sha256/{prefix}` is not a blob directory"));
            }
            for name in berth_tests::names(&dir) {
                if name.starts_with(".tmp-") {
                    continue;
                }
                let sha = name
                    .strip_suffix(".tar.zst")
                    .filter(|s| s.len() == 64 && s.starts_with(prefix.as_str()))
                    .ok_or_else(|| format!("`blobs/sha256/{prefix}/{name}` is not a blob name"))?;
                let path = dir.join(&name);
                let m = fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let id = (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec());
                if !self.hashed.contains(&id) {
                    unhashed.push((sha.to_owned(), path, id));
                }
            }
        }
        if unhashed.is_empty() {
            return Ok(());
        }
        let run = env.tool("sha256sum", unhashed.iter().map(|(_, p, _)| p.as_os_str()));
        if run.code != 0 {
            return Err(format!("sha256sum failed: {run}"));
        }
        for ((sha, path, id), line) in unhashed.into_iter().zip(run.stdout.lines()) {
            let found = line.split_whitespace().next().unwrap_or_default();
            if found != sha {
                return Err(format!(
                    "`{}` hashes to {found}, not to its name",
                    path.display()
                ));
            }
            self.hashed.insert(id);
        }
        Ok(())
    }

    fn check_indexes(&self, env: &TestEnv) -> Result<Content, String> {
        let mut content = Content::new();
        let channels = self.repo.join("channels");
        for channel in berth_tests::names(&channels) {
            if channel.starts_with('.') {
                continue;
            }
            let dir = channels.join(&channel);
            for file in berth_tests::names(&dir) {
                let Some(package) = file.strip_suffix(".json") else {
                    continue;
                };
                let path = dir.join(&file);
                let text = fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
                let index: Value = serde_json::from_str(&text)
                    .map_err(|e| format!("`{}` does not parse: {e}", path.display()))?;
                if index["channel"] != channel.as_str() || index["package"] != package {
                    return Err(format!("`{}` names another index", path.display()));
                }
                self.check_signature(env, &path)?;
                let mut releases = Vec::new();
                for r in index["releases"].as_array().into_iter().flatten() {
                    let sha = r["sha256"].as_str().unwrap_or_default();
                    let blob = blob_path(&self.repo, sha);
                    let size = fs::metadata(&blob).map(|m| m.len()).map_err(|e| {
                        format!(
                            "{channel} {}+{} points at {}: {e}",
                            r["version"].as_str().unwrap_or_default(),
                            r["build"],
                            blob.display()
                        )
                    })?;
                    if Some(size) != r["size"].as_u64() {
                        return Err(format!(
                            "{} is {size} bytes, the index says {}",
                            blob.display(),
                            r["size"]
                        ));
                    }
                    releases.push(format!(
                        "{}+{} {sha} yanked:{} from:{}",
                        r["version"].as_str().unwrap_or_default(),
                        r["build"],
                        r["yanked"],
                        r["promoted_from"]
                    ));
                }
                content.insert(format!("{channel}/{package}"), releases);
            }
        }
        Ok(content)
    }

    fn check_signature(&self, env: &TestEnv, index: &Path) -> Result<(), String> {
        let sig = PathBuf::from(format!("{}.minisig", index.display()));
        match &self.public {
            None if sig.exists() => Err(format!(
                "`{}` exists in an unsigned repository",
                sig.display()
            )),
            None => Ok(()),
            Some(public) => {
                let run = env.tool(
                    "minisign",
                    [
                        OsStr::new("-V"),
                        OsStr::new("-q"),
                        OsStr::new("-p"),
                        public.as_os_str(),
                        OsStr::new("-m"),
                        index.as_os_str(),
                    ],
                );
                if run.code == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "minisign does not verify `{}` with its signature: {run}",
                        index.display()
                    ))
                }
            }
        }
    }
}

/// Every `.tmp-` file and directory in the repository, relative to it
/// and sorted, as gc reports them.
pub fn temps(repo: &Path) -> Vec<String> {
    let mut out: Vec<String> = temp_files(repo)
        .iter()
        .map(|p| p.strip_prefix(repo).unwrap().display().to_string())
        .filter(|p| !p.split('/').rev().skip(1).any(|c| c.starts_with(".tmp-")))
        .collect();
    out.sort();
    out
}
