//! `agent install` end to end: from a repository and from a file, through
//! channel overlays and release forms, idempotent re-runs, snapshots of the
//! release replaced, dry runs, and the health gate with its automatic
//! rollback; checked through exit codes, reports, `sqlite3` and the disk.

use std::fs;

use berth_tests::Run;

use crate::agent_support::{Node, assert_unchanged, rel};
use crate::repo_support::{REPO, assert_says, promoted};

#[test]
fn agent_install_from_the_repository_links_the_target_and_records_a_healthy_release() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    let art = node.publish(&v1);

    let run = node.install("webapp", &[]).ok();
    let target = node.path("/srv/webapp");
    assert_eq!(
        run.stdout,
        format!(
            "installed webapp@1.0.0+1 from staging -> `{}`\n",
            target.display()
        )
    );
    node.assert_current("1.0.0+1");
    assert_eq!(node.release_state("1.0.0+1"), "healthy");
    assert_eq!(
        node.sql("select sha256, data_epoch from releases"),
        format!("{}|1", art.sha256)
    );
    assert_eq!(
        node.sql("select kind, result, from_release is null from transactions"),
        "install|committed|1"
    );
    // The artifact is cached by digest; a first install snapshots nothing
    // and runs no backup or dump.
    assert!(
        node.path(&format!("/var/lib/berth/cache/{}.tar.zst", art.sha256))
            .is_file()
    );
    assert_eq!(node.sql("select count(*) from snapshots"), "0");
    assert_eq!(
        node.hooks_run_since(0),
        [
            "pre_install 1.0.0+1 install",
            "post_install 1.0.0+1 install",
            "health 1.0.0+1 install"
        ]
    );
    // post_install made the app's table.
    assert_eq!(node.app_sql("select count(*) from notes"), "0");

    let status = node.agent(&["status", "webapp", "--json"]).ok().json();
    let s = &status[0];
    assert_eq!(s["package"], "webapp");
    assert_eq!(s["current"]["version"], "1.0.0");
    assert_eq!(s["current"]["state"], "healthy");
    assert_eq!(s["consistent"], true);
    assert_eq!(
        s["points_to"],
        node.release_dir("1.0.0+1")
            .join("files")
            .display()
            .to_string()
    );
    let human = node.agent(&["status"]).ok();
    assert_says(&human, "stdout", &["webapp 1.0.0+1 (healthy)", "kept"]);
}

#[test]
fn agent_install_of_the_installed_release_is_unchanged_and_touches_nothing() {
    let node = Node::new();
    node.publish(&rel("1.0.0", 1));
    node.install("webapp", &[]).ok();
    let before = node.state();
    let hooks = node.hook_log().len();

    let run = node.install("webapp", &[]).ok();
    assert_eq!(
        run.stdout,
        "unchanged: webapp@1.0.0+1 is installed and intact\n"
    );
    let json = node.install("webapp", &["--json"]).ok().json();
    assert_eq!(json["changed"], false);
    assert_eq!(json["would_change"], false);
    assert_eq!(json["version"], "1.0.0");
    assert_eq!(json["txn"], serde_json::Value::Null);
    // The exact form too.
    node.install("webapp@1.0.0+1", &[]).ok();

    assert_eq!(node.hooks_run_since(hooks), Vec::<String>::new());
    assert_unchanged(&before, &node.state(), &run);
    assert_eq!(node.sql("select count(*) from transactions"), "1");
}

#[test]
fn agent_install_of_a_newer_release_replaces_it_and_snapshots_the_intact_tree_by_reference() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    let v2 = rel("1.1.0", 2);
    let a1 = node.publish(&v1);
    node.installed(&v1);
    node.publish(&v2);
    let hooks = node.hook_log().len();

    let json = node.install("webapp", &["--json"]).ok().json();
    assert_eq!(json["changed"], true);
    assert_eq!(json["version"], "1.1.0");
    assert_eq!(json["previous"], "1.0.0+1");
    assert_eq!(json["channel"], "staging");
    node.assert_current("1.1.0+2");
    assert_eq!(node.release_state("1.0.0+1"), "superseded");
    assert_eq!(node.release_state("1.1.0+2"), "healthy");
    // The old release stays unpacked for an instant rollback.
    assert!(
        node.release_dir("1.0.0+1")
            .join("files/index.html")
            .is_file()
    );
    // The new release's backup and dump run into the snapshot before the switch.
    assert_eq!(
        node.hooks_run_since(hooks),
        [
            "backup 1.1.0+2 install",
            "dump 1.1.0+2 install",
            "pre_install 1.1.0+2 install",
            "post_install 1.1.0+2 install",
            "health 1.1.0+2 install"
        ]
    );

    let snaps = node.report("snapshots");
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    let s = &snaps[0];
    assert_eq!(s["release"], "1.0.0+1");
    assert_eq!(s["kind"], "artifact-ref");
    assert_eq!(s["id"], json["snapshot"]);
    assert_eq!(
        (&s["has_backup"], &s["has_dumps"]),
        (&true.into(), &true.into())
    );
    let dir = s["dir"].as_str().unwrap();
    assert_eq!(
        fs::read_to_string(format!("{dir}/artifact")).unwrap(),
        format!("{}\n", a1.sha256)
    );
    assert!(fs::metadata(format!("{dir}/dumps/app.db")).unwrap().len() > 0);
    assert_eq!(node.sql("select artifact_sha256 from snapshots"), a1.sha256);
    let human = node.agent(&["snapshots", "webapp"]).ok();
    assert_says(
        &human,
        "stdout",
        &["1.0.0+1", "artifact-ref", "backup, dumps"],
    );
}

#[test]
fn agent_install_snapshots_a_tree_modified_on_the_node_as_a_tarball() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    node.installed(&v1);
    let edited = node.release_dir("1.0.0+1").join("files/index.html");
    fs::write(&edited, "<h1>patched on the node</h1>\n").unwrap();
    node.publish(&rel("1.1.0", 2));

    node.install("webapp", &[]).ok();
    node.assert_current("1.1.0+2");
    let snaps = node.report("snapshots");
    assert_eq!(snaps[0]["kind"], "tree-tarball", "{snaps}");
    assert_eq!(
        node.sql("select artifact_sha256 is null from snapshots"),
        "1"
    );
    // The tarball holds the tree as it was on the node.
    let tarball = format!("{}/tree.tar.zst", snaps[0]["dir"].as_str().unwrap());
    let run = node
        .env
        .tool("tar", ["--zstd", "-xOf", &tarball, "index.html"])
        .ok();
    assert_eq!(run.stdout, "<h1>patched on the node</h1>\n");
}

#[test]
fn agent_install_dry_run_says_what_it_would_do_and_changes_nothing() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);

    // On a fresh node: not even the state directory is made.
    let run = node.install("webapp", &["--dry-run"]).ok();
    assert_eq!(run.stdout, "would install webapp@1.0.0+1 from staging\n");
    assert!(!node.root().exists(), "a dry run created the node root");

    node.installed(&v1);
    node.publish(&rel("1.1.0", 2));
    let before = node.state();
    let hooks = node.hook_log().len();
    let run = node.install("webapp", &["--dry-run"]).ok();
    assert_eq!(
        run.stdout,
        "would install webapp@1.1.0+2 from staging, replacing 1.0.0+1\n"
    );
    let json = node.install("webapp", &["--dry-run", "--json"]).ok().json();
    assert_eq!(
        (&json["dry_run"], &json["would_change"], &json["changed"]),
        (&true.into(), &true.into(), &false.into())
    );
    assert_eq!(json["version"], "1.1.0");
    assert_unchanged(&before, &node.state(), &run);
    assert_eq!(node.hooks_run_since(hooks), Vec::<String>::new());
    node.assert_current("1.0.0+1");
}

#[test]
fn agent_install_file_installs_an_artifact_with_no_repository() {
    let node = Node::new();
    let art = node.build(&rel("1.0.0", 1));

    let json = node
        .agent(&["install", "--file", &art.path, "--json"])
        .ok()
        .json();
    assert_eq!(json["changed"], true);
    assert_eq!(json["channel"], serde_json::Value::Null);
    node.assert_current("1.0.0+1");
    assert!(!node.env.join(REPO).exists());
    assert_eq!(node.release_state("1.0.0+1"), "healthy");

    let again = node.agent(&["install", "--file", &art.path]).ok();
    assert_eq!(
        again.stdout,
        "unchanged: webapp@1.0.0+1 is installed and intact\n"
    );
}

#[test]
fn agent_install_takes_the_newest_from_the_first_overlay_channel_holding_the_package() {
    let node = Node::new();
    // Production is promote-only: releases reach it through staging.
    for r in [rel("1.0.0", 1), rel("1.1.0", 3)] {
        promoted(&node.env, &node.publish(&r), "staging", "production");
    }
    node.publish_to(&rel("1.0.1", 2), "hotfix");
    let overlay = [
        "--repo",
        REPO,
        "--channel",
        "hotfix",
        "--channel",
        "production",
    ];
    let install = |spec: &str| {
        let mut args = overlay.to_vec();
        args.extend(["install", spec, "--json"]);
        node.agent(&args).ok().json()
    };

    // Hotfix holds the package: its newest wins over production's newer one.
    let json = install("webapp");
    assert_eq!(
        (&json["channel"], &json["version"]),
        (&"hotfix".into(), &"1.0.1".into())
    );
    node.assert_current("1.0.1+2");
    // A version the overlay lacks comes from the next channel.
    let json = install("webapp@1.1.0");
    assert_eq!(
        (&json["channel"], &json["version"]),
        (&"production".into(), &"1.1.0".into())
    );
    node.assert_current("1.1.0+3");
    // Production alone gives its own newest.
    let run = node
        .agent(&[
            "--repo",
            REPO,
            "--channel",
            "production",
            "install",
            "webapp",
        ])
        .ok();
    assert_says(&run, "stdout", &["unchanged: webapp@1.1.0+3"]);
}

#[test]
fn agent_install_of_a_version_takes_its_newest_build_and_version_build_takes_that_one() {
    let node = Node::new();
    for r in [rel("1.0.0", 1), rel("1.0.0", 2), rel("2.0.0", 3)] {
        node.publish(&r);
    }

    node.install("webapp@1.0.0", &[]).ok();
    node.assert_current("1.0.0+2");
    node.install("webapp@1.0.0+1", &[]).ok();
    node.assert_current("1.0.0+1");
    node.install("webapp", &[]).ok();
    node.assert_current("2.0.0+3");
}

/// Installs v1 (healthy), then `v2`, which fails the given hook; returns
/// the failed install's run.
fn install_failing(node: &Node, hook: &'static str, extra: &[&str], code: i32) -> Run {
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    node.installed(&v1);
    let v2 = rel("1.1.0", 2).failing(hook);
    node.publish(&v2);
    node.install(&v2.spec(), extra).code(code)
}

#[test]
fn agent_install_whose_health_check_fails_is_rolled_back_to_the_previous_release() {
    let node = Node::new();
    let hooks_before_v2 = 3;
    let run = install_failing(&node, "health", &[], 3);
    assert_says(
        &run,
        "stderr",
        &[
            "the health hook of webapp@1.1.0+2 failed",
            "the node is back on webapp@1.0.0+1",
            "[webapp health] health: failing on purpose",
        ],
    );
    node.assert_current("1.0.0+1");
    assert_eq!(node.release_state("1.1.0+2"), "failed");
    assert_eq!(node.release_state("1.0.0+1"), "healthy");
    // The previous release's post_install ran again, as a rollback.
    assert_eq!(
        node.hooks_run_since(hooks_before_v2),
        [
            "backup 1.1.0+2 install",
            "dump 1.1.0+2 install",
            "pre_install 1.1.0+2 install",
            "post_install 1.1.0+2 install",
            "health 1.1.0+2 install",
            "post_install 1.0.0+1 rollback"
        ]
    );

    let history = node.report("history");
    let h = history.as_array().unwrap();
    assert_eq!(h.len(), 2, "{history}");
    assert_eq!(
        (&h[0]["kind"], &h[0]["result"], &h[0]["from"], &h[0]["to"]),
        (
            &"install".into(),
            &"rolled-back".into(),
            &"1.0.0+1".into(),
            &"1.1.0+2".into()
        )
    );
    assert_says(&run, "stderr", &[h[0]["error"].as_str().unwrap()]);
    let steps: Vec<String> = h[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["name"].as_str().unwrap(),
                s["state"].as_str().unwrap()
            )
        })
        .collect();
    let switch = steps
        .iter()
        .position(|s| s == "switch done")
        .expect("a switch");
    let health = steps
        .iter()
        .position(|s| s == "hook health failed")
        .expect("a failed health");
    let back = steps
        .iter()
        .position(|s| s == "switch back done")
        .expect("a switch back");
    assert!(switch < health && health < back, "{steps:?}");
    assert_eq!(
        (&h[1]["result"], &h[1]["to"]),
        (&"committed".into(), &"1.0.0+1".into())
    );
    // The hooks knew their transaction, and the output is stored.
    let txn = h[0]["id"].as_i64().unwrap();
    let health = format!("health 1.1.0+2 install {txn} ");
    assert!(
        node.hook_log().iter().any(|l| l.starts_with(&health)),
        "no `{health}…` in {:?}",
        node.hook_log()
    );
    assert_eq!(
        node.sql(&format!(
            "select exit_code, output from hook_runs where txn_id = {txn} and hook = 'health'"
        )),
        "1|health: failing on purpose"
    );
    let human = node.agent(&["history", "webapp"]).ok();
    assert_says(
        &human,
        "stdout",
        &[
            "install 1.0.0+1 -> 1.1.0+2: rolled-back",
            "hook health",
            "failed",
        ],
    );
}

#[test]
fn agent_install_with_no_auto_rollback_stays_on_the_release_whose_health_failed() {
    let node = Node::new();
    let run = install_failing(&node, "health", &["--no-auto-rollback"], 1);
    assert_says(
        &run,
        "stderr",
        &["the node stays on it (--no-auto-rollback)"],
    );
    assert_eq!(
        node.target(),
        Some(node.release_dir("1.1.0+2").join("files"))
    );
    assert_eq!(
        node.sql("select state, is_current from releases where version = '1.1.0'"),
        "failed|1"
    );
    assert_eq!(
        node.sql("select is_current from releases where version = '1.0.0'"),
        "0"
    );
    assert_eq!(
        node.sql("select result from transactions order by id desc limit 1"),
        "failed"
    );
    // The operator rolls back by hand.
    node.rollback(&[]).ok();
    node.assert_current("1.0.0+1");
}

#[test]
fn agent_install_whose_post_install_fails_is_rolled_back_too() {
    let node = Node::new();
    let run = install_failing(&node, "post_install", &[], 3);
    assert_says(
        &run,
        "stderr",
        &["the post_install hook of webapp@1.1.0+2 failed"],
    );
    node.assert_current("1.0.0+1");
    assert_eq!(node.release_state("1.1.0+2"), "failed");
}

#[test]
fn agent_install_whose_health_hook_cannot_even_start_is_rolled_back() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    node.installed(&v1);
    let v2 = rel("1.1.0", 2).unstartable("health");
    node.publish(&v2);

    let run = node.install(&v2.spec(), &[]).code(3);
    assert_says(
        &run,
        "stderr",
        &["the health hook of webapp@1.1.0+2 failed"],
    );
    node.assert_current("1.0.0+1");
    assert_eq!(node.release_state("1.1.0+2"), "failed");
    assert_eq!(
        node.sql("select result from transactions order by id desc limit 1"),
        "rolled-back"
    );
}

#[test]
fn agent_first_install_whose_health_fails_leaves_no_target() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1).failing("health");
    node.publish(&v1);

    let run = node.install("webapp", &[]).code(3);
    assert_says(&run, "stderr", &["no release (it was the first install)"]);
    assert_eq!(node.target(), None);
    assert!(!node.path("/srv/webapp").exists());
    assert_eq!(
        node.sql("select state, is_current from releases"),
        "failed|0"
    );
    assert_eq!(node.sql("select result from transactions"), "rolled-back");
}

/// A hook before the switch fails: the node stays exactly on v1 (every
/// file, the status, the snapshots), the new release's dir and the
/// snapshot's dir are gone, and only the journal tells what happened.
fn assert_aborted_before_the_switch(hook: &'static str) {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    node.installed(&v1);
    let v2 = rel("1.1.0", 2).failing(hook);
    node.publish(&v2);
    let before = node.untouched();
    let run = node.install(&v2.spec(), &[]).code(1);
    node.assert_untouched(&before, Some(&v2), &run);
    assert_says(
        &run,
        "stderr",
        &[
            &format!("the {hook} hook of webapp@1.1.0+2 failed"),
            "nothing was switched",
        ],
    );
    node.assert_current("1.0.0+1");
    assert_eq!(node.release_state("1.0.0+1"), "healthy");
    assert_eq!(node.release_state("1.1.0+2"), "failed");
    assert!(
        !node.release_dir("1.1.0+2").exists(),
        "the new release dir is left"
    );
    assert_eq!(
        berth_tests::names(&node.path("/var/lib/berth/releases/webapp")),
        ["1.0.0+1"]
    );
    assert_eq!(
        node.sql("select result from transactions order by id desc limit 1"),
        "failed"
    );
    // Nothing ran after the failing hook.
    assert!(
        !node
            .hook_log()
            .iter()
            .any(|l| l.starts_with("post_install 1.1.0")),
        "{:?}",
        node.hook_log()
    );
    assert_eq!(node.sql("select count(*) from snapshots"), "0");
}

#[test]
fn agent_install_whose_pre_install_fails_aborts_before_the_switch() {
    assert_aborted_before_the_switch("pre_install");
}

#[test]
fn agent_install_whose_backup_fails_aborts_before_the_switch() {
    assert_aborted_before_the_switch("backup");
}

#[test]
fn agent_install_whose_dump_fails_aborts_before_the_switch() {
    assert_aborted_before_the_switch("dump");
}
