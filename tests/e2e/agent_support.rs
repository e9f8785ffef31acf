//! Helpers shared by the agent tests: a node root in the test's temp dir, a
//! repository of `webapp` releases whose hooks log every run, keep the app's
//! SQLite data (migrate, dump, restore) and fail on demand, and ways to read
//! the node (target link, `sqlite3`, JSON reports) and prove a command
//! changed nothing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use berth_tests::{Run, TestEnv, tree_state, write, write_exec};
use serde_json::Value;

use crate::repo_support::{Artifact, REPO, build_into, publish};

/// The node root, relative to the test's temp dir.
pub const ROOT: &str = "node";

/// The hooks' log, outside the node root (so that it is not node state).
pub const HOOK_LOG: &str = "hooks.log";

/// Every hook a test release has, in the order an install runs them.
pub const HOOKS: [&str; 6] = [
    "backup",
    "dump",
    "pre_install",
    "post_install",
    "health",
    "restore",
];

/// A `webapp` release to build: version, build number, data epoch, and the
/// hooks that fail (each hook fails when its release holds `fail-<hook>`)
/// and those that cannot even start (their interpreter does not exist).
#[derive(Debug, Clone)]
pub struct Rel {
    pub version: &'static str,
    pub build: u64,
    pub epoch: u64,
    pub failing: Vec<&'static str>,
    pub unstartable: Vec<&'static str>,
    pub slow: Vec<&'static str>,
    /// Extra payload files, `dist/data/<i / 100>/<i>.txt`.
    pub files: usize,
    /// KiB of incompressible bytes in `dist/noise.bin` (0: no such file).
    pub noise_kib: usize,
    /// Hooks whose work is this shell text instead of the usual.
    pub scripts: Vec<(&'static str, String)>,
    /// `[hooks] timeout_secs`.
    pub timeout_secs: u64,
}

/// `webapp` VERSION+BUILD, data epoch 1, every hook passing.
pub fn rel(version: &'static str, build: u64) -> Rel {
    Rel {
        version,
        build,
        epoch: 1,
        failing: Vec::new(),
        unstartable: Vec::new(),
        slow: Vec::new(),
        files: 0,
        noise_kib: 0,
        scripts: Vec::new(),
        timeout_secs: 30,
    }
}

impl Rel {
    pub fn epoch(mut self, epoch: u64) -> Rel {
        self.epoch = epoch;
        self
    }

    /// The release's `hook` exits 1.
    pub fn failing(mut self, hook: &'static str) -> Rel {
        self.failing.push(hook);
        self
    }

    /// The release's `hook` writes its pid to `hooks.log.<hook>.pid` and
    /// sleeps a minute (a hang, or a moment to kill the agent in).
    pub fn slow(mut self, hook: &'static str) -> Rel {
        self.slow.push(hook);
        self
    }

    /// `n` more payload files, a few hundred bytes each, 100 per directory.
    pub fn files(mut self, n: usize) -> Rel {
        self.files = n;
        self
    }

    /// `kib` KiB of incompressible payload: an artifact that large.
    pub fn noise(mut self, kib: usize) -> Rel {
        self.noise_kib = kib;
        self
    }

    /// The release's `hook` runs `body` (shell) after logging its run,
    /// instead of its usual work.
    pub fn script(mut self, hook: &'static str, body: &str) -> Rel {
        self.scripts.push((hook, body.to_owned()));
        self
    }

    /// The package's `[hooks] timeout_secs`.
    pub fn timeout_secs(mut self, secs: u64) -> Rel {
        self.timeout_secs = secs;
        self
    }

    /// The release's `hook` names an interpreter that does not exist.
    pub fn unstartable(mut self, hook: &'static str) -> Rel {
        self.unstartable.push(hook);
        self
    }

    /// `VERSION+BUILD`.
    pub fn vb(&self) -> String {
        format!("{}+{}", self.version, self.build)
    }

    /// `webapp@VERSION+BUILD`.
    pub fn spec(&self) -> String {
        format!("webapp@{}", self.vb())
    }
}

/// The script of hook `name`: it logs `NAME VERSION+BUILD ACTION TXN
/// SNAPSHOT_DIR`, fails when its release holds `fail-NAME`, then does its
/// work on the app's database `$BERTH_ROOT/var/lib/webapp/app.db` (or
/// runs `custom`).
fn hook_script(log: &Path, name: &str, epoch: u64, custom: Option<&str>) -> String {
    let usual = match name {
        "backup" => "echo \"backup by $BERTH_VERSION+$BERTH_BUILD\" > \"$BERTH_SNAPSHOT_DIR/backup/taken\"".to_owned(),
        "dump" => "if [ -e \"$db\" ]; then sqlite3 \"$db\" \".backup '$BERTH_SNAPSHOT_DIR/dumps/app.db'\"; fi".to_owned(),
        "restore" => "test -e \"$BERTH_SNAPSHOT_DIR/dumps/app.db\" || { echo 'no dump to restore'; exit 1; }\n\
             sqlite3 \"$db\" \".restore '$BERTH_SNAPSHOT_DIR/dumps/app.db'\"".to_owned(),
        // Epoch 1 makes the table; epoch 2 migrates it (a new column).
        "post_install" => format!(
            "mkdir -p \"$(dirname \"$db\")\"\n\
             sqlite3 \"$db\" 'create table if not exists notes(id integer primary key, body text not null)'\n\
             if [ {epoch} -ge 2 ] && [ \"$(sqlite3 \"$db\" 'pragma user_version')\" -lt 2 ]; then\n\
             \x20 sqlite3 \"$db\" \"alter table notes add column tag text; update notes set tag = 'migrated'; pragma user_version = 2\"\n\
             fi"
        ),
        "health" => "echo \"healthy $BERTH_VERSION+$BERTH_BUILD\"".to_owned(),
        _ => "true".to_owned(),
    };
    let body = custom.map_or(usual, str::to_owned);
    format!(
        "#!/bin/sh\nset -e\n\
         echo \"{name} $BERTH_VERSION+$BERTH_BUILD $BERTH_ACTION $BERTH_TXN $BERTH_SNAPSHOT_DIR\" >> '{log}'\n\
         if [ -e \"$BERTH_RELEASE_DIR/slow-{name}\" ]; then echo $$ > '{log}.{name}.pid'; exec sleep 60; fi\n\
         if [ -e \"$BERTH_RELEASE_DIR/fail-{name}\" ]; then echo '{name}: failing on purpose'; exit 1; fi\n\
         db=\"$BERTH_ROOT/var/lib/webapp/app.db\"\n{body}\n",
        log = log.display()
    )
}

fn package_toml(r: &Rel) -> String {
    let hooks: String = HOOKS
        .iter()
        .map(|h| format!("{h} = \"hooks/{h}\"\n"))
        .collect();
    format!(
        "[package]\nname = \"webapp\"\nversion = \"{}\"\ndescription = \"agent test app\"\npayload = \"dist\"\n\n\
         [install]\ntarget = \"/srv/webapp\"\n\n\
         [hooks]\n{hooks}timeout_secs = {}\n\n\
         [rollback]\ndata_epoch = {}\n",
        r.version, r.timeout_secs, r.epoch
    )
}

/// One test's node, repository and hook log.
#[derive(Debug)]
pub struct Node {
    pub env: TestEnv,
}

impl Node {
    pub fn new() -> Node {
        Node {
            env: TestEnv::new(),
        }
    }

    /// The node root.
    pub fn root(&self) -> PathBuf {
        self.env.join(ROOT)
    }

    /// A path under the node root (`/srv/webapp` → `<root>/srv/webapp`).
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root().join(absolute.trim_start_matches('/'))
    }

    /// The command `agent --root ROOT ARGS...`, not started.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.env.cmd("agent");
        cmd.arg("--root").arg(self.root()).args(args);
        cmd
    }

    /// `agent --root ROOT ARGS...`.
    pub fn agent(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("the agent runs"))
    }

    /// Starts `agent … --repo repo --channel staging ARGS...` in the
    /// background, its output discarded (for killing it).
    pub fn spawn_staging(&self, args: &[&str]) -> std::process::Child {
        let mut all = vec!["--repo", REPO, "--channel", "staging"];
        all.extend_from_slice(args);
        self.command(&all)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the agent starts")
    }

    /// Paths under the node root that say they are temporary
    /// (`.tmp-*` files, `.staging-*` dirs): what no finished or recovered
    /// command may leave.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut stack = vec![self.root()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".tmp-")
                    || name.starts_with(".staging-")
                    || name.starts_with(".trash-")
                    || name.contains(".berth-")
                {
                    found.push(e.path().display().to_string());
                }
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        found
    }

    /// Where the state database and the disk disagree: a transaction left
    /// running, a snapshot row without its directory or a directory
    /// without its row, a release dir no row knows, a release still
    /// `installing`. Empty on a whole node.
    pub fn inconsistencies(&self) -> Vec<String> {
        let mut found = Vec::new();
        let running = self.sql("SELECT count(*) FROM transactions WHERE result = 'running'");
        if running != "0" {
            found.push(format!("{running} transaction(s) still running"));
        }
        let installing = self.sql("SELECT count(*) FROM releases WHERE state = 'installing'");
        if installing != "0" {
            found.push(format!("{installing} release(s) still installing"));
        }
        let rows = self.sql("SELECT dir FROM snapshots");
        let rows: Vec<&str> = rows.lines().collect();
        for dir in &rows {
            if !Path::new(dir).is_dir() {
                found.push(format!("snapshot row without its dir {dir}"));
            }
        }
        let snapshots = self.path("/var/lib/berth/snapshots");
        for name in berth_tests::names(&snapshots) {
            let dir = snapshots.join(&name).display().to_string();
            if !rows.contains(&dir.as_str()) {
                found.push(format!("snapshot dir without a row {dir}"));
            }
        }
        let known = self.sql("SELECT dir FROM releases WHERE package = 'webapp'");
        let releases = self.path("/var/lib/berth/releases/webapp");
        for name in berth_tests::names(&releases) {
            let dir = releases.join(&name).display().to_string();
            if !known.lines().any(|k| k == dir) {
                found.push(format!("release dir no row knows {dir}"));
            }
        }
        found
    }

    /// `agent --root ROOT --repo repo --channel staging ARGS...`.
    pub fn staging(&self, args: &[&str]) -> Run {
        let mut all = vec!["--repo", REPO, "--channel", "staging"];
        all.extend_from_slice(args);
        self.agent(&all)
    }

    /// `agent … --channel staging install SPEC [EXTRA...]`.
    pub fn install(&self, spec: &str, extra: &[&str]) -> Run {
        let mut args = vec!["install", spec];
        args.extend_from_slice(extra);
        self.staging(&args)
    }

    /// Installs `r` from staging, which must succeed.
    pub fn installed(&self, r: &Rel) -> Run {
        self.install(&r.spec(), &[]).ok()
    }

    /// `agent rollback webapp [ARGS...]`.
    pub fn rollback(&self, args: &[&str]) -> Run {
        let mut all = vec!["rollback", "webapp"];
        all.extend_from_slice(args);
        self.agent(&all)
    }

    /// Lays out the application of `r` and builds it into `out/`.
    pub fn build(&self, r: &Rel) -> Artifact {
        let app_rel = format!("app-{}", r.vb());
        let app = self.env.join(&app_rel);
        write(&app.join("package.toml"), &package_toml(r));
        write(
            &app.join("dist/index.html"),
            &format!("<h1>webapp {}</h1>\n", r.vb()),
        );
        write(&app.join("dist/static/app.js"), "console.log('hi');\n");
        write(&app.join("dist/VERSION"), &format!("{}\n", r.version));
        for hook in &r.failing {
            write(&app.join(format!("dist/fail-{hook}")), "");
        }
        for hook in &r.slow {
            write(&app.join(format!("dist/slow-{hook}")), "");
        }
        if r.noise_kib > 0 {
            fs::write(
                app.join("dist/noise.bin"),
                berth_tests::incompressible(r.noise_kib << 10),
            )
            .unwrap();
        }
        for i in 0..r.files {
            write(
                &app.join(format!("dist/data/{}/{i}.txt", i / 100)),
                &format!("{} file {i}\n", r.vb()).repeat(20),
            );
        }
        let log = self.env.join(HOOK_LOG);
        for hook in HOOKS {
            let script = if r.unstartable.contains(&hook) {
                "#!/nonexistent/interpreter\n".to_owned()
            } else {
                let custom = r.scripts.iter().find(|(h, _)| *h == hook);
                hook_script(&log, hook, r.epoch, custom.map(|(_, s)| s.as_str()))
            };
            write_exec(&app.join("hooks").join(hook), &script);
        }
        build_into(&self.env, &app_rel, r.build, "out")
    }

    /// Builds `r` and publishes it to `channel` of the repository.
    pub fn publish_to(&self, r: &Rel, channel: &str) -> Artifact {
        let art = self.build(r);
        publish(&self.env, &art, REPO, channel).ok();
        art
    }

    /// Builds `r` and publishes it to staging.
    pub fn publish(&self, r: &Rel) -> Artifact {
        self.publish_to(r, "staging")
    }

    /// The release dir of `VERSION+BUILD`.
    pub fn release_dir(&self, vb: &str) -> PathBuf {
        self.path("/var/lib/berth/releases/webapp").join(vb)
    }

    /// Where the target `/srv/webapp` points, if it is a symlink.
    pub fn target(&self) -> Option<PathBuf> {
        fs::read_link(self.path("/srv/webapp")).ok()
    }

    /// Asserts that the target points at `vb`'s tree, which holds that
    /// release's page, and that the state database calls it current.
    #[track_caller]
    pub fn assert_current(&self, vb: &str) {
        let tree = self.release_dir(vb).join("files");
        assert_eq!(self.target(), Some(tree.clone()), "the target link");
        assert_eq!(
            fs::read_to_string(self.path("/srv/webapp/index.html")).unwrap(),
            format!("<h1>webapp {vb}</h1>\n")
        );
        assert_eq!(
            self.sql("select version || '+' || build from releases where is_current = 1"),
            vb
        );
    }

    /// Runs a query on the node's state database with the `sqlite3` CLI.
    #[track_caller]
    pub fn sql(&self, query: &str) -> String {
        sqlite(&self.env, &self.path("/var/lib/berth/state.db"), query)
    }

    /// The state of the release `vb` in the state database.
    #[track_caller]
    pub fn release_state(&self, vb: &str) -> String {
        self.sql(&format!(
            "select state from releases where version || '+' || build = '{vb}'"
        ))
    }

    /// The app's database (written by the hooks).
    pub fn app_db(&self) -> PathBuf {
        self.path("/var/lib/webapp/app.db")
    }

    /// Runs a query on the app's database.
    #[track_caller]
    pub fn app_sql(&self, query: &str) -> String {
        sqlite(&self.env, &self.app_db(), query)
    }

    /// The lines of the hook log, `NAME VERSION+BUILD ACTION TXN SNAPSHOT_DIR`.
    pub fn hook_log(&self) -> Vec<String> {
        fs::read_to_string(self.env.join(HOOK_LOG))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The hooks run since the log held `since` lines: `NAME VERSION+BUILD ACTION`.
    pub fn hooks_run_since(&self, since: usize) -> Vec<String> {
        self.hook_log()[since..]
            .iter()
            .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
            .collect()
    }

    /// `agent <verb> webapp --json`, parsed (history, snapshots).
    #[track_caller]
    pub fn report(&self, verb: &str) -> Value {
        self.agent(&[verb, "webapp", "--json"]).ok().json()
    }

    /// Everything a command could change on the node: the files under the
    /// root (but the lock file, which every writer takes, and the database
    /// files, whose bytes SQLite may checkpoint at will), the database's
    /// content, and `agent status --json`.
    pub fn state(&self) -> NodeState {
        let mut files = tree_state(&self.root());
        files.retain(|path, _| {
            path != "var/lib/berth"
                && path != "var/lib/berth/lock"
                && !path.starts_with("var/lib/berth/state.db")
        });
        let db = self.path("/var/lib/berth/state.db");
        let db = if db.exists() {
            sqlite(&self.env, &db, ".dump")
        } else {
            String::new()
        };
        let status = self.agent(&["status", "--json"]);
        NodeState {
            files,
            db,
            status: format!("exit {}: {}", status.code, status.stdout),
        }
    }

    /// Runs `agent --root ROOT ARGS` expecting exit `code`, and asserts that
    /// it changed nothing on the node and ran no hook.
    #[track_caller]
    pub fn refused(&self, args: &[&str], code: i32) -> Run {
        let before = self.state();
        let hooks = self.hook_log().len();
        let run = self.agent(args).code(code);
        assert_unchanged(&before, &self.state(), &run);
        assert_eq!(
            self.hooks_run_since(hooks),
            Vec::<String>::new(),
            "a refused command ran hooks:\n{run}"
        );
        run
    }
}

/// A node's state, from [`Node::state`].
#[derive(Debug, PartialEq, Eq)]
pub struct NodeState {
    pub files: BTreeMap<String, String>,
    pub db: String,
    pub status: String,
}

/// Asserts that two node states are equal, naming the first difference.
#[track_caller]
pub fn assert_unchanged(before: &NodeState, after: &NodeState, run: &Run) {
    for (path, was) in &before.files {
        assert_eq!(
            Some(was),
            after.files.get(path),
            "`{path}` changed or vanished:\n{run}"
        );
    }
    for path in after.files.keys() {
        assert!(before.files.contains_key(path), "`{path}` appeared:\n{run}");
    }
    assert_eq!(before.db, after.db, "the state database changed:\n{run}");
    assert_eq!(
        before.status, after.status,
        "`agent status` changed:\n{run}"
    );
}

/// `sqlite3 DB QUERY`, which must succeed; its output, trimmed.
#[track_caller]
pub fn sqlite(env: &TestEnv, db: &Path, query: &str) -> String {
    let run = env.tool("sqlite3", [db.as_os_str(), query.as_ref()]).ok();
    run.stdout.trim_end().to_owned()
}

/// What a command that fails before the switch must leave as it was (see
/// [`Node::assert_untouched`]).
#[derive(Debug)]
pub struct Untouched {
    files: BTreeMap<String, String>,
    cache: Vec<String>,
    status: Value,
    snapshots: Value,
    transactions: usize,
}

impl Node {
    /// The node before a command expected to fail before its switch.
    pub fn untouched(&self) -> Untouched {
        Untouched {
            files: self.files_but_journal(),
            cache: berth_tests::names(&self.path("/var/lib/berth/cache")),
            status: self.agent(&["status", "--json"]).ok().json(),
            snapshots: self.report("snapshots"),
            transactions: self.report("history").as_array().unwrap().len(),
        }
    }

    /// Every file under the root but the state database, the lock and the
    /// cache, with its type, mode, size, mtime and content; directories by
    /// type and mode only (a staging dir made and removed inside one
    /// changes its mtime).
    fn files_but_journal(&self) -> BTreeMap<String, String> {
        let mut files = tree_state(&self.root());
        files.retain(|path, _| {
            path != "var/lib/berth/lock"
                && !path.starts_with("var/lib/berth/state.db")
                && !path.starts_with("var/lib/berth/cache")
        });
        for value in files.values_mut() {
            if value.starts_with("40") {
                value.truncate(value.find(' ').unwrap_or(value.len()));
            }
        }
        files
    }

    /// Asserts that the command `run`, an install of `installing` or a
    /// rollback (`None`) that failed before the switch, changed nothing but
    /// the journal: every file under the root as it was (an empty
    /// `snapshots/` dir may appear), the cache as it was but for the
    /// installed release's artifact, the same snapshots, the same current
    /// release and target in `agent status` and no release changed but the
    /// installed one, now failed and not kept; one more transaction,
    /// failed, with the error the command printed; and nothing temporary
    /// left.
    #[track_caller]
    pub fn assert_untouched(&self, before: &Untouched, installing: Option<&Rel>, run: &Run) {
        let mut files = self.files_but_journal();
        if !before.files.contains_key("var/lib/berth/snapshots") {
            assert_eq!(
                berth_tests::names(&self.path("/var/lib/berth/snapshots")),
                Vec::<String>::new(),
                "a snapshot dir is left:\n{run}"
            );
            files.remove("var/lib/berth/snapshots");
        }
        for (path, was) in &before.files {
            assert_eq!(
                Some(was),
                files.get(path),
                "`{path}` changed or vanished:\n{run}"
            );
        }
        for path in files.keys() {
            assert!(before.files.contains_key(path), "`{path}` appeared:\n{run}");
        }
        let mut cache = berth_tests::names(&self.path("/var/lib/berth/cache"));
        cache.retain(|name| !before.cache.contains(name));
        // The artifact being installed may stay cached (gc removes it).
        let allowed: Vec<String> = installing
            .map(|f| {
                let sha = self.sql(&format!(
                    "select sha256 from releases where version || '+' || build = '{}'",
                    f.vb()
                ));
                format!("{sha}.tar.zst")
            })
            .into_iter()
            .collect();
        assert!(
            cache.iter().all(|c| allowed.contains(c)),
            "the cache gained {cache:?}:\n{run}"
        );
        assert_eq!(before.snapshots, self.report("snapshots"), "{run}");
        assert_eq!(self.leftovers(), Vec::<String>::new(), "{run}");

        let status = self.agent(&["status", "--json"]).ok().json();
        let (was, is) = (&before.status[0], &status[0]);
        for key in ["package", "current", "target", "points_to", "consistent"] {
            assert_eq!(was[key], is[key], "status `{key}`:\n{run}");
        }
        let is_failed = |r: &Value| {
            installing
                .is_some_and(|f| r["version"] == f.version && r["build"].as_u64() == Some(f.build))
        };
        let releases = |s: &Value| -> Vec<Value> {
            s["releases"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| !is_failed(r))
                .cloned()
                .collect()
        };
        assert_eq!(releases(was), releases(is), "{run}");
        if let Some(r) = is["releases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| is_failed(r))
        {
            assert_eq!(
                (&r["state"], &r["current"], &r["kept"]),
                (&"failed".into(), &false.into(), &false.into()),
                "{run}"
            );
        }
        let history = self.report("history");
        let history = history.as_array().unwrap();
        assert_eq!(history.len(), before.transactions + 1, "{run}");
        assert_eq!(history[0]["result"], "failed", "{run}");
        let error = history[0]["error"].as_str().unwrap();
        assert!(run.stderr.contains(error), "`{error}` is not said:\n{run}");
    }
}
