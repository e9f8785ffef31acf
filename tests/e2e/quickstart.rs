//! The README's quick start, examples/quickstart.sh, run as a user would
//! (with the binaries this test suite drives), so the first command a new
//! user types keeps working and keeps telling the whole story of the agent:
//! v1 installed and promoted, v2 migrating its SQLite data, v3 failing its
//! health check and rolled back to v2, then back to v1 with its data.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use berth_tests::{Run, TestEnv, bin_dir};

use crate::agent_support::sqlite;

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every file under `dir`, by relative path, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().display().to_string();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn the_quick_start_runs_the_whole_story_v1_v2_migrated_v3_rolled_back_v1_with_data() {
    let mut env = TestEnv::new();
    env.set("BERTH_BIN", &bin_dir().display().to_string());
    env.set("BERTH_DEMO", &env.join("demo").display().to_string());
    let run = env
        .tool("bash", [repo_dir().join("examples/quickstart.sh")])
        .ok();
    let node = env.join("demo/node");
    let db = node.join("var/lib/webapp/app.db");

    // Signed all along: the node trusts CI's key and reads only signed
    // indexes.
    assert!(run.stdout.contains("(NOT encrypted), public key"), "{run}");
    assert!(!run.stderr.contains("not authenticated"), "{run}");
    for channel in ["staging", "production"] {
        assert!(
            env.join(&format!("demo/repo/channels/{channel}/webapp.json.minisig"))
                .is_file()
        );
    }

    // v1 installed, a re-run unchanged, promoted; v2 migrated its data.
    for line in [
        "installed webapp@1.4.2+1 from staging",
        "unchanged: webapp@1.4.2+1 is installed and intact",
        "promoted webapp@1.4.2+1 from staging to production",
        "installed webapp@1.5.0+2 from staging, replacing 1.4.2+1",
        "1   v1 is live          alice",
    ] {
        assert!(run.stdout.contains(line), "missing `{line}`:\n{run}");
    }
    for line in [
        "[webapp post_install] applied migration 001_notes.sql",
        "[webapp dump] sqlite-dump: dumped",
        "[webapp post_install] applied migration 002_authors.sql",
        "[webapp health] webapp 1.5.0 is healthy",
    ] {
        assert!(run.stderr.contains(line), "missing `{line}`:\n{run}");
    }

    // v3 failed its health check: rolled back to v2 automatically, exit 3.
    assert!(
        run.stderr.contains(
            "the health hook of webapp@1.6.0+3 failed (exit code 1) after the switch; \
             the node is back on webapp@1.5.0+2"
        ),
        "{run}"
    );
    assert!(
        run.stdout.contains("exit 3, as expected")
            && run
                .stdout
                .contains("install 1.5.0+2 -> 1.6.0+3: rolled-back")
            && run.stdout.contains("webapp 1.5.0+2 (healthy)"),
        "{run}"
    );
    // The code-only rollback across data epochs was refused.
    assert!(run.stdout.contains("exit 2, as expected"), "{run}");
    assert!(
        run.stdout
            .contains("rolled back webapp from 1.5.0+2 to 1.4.2+1 with its data"),
        "{run}"
    );
    let state_db = node.join("var/lib/berth/state.db");
    let states = sqlite(
        &env,
        &state_db,
        "select version || '+' || build || ' ' || state from releases order by id",
    );
    assert_eq!(
        states, "1.4.2+1 healthy\n1.5.0+2 rolled-back\n1.6.0+3 failed",
        "{run}"
    );

    // After `rollback --to 1.4.2+1 --with-data`: v1's tree...
    let target = fs::read_link(node.join("srv/webapp")).unwrap();
    assert!(
        target.ends_with("releases/webapp/1.4.2+1/files"),
        "{}",
        target.display()
    );
    assert_eq!(
        files(&target),
        files(&repo_dir().join("examples/webapp/dist")),
        "the target is not v1's tree"
    );
    // ...and v1's data, exactly: its schema, its rows, not v2's note.
    let v1_rows = "1|alice: v1 is live\n2|bob: staging looks good";
    assert_eq!(
        sqlite(&env, &db, "select * from notes order by id"),
        v1_rows
    );
    assert_eq!(sqlite(&env, &db, "pragma user_version"), "1");
    assert_eq!(
        sqlite(
            &env,
            &db,
            "select group_concat(name) from pragma_table_info('notes')"
        ),
        "id,body"
    );
    assert!(
        run.stdout
            .contains(&format!("the node root: {}", node.display())),
        "{run}"
    );

    // Re-running the rollback changes nothing: no transaction, no hook, the
    // rows written since are kept, the release stays healthy.
    sqlite(
        &env,
        &db,
        "insert into notes (body) values ('dave: after the rollback')",
    );
    env.set("BERTH_ROOT", &node.display().to_string());
    let txns = sqlite(&env, &state_db, "select count(*) from transactions");
    let again = Run::from(
        env.cmd("agent")
            .args(["rollback", "webapp", "--to", "1.4.2+1", "--with-data"])
            .output()
            .unwrap(),
    )
    .ok();
    assert!(!again.stderr.contains("[webapp "), "a hook ran:\n{again}");
    assert_eq!(
        sqlite(&env, &state_db, "select count(*) from transactions"),
        txns
    );
    assert_eq!(
        sqlite(&env, &db, "select count(*) from notes"),
        "3",
        "{again}"
    );
    assert_eq!(
        sqlite(
            &env,
            &state_db,
            "select state from releases where version = '1.4.2'"
        ),
        "healthy"
    );
}

/// The example ships the ready SQLite hooks as they are in hooks/.
#[test]
fn the_example_ships_the_ready_sqlite_hooks_unchanged() {
    for hook in ["sqlite-dump", "sqlite-restore"] {
        assert_eq!(
            fs::read(repo_dir().join("examples/webapp/hooks").join(hook)).unwrap(),
            fs::read(repo_dir().join("hooks").join(hook)).unwrap(),
            "examples/webapp/hooks/{hook} differs from hooks/{hook}: copy it again"
        );
    }
}
