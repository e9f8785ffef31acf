//! `agent verify`, `agent logs`, `agent gc`, and the free-space check
//! before an install.

use std::fs;

use crate::agent_support::{Node, rel};

#[test]
fn verify_says_ok_for_an_intact_release_and_lists_each_drift() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    node.installed(&v1);
    let run = node.agent(&["verify", "webapp"]).ok();
    assert_eq!(run.stdout, "ok: webapp@1.0.0+1 matches its manifest\n");

    let tree = node.release_dir(&v1.vb()).join("files");
    fs::write(tree.join("index.html"), "<h1>edited on the node</h1>\n").unwrap();
    fs::remove_file(tree.join("VERSION")).unwrap();
    fs::write(tree.join("stray.txt"), "left here\n").unwrap();
    let run = node.agent(&["verify", "webapp"]).code(1);
    for words in [
        "`index.html`",
        "`VERSION` is missing",
        "`stray.txt`",
        "3 differences",
    ] {
        assert!(run.stdout.contains(words), "missing `{words}`:\n{run}");
    }
    let v = node.agent(&["verify", "webapp", "--json"]).code(1).json();
    assert_eq!(v["intact"], false);
    assert_eq!(v["drift"].as_array().unwrap().len(), 3);
    // A drifted release is repaired by installing it again.
    node.install("webapp", &[]).ok();
    node.agent(&["verify", "webapp"]).ok();
}

#[test]
fn verify_of_a_package_not_installed_is_refused() {
    let node = Node::new();
    let run = node.agent(&["verify", "webapp"]).code(2);
    assert!(run.stderr.contains("`webapp` is not installed"), "{run}");
}

#[test]
fn logs_show_the_steps_and_the_hooks_output_of_a_transaction() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    let v2 = rel("1.1.0", 2).failing("health");
    node.publish(&v1);
    node.publish(&v2);
    node.installed(&v1);
    node.install(&v2.spec(), &[]).code(3);
    let history = node.agent(&["history", "webapp", "--json"]).ok().json();
    let failed = history[0]["id"].as_i64().unwrap().to_string();
    let run = node.agent(&["logs", &failed]).ok();
    for words in [
        "rolled-back",
        "hook health",
        "failed: exit code 1",
        "switch back",
        "--- hook health (exit code 1",
    ] {
        assert!(run.stdout.contains(words), "missing `{words}`:\n{run}");
    }
    let v = node.agent(&["logs", &failed, "--json"]).ok().json();
    let hooks = v["hooks"].as_array().unwrap();
    assert!(
        hooks
            .iter()
            .any(|h| h["hook"] == "health" && h["exit"] == "exit code 1"),
        "{v}"
    );
    let run = node.agent(&["logs", "999"]).code(2);
    assert!(run.stderr.contains("no transaction #999"), "{run}");
}

#[test]
fn gc_keeps_the_current_and_the_last_healthy_release_and_what_they_need() {
    let node = Node::new();
    let config = node.path("/etc/berth/agent.toml");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    fs::write(
        &config,
        "[retention]\nsnapshots = 1\n\n[packages.webapp]\nkeep_releases = 1\n",
    )
    .unwrap();
    let releases: Vec<_> = (1..=4).map(|b| rel("1.0.0", b)).collect();
    for r in &releases {
        node.publish(r);
        node.installed(r);
    }
    // Install pruned down to the current release and the one before it.
    let kept = |node: &Node| -> Vec<bool> {
        releases
            .iter()
            .map(|r| node.release_dir(&r.vb()).exists())
            .collect()
    };
    assert_eq!(kept(&node), [false, false, true, true]);
    let dry = node.agent(&["gc", "--dry-run", "--json"]).ok().json();
    let before = node.state();
    assert_eq!(dry["dry_run"], true);
    // The cached artifacts of builds 1 and 2 are needed by nothing kept.
    assert_eq!(dry["cache"].as_array().unwrap().len(), 2, "{dry}");
    let r = node.agent(&["gc", "--json"]).ok().json();
    assert_eq!(r["cache"], dry["cache"]);
    assert_ne!(
        before.files,
        node.state().files,
        "gc removed the cached artifacts"
    );
    assert_eq!(kept(&node), [false, false, true, true]);
    // What is left still rolls back.
    node.rollback(&[]).ok();
    node.assert_current(&releases[2].vb());
    node.agent(&["verify", "webapp"]).ok();
}

#[test]
fn an_install_is_refused_when_the_disk_cannot_hold_it() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    // The app of v1 with a 4 MiB file, built as build 9.
    node.build(&v1);
    let app = node.env.join(&format!("app-{}", v1.vb()));
    fs::write(app.join("dist/blob.bin"), vec![7u8; 4 << 20]).unwrap();
    let built = node
        .env
        .packager([
            "build",
            app.to_str().unwrap(),
            "--build",
            "9",
            "--out",
            "big",
        ])
        .ok();
    let artifact = built.stdout.split_whitespace().nth(1).unwrap().to_owned();
    // The node root on a 1 MiB tmpfs.
    let _unmount = tmpfs(&node.root(), "size=1m");
    let run = node.agent(&["install", "--file", &artifact]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("not enough free space"), "{run}");
    assert!(
        run.stderr.contains("bytes needed"),
        "the figures are given:\n{run}"
    );
    assert!(node.target().is_none(), "nothing was switched");
    let releases = node.path("/var/lib/berth/releases/webapp");
    assert!(!releases.exists() || fs::read_dir(&releases).unwrap().next().is_none());
}

/// A full disk under a node with a release installed: a release of 2,000
/// small files (about 600 KB of payload, but a block each: 8 MB on this
/// tmpfs) is refused up front with the figures, and one needing more
/// inodes than the file system has left likewise; each time the old
/// release stays intact and current, no staging dir is left, and the
/// database says what it said.
#[test]
fn a_full_disk_refuses_the_install_with_the_figures_and_keeps_the_old_release() {
    let node = Node::new();
    let (v1, v2) = (rel("1.0.0", 1), rel("1.1.0", 2).files(2000));
    node.publish(&v1);
    node.publish(&v2);
    for (options, words) in [
        (
            "size=4m",
            [
                "not enough free space in",
                "bytes needed (the release's files in whole blocks",
            ],
        ),
        (
            "size=64m,nr_inodes=1200",
            [
                "not enough free inodes in",
                "needed (one per file, directory and link",
            ],
        ),
    ] {
        let _ = fs::remove_dir_all(node.root());
        fs::create_dir_all(node.root()).unwrap();
        let _unmount = tmpfs(&node.root(), options);
        node.installed(&v1);
        let before = node.state();
        let status = node.report("status");
        let run = node.install(&v2.spec(), &[]).code(1);
        for w in words {
            assert!(run.stderr.contains(w), "{options}: {run}");
        }
        assert!(
            run.stderr.contains("available"),
            "the figures are given:\n{run}"
        );
        node.assert_current(&v1.vb());
        node.agent(&["verify", "webapp"]).ok();
        assert_eq!(node.leftovers(), Vec::<String>::new(), "{options}");
        assert!(!node.release_dir(&v2.vb()).exists(), "{options}");
        assert_eq!(node.report("status"), status, "{options}");
        // Nothing but the download of v2 into the cache.
        let after = node.state();
        assert_eq!(after.db, before.db, "{options}: the database changed");
        drop(_unmount);
    }
}

#[test]
fn node_owned_hooks_run_after_the_packages_own_and_can_fail_the_install() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    let v2 = rel("1.1.0", 2);
    node.publish(&v1);
    node.publish(&v2);
    let dir = node.path("/etc/berth/hooks/webapp/health.d");
    let log = node.env.join("node-hooks.log");
    // Two node hooks, run in name order after the package's health hook,
    // with the same environment.
    for (name, word) in [("10-first", "first"), ("20-second", "second")] {
        berth_tests::write_exec(
            &dir.join(name),
            &format!(
                "#!/bin/sh\necho \"{word} $BERTH_VERSION\" >> '{}'\n[ ! -e \"$BERTH_RELEASE_DIR/../../node-hook-fails\" ] || exit 4\n",
                log.display()
            ),
        );
    }
    node.installed(&v1);
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "first 1.0.0\nsecond 1.0.0\n"
    );
    let hooks = node.sql("select hook from hook_runs order by rowid");
    assert_eq!(
        hooks.lines().filter(|h| *h == "health").count(),
        3,
        "{hooks}"
    );

    // A failing node hook is a failing health check: v2 is rolled back.
    fs::write(
        node.path("/var/lib/berth/releases/webapp/node-hook-fails"),
        "",
    )
    .unwrap();
    let run = node.install(&v2.spec(), &[]).code(3);
    assert!(
        run.stderr
            .contains("health hook of webapp@1.1.0+2 failed (exit code 4)"),
        "{run}"
    );
    node.assert_current(&v1.vb());
}

#[test]
fn an_install_on_a_read_only_root_fails_clearly_and_changes_nothing() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    let root = node.root();
    // Read-only even for root.
    let _unmount = tmpfs(&root, "ro,size=1m");
    let run = node.install("webapp", &[]).code(1);
    assert!(run.stderr.contains("Read-only file system"), "{run}");
    assert!(
        run.stderr.contains(&root.display().to_string()),
        "the path is named:\n{run}"
    );
    assert!(
        run.stderr.contains("must be writable"),
        "the way out is given:\n{run}"
    );
    assert_eq!(
        fs::read_dir(&root).unwrap().count(),
        0,
        "nothing was written"
    );
}

/// Mounts a tmpfs with `options` on `dir` for the test (the test command
/// runs as root, which may mount one); it is unmounted when the guard goes.
fn tmpfs(dir: &std::path::Path, options: &str) -> Unmount {
    fs::create_dir_all(dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        mounted,
        "mounting a tmpfs on `{}` failed: it needs root",
        dir.display()
    );
    Unmount(dir.to_owned())
}

/// Unmounts a test's filesystem when the test ends, passed or not.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_pruned_release_modified_on_the_node_comes_back_as_it_was_from_its_snapshot() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    let v2 = rel("1.1.0", 2);
    node.publish(&v1);
    node.publish(&v2);
    node.installed(&v1);
    // Changed on the node, then replaced: the snapshot is a tarball of the
    // tree as it was.
    let tree = node.release_dir(&v1.vb()).join("files");
    fs::write(tree.join("index.html"), "<h1>hot-fixed on the node</h1>\n").unwrap();
    node.installed(&v2);
    let snapshots = node.agent(&["snapshots", "webapp", "--json"]).ok().json();
    assert_eq!(snapshots[0]["kind"], "tree-tarball", "{snapshots}");
    fs::remove_dir_all(node.release_dir(&v1.vb())).unwrap();

    node.rollback(&[]).ok();
    assert_eq!(
        node.target(),
        Some(node.release_dir(&v1.vb()).join("files"))
    );
    assert_eq!(
        node.sql("select version || '+' || build from releases where is_current = 1"),
        v1.vb()
    );
    assert_eq!(
        fs::read_to_string(node.path("/srv/webapp/index.html")).unwrap(),
        "<h1>hot-fixed on the node</h1>\n"
    );
    assert!(
        node.path("/srv/webapp/VERSION").is_file(),
        "the rest of the tree is back"
    );
    let leftovers: Vec<_> = fs::read_dir(node.path("/var/lib/berth/releases/webapp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
