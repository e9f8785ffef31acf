//! A lost or damaged state database: every command refuses with the way
//! out, nothing starts afresh and forgets the node's releases and
//! snapshots, and `agent recover --rebuild` makes the database again from
//! what the node keeps on disk, after which rollbacks and installs work.

use std::fs;

use serde_json::Value;

use crate::agent_support::{Node, rel};
use crate::repo_support::assert_says;

/// v1, v2 and v3 installed in turn, v2's tree modified on the node before
/// v3 replaced it: snapshots of v1 (by reference) and of v2 (a tarball).
fn three_installed() -> Node {
    let node = Node::new();
    for r in [rel("1.0.0", 1), rel("1.1.0", 2), rel("1.2.0", 3)] {
        node.publish(&r);
    }
    node.installed(&rel("1.0.0", 1));
    node.installed(&rel("1.1.0", 2));
    let edited = node.release_dir("1.1.0+2").join("files/index.html");
    fs::write(&edited, "<h1>patched on the node</h1>\n").unwrap();
    node.installed(&rel("1.2.0", 3));
    node
}

/// What `agent snapshots` says, without the row ids and numbers only the
/// lost database knew (the time each was taken is on disk too).
fn snapshot_summary(node: &Node) -> Vec<String> {
    let snaps = node.report("snapshots");
    snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s: &Value| {
            format!(
                "{} {} {} {} backup={} dumps={}",
                s["release"], s["created"], s["kind"], s["dir"], s["has_backup"], s["has_dumps"]
            )
        })
        .collect()
}

/// Every path under the root with its type, mode, size, mtime and digest,
/// but directories' mtimes: opening a database in WAL mode makes and
/// removes its `-shm` beside it, which touches only the directory.
fn contents(node: &Node) -> Vec<String> {
    berth_tests::tree_state(&node.root())
        .into_iter()
        .filter(|(path, _)| path != "var/lib/berth/lock")
        .map(|(path, v)| {
            if v.starts_with("40") {
                format!("{path} dir {}", v.split(' ').next().unwrap_or(""))
            } else {
                format!("{path} {v}")
            }
        })
        .collect()
}

/// Asserts `args` left the node as it was, naming only what differs.
#[track_caller]
fn assert_unchanged(node: &Node, before: &[String], args: &[&str]) {
    let after = contents(node);
    let gone: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
    let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "{args:?} changed the node: was {gone:?}, now {new:?}"
    );
}

fn db(node: &Node) -> std::path::PathBuf {
    node.path("/var/lib/berth/state.db")
}

#[test]
fn a_missing_state_database_is_refused_then_rebuilt_from_the_disk() {
    let node = three_installed();
    let before = snapshot_summary(&node);
    assert_eq!(before.len(), 2, "{before:?}");
    let highest_txn = node.sql("SELECT max(id) FROM transactions");
    let digest_of_v3 = node.sql("SELECT sha256 FROM releases WHERE version = '1.2.0'");
    // A release dir made before stamps held the digest (nor has a
    // snapshot of it been taken): matched to its cached artifact by
    // manifest.
    fs::write(node.release_dir("1.2.0+3").join(".unpacked"), "").unwrap();
    // A floor the node accepted, kept beside the database.
    berth_tests::write(
        &node.path("/var/lib/berth/channel-sequences.toml"),
        "[[accepted]]\nchannel = \"staging\"\npackage = \"webapp\"\nsequence = 7\n",
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{suffix}", db(&node).display()));
    }
    let disk = contents(&node);

    for args in [
        vec![
            "--repo",
            crate::repo_support::REPO,
            "--channel",
            "staging",
            "install",
            "webapp@1.0.0",
        ],
        vec!["rollback", "webapp"],
        vec!["status"],
        vec!["gc"],
        vec!["recover"],
    ] {
        let run = node.agent(&args).code(1);
        assert_says(
            &run,
            "stderr",
            &[
                "the state database",
                "is missing, but the node holds 3 release dir(s) and 2 snapshot(s): berth does not start afresh and forget them",
                "hint: run `agent recover --rebuild`",
            ],
        );
        assert_unchanged(&node, &disk, &args);
    }

    let r = node.agent(&["recover", "--rebuild", "--json"]).ok().json();
    assert_eq!(r["packages"][0]["package"], "webapp", "{r}");
    assert_eq!(r["packages"][0]["current"], "1.2.0+3", "{r}");
    assert_eq!(
        r["packages"][0]["releases"],
        serde_json::json!(["1.0.0+1", "1.1.0+2", "1.2.0+3"])
    );
    assert_eq!(r["packages"][0]["snapshots"], 2);
    assert_eq!(r["sequences"], 1);
    assert_eq!(r["skipped"], serde_json::json!([]));
    assert_eq!(r["moved_aside"], serde_json::json!([]));
    node.assert_current("1.2.0+3");
    assert_eq!(
        node.sql("SELECT sha256 FROM releases WHERE version = '1.2.0'"),
        digest_of_v3
    );
    assert_eq!(snapshot_summary(&node), before);
    assert_eq!(
        node.sql("SELECT sequence FROM channel_sequences WHERE channel = 'staging'"),
        "7"
    );
    assert_eq!(node.sql("PRAGMA integrity_check"), "ok");
    node.agent(&["verify", "webapp"]).ok();

    // Rollback goes back as before the loss: to 1.1.0+2 as it was on the
    // node (from its tarball), then to 1.0.0+1.
    node.rollback(&[]).ok();
    assert_eq!(
        fs::read_to_string(node.path("/srv/webapp/index.html")).unwrap(),
        "<h1>patched on the node</h1>\n"
    );
    node.rollback(&["--to", "1.0.0+1"]).ok();
    node.assert_current("1.0.0+1");
    // New transactions take numbers no snapshot dir has.
    let newest = node.sql("SELECT min(id) FROM transactions WHERE kind = 'rollback'");
    assert!(
        newest.parse::<i64>().unwrap() > highest_txn.parse::<i64>().unwrap(),
        "{newest} <= {highest_txn}"
    );
    node.installed(&rel("1.2.0", 3));
    node.assert_current("1.2.0+3");
    assert_eq!(node.inconsistencies(), Vec::<String>::new());

    // A readable database is never rebuilt over.
    let state = contents(&node);
    let run = node.agent(&["recover", "--rebuild"]).code(2);
    assert_says(
        &run,
        "stderr",
        &[
            "is readable: --rebuild would replace its history",
            "hint: `agent recover` without --rebuild",
        ],
    );
    assert_unchanged(&node, &state, &["recover", "--rebuild"]);
}

#[test]
fn a_damaged_state_database_is_refused_then_moved_aside_and_rebuilt() {
    let node = three_installed();
    let before = snapshot_summary(&node);
    // Garbage over the second page onwards: the schema's tables.
    let path = db(&node);
    let mut bytes = fs::read(&path).unwrap();
    assert!(bytes.len() > 8192, "{}", bytes.len());
    for b in &mut bytes[4096..8192] {
        *b = 0x5a;
    }
    fs::write(&path, &bytes).unwrap();
    let disk = contents(&node);

    for args in [vec!["rollback", "webapp"], vec!["status"], vec!["recover"]] {
        let run = node.agent(&args).code(1);
        assert_says(
            &run,
            "stderr",
            &[
                "the state database",
                "is corrupt",
                "`agent recover --rebuild`",
            ],
        );
        assert_unchanged(&node, &disk, &args);
    }

    let run = node.agent(&["recover", "--rebuild"]).ok();
    assert_says(
        &run,
        "stdout",
        &[
            "aside to",
            "webapp: 3 release(s) (1.0.0+1, 1.1.0+2, 1.2.0+3), 2 snapshot(s); on 1.2.0+3 (where its target points)",
            "the history of earlier transactions is lost",
        ],
    );
    // The damaged file is kept, byte for byte.
    let aside: Vec<String> = berth_tests::names(&node.path("/var/lib/berth"))
        .into_iter()
        .filter(|n| n.starts_with("state.db.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        fs::read(node.path("/var/lib/berth").join(&aside[0])).unwrap(),
        bytes
    );
    node.assert_current("1.2.0+3");
    assert_eq!(snapshot_summary(&node), before);
    node.rollback(&[]).ok();
    // 1.1.0+2 as it was on the node when it was replaced.
    assert_eq!(
        node.target(),
        Some(node.release_dir("1.1.0+2").join("files"))
    );
    assert_eq!(
        fs::read_to_string(node.path("/srv/webapp/index.html")).unwrap(),
        "<h1>patched on the node</h1>\n"
    );
    let history = node.agent(&["history", "webapp"]).ok();
    assert_says(&history, "stdout", &["rebuild"]);
}
