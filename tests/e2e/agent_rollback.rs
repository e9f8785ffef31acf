//! `agent rollback` end to end: code-only flips to a kept release and back,
//! `--to`, the data-epoch guard, `--with-data` restoring the dumps taken
//! when a release was replaced, `--force`, dry runs, and a release dir
//! rebuilt from the cached artifact.

use std::fs;

use berth_tests::tree_state;

use crate::agent_support::{Node, Rel, assert_unchanged, rel};
use crate::repo_support::assert_says;

/// Publishes and installs each release in turn.
fn installed_in_turn(rels: &[Rel]) -> Node {
    let node = Node::new();
    for r in rels {
        node.publish(r);
        node.installed(r);
    }
    node
}

/// v1 (epoch 1) with a note written under it, then v2 (epoch 2), whose
/// post_install migrated the notes, with a note written under it; returns
/// the node and the app database's `.dump` just before v2 was installed.
fn migrated_to_epoch_2() -> (Node, String) {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    node.installed(&v1);
    node.app_sql("insert into notes(body) values ('written under v1')");
    let v1_data = node.app_sql(".dump");
    let v2 = rel("2.0.0", 2).epoch(2);
    node.publish(&v2);
    node.installed(&v2);
    assert_eq!(
        node.app_sql("select body, tag from notes"),
        "written under v1|migrated"
    );
    node.app_sql("insert into notes(body, tag) values ('written under v2', 'new')");
    (node, v1_data)
}

#[test]
fn agent_rollback_flips_the_target_back_to_the_kept_previous_release() {
    let node = installed_in_turn(&[rel("1.0.0", 1), rel("1.1.0", 2)]);
    let kept = tree_state(&node.release_dir("1.0.0+1"));
    let hooks = node.hook_log().len();

    let run = node.rollback(&[]).ok();
    assert_eq!(
        run.stdout,
        "rolled back webapp from 1.1.0+2 to 1.0.0+1, code only\n"
    );
    node.assert_current("1.0.0+1");
    // The kept dir was used as it was, not unpacked again.
    assert_eq!(kept, tree_state(&node.release_dir("1.0.0+1")));
    assert_eq!(node.release_state("1.0.0+1"), "healthy");
    assert_eq!(node.release_state("1.1.0+2"), "rolled-back");
    // The release left is backed up and dumped with its own hooks; no restore.
    assert_eq!(
        node.hooks_run_since(hooks),
        [
            "backup 1.1.0+2 rollback",
            "dump 1.1.0+2 rollback",
            "pre_install 1.0.0+1 rollback",
            "post_install 1.0.0+1 rollback",
            "health 1.0.0+1 rollback"
        ]
    );
    let history = node.report("history");
    assert_eq!(
        (&history[0]["kind"], &history[0]["result"]),
        (&"rollback".into(), &"committed".into())
    );
    assert_eq!(
        (&history[0]["from"], &history[0]["to"]),
        (&"1.1.0+2".into(), &"1.0.0+1".into())
    );
}

#[test]
fn agent_rollback_can_itself_be_rolled_back() {
    let node = installed_in_turn(&[rel("1.0.0", 1), rel("1.1.0", 2)]);
    node.rollback(&[]).ok();
    node.assert_current("1.0.0+1");

    let json = node.rollback(&["--json"]).ok().json();
    assert_eq!(
        (
            &json["from"],
            &json["to"],
            &json["changed"],
            &json["with_data"]
        ),
        (
            &"1.0.0+1".into(),
            &"1.1.0+2".into(),
            &true.into(),
            &false.into()
        )
    );
    node.assert_current("1.1.0+2");
    assert_eq!(node.release_state("1.1.0+2"), "healthy");
    assert_eq!(node.release_state("1.0.0+1"), "rolled-back");
    assert_eq!(
        node.sql("select kind || ' ' || result from transactions order by id"),
        "install committed\ninstall committed\nrollback committed\nrollback committed"
    );
}

#[test]
fn agent_rollback_to_goes_back_to_an_older_release() {
    let node = installed_in_turn(&[rel("1.0.0", 1), rel("1.1.0", 2), rel("1.2.0", 3)]);

    let run = node.rollback(&["--to", "1.0.0+1"]).ok();
    assert_says(&run, "stdout", &["from 1.2.0+3 to 1.0.0+1"]);
    node.assert_current("1.0.0+1");
    assert_eq!(node.release_state("1.2.0+3"), "rolled-back");
    assert_eq!(node.release_state("1.1.0+2"), "superseded");
}

#[test]
fn agent_rollback_across_data_epochs_is_refused_with_a_hint_for_with_data() {
    let (node, _) = migrated_to_epoch_2();
    let data = node.app_sql(".dump");

    let run = node.refused(&["rollback", "webapp"], 2);
    assert_says(
        &run,
        "stderr",
        &[
            "webapp@1.0.0+1 has data epoch 1 and the current webapp@2.0.0+2 has 2",
            "--with-data",
            "--force",
        ],
    );
    node.assert_current("2.0.0+2");
    assert_eq!(node.app_sql(".dump"), data);
}

#[test]
fn agent_rollback_with_data_restores_the_dump_taken_when_the_release_was_replaced() {
    let (node, v1_data) = migrated_to_epoch_2();
    let snapshot_dir = node.report("snapshots")[0]["dir"]
        .as_str()
        .unwrap()
        .to_owned();
    let hooks = node.hook_log().len();

    let run = node.rollback(&["--with-data"]).ok();
    assert_eq!(
        run.stdout,
        "rolled back webapp from 2.0.0+2 to 1.0.0+1 with its data\n"
    );
    assert_says(
        &run,
        "stderr",
        &["the data was restored from the snapshot's dumps: whatever was written since is lost"],
    );
    node.assert_current("1.0.0+1");
    // v1's data exactly as it was when v2 replaced it: the note written
    // under v2 and the migration are gone.
    assert_eq!(node.app_sql(".dump"), v1_data);
    assert_eq!(node.app_sql("select body from notes"), "written under v1");
    // v1's own restore ran with the snapshot taken when v2 replaced it.
    let txn = node.report("history")[0]["id"].clone();
    let restore = format!("restore 1.0.0+1 rollback {txn} {snapshot_dir}");
    assert!(
        node.hook_log()[hooks..].contains(&restore),
        "no `{restore}` in {:?}",
        node.hook_log()
    );

    // And back: v2's data as the rollback dumped it, the v2 note included.
    node.rollback(&["--with-data"]).ok();
    node.assert_current("2.0.0+2");
    assert_eq!(
        node.app_sql("select body || '|' || tag from notes order by id"),
        "written under v1|migrated\nwritten under v2|new"
    );
}

#[test]
fn agent_rollback_force_rolls_the_code_back_across_epochs_and_leaves_the_data() {
    let (node, _) = migrated_to_epoch_2();
    let data = node.app_sql(".dump");
    let hooks = node.hook_log().len();

    node.rollback(&["--force"]).ok();
    node.assert_current("1.0.0+1");
    assert_eq!(node.app_sql(".dump"), data);
    assert!(
        !node
            .hooks_run_since(hooks)
            .iter()
            .any(|h| h.starts_with("restore")),
        "{:?}",
        node.hook_log()
    );
}

#[test]
fn agent_rollback_dry_run_says_what_it_would_do_and_changes_nothing() {
    let node = installed_in_turn(&[rel("1.0.0", 1), rel("1.1.0", 2)]);
    let before = node.state();
    let hooks = node.hook_log().len();

    let run = node.rollback(&["--dry-run"]).ok();
    assert_eq!(
        run.stdout,
        "would roll back webapp from 1.1.0+2 to 1.0.0+1, code only\n"
    );
    let json = node.rollback(&["--dry-run", "--json"]).ok().json();
    assert_eq!(
        (&json["dry_run"], &json["changed"], &json["to"]),
        (&true.into(), &false.into(), &"1.0.0+1".into())
    );
    assert_unchanged(&before, &node.state(), &run);
    assert_eq!(node.hooks_run_since(hooks), Vec::<String>::new());
}

#[test]
fn agent_rollback_rebuilds_a_deleted_release_dir_from_the_cached_artifact() {
    let node = installed_in_turn(&[rel("1.0.0", 1), rel("1.1.0", 2)]);
    fs::remove_dir_all(node.release_dir("1.0.0+1")).unwrap();

    node.rollback(&[]).ok();
    node.assert_current("1.0.0+1");
    let tree = node.release_dir("1.0.0+1").join("files");
    assert_eq!(
        fs::read_to_string(tree.join("static/app.js")).unwrap(),
        "console.log('hi');\n"
    );
    // What the agent checks itself: the rebuilt tree matches its manifest.
    let run = node.install("webapp@1.0.0+1", &[]).ok();
    assert_says(&run, "stdout", &["unchanged"]);
}

#[test]
fn agent_rollback_without_the_kept_dir_or_its_cached_artifact_fails_and_stays_put() {
    let node = installed_in_turn(&[rel("1.0.0", 1), rel("1.1.0", 2)]);
    fs::remove_dir_all(node.release_dir("1.0.0+1")).unwrap();
    for f in berth_tests::names(&node.path("/var/lib/berth/cache")) {
        fs::remove_file(node.path("/var/lib/berth/cache").join(f)).unwrap();
    }

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
    assert_eq!(node.release_state("1.1.0+2"), "healthy");
    assert!(!node.release_dir("1.0.0+1").exists());
}
