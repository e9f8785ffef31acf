//! The steps install and rollback share: a journal of steps in the state
//! store, hooks run with the contract's environment and recorded, the
//! atomic switch of the target symlink, snapshots of the release being
//! replaced, node-local links, recovery of an interrupted transaction, and
//! pruning.

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use berth_core::fault;
use berth_core::fsutil::{self, IoResultExt, PathError};
use berth_core::manifest::Manifest;
use berth_core::name::ReleaseId;
use berth_core::unpack;

use crate::error::Error;
use crate::hooks::{self, Ending, HookCommand, OutputSink};
use crate::node::Node;
use crate::store::{
    HookExit, NewHookRun, NewSnapshot, Release, ReleaseRowId, ReleaseState, SnapshotId,
    SnapshotKind, Store, TxnId, TxnKind, TxnResult,
};

/// A running transaction and its journal.
pub struct Journal<'a> {
    pub store: &'a mut Store,
    pub txn: TxnId,
}

impl std::fmt::Debug for Journal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("txn", &self.txn).finish()
    }
}

impl Journal<'_> {
    /// Runs one named step, journaled before and after.
    pub fn step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.step_noting(name, || f().map(|v| (v, None)))
    }

    /// [`Journal::step`], whose closure also gives the detail recorded
    /// with the step when it is done: what recovery needs to know to undo
    /// it (e.g. that `unpack` made the release dir rather than found it).
    pub fn step_noting<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<(T, Option<String>), Error>,
    ) -> Result<T, Error> {
        let txn = self.txn;
        let id = self.store.write(|w| w.step_started(txn, name))?;
        fault::point(&format!("{name}:before"));
        match f() {
            Ok((v, detail)) => {
                fault::point(&format!("{name}:after"));
                self.store.write(|w| w.step_done(id, detail.as_deref()))?;
                Ok(v)
            }
            Err(e) => {
                let detail = e.to_string();
                self.store.write(|w| w.step_failed(id, Some(&detail)))?;
                Err(e)
            }
        }
    }

    /// Ends the transaction as failed with `error`'s message, returning it.
    pub fn fail(&mut self, result: TxnResult, error: Error) -> Error {
        let txn = self.txn;
        let text = error.to_string();
        // The error to report is `error`; a store failure here would hide it.
        let _ = self
            .store
            .write(|w| w.finish_transaction(txn, result, Some(&text)));
        error
    }
}

/// The step journaled once post_install and health have passed on the new
/// release: recovery finishes a transaction that got this far and undoes
/// one that did not.
pub const HEALTHY_STEP: &str = "healthy";

/// The detail of an `unpack` step that made the release dir (rather than
/// finding it kept and intact): recovery removes what it made.
pub const UNPACKED_DETAIL: &str = "unpacked";

/// What a hook needs to know about the transaction.
#[derive(Debug, Clone)]
pub struct HookContext {
    pub action: &'static str,
    pub package: String,
    pub release: ReleaseId,
    pub channel: Option<String>,
    /// The release directory (MANIFEST.toml, hooks/, files/).
    pub release_dir: PathBuf,
    pub previous: Option<(ReleaseId, PathBuf)>,
    pub snapshot_dir: Option<PathBuf>,
    pub timeout_secs: u64,
}

/// Hook output goes to stderr, each line prefixed with package and hook,
/// written a chunk of the hook's output at a time (a hook printing many
/// short lines costs a system call per chunk, not per line), each line
/// whole.
#[derive(Debug)]
pub struct Stderr {
    prefix: Vec<u8>,
    pending: std::sync::Mutex<Vec<u8>>,
}

impl Stderr {
    pub fn new(package: &str) -> Stderr {
        Stderr {
            prefix: format!("[{package} ").into_bytes(),
            pending: std::sync::Mutex::default(),
        }
    }
}

impl OutputSink for Stderr {
    fn line(&self, hook: &str, line: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(&self.prefix);
        pending.extend_from_slice(hook.as_bytes());
        pending.extend_from_slice(b"] ");
        pending.extend_from_slice(line);
        pending.push(b'\n');
    }

    fn flush(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let _ = std::io::stderr().lock().write_all(&pending);
        pending.clear();
    }
}

/// Runs hook `name`: the release's own (when its manifest has it), then
/// the node's `<root>/etc/berth/hooks/<pkg>/<name>.d/*` in name order.
/// Every run is recorded; the first failure stops and is returned.
pub fn run_hook(
    node: &Node,
    journal: &mut Journal<'_>,
    manifest: &Manifest,
    ctx: &HookContext,
    name: &str,
) -> Result<Ending, Error> {
    let mut programs = Vec::new();
    if manifest.hooks.iter().any(|(n, _)| n == name) {
        programs.push(unpack::hook_path(&ctx.release_dir, name));
    }
    let node_dir = node.layout.node_hooks_dir(&ctx.package, name);
    if let Ok(entries) = fs::read_dir(&node_dir) {
        let mut extra: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        extra.sort();
        programs.extend(extra.into_iter().filter(|p| p.is_file()));
    }
    let env = hook_env(node, ctx, journal.txn)?;
    let sink = Stderr::new(&ctx.package);
    for program in programs {
        let cmd = HookCommand {
            name: name.to_owned(),
            program: program.clone(),
            cwd: unpack::tree_dir(&ctx.release_dir),
            env: env.clone(),
            timeout: std::time::Duration::from_secs(ctx.timeout_secs),
        };
        let started = jiff::Timestamp::now();
        let txn = journal.txn;
        let step = journal
            .store
            .write(|w| w.step_started(txn, &format!("hook {name}")))?;
        fault::point(&format!("hook:{name}:before"));
        let run = match hooks::run(&cmd, &sink).at("cannot run hook", &program) {
            Ok(run) => run,
            Err(e) => {
                let detail = e.to_string();
                journal
                    .store
                    .write(|w| w.step_failed(step, Some(&detail)))?;
                return Err(e.into());
            }
        };
        let (exit, timed_out) = match run.ending {
            Ending::Exited(c) => (Some(HookExit::Code(c)), false),
            Ending::Signaled(s) => (Some(HookExit::Signal(s)), false),
            Ending::TimedOut(_) => (None, true),
        };
        fault::point(&format!("hook:{name}:after"));
        let text = run.output.text();
        let ending = run.ending.to_string();
        journal.store.write(|w| {
            if run.ending.success() {
                w.step_done(step, None)?;
            } else {
                w.step_failed(step, Some(&ending))?;
            }
            w.record_hook_run(&NewHookRun {
                txn,
                hook: name,
                started_at: started,
                finished_at: jiff::Timestamp::now(),
                exit,
                timed_out,
                output: &text,
                output_bytes_total: run.output.total,
            })
        })?;
        if !run.ending.success() {
            return Ok(run.ending);
        }
    }
    Ok(Ending::Exited(0))
}

/// Runs hook `name`, which must succeed before the switch: a failure is
/// [`Error::HookBeforeSwitch`], for the caller to undo and end the
/// transaction with.
pub fn require_hook(
    node: &Node,
    journal: &mut Journal<'_>,
    manifest: &Manifest,
    ctx: &HookContext,
    name: &str,
) -> Result<(), Error> {
    let ending = run_hook(node, journal, manifest, ctx, name)?;
    if ending.success() {
        Ok(())
    } else {
        Err(Error::HookBeforeSwitch {
            hook: name.into(),
            release: ctx.release.to_string(),
            ending: ending.to_string(),
        })
    }
}

/// The hook environment: a plain PATH, the BERTH_* variables of the
/// contract, and the package's env file when the node has one.
fn hook_env(node: &Node, ctx: &HookContext, txn: TxnId) -> Result<Vec<(String, String)>, Error> {
    let path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let s = |p: &Path| p.display().to_string();
    let mut env = vec![
        ("PATH".to_owned(), path),
        ("BERTH_ACTION".into(), ctx.action.into()),
        ("BERTH_PACKAGE".into(), ctx.package.clone()),
        ("BERTH_VERSION".into(), ctx.release.version.clone()),
        ("BERTH_BUILD".into(), ctx.release.build.to_string()),
        (
            "BERTH_CHANNEL".into(),
            ctx.channel.clone().unwrap_or_default(),
        ),
        (
            "BERTH_RELEASE_DIR".into(),
            s(&unpack::tree_dir(&ctx.release_dir)),
        ),
        ("BERTH_ROOT".into(), s(node.layout.root())),
        (
            "BERTH_PREVIOUS_VERSION".into(),
            ctx.previous
                .as_ref()
                .map(|(r, _)| r.version_build())
                .unwrap_or_default(),
        ),
        (
            "BERTH_PREVIOUS_DIR".into(),
            ctx.previous
                .as_ref()
                .map(|(_, d)| s(&unpack::tree_dir(d)))
                .unwrap_or_default(),
        ),
        (
            "BERTH_SNAPSHOT_DIR".into(),
            ctx.snapshot_dir.as_deref().map(s).unwrap_or_default(),
        ),
        ("BERTH_TXN".into(), txn.to_string()),
    ];
    if let Some(file) = env_file(node, &ctx.package) {
        let text = fs::read_to_string(&file).at("cannot read the env file", &file)?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.trim_start_matches("export ").split_once('=') {
                let v = v.trim().trim_matches('"').trim_matches('\'');
                env.push((k.trim().to_owned(), v.to_owned()));
            }
        }
    }
    Ok(env)
}

/// The node's env file for `package`, under the root, if configured.
pub fn env_file(node: &Node, package: &str) -> Option<PathBuf> {
    let file = node.config.packages.get(package)?.env_file.as_ref()?;
    Some(node.layout.path(&file.display().to_string()))
}

/// The release `previous` is running again after a switch back: its own
/// post_install starts it. Its failure is recorded in the journal and
/// reported with the error that caused the switch back, not instead of it.
pub fn restart_previous(node: &Node, journal: &mut Journal<'_>, previous: &Release) {
    let Ok(m) = Manifest::parse(&previous.manifest) else {
        return;
    };
    let ctx = HookContext {
        action: "rollback",
        package: previous.release.name.clone(),
        release: previous.release.clone(),
        channel: None,
        release_dir: previous.dir.clone(),
        previous: None,
        snapshot_dir: None,
        timeout_secs: m.hooks.timeout_secs,
    };
    let _ = run_hook(node, journal, &m, &ctx, "post_install");
}

/// The symlink a switch of transaction `txn` makes beside `target` and
/// renames over it.
pub fn switch_link(target: &Path, txn: TxnId) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.berth-{txn}"))
}

/// Points `target` at `tree` with one `rename(2)` of a new symlink over it,
/// then fsyncs the directory: the commit point of a switch.
pub fn switch(target: &Path, tree: &Path, txn: TxnId) -> Result<(), Error> {
    let dir = target.parent().unwrap_or(Path::new("/"));
    fsutil::create_dir_all_synced(dir)?;
    let tmp = switch_link(target, txn);
    let _ = fs::remove_file(&tmp);
    symlink(tree, &tmp).at("cannot create symlink", &tmp)?;
    fs::rename(&tmp, target).at("cannot switch", target)?;
    fsutil::sync_dir(dir)?;
    Ok(())
}

/// Removes `target` if it is a symlink (a first install whose health check
/// failed leaves the node as it was: without the target).
pub fn unswitch(target: &Path) -> Result<(), Error> {
    fsutil::remove_file_synced(target)?;
    Ok(())
}

/// Refuses a target that exists and is not a symlink: berth owns it.
pub fn check_target(target: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(target) {
        Ok(m) if !m.file_type().is_symlink() => Err(Error::TargetNotSymlink {
            path: target.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Where `target` points, if it is a symlink.
pub fn target_of(target: &Path) -> Option<PathBuf> {
    fs::read_link(target).ok()
}

/// Paths in a release tree that the node owns, ignored by drift checks.
pub fn node_local(manifest: &Manifest) -> Vec<String> {
    let mut v: Vec<String> = manifest.install.shared.clone();
    v.extend(manifest.install.preserve.iter().cloned());
    if manifest.install.env_file {
        v.push(ENV_LINK.into());
    }
    v
}

/// The env file's name in a release tree.
pub const ENV_LINK: &str = ".env";

/// Whether the release dir `dir` holds exactly `manifest`'s tree, hooks
/// and `MANIFEST.toml`, by digest.
pub fn intact(dir: &Path, manifest: &Manifest) -> Result<bool, Error> {
    Ok(drift(dir, manifest)?.is_empty())
}

/// Whether the tree (`files/`) of the release dir `dir` is exactly
/// `manifest`'s, by digest; its hooks and `MANIFEST.toml` aside.
fn tree_intact(dir: &Path, manifest: &Manifest) -> Result<bool, Error> {
    Ok(drift(dir, manifest)?
        .iter()
        .all(|d| d.section != unpack::Section::Files))
}

fn drift(dir: &Path, manifest: &Manifest) -> Result<Vec<unpack::Drift>, Error> {
    let local = node_local(manifest);
    let local: Vec<&str> = local.iter().map(String::as_str).collect();
    Ok(unpack::drift(dir, manifest, &local)?)
}

/// The file whose mtime marks when a release dir was complete: a file
/// changed on the node after it has a later mtime. It holds the digest of
/// the artifact the dir was unpacked from (`artifact_sha256 = "…"`), so
/// that `agent recover --rebuild` can record the release again.
pub const UNPACKED_STAMP: &str = ".unpacked";

/// The key of the digest in [`UNPACKED_STAMP`].
pub const STAMP_KEY: &str = "artifact_sha256";

/// The record a snapshot dir keeps of itself, for `agent recover
/// --rebuild`: which release it holds, how, and when it was taken; the
/// release's manifest is beside it as `MANIFEST.toml`.
pub const SNAPSHOT_RECORD: &str = "SNAPSHOT.toml";

/// What [`SNAPSHOT_RECORD`] holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRecord {
    pub package: String,
    pub version: String,
    pub build: u64,
    pub artifact_sha256: String,
    pub kind: String,
    pub taken_at: jiff::Timestamp,
}

/// A cheap version of [`intact`], reading metadata only (and the small
/// `MANIFEST.toml`): every entry of the manifest is there with its type,
/// size, mode (and symlink target), no directory holds an entry the
/// manifest lacks, no file or hook was modified after the release dir was
/// complete (its mtime is not later than the stamp's), and
/// `MANIFEST.toml` reads as the manifest. A same-size rewrite that also
/// puts the mtime back is not seen; `agent verify` compares digests.
/// Without a stamp (a release dir made by an older agent, or a stamp
/// removed) it is [`intact`]. Decides whether a kept release dir can be
/// used as it is.
pub fn looks_intact(dir: &Path, manifest: &Manifest) -> Result<bool, Error> {
    looks_unchanged(dir, manifest, true)
}

/// [`looks_intact`] for the tree (`files/`) alone: whether a snapshot of
/// it can be a reference to the artifact (whose hooks and manifest are
/// the release's own whatever became of the release dir's copies).
pub fn tree_looks_intact(dir: &Path, manifest: &Manifest) -> Result<bool, Error> {
    looks_unchanged(dir, manifest, false)
}

fn looks_unchanged(dir: &Path, manifest: &Manifest, whole: bool) -> Result<bool, Error> {
    use berth_core::manifest::Entry;
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;

    let Ok(stamp) = fs::metadata(dir.join(UNPACKED_STAMP)).and_then(|m| m.modified()) else {
        return if whole {
            intact(dir, manifest)
        } else {
            tree_intact(dir, manifest)
        };
    };
    if whole && unpack::manifest_drift(dir, manifest)?.is_some() {
        return Ok(false);
    }
    let tree = unpack::tree_dir(dir);
    let local: HashSet<String> = node_local(manifest).into_iter().collect();
    let is_local = |rel: &str| {
        local.iter().any(|l| {
            rel == l
                || rel
                    .strip_prefix(l.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    };
    let unchanged_file = |path: &Path, size: u64, mode: u32| -> bool {
        fs::symlink_metadata(path).is_ok_and(|m| {
            m.is_file()
                && m.len() == size
                && m.permissions().mode() & 0o7777 == mode
                && m.modified().is_ok_and(|t| t <= stamp)
        })
    };
    for (name, entry) in manifest.hook_files.iter().filter(|_| whole) {
        if let Entry::File { size, mode, .. } = entry
            && !unchanged_file(&unpack::hook_path(dir, name), *size, mode.0)
        {
            return Ok(false);
        }
    }
    let mut dirs = vec![String::new()];
    for (rel, entry) in &manifest.files {
        if is_local(rel) {
            continue;
        }
        let path = tree.join(rel);
        let ok = match entry {
            Entry::File { size, mode, .. } => unchanged_file(&path, *size, mode.0),
            Entry::Dir { mode } => {
                dirs.push(rel.clone());
                fs::symlink_metadata(&path)
                    .is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o7777 == mode.0)
            }
            Entry::Symlink { target } => {
                fs::read_link(&path).is_ok_and(|t| t.as_os_str() == target.as_str())
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    // Nothing added: every name in every directory is in the manifest.
    for d in dirs {
        let Ok(entries) = fs::read_dir(tree.join(&d)) else {
            return Ok(false);
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if d.is_empty() {
                name
            } else {
                format!("{d}/{name}")
            };
            if !manifest.files.contains_key(&rel) && !is_local(&rel) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Links the node-local parts into a fresh release tree: shared dirs
/// (kept under `<state>/shared/<pkg>/`), preserved files copied from the
/// previous release, and the env file.
pub fn link_node_local(
    node: &Node,
    package: &str,
    manifest: &Manifest,
    tree: &Path,
    previous_tree: Option<&Path>,
) -> Result<(), Error> {
    for shared in &manifest.install.shared {
        let keep = node
            .layout
            .state_dir()
            .join("shared")
            .join(package)
            .join(shared);
        fsutil::create_dir_all_synced(&keep)?;
        let at = tree.join(shared);
        if fs::read_link(&at).ok().as_deref() == Some(keep.as_path()) {
            continue;
        }
        remove_any(&at)?;
        if let Some(parent) = at.parent() {
            fsutil::create_dir_all_synced(parent)?;
        }
        symlink(&keep, &at).at("cannot link shared dir", &at)?;
    }
    if let Some(prev) = previous_tree {
        for p in &manifest.install.preserve {
            let from = prev.join(p);
            if fs::symlink_metadata(&from).is_ok_and(|m| m.is_file()) {
                let to = tree.join(p);
                if let Some(parent) = to.parent() {
                    fsutil::create_dir_all_synced(parent)?;
                }
                fs::copy(&from, &to).at("cannot carry over", &from)?;
            }
        }
    }
    if manifest.install.env_file
        && let Some(file) = env_file(node, package)
    {
        let at = tree.join(ENV_LINK);
        remove_any(&at)?;
        symlink(&file, &at).at("cannot link the env file", &at)?;
    }
    Ok(())
}

fn remove_any(path: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).at("cannot remove", path)?,
        Ok(_) => fs::remove_file(path).at("cannot remove", path)?,
        Err(_) => {}
    }
    Ok(())
}

/// Takes the snapshot of `current` (the release being replaced) into
/// `<state>/snapshots/<txn>/`: a reference to its cached artifact when its
/// tree is intact, else a tar.zst of the tree. Returns the directory and
/// the kind; the caller runs backup and dump into it, then records it. A
/// failure (no room for the tarball) leaves no directory behind.
pub fn snapshot_tree(
    node: &Node,
    current: &Release,
    manifest: &Manifest,
    txn: TxnId,
) -> Result<(PathBuf, SnapshotKind), Error> {
    let dir = node.layout.snapshots_dir().join(txn.to_string());
    let taken = take_snapshot(node, current, manifest, &dir);
    if taken.is_err() {
        let _ = fs::remove_dir_all(&dir);
    }
    Ok((dir, taken?))
}

fn take_snapshot(
    node: &Node,
    current: &Release,
    manifest: &Manifest,
    dir: &Path,
) -> Result<SnapshotKind, Error> {
    let dir = dir.to_owned();
    fsutil::create_dir_all_synced(&dir)?;
    for sub in ["backup", "dumps"] {
        fsutil::create_dir_all_synced(&dir.join(sub))?;
    }
    let record = |kind: SnapshotKind| -> Result<(), Error> {
        let text = toml::to_string(&SnapshotRecord {
            package: current.release.name.clone(),
            version: current.release.version.clone(),
            build: current.release.build,
            artifact_sha256: current.sha256.clone(),
            kind: kind.to_string(),
            taken_at: jiff::Timestamp::now(),
        })
        .expect("a snapshot record serializes");
        fsutil::write_atomic(&dir.join("MANIFEST.toml"), current.manifest.as_bytes())?;
        fsutil::write_atomic(&dir.join(SNAPSHOT_RECORD), text.as_bytes())?;
        Ok(())
    };
    let cached = node.layout.cached_artifact(&current.sha256);
    if cached.is_file() && current.dir.is_dir() && tree_looks_intact(&current.dir, manifest)? {
        fs::write(dir.join("artifact"), format!("{}\n", current.sha256))
            .at("cannot write snapshot", &dir)?;
        record(SnapshotKind::ArtifactRef)?;
        return Ok(SnapshotKind::ArtifactRef);
    }
    // A tarball holds the tree compressed: its size is at most about the
    // tree's, which is what must be free.
    ensure_space(&dir, manifest.payload_bytes())?;
    let tarball = dir.join("tree.tar.zst");
    let file = fs::File::create(&tarball).at("cannot write snapshot", &tarball)?;
    let zstd = zstd::stream::write::Encoder::new(file, 3)
        .at("cannot write snapshot", &tarball)?
        .auto_finish();
    let mut tar = tar::Builder::new(zstd);
    tar.follow_symlinks(false);
    let tree = unpack::tree_dir(&current.dir);
    if tree.is_dir() {
        tar.append_dir_all(".", &tree)
            .at("cannot pack the tree of", &tree)?;
    }
    let zstd = tar.into_inner().at("cannot write snapshot", &tarball)?;
    drop(zstd);
    fs::File::open(&tarball)
        .and_then(|f| f.sync_all())
        .at("cannot sync", &tarball)?;
    record(SnapshotKind::TreeTarball)?;
    Ok(SnapshotKind::TreeTarball)
}

/// Refuses, with the figures, when the filesystem holding `dir` has less
/// than `needed` bytes free for an unprivileged writer.
pub fn ensure_space(dir: &Path, needed: u64) -> Result<(), Error> {
    ensure_bytes(dir, &statvfs(dir)?, needed)
}

fn statvfs(dir: &Path) -> Result<rustix::fs::StatVfs, Error> {
    Ok(rustix::fs::statvfs(dir)
        .map_err(|e| PathError::new("cannot measure free space of", dir, e.into()))?)
}

fn ensure_bytes(dir: &Path, stat: &rustix::fs::StatVfs, needed: u64) -> Result<(), Error> {
    let available = stat.f_bavail.saturating_mul(stat.f_frsize);
    if available < needed {
        return Err(Error::NoSpace {
            path: dir.to_owned(),
            needed,
            available,
        });
    }
    Ok(())
}

/// Refuses, with the figures, when the filesystem holding `dir` cannot
/// hold `manifest`'s tree: each file rounded up to whole blocks and each
/// directory a block (a release of thousands of small files takes many
/// times its payload), and an inode per entry where the file system
/// counts them (tmpfs, ext4; not btrfs, which reports none).
pub fn ensure_room_for(dir: &Path, manifest: &Manifest) -> Result<(), Error> {
    use berth_core::manifest::Entry;
    let stat = statvfs(dir)?;
    let block = stat.f_frsize.max(512);
    // The release dir, files/, hooks/ and the stamp besides the entries.
    let extra = 4;
    let entries = (manifest.files.len() + manifest.hook_files.len()) as u64 + extra;
    let needed: u64 = manifest
        .files
        .values()
        .chain(manifest.hook_files.values())
        .map(|e| match e {
            Entry::File { size, .. } => size.div_ceil(block) * block,
            Entry::Dir { .. } => block,
            Entry::Symlink { .. } => 0,
        })
        .sum::<u64>()
        + extra * block;
    ensure_bytes(dir, &stat, needed)?;
    if stat.f_files > 0 && stat.f_favail < entries {
        return Err(Error::NoInodes {
            path: dir.to_owned(),
            needed: entries,
            available: stat.f_favail,
        });
    }
    Ok(())
}

/// Unpacks `artifact` into a staging dir beside `release_dir`, lets
/// `finish` adjust it, then moves it into place, so a failure never leaves
/// a half-made release. A damaged copy already there (possibly the one the
/// target points at, when the current release is installed again) is
/// swapped with the new one in one `renameat2(RENAME_EXCHANGE)`, then
/// removed: at no moment is there no release dir (a crash in between
/// leaves the old copy as a staging dir, which recovery removes).
pub fn unpack_into_place(
    artifact: &Path,
    sha256: &str,
    release_dir: &Path,
    progress: &dyn berth_core::progress::Progress,
    finish: impl FnOnce(&Path) -> Result<(), Error>,
) -> Result<(), Error> {
    let parent = release_dir.parent().unwrap_or(Path::new("/"));
    fsutil::create_dir_all_synced(parent)?;
    let name = release_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".staging-{name}"));
    if staging.exists() {
        fs::remove_dir_all(&staging).at("cannot remove", &staging)?;
    }
    let file = fs::File::open(artifact).at("cannot open", artifact)?;
    unpack::unpack(
        std::io::BufReader::new(file),
        &staging,
        &unpack::UnpackOptions::default(),
        progress,
    )?;
    if let Err(e) = finish(&staging) {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    let stamp = staging.join(UNPACKED_STAMP);
    fs::File::create(&stamp)
        .and_then(|mut f| {
            f.write_all(format!("{STAMP_KEY} = \"{sha256}\"\n").as_bytes())?;
            f.sync_all()
        })
        .at("cannot write", &stamp)?;
    if release_dir.exists() {
        let exchanged = rustix::fs::renameat_with(
            rustix::fs::CWD,
            &staging,
            rustix::fs::CWD,
            release_dir,
            rustix::fs::RenameFlags::EXCHANGE,
        );
        match exchanged {
            Ok(()) => {
                fsutil::sync_dir(parent)?;
                fault::point("unpack:exchanged");
                fs::remove_dir_all(&staging).at("cannot remove", &staging)?;
                return Ok(());
            }
            // A filesystem without RENAME_EXCHANGE: remove, then rename.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                fs::remove_dir_all(release_dir).at("cannot replace", release_dir)?;
            }
            Err(e) => {
                return Err(PathError::new("cannot replace", release_dir, e.into()).into());
            }
        }
    }
    fs::rename(&staging, release_dir).at("cannot move into place", release_dir)?;
    fsutil::sync_dir(parent)?;
    Ok(())
}

/// Bytes of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// Whether `dir` holds anything.
pub fn non_empty(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// Records a finished snapshot.
pub fn record_snapshot(
    journal: &mut Journal<'_>,
    release: ReleaseRowId,
    dir: &Path,
    kind: SnapshotKind,
    sha256: &str,
) -> Result<i64, Error> {
    let txn = journal.txn;
    // The row's time is the one its record on disk keeps, so that a
    // rebuilt database says the same.
    let taken_at = fs::read_to_string(dir.join(SNAPSHOT_RECORD))
        .ok()
        .and_then(|t| toml::from_str::<SnapshotRecord>(&t).ok())
        .map(|r| r.taken_at);
    let id = journal.store.write(|w| {
        w.record_snapshot(&NewSnapshot {
            release,
            txn,
            created_at: taken_at,
            kind,
            dir,
            artifact_sha256: (kind == SnapshotKind::ArtifactRef).then_some(sha256),
            bytes: dir_bytes(dir),
            has_backup: non_empty(&dir.join("backup")),
            has_dumps: non_empty(&dir.join("dumps")),
        })
    })?;
    Ok(id.0)
}

/// Removes `.staging-*` directories of `package`; returns them.
pub fn clean_staging(node: &Node, package: &str) -> Result<Vec<PathBuf>, Error> {
    let dir = node.layout.releases_dir(package);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(".staging-") {
            fs::remove_dir_all(e.path()).at("cannot remove", &e.path())?;
            removed.push(e.path());
        }
    }
    Ok(removed)
}

/// What pruning removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    pub releases: Vec<ReleaseId>,
    pub snapshots: Vec<(i64, ReleaseId)>,
    pub bytes: u64,
}

/// Removes release dirs past `keep` (most recently installed kept first;
/// failed releases never count as kept), never the current one nor
/// `also_keep` (the release a rollback would go to); then snapshots past
/// the node's retention by count and bytes, never the newest.
///
/// Unless `dry_run`, the removals are a `gc` transaction of their own
/// (begun only when there is something to remove), one journaled step
/// each. Each removal first renames its directory to a `.trash-*` name
/// beside it, so a kill leaves either the whole directory or a trash
/// directory that the next command's recovery removes, never a release or
/// snapshot half deleted under its own name.
pub fn prune(
    node: &Node,
    store: &mut Store,
    package: &str,
    keep: u32,
    also_keep: Option<ReleaseRowId>,
    dry_run: bool,
) -> Result<Pruned, Error> {
    let mut pruned = Pruned::default();
    let mut releases = Vec::new();
    let mut kept = 0;
    for r in store.releases(package)? {
        if !r.dir.exists() {
            continue;
        }
        if r.current || Some(r.id) == also_keep || (kept < keep && r.state != ReleaseState::Failed)
        {
            kept += 1;
            continue;
        }
        pruned.bytes += dir_bytes(&r.dir);
        pruned.releases.push(r.release.clone());
        releases.push(r);
    }
    let limit = (node.config.retention.snapshots as usize).max(1);
    let max_bytes = node.config.retention.snapshot_bytes;
    let mut bytes = 0;
    let mut snapshots = Vec::new();
    for (i, s) in store.snapshots(package)?.into_iter().enumerate() {
        bytes += s.bytes;
        if i == 0 || (i < limit && (max_bytes == 0 || bytes <= max_bytes)) {
            continue;
        }
        pruned.bytes += s.bytes;
        pruned.snapshots.push((s.id.0, s.release.clone()));
        snapshots.push(s);
    }
    if dry_run || (releases.is_empty() && snapshots.is_empty()) {
        return Ok(pruned);
    }
    let txn = store.write(|w| w.begin_transaction(TxnKind::Gc, package, None, None))?;
    let mut journal = Journal { store, txn };
    let result = (|| {
        for r in &releases {
            journal.step(
                &format!("remove release {}", r.release.version_build()),
                || remove_via_trash(&r.dir, &release_trash(&r.dir)),
            )?;
        }
        for s in &snapshots {
            let id = s.id;
            let trash = snapshot_trash(node, id);
            // The rename is the removal; the row goes next, then the
            // bytes. Recovery finishes both for a trash dir it finds.
            journal.step(&format!("remove snapshot {id}"), || {
                rename_to_trash(&s.dir, &trash)
            })?;
            journal.store.write(|w| w.delete_snapshot(id))?;
            remove_trash(&trash)?;
        }
        Ok::<(), Error>(())
    })();
    match result {
        Ok(()) => {
            fault::point("commit:before");
            journal
                .store
                .write(|w| w.finish_transaction(txn, TxnResult::Committed, None))?;
            fault::point("commit:after");
            Ok(pruned)
        }
        Err(e) => Err(journal.fail(TxnResult::Failed, e)),
    }
}

/// The prefix of directories being removed: recovery removes any it finds.
pub const TRASH_PREFIX: &str = ".trash-";

/// `releases/<pkg>/.trash-<version>+<build>` for a release dir.
fn release_trash(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{TRASH_PREFIX}{name}"))
}

/// `snapshots/.trash-<id>`: the id tells recovery which row to forget.
pub fn snapshot_trash(node: &Node, id: SnapshotId) -> PathBuf {
    node.layout
        .snapshots_dir()
        .join(format!("{TRASH_PREFIX}{}", id.0))
}

/// Renames `dir` to `trash` (durably); a missing `dir` is removed already.
fn rename_to_trash(dir: &Path, trash: &Path) -> Result<(), Error> {
    remove_trash(trash)?;
    match fs::rename(dir, trash) {
        Ok(()) => Ok(fsutil::sync_dir(trash.parent().unwrap_or(Path::new("/")))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PathError::new("cannot remove", dir, e).into()),
    }
}

/// Removes a trash directory, if there is one.
fn remove_trash(trash: &Path) -> Result<(), Error> {
    Ok(fsutil::remove_dir_all_if_exists(trash)?)
}

/// The entries of `dir` in name order; none when it cannot be read.
pub fn entries(dir: &Path) -> Vec<fs::DirEntry> {
    let mut v: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    v.sort_by_key(|e| e.file_name());
    v
}

/// Removes `dir` by renaming it to `trash` first.
pub fn remove_via_trash(dir: &Path, trash: &Path) -> Result<(), Error> {
    rename_to_trash(dir, trash)?;
    remove_trash(trash)
}
