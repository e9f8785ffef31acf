//! The ready hooks in hooks/, run for real, as the agent runs them (a clean
//! environment: PATH, the BERTH_* variables and the hook's own): `http-health`
//! against Python's HTTP server on loopback, `backup-paths`/`restore-paths` on
//! a real tree, `sqlite-dump`/`sqlite-restore` on a WAL-mode database made
//! with the sqlite3 CLI, `pg-dump`/`pg-restore` against a PostgreSQL server
//! the test starts on loopback, `systemd-restart` dry-run and against the
//! real systemctl (the test machines do not run systemd as init).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use berth_tests::{Run, TestEnv, names, write};

fn hook(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../hooks")
        .join(name)
}

/// `python3 -m http.server` serving `root` on 127.0.0.1; stopped on drop.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    /// Starts on `port` (0: any free port) and waits until it listens.
    fn start(root: &Path, port: u16) -> HttpServer {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs (the README's test command installs it)");
        // "Serving HTTP on 127.0.0.1 port 43567 (http://127.0.0.1:43567/) ..."
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the server says where it listens");
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the HTTP server did not start: {line:?}"));
        HttpServer { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `http-health` as the agent would (see [`run_hook`]).
fn http_health(env: &TestEnv, vars: &[(&str, &str)]) -> Run {
    run_hook(env, "http-health", vars)
}

fn serving_version(env: &TestEnv) -> HttpServer {
    write(&env.join("site/health"), "ok 1.4.2\n");
    HttpServer::start(&env.join("site"), 0)
}

#[test]
fn http_health_passes_when_the_url_answers_with_the_expected_text() {
    let env = TestEnv::new();
    let server = serving_version(&env);
    let run = http_health(
        &env,
        &[
            ("HEALTH_URL", &server.url("health")),
            ("HEALTH_EXPECT", "1.4.2"),
        ],
    )
    .ok();
    assert!(run.stdout.contains("answered 200"), "{run}");
}

#[test]
fn http_health_fails_on_the_wrong_text_after_its_retries() {
    let env = TestEnv::new();
    let server = serving_version(&env);
    let run = http_health(
        &env,
        &[
            ("HEALTH_URL", &server.url("health")),
            ("HEALTH_EXPECT", "2.0.0"),
            ("HEALTH_RETRIES", "2"),
            ("HEALTH_INTERVAL", "0"),
        ],
    )
    .code(1);
    assert!(
        run.stderr.contains("without \"2.0.0\" (attempt 2/2)"),
        "{run}"
    );
    assert!(run.stderr.contains("not healthy after 2 attempts"), "{run}");
}

#[test]
fn http_health_fails_on_an_error_status() {
    let env = TestEnv::new();
    let server = serving_version(&env);
    let run = http_health(
        &env,
        &[
            ("HEALTH_URL", &server.url("missing")),
            ("HEALTH_RETRIES", "1"),
        ],
    )
    .code(1);
    assert!(run.stderr.contains("answered 404"), "{run}");
}

#[test]
fn http_health_fails_when_nothing_listens() {
    let env = TestEnv::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/health");
    let run = http_health(
        &env,
        &[
            ("HEALTH_URL", &url),
            ("HEALTH_RETRIES", "2"),
            ("HEALTH_INTERVAL", "0"),
        ],
    )
    .code(1);
    assert!(run.stderr.contains("(attempt 1/2)"), "{run}");
    assert!(run.stderr.contains("not healthy after 2 attempts"), "{run}");
}

#[test]
fn http_health_retries_until_a_slow_server_comes_up() {
    let env = TestEnv::new();
    write(&env.join("site/health"), "ok\n");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/health");
    let hook = Command::new(hook("http-health"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([
            ("HEALTH_URL", url.as_str()),
            ("HEALTH_RETRIES", "30"),
            ("HEALTH_INTERVAL", "1"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _server = HttpServer::start(&env.join("site"), port);
    let run = Run::from(hook.wait_with_output().unwrap()).ok();
    assert!(
        run.stderr.contains("(attempt 1/30)"),
        "the first attempts failed:\n{run}"
    );
    assert!(run.stdout.contains("answered 200"), "{run}");
}

#[test]
fn http_health_refuses_to_run_unconfigured() {
    let env = TestEnv::new();
    let run = http_health(&env, &[]).code(2);
    assert!(run.stderr.contains("HEALTH_URL is not set"), "{run}");
    let run = http_health(
        &env,
        &[
            ("HEALTH_URL", "http://127.0.0.1:1/"),
            ("HEALTH_RETRIES", "x"),
        ],
    )
    .code(2);
    assert!(run.stderr.contains("whole numbers"), "{run}");
}

// ---------------------------------------------------------------------------
// Running a hook as the agent does.

/// Runs hook `name` in a clean environment: PATH, the BERTH_* variables of
/// an install of webapp 1.4.2 over 1.4.1 (a rollback for `*restore*` hooks)
/// with `BERTH_SNAPSHOT_DIR` = `<temp>/snapshot`, then `vars`; the working
/// directory is the release.
fn run_hook(env: &TestEnv, name: &str, vars: &[(&str, &str)]) -> Run {
    let path = std::env::var("PATH").unwrap_or_default();
    let release = env.join("releases/1.4.2");
    fs::create_dir_all(&release).unwrap();
    let snapshot = snapshot_dir(env);
    let action = if name.contains("restore") {
        "rollback"
    } else {
        "install"
    };
    let mut cmd = Command::new(hook(name));
    cmd.env_clear()
        .env("PATH", path)
        .envs([
            ("BERTH_ACTION", action),
            ("BERTH_PACKAGE", "webapp"),
            ("BERTH_VERSION", "1.4.2"),
            ("BERTH_BUILD", "1"),
            ("BERTH_CHANNEL", "stable"),
            ("BERTH_RELEASE_DIR", release.to_str().unwrap()),
            ("BERTH_PREVIOUS_VERSION", "1.4.1"),
            (
                "BERTH_PREVIOUS_DIR",
                env.join("releases/1.4.1").to_str().unwrap(),
            ),
            ("BERTH_SNAPSHOT_DIR", snapshot.to_str().unwrap()),
            ("BERTH_TXN", "42"),
        ])
        .envs(vars.iter().copied())
        .current_dir(&release)
        .stdin(Stdio::null());
    Run::from(cmd.output().expect("the hook runs"))
}

fn snapshot_dir(env: &TestEnv) -> PathBuf {
    env.join("snapshot")
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Everything about `root` and what is under it that a restore must bring
/// back: type, mode, owner, size, mtime, content or link target.
fn deep_state(root: &Path) -> BTreeMap<String, String> {
    fn visit(root: &Path, path: &Path, out: &mut BTreeMap<String, String>) {
        let meta = fs::symlink_metadata(path).unwrap();
        let content = if meta.file_type().is_symlink() {
            format!("-> {}", fs::read_link(path).unwrap().display())
        } else if meta.is_file() {
            format!("{:?}", fs::read(path).unwrap())
        } else {
            String::new()
        };
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        out.insert(
            format!("/{rel}"),
            format!(
                "mode {:o} owner {}:{} size {} mtime {}.{:09} {content}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                if meta.is_dir() { 0 } else { meta.len() },
                meta.mtime(),
                meta.mtime_nsec(),
            ),
        );
        if meta.is_dir() {
            for entry in fs::read_dir(path).unwrap() {
                visit(root, &entry.unwrap().path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    visit(root, root, &mut out);
    out
}

fn is_root(env: &TestEnv) -> bool {
    fs::metadata(env.path()).unwrap().uid() == 0
}

// ---------------------------------------------------------------------------
// backup-paths and restore-paths

/// `data/uploads`, a tree with modes, a symlink, an empty directory, binary
/// content, old times (and, as root, another owner); `data/site.conf`, a
/// private file.
fn app_data(env: &TestEnv) -> (PathBuf, PathBuf) {
    let uploads = env.join("data/uploads");
    let conf = env.join("data/site.conf");
    write(&uploads.join("a.txt"), "first upload\n");
    fs::create_dir_all(uploads.join("sub")).unwrap();
    fs::write(uploads.join("sub/b.bin"), [0u8, 159, 146, 150, 255, b'\n']).unwrap();
    fs::create_dir_all(uploads.join("empty")).unwrap();
    std::os::unix::fs::symlink("sub/b.bin", uploads.join("latest")).unwrap();
    write(&conf, "secret = 1\n");
    fs::set_permissions(uploads.join("a.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(uploads.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(uploads.join("empty"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o600)).unwrap();
    if is_root(env) {
        std::os::unix::fs::chown(uploads.join("sub/b.bin"), Some(4321), Some(4321)).unwrap();
    }
    // Old times, children before their directories, so that a copy that
    // does not keep them shows.
    for rel in [
        "uploads/a.txt",
        "uploads/sub/b.bin",
        "uploads/latest",
        "uploads/sub",
        "uploads/empty",
        "uploads",
        "site.conf",
    ] {
        env.tool(
            "touch",
            [
                "-h",
                "-d",
                "@1600000000.123456789",
                s(&env.join(&format!("data/{rel}"))),
            ],
        )
        .ok();
    }
    (uploads, conf)
}

#[test]
fn backup_paths_and_restore_paths_bring_back_a_tree_and_a_file_exactly() {
    let env = TestEnv::new();
    let (uploads, conf) = app_data(&env);
    let before = (deep_state(&uploads), deep_state(&conf));
    // Newline-separated, with the blanks and trailing slash of an env file.
    let list = format!("{}/\n  {}  \n", s(&uploads), s(&conf));

    let run = run_hook(&env, "backup-paths", &[("BACKUP_PATHS", &list)]).ok();
    assert!(run.stdout.contains("saved 2 path(s)"), "{run}");
    let backup = snapshot_dir(&env).join("backup");
    let manifest = fs::read_to_string(backup.join("paths.manifest")).unwrap();
    let entries: Vec<&str> = manifest.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        entries,
        [format!("dir {}", s(&uploads)), format!("file {}", s(&conf))],
        "{manifest}"
    );
    let saved = backup.join(format!("paths{}", s(&uploads)));
    assert_eq!(
        deep_state(&saved),
        before.0,
        "the copy in the snapshot is exact"
    );

    // The application changes everything after the snapshot.
    write(&uploads.join("a.txt"), "overwritten\n");
    fs::set_permissions(uploads.join("sub"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::remove_file(uploads.join("sub/b.bin")).unwrap();
    fs::remove_file(uploads.join("latest")).unwrap();
    std::os::unix::fs::symlink("a.txt", uploads.join("latest")).unwrap();
    write(
        &uploads.join("new/since.txt"),
        "written after the snapshot\n",
    );
    fs::remove_file(&conf).unwrap();
    assert_ne!(deep_state(&uploads), before.0);

    let run = run_hook(&env, "restore-paths", &[("BACKUP_PATHS", &list)]).ok();
    assert!(run.stdout.contains("restored 2 path(s)"), "{run}");
    assert_eq!(deep_state(&uploads), before.0, "the tree is back exactly");
    assert_eq!(deep_state(&conf), before.1, "the file is back exactly");
    assert_eq!(
        names(&env.join("data")),
        ["site.conf", "uploads"],
        "no temporary or old copy is left beside them"
    );

    // A file changed in place is put back too, and the snapshot can be
    // restored again (colon-separated this time).
    write(&conf, "secret = 2\n");
    let list = format!("{}:{}", s(&uploads), s(&conf));
    run_hook(&env, "restore-paths", &[("BACKUP_PATHS", &list)]).ok();
    assert_eq!(deep_state(&conf), before.1);
    assert_eq!(deep_state(&uploads), before.0);
}

#[test]
fn backup_paths_refuses_a_missing_path_naming_it_and_saves_nothing() {
    let env = TestEnv::new();
    let (uploads, _) = app_data(&env);
    let gone = env.join("data/gone");
    let list = format!("{}:{}", s(&uploads), s(&gone));
    let run = run_hook(&env, "backup-paths", &[("BACKUP_PATHS", &list)]).code(1);
    assert!(
        run.stderr.contains(&format!(
            "{} (listed in BACKUP_PATHS) does not exist",
            s(&gone)
        )),
        "{run}"
    );
    assert!(!snapshot_dir(&env).join("backup/paths.manifest").exists());
}

#[test]
fn backup_paths_refuses_bad_configuration() {
    let env = TestEnv::new();
    let (uploads, conf) = app_data(&env);
    let run = run_hook(&env, "backup-paths", &[]).code(2);
    assert!(run.stderr.contains("BACKUP_PATHS is not set"), "{run}");
    let run = run_hook(&env, "backup-paths", &[("BACKUP_PATHS", "data/uploads")]).code(2);
    assert!(run.stderr.contains("is not an absolute path"), "{run}");
    let nested = format!("{}:{}", s(&env.join("data")), s(&uploads));
    let run = run_hook(&env, "backup-paths", &[("BACKUP_PATHS", &nested)]).code(2);
    assert!(run.stderr.contains("which is saved already"), "{run}");
    let twice = format!("{}:{}/", s(&conf), s(&conf));
    let run = run_hook(&env, "backup-paths", &[("BACKUP_PATHS", &twice)]).code(2);
    assert!(run.stderr.contains("is listed twice"), "{run}");
}

#[test]
fn restore_paths_refuses_a_snapshot_that_lacks_a_path_and_changes_nothing() {
    let env = TestEnv::new();
    let (uploads, conf) = app_data(&env);
    let run = run_hook(&env, "restore-paths", &[("BACKUP_PATHS", s(&conf))]).code(1);
    assert!(run.stderr.contains("the snapshot has no"), "{run}");
    assert!(run.stderr.contains("paths.manifest"), "{run}");

    run_hook(&env, "backup-paths", &[("BACKUP_PATHS", s(&conf))]).ok();
    write(&conf, "changed\n");
    let data = deep_state(&env.join("data"));
    let list = format!("{}:{}", s(&conf), s(&uploads));
    let run = run_hook(&env, "restore-paths", &[("BACKUP_PATHS", &list)]).code(1);
    assert!(
        run.stderr
            .contains(&format!("the snapshot did not save {}", s(&uploads))),
        "{run}"
    );
    assert_eq!(deep_state(&env.join("data")), data, "nothing was restored");

    // A manifest whose copy is gone is refused as well.
    fs::remove_file(snapshot_dir(&env).join(format!("backup/paths{}", s(&conf)))).unwrap();
    let run = run_hook(&env, "restore-paths", &[("BACKUP_PATHS", s(&conf))]).code(1);
    assert!(run.stderr.contains("lacks its copy"), "{run}");
    assert_eq!(deep_state(&env.join("data")), data);

    let run = run_hook(&env, "restore-paths", &[]).code(2);
    assert!(run.stderr.contains("BACKUP_PATHS is not set"), "{run}");
}

// ---------------------------------------------------------------------------
// sqlite-dump and sqlite-restore

fn sqlite(env: &TestEnv, db: &Path, sql: &str) -> String {
    env.tool("sqlite3", ["-bail", s(db), sql]).ok().stdout
}

/// A `sqlite3` process holding the database open, as the application
/// would: what it writes stays in the -wal file (no automatic checkpoint).
struct SqliteApp {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl SqliteApp {
    fn open(db: &Path) -> SqliteApp {
        let mut child = Command::new("sqlite3")
            .args(["-bail", s(db)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sqlite3 runs (the README's test command installs it)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut app = SqliteApp {
            child,
            stdin,
            stdout,
        };
        app.exec("PRAGMA wal_autocheckpoint=0;");
        app
    }

    /// Runs `sql` and waits until it is done.
    fn exec(&mut self, sql: &str) {
        writeln!(self.stdin, "{sql}\n.print done").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            assert_ne!(
                self.stdout.read_line(&mut line).unwrap(),
                0,
                "sqlite3 ended"
            );
            if line.trim_end() == "done" {
                break;
            }
        }
    }
}

impl Drop for SqliteApp {
    fn drop(&mut self) {
        // SIGKILL: no checkpoint at close, the -wal file stays.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ROWS: &str = "SELECT id, name, hex(blob) FROM item ORDER BY id;";

#[test]
fn sqlite_dump_and_restore_bring_back_a_wal_database_exactly() {
    let env = TestEnv::new();
    let db = env.join("var/app.db");
    fs::create_dir_all(db.parent().unwrap()).unwrap();
    sqlite(
        &env,
        &db,
        "PRAGMA journal_mode=WAL; PRAGMA user_version=7;
         CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT NOT NULL, blob BLOB);
         INSERT INTO item VALUES (1, 'one', x'00ff'), (2, 'two', NULL);",
    );
    fs::set_permissions(&db, fs::Permissions::from_mode(0o640)).unwrap();
    let vars = [("SQLITE_DB", s(&db))];

    // The application has the database open and has written rows that are
    // only in the -wal file when the dump runs.
    let mut app = SqliteApp::open(&db);
    app.exec("INSERT INTO item VALUES (3, 'only in the wal', x'2a');");
    assert!(env.join("var/app.db-wal").is_file());
    let expected = sqlite(&env, &db, ROWS);
    assert!(expected.contains("only in the wal"), "{expected}");

    let run = run_hook(&env, "sqlite-dump", &vars).ok();
    assert!(run.stdout.contains("dumped"), "{run}");
    let dump = snapshot_dir(&env).join("dumps/app.db");
    assert!(fs::read(&dump).unwrap().starts_with(b"SQLite format 3\0"));
    assert_eq!(
        sqlite(&env, &dump, ROWS),
        expected,
        "the dump has every row"
    );
    assert_eq!(fs::metadata(&dump).unwrap().mode() & 0o777, 0o640);

    // Changes after the snapshot, left in a -wal file by an application
    // that dies: replayed into the restored file, they would undo it.
    app.exec(
        "DELETE FROM item WHERE id = 1; UPDATE item SET name = 'changed';
         INSERT INTO item VALUES (4, 'after the snapshot', NULL);",
    );
    drop(app);
    assert!(fs::metadata(env.join("var/app.db-wal")).unwrap().len() > 0);

    let run = run_hook(&env, "sqlite-restore", &vars).ok();
    assert!(run.stdout.contains("restored"), "{run}");
    assert_eq!(
        sqlite(&env, &db, ROWS),
        expected,
        "the rows are back exactly"
    );
    assert_eq!(sqlite(&env, &db, "PRAGMA journal_mode;"), "wal\n");
    assert_eq!(sqlite(&env, &db, "PRAGMA user_version;"), "7\n");
    assert_eq!(sqlite(&env, &db, "PRAGMA integrity_check;"), "ok\n");
    assert_eq!(fs::metadata(&db).unwrap().mode() & 0o777, 0o640);
    assert_eq!(
        names(&env.join("var")),
        ["app.db"],
        "nothing left beside it"
    );

    // No database at all (a new node, or one wiped): the restore creates it.
    fs::remove_dir_all(env.join("var")).unwrap();
    run_hook(&env, "sqlite-restore", &vars).ok();
    assert_eq!(sqlite(&env, &db, ROWS), expected);
}

#[test]
fn sqlite_restore_refuses_a_missing_or_foreign_dump_and_changes_nothing() {
    let env = TestEnv::new();
    let db = env.join("var/app.db");
    fs::create_dir_all(db.parent().unwrap()).unwrap();
    sqlite(&env, &db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    let state = deep_state(&env.join("var"));

    let run = run_hook(&env, "sqlite-restore", &[("SQLITE_DB", s(&db))]).code(1);
    assert!(run.stderr.contains("the snapshot has no dump"), "{run}");
    assert!(run.stderr.contains("dumps/app.db"), "{run}");

    write(
        &snapshot_dir(&env).join("dumps/app.db"),
        "CREATE TABLE t(x);\n",
    );
    let run = run_hook(&env, "sqlite-restore", &[("SQLITE_DB", s(&db))]).code(1);
    assert!(run.stderr.contains("is not a SQLite database"), "{run}");
    assert_eq!(
        deep_state(&env.join("var")),
        state,
        "the database is untouched"
    );

    let run = run_hook(&env, "sqlite-restore", &[]).code(2);
    assert!(run.stderr.contains("SQLITE_DB is not set"), "{run}");
}

#[test]
fn sqlite_dump_refuses_a_missing_database_and_bad_configuration() {
    let env = TestEnv::new();
    let db = env.join("var/app.db");
    let run = run_hook(&env, "sqlite-dump", &[("SQLITE_DB", s(&db))]).code(1);
    assert!(run.stderr.contains("does not exist"), "{run}");
    assert!(!db.exists(), "the dump did not create an empty database");
    let run = run_hook(&env, "sqlite-dump", &[]).code(2);
    assert!(run.stderr.contains("SQLITE_DB is not set"), "{run}");
    let run = run_hook(&env, "sqlite-dump", &[("SQLITE_DB", "app.db")]).code(2);
    assert!(run.stderr.contains("is not an absolute path"), "{run}");
}

// ---------------------------------------------------------------------------
// pg-dump and pg-restore

const PG_PASSWORD: &str = "berth-pw-5d1f0c";

/// The newest PostgreSQL server in Debian's layout, /usr/lib/postgresql/<version>/bin.
fn pg_bindir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    fs::read_dir(root)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| {
            panic!("no PostgreSQL server in /usr/lib/postgresql/<version>/bin: install Debian's postgresql package (bash tests/run.sh does)")
        })
}

/// A PostgreSQL server on 127.0.0.1, initialised in a temp dir, run as the
/// `postgres` user when the tests run as root (PostgreSQL refuses root);
/// superuser `berth` with password [`PG_PASSWORD`]. Stopped on drop, also
/// when a test fails.
struct PgServer {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    as_postgres: bool,
    port: u16,
}

impl PgServer {
    fn start() -> PgServer {
        let bindir = pg_bindir();
        let dir = tempfile::Builder::new()
            .prefix("berth-pg-")
            .tempdir()
            .unwrap();
        let as_postgres = fs::metadata(dir.path()).unwrap().uid() == 0;
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        for sub in ["data", "run"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        fs::set_permissions(dir.path().join("data"), fs::Permissions::from_mode(0o700)).unwrap();
        write(&dir.path().join("pwfile"), &format!("{PG_PASSWORD}\n"));
        if as_postgres {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
            let p = |rel: &str| dir.path().join(rel).display().to_string();
            let out = Command::new("chown")
                .args(["-R", "postgres:", &p("data"), &p("run"), &p("pwfile")])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "chown to the postgres user (made by Debian's postgresql package): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // From here on, drop stops whatever pg_ctl may have started.
        let server = PgServer {
            dir,
            bindir,
            as_postgres,
            port,
        };
        let data = server.path("data");
        let initdb = server
            .admin("initdb")
            .args(["-D", &data, "-U", "berth", "--auth=scram-sha-256"])
            .arg(format!("--pwfile={}", server.path("pwfile")))
            .args(["--no-locale", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
            server.path("run")
        );
        let start = server
            .admin("pg_ctl")
            .args(["-D", &data, "-l", &server.path("run/log"), "-w", "-t", "30"])
            .args(["-o", &options, "start"])
            .output()
            .unwrap();
        assert!(
            start.status.success(),
            "the PostgreSQL server did not start:\n{}{}--- log\n{}",
            String::from_utf8_lossy(&start.stdout),
            String::from_utf8_lossy(&start.stderr),
            fs::read_to_string(server.path("run/log")).unwrap_or_default()
        );
        server
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    /// A server-side program, run as `postgres` when we are root.
    fn admin(&self, program: &str) -> Command {
        let program = self.bindir.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LC_ALL", "C")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// The libpq variables that reach it, for `database`.
    fn client_vars(&self, database: &str) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", "127.0.0.1".into()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", "berth".into()),
            ("PGDATABASE", database.into()),
        ]
    }

    /// Runs SQL in `database`; its output unaligned, tuples only.
    fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bindir.join("psql"))
            .env_clear()
            .envs(self.client_vars(database))
            .env("PGPASSWORD", PG_PASSWORD)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let run = Run::from(out);
        assert_eq!(run.code, 0, "psql failed on {sql}:\n{run}");
        run.stdout
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.path("data");
        let _ = self
            .admin("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn refs<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[track_caller]
fn assert_no_password(run: &Run) {
    assert!(
        !run.stdout.contains(PG_PASSWORD) && !run.stderr.contains(PG_PASSWORD),
        "the password was printed:\n{run}"
    );
    assert!(
        !run.stdout.contains("wrong-pw") && !run.stderr.contains("wrong-pw"),
        "the password was printed:\n{run}"
    );
}

#[test]
fn pg_dump_and_restore_bring_back_a_database_on_a_real_server() {
    let env = TestEnv::new();
    let pg = PgServer::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        "CREATE TABLE item(id serial PRIMARY KEY, name text NOT NULL, price numeric(8,2));
         INSERT INTO item(name, price) VALUES ('tea', 3.50), ('cup', 12.00), ('pot', NULL);
         CREATE TABLE note(body text);
         INSERT INTO note VALUES ('kept');",
    );
    let rows = "SELECT id, name, price FROM item ORDER BY id";
    let expected = pg.psql("shop", rows);
    assert_eq!(expected, "1|tea|3.50\n2|cup|12.00\n3|pot|\n");
    let vars = pg.client_vars("shop");
    let with = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        vars.iter().chain(extra).cloned().collect()
    };

    // The dump with PGPASSWORD.
    let dump_vars = with(&[("PGPASSWORD", PG_PASSWORD.into())]);
    let run = run_hook(&env, "pg-dump", &refs(&dump_vars)).ok();
    assert_no_password(&run);
    assert!(
        run.stdout.contains("dumped database shop on 127.0.0.1"),
        "{run}"
    );
    let dump = snapshot_dir(&env).join("dumps/shop.pgdump");
    assert!(
        fs::read(&dump).unwrap().starts_with(b"PGDMP"),
        "custom format"
    );
    assert_eq!(
        fs::metadata(&dump).unwrap().mode() & 0o777,
        0o600,
        "private"
    );

    // The application changes everything, drops a table too.
    pg.psql(
        "shop",
        "DELETE FROM item WHERE name = 'tea'; UPDATE item SET price = 0;
         INSERT INTO item(name) VALUES ('after the snapshot'); DROP TABLE note;",
    );
    assert_ne!(pg.psql("shop", rows), expected);

    // A wrong password fails, prints no password, and changes nothing.
    let changed = pg.psql("shop", rows);
    let wrong = with(&[("PGPASSWORD", "wrong-pw".into())]);
    let run = run_hook(&env, "pg-restore", &refs(&wrong)).code(1);
    assert_no_password(&run);
    assert!(
        run.stderr.contains("password authentication failed"),
        "{run}"
    );
    assert_eq!(pg.psql("shop", rows), changed);

    // The restore with a password file instead.
    let passfile = env.join("pgpass");
    write(
        &passfile,
        &format!("127.0.0.1:{}:*:berth:{PG_PASSWORD}\n", pg.port),
    );
    fs::set_permissions(&passfile, fs::Permissions::from_mode(0o600)).unwrap();
    let restore_vars = with(&[("PGPASSFILE", s(&passfile).into())]);
    let run = run_hook(&env, "pg-restore", &refs(&restore_vars)).ok();
    assert_no_password(&run);
    assert!(run.stdout.contains("restored database shop"), "{run}");
    assert_eq!(pg.psql("shop", rows), expected, "the rows are back exactly");
    assert_eq!(pg.psql("shop", "SELECT body FROM note"), "kept\n");
    // The sequence is back too: the next row gets id 4.
    pg.psql("shop", "INSERT INTO item(name) VALUES ('next')");
    assert_eq!(
        pg.psql("shop", "SELECT id FROM item WHERE name = 'next'"),
        "4\n"
    );
}

#[test]
fn pg_hooks_refuse_bad_configuration_and_a_missing_or_foreign_dump() {
    let env = TestEnv::new();
    // No server: every refusal comes before connecting.
    let base = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", "1"),
        ("PGUSER", "berth"),
        ("PGPASSWORD", PG_PASSWORD),
    ];
    for hook in ["pg-dump", "pg-restore"] {
        let run = run_hook(&env, hook, &base).code(2);
        assert!(run.stderr.contains("PGDATABASE is not set"), "{run}");
        assert_no_password(&run);
        let mut vars = base.to_vec();
        vars.push(("PGDATABASE", "shop"));
        vars.push(("PGPASSFILE", "/nonexistent/pgpass"));
        let run = run_hook(&env, hook, &vars).code(2);
        assert!(
            run.stderr
                .contains("PGPASSFILE=/nonexistent/pgpass does not exist"),
            "{run}"
        );
    }
    let mut vars = base.to_vec();
    vars.push(("PGDATABASE", "shop"));
    let run = run_hook(&env, "pg-restore", &vars).code(1);
    assert!(run.stderr.contains("the snapshot has no dump"), "{run}");
    assert!(run.stderr.contains("dumps/shop.pgdump"), "{run}");
    assert_no_password(&run);
    write(
        &snapshot_dir(&env).join("dumps/shop.pgdump"),
        "not a dump\n",
    );
    let run = run_hook(&env, "pg-restore", &vars).code(1);
    assert!(
        run.stderr
            .contains("is neither a pg_dump custom-format dump"),
        "{run}"
    );
    // A server that does not answer: pg_dump's failure, exit 1.
    let run = run_hook(&env, "pg-dump", &vars).code(1);
    assert!(
        run.stderr
            .contains("pg_dump of database shop on 127.0.0.1 port 1"),
        "{run}"
    );
    assert_no_password(&run);
}

// ---------------------------------------------------------------------------
// systemd-restart

#[test]
fn systemd_restart_dry_run_prints_the_exact_commands() {
    let env = TestEnv::new();
    let run = run_hook(
        &env,
        "systemd-restart",
        &[
            ("SYSTEMD_UNIT", "webapp.service"),
            ("BERTH_HOOK_DRY_RUN", "1"),
        ],
    )
    .ok();
    assert_eq!(
        run.stdout,
        "systemctl restart webapp.service\nsystemctl is-active --quiet webapp.service\n",
        "{run}"
    );
    assert!(run.stderr.contains("dry run"), "{run}");
}

#[test]
fn systemd_restart_refuses_to_run_unconfigured() {
    let env = TestEnv::new();
    for dry_run in ["1", "0"] {
        let run = run_hook(&env, "systemd-restart", &[("BERTH_HOOK_DRY_RUN", dry_run)]).code(2);
        assert!(run.stderr.contains("SYSTEMD_UNIT is not set"), "{run}");
    }
    let run = run_hook(
        &env,
        "systemd-restart",
        &[
            ("SYSTEMD_UNIT", "web app; reboot"),
            ("BERTH_HOOK_DRY_RUN", "1"),
        ],
    )
    .code(2);
    assert!(run.stderr.contains("is not a unit name"), "{run}");
    assert_eq!(run.stdout, "");
    let run = run_hook(
        &env,
        "systemd-restart",
        &[("SYSTEMD_UNIT", "webapp"), ("SYSTEMD_WAIT", "soon")],
    )
    .code(2);
    assert!(
        run.stderr.contains("SYSTEMD_WAIT must be a whole number"),
        "{run}"
    );
}

/// The real `systemctl`: on a machine without systemd as init (these test
/// machines) it cannot talk to systemd, and on one with systemd the unit
/// does not exist; either way the restart fails and the hook says so with
/// systemctl's own words, exit 1 (exit 2 where systemctl is not installed).
#[test]
fn systemd_restart_fails_when_systemctl_cannot_restart_the_unit() {
    let env = TestEnv::new();
    let run = run_hook(
        &env,
        "systemd-restart",
        &[("SYSTEMD_UNIT", "berth-test-no-such-unit.service")],
    );
    assert!(run.code == 1 || run.code == 2, "{run}");
    assert!(run.stderr.contains("systemctl"), "{run}");
}
