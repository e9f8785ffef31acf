//! Refusals of the agent: each bad input exits with its code and a clear
//! message, and leaves the node as it was (its files, its state database,
//! `agent status`), running no hook. Also the node lock held by another
//! process, and a damaged cached artifact, which is fetched again rather
//! than installed.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use berth_tests::{Run, tree_state, write};

use crate::agent_support::{Node, rel};
use crate::repo_support::{REPO, assert_says};

/// A node with webapp 1.0.0+1 installed from staging.
fn installed_v1() -> Node {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    node.installed(&v1);
    node
}

/// `--repo repo --channel staging install SPEC`, refused with `code`.
fn install_refused(node: &Node, spec: &str, code: i32) -> Run {
    node.refused(
        &["--repo", REPO, "--channel", "staging", "install", spec],
        code,
    )
}

#[test]
fn agent_install_of_an_unknown_package_is_refused() {
    let node = installed_v1();
    let run = install_refused(&node, "api", 2);
    assert_says(
        &run,
        "stderr",
        &["`api` is not in channel `staging`", "packager list"],
    );
}

#[test]
fn agent_install_of_an_unknown_version_is_refused() {
    let node = installed_v1();
    for spec in ["webapp@9.9.9", "webapp@1.0.0+7"] {
        let run = install_refused(&node, spec, 2);
        assert_says(
            &run,
            "stderr",
            &[&format!("{spec} is not in channel `staging`")],
        );
    }
}

#[test]
fn agent_install_from_a_missing_repository_is_refused_and_creates_none() {
    let node = installed_v1();
    let run = node.refused(
        &[
            "--repo",
            "no-such-repo",
            "--channel",
            "staging",
            "install",
            "webapp",
        ],
        2,
    );
    assert_says(&run, "stderr", &["no-such-repo", "--repo"]);
    assert!(!node.env.join("no-such-repo").exists());
}

#[test]
fn agent_install_without_a_channel_or_a_repository_is_refused_with_a_hint() {
    let node = installed_v1();
    let run = node.refused(&["--repo", REPO, "install", "webapp"], 2);
    assert_says(
        &run,
        "stderr",
        &["no channel to read `webapp` from", "--channel"],
    );
    let run = node.refused(&["--channel", "staging", "install", "webapp"], 2);
    assert_says(
        &run,
        "stderr",
        &["no repository to read `webapp` from", "--repo", "--file"],
    );
}

#[test]
fn agent_install_over_a_real_directory_at_the_target_is_refused_and_leaves_it() {
    let node = Node::new();
    node.publish(&rel("1.0.0", 1));
    write(&node.path("/srv/webapp/index.html"), "<h1>hand-made</h1>\n");
    let before = tree_state(&node.path("/srv"));

    let run = node.install("webapp", &[]).code(2);
    assert_says(
        &run,
        "stderr",
        &["/srv/webapp` exists and is not a symlink", "move"],
    );
    assert_eq!(before, tree_state(&node.path("/srv")));
    assert!(!node.path("/var/lib/berth/releases").exists());
    assert_eq!(node.hook_log(), Vec::<String>::new());
}

#[test]
fn agent_rollback_with_nothing_to_roll_back_to_is_refused() {
    let node = installed_v1();
    let run = node.refused(&["rollback", "webapp"], 2);
    assert_says(
        &run,
        "stderr",
        &[
            "`webapp` has no earlier release to roll back to",
            "agent history",
        ],
    );
}

#[test]
fn agent_rollback_to_a_release_the_node_never_kept_is_refused() {
    let node = installed_v1();
    let run = node.refused(&["rollback", "webapp", "--to", "9.9.9+9"], 2);
    assert_says(
        &run,
        "stderr",
        &["9.9.9+9 is not a release this node kept for `webapp`"],
    );
}

#[test]
fn agent_rollback_of_a_package_not_installed_is_refused() {
    let node = installed_v1();
    let run = node.refused(&["rollback", "api"], 2);
    assert_says(
        &run,
        "stderr",
        &["`api` is not installed on this node", "agent status"],
    );

    // A fresh node gets no state database from it.
    let fresh = Node::new();
    let run = fresh.agent(&["rollback", "webapp"]).code(2);
    assert_says(&run, "stderr", &["`webapp` is not installed on this node"]);
    assert!(!fresh.path("/var/lib/berth/state.db").exists());
}

#[test]
fn agent_refuses_malformed_release_specs() {
    let node = installed_v1();
    for spec in [
        "Web",
        "webapp@",
        "webapp@1.0+0",
        "webapp@1.0+x",
        "@1.0",
        "web app",
    ] {
        let run = install_refused(&node, spec, 2);
        assert_says(&run, "stderr", &["invalid"]);
    }
    for to in ["1.0.0", "1.0.0+0", "+1", "1.0.0+build"] {
        let run = node.refused(&["rollback", "webapp", "--to", to], 2);
        assert_says(&run, "stderr", &["invalid"]);
    }
    for verb in ["rollback", "history", "snapshots", "status"] {
        let run = node.refused(&[verb, "Web"], 2);
        assert_says(&run, "stderr", &["`Web`"]);
    }
}

#[test]
fn agent_install_file_of_a_missing_file_or_a_non_artifact_is_refused() {
    let node = installed_v1();
    let run = node.refused(&["install", "--file", "no-such.tar.zst"], 2);
    assert_says(
        &run,
        "stderr",
        &["there is no artifact at `no-such.tar.zst`"],
    );

    write(&node.env.join("notes.tar.zst"), "not an artifact\n");
    let run = node.refused(&["install", "--file", "notes.tar.zst"], 2);
    assert_says(
        &run,
        "stderr",
        &["`notes.tar.zst` is not a valid artifact", "packager build"],
    );
}

/// `flock LOCK sleep SECS` in the background, once it holds the lock and
/// its holder line names it, as an agent's would.
fn hold_lock(node: &Node, secs: u64) -> Child {
    let lock = node.path("/var/lib/berth/lock");
    let child = Command::new("flock")
        .arg(&lock)
        .args(["sleep", &secs.to_string()])
        .spawn()
        .expect("flock(1) from util-linux runs");
    let start = Instant::now();
    while Command::new("flock")
        .arg("-n")
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "flock never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // What an agent holding it writes: who it is.
    std::fs::write(
        &lock,
        format!(
            "{{\"pid\":{},\"operation\":\"install webapp\",\"since\":\"2026-01-01T00:00:00Z\"}}\n",
            child.id()
        ),
    )
    .unwrap();
    child
}

#[test]
fn agent_second_writer_exits_4_while_the_node_lock_is_held_and_waits_with_wait() {
    let node = installed_v1();
    let v2 = rel("1.1.0", 2);
    node.publish(&v2);
    let mut holder = hold_lock(&node, 2);

    let lock = node.path("/var/lib/berth/lock");
    for args in [
        vec!["--repo", REPO, "--channel", "staging", "install", "webapp"],
        vec!["rollback", "webapp"],
    ] {
        let run = node.refused(&args, 4);
        assert_says(
            &run,
            "stderr",
            &[
                &format!(
                    "another berth operation holds the node lock `{}`",
                    lock.display()
                ),
                &format!("pid {} (install webapp) since 2026-01-01", holder.id()),
                "--wait",
            ],
        );
    }

    let start = Instant::now();
    node.install("webapp", &["--wait", "10"]).ok();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(
        holder.try_wait().unwrap().is_some(),
        "the agent did not wait"
    );
    holder.wait().unwrap();
    node.assert_current("1.1.0+2");
}

/// v2 installed over v1, then v1's kept dir removed and its cached
/// artifact replaced by other bytes: those of a valid artifact (v2), which
/// an agent trusting its cache would unpack as v1. Returns v1's sha256.
fn v2_over_v1_with_v1s_cache_damaged() -> (Node, String) {
    let node = installed_v1();
    let sha1 = node.sql("select sha256 from releases where version = '1.0.0'");
    let a2 = node.publish(&rel("1.1.0", 2));
    node.install("webapp", &[]).ok();
    let cache = |sha: &str| node.path(&format!("/var/lib/berth/cache/{sha}.tar.zst"));
    std::fs::copy(cache(&a2.sha256), cache(&sha1)).unwrap();
    std::fs::remove_dir_all(node.release_dir("1.0.0+1")).unwrap();
    (node, sha1)
}

#[test]
fn agent_install_fetches_a_damaged_cached_artifact_again_rather_than_install_it() {
    let (node, sha1) = v2_over_v1_with_v1s_cache_damaged();
    node.install(&rel("1.0.0", 1).spec(), &[]).ok();
    node.assert_current("1.0.0+1");
    let cached = node.path(&format!("/var/lib/berth/cache/{sha1}.tar.zst"));
    let sum = node.env.tool("sha256sum", [cached]).ok();
    assert!(sum.stdout.starts_with(&sha1), "{sum}");
}

#[test]
fn agent_rollback_does_not_rebuild_a_release_from_a_damaged_cached_artifact() {
    let (node, _) = v2_over_v1_with_v1s_cache_damaged();

    let run = node.rollback(&[]).code(1);
    assert_says(
        &run,
        "stderr",
        &[
            "the release directory of webapp@1.0.0+1 is gone",
            "agent install webapp@1.0.0+1",
        ],
    );
    node.assert_current("1.1.0+2");
    assert!(!node.release_dir("1.0.0+1").exists());
}
