//! The agent killed (SIGKILL, through the `BERTH_FAULT` switch) at each
//! named point of an install: after every kill the next command recovers,
//! the target resolves to the complete old or new release, the state
//! database agrees, `agent verify` is clean, nothing temporary is left,
//! and the following install succeeds. Installing the current release
//! again to repair its dir, killed while the dir is replaced, leaves the
//! target on a whole tree.

use std::os::unix::process::ExitStatusExt;

use crate::agent_support::{Node, rel};
use crate::repo_support::REPO;

/// Every point an install from one release to another passes, in order.
const INSTALL_POINTS: [&str; 24] = [
    "unpack:before",
    "unpack:after",
    "snapshot:before",
    "snapshot:after",
    "hook:backup:before",
    "hook:backup:after",
    "hook:dump:before",
    "hook:dump:after",
    "link:before",
    "link:after",
    "hook:pre_install:before",
    "hook:pre_install:after",
    "switch:before",
    "switch:after",
    "hook:post_install:before",
    "hook:post_install:after",
    "hook:health:before",
    "hook:health:after",
    "healthy:before",
    "healthy:after",
    "commit:before",
    "commit:after",
    // Points the install never reaches must not kill it: a typo here
    // would make the test pass without testing anything, so two controls.
    "no-such-point",
    "",
];

#[test]
fn an_install_killed_at_each_step_leaves_the_old_or_the_new_release() {
    let node = Node::new();
    let (a, b) = (rel("1.0.0", 1), rel("1.1.0", 2));
    node.publish(&a);
    node.publish(&b);
    node.installed(&a);
    let mut current = a.clone();
    for point in INSTALL_POINTS {
        let other = if current.vb() == a.vb() { &b } else { &a };
        let spec = other.spec();
        let out = node
            .command(&["--repo", REPO, "--channel", "staging", "install", &spec])
            .env("BERTH_FAULT", point)
            .output()
            .unwrap();
        let control = point.is_empty() || point == "no-such-point";
        if control {
            assert!(out.status.success(), "{point}: {out:?}");
        } else {
            assert_eq!(
                out.status.signal(),
                Some(9),
                "{point} was not reached: {out:?}"
            );
        }

        // The next command recovers; then the node is whole.
        let r = node.agent(&["recover", "--json"]).ok().json();
        // After the commit nothing is left to recover (pruning is
        // retention, done again by the next install or `agent gc`).
        let interrupted = !control && point != "commit:after";
        assert_eq!(r["changed"], interrupted, "{point}: {r}");
        let link = node.target().expect("the target is a symlink");
        let on = [&a, &b]
            .into_iter()
            .find(|r| link == node.release_dir(&r.vb()).join("files"))
            .unwrap_or_else(|| panic!("{point}: the target points at {}", link.display()));
        node.assert_current(&on.vb());
        node.agent(&["verify", "webapp"]).ok();
        assert_eq!(node.leftovers(), Vec::<String>::new(), "{point}");
        // Until the health check has passed and been journaled (the
        // `:after` point comes before the step is recorded done) the
        // install is undone (switched back when it had switched); from
        // then on it is finished.
        let proven = INSTALL_POINTS
            .iter()
            .position(|p| *p == point)
            .is_some_and(|i| {
                i > INSTALL_POINTS
                    .iter()
                    .position(|p| *p == "healthy:after")
                    .unwrap()
            });
        let expected = if proven || control { other } else { &current };
        assert_eq!(on.vb(), expected.vb(), "{point}");
        current = on.clone();
    }
    // And installs go on.
    let other = if current.vb() == a.vb() { &b } else { &a };
    node.install(&other.spec(), &[]).ok();
    node.assert_current(&other.vb());
}

/// Every point a rollback from `b` back to `a` passes, in order: an
/// install's, but for its first step, `tree` (which finds `a`'s kept dir
/// intact) in place of `unpack`; backup and dump are the release being
/// left's.
fn rollback_points() -> Vec<&'static str> {
    let mut points = vec!["tree:before", "tree:after"];
    points.extend(
        INSTALL_POINTS
            .iter()
            .skip_while(|p| p.starts_with("unpack:")),
    );
    points
}

/// The node is whole: recovered, on a complete release the database
/// calls current, verify clean, nothing left over or disagreeing.
fn assert_whole(node: &Node, point: &str, pool: &[&crate::agent_support::Rel]) -> String {
    node.agent(&["recover"]).ok();
    let link = node.target().expect("the target is a symlink");
    let on = pool
        .iter()
        .find(|r| link == node.release_dir(&r.vb()).join("files"))
        .unwrap_or_else(|| panic!("{point}: the target points at {}", link.display()));
    node.assert_current(&on.vb());
    node.agent(&["verify", "webapp"]).ok();
    assert_eq!(node.leftovers(), Vec::<String>::new(), "{point}");
    assert_eq!(node.inconsistencies(), Vec::<String>::new(), "{point}");
    on.vb()
}

#[test]
fn a_rollback_killed_at_each_step_leaves_the_old_or_the_new_release() {
    let node = Node::new();
    let (a, b) = (rel("1.0.0", 1), rel("1.1.0", 2));
    node.publish(&a);
    node.publish(&b);
    node.installed(&a);
    let points = rollback_points();
    assert_eq!(points.len(), 24, "{points:?}");
    let proven = points.iter().position(|p| *p == "healthy:after").unwrap();
    for (i, point) in points.into_iter().enumerate() {
        // On b, with a snapshot of a to roll back to.
        node.installed(&b);
        let out = node
            .command(&["rollback", "webapp"])
            .env("BERTH_FAULT", point)
            .output()
            .unwrap();
        let control = point.is_empty() || point == "no-such-point";
        if control {
            assert!(out.status.success(), "{point}: {out:?}");
        } else {
            assert_eq!(
                out.status.signal(),
                Some(9),
                "{point} was not reached: {out:?}"
            );
        }
        let on = assert_whole(&node, point, &[&a, &b]);
        let expected = if i > proven { &a } else { &b };
        assert_eq!(on, expected.vb(), "{point}");
        // Rollbacks go on from here.
        node.installed(&a);
    }
}

#[test]
fn a_gc_killed_at_each_step_loses_nothing_it_keeps() {
    let node = Node::new();
    let rels = [
        rel("1.0.0", 1),
        rel("1.1.0", 2),
        rel("1.2.0", 3),
        rel("1.3.0", 4),
    ];
    for r in &rels {
        node.publish(r);
    }
    berth_tests::write(
        &node.path("/etc/berth/agent.toml"),
        "[packages.webapp]\nkeep_releases = 5\n",
    );
    let strict = node.path("/etc/berth/strict.toml");
    berth_tests::write(
        &strict,
        "[retention]\nsnapshots = 1\n\n[packages.webapp]\nkeep_releases = 1\n",
    );
    let strict = strict.display().to_string();
    let pool: Vec<&crate::agent_support::Rel> = rels.iter().collect();
    // Each round: all four releases installed again (three snapshots, four
    // dirs), then gc under the strict configuration killed at one point:
    // it removes 1.0.0+1 and 1.1.0+2 and two snapshots, one step each.
    let points = [
        "remove release 1.0.0+1:before",
        "remove release 1.0.0+1:after",
        "remove release 1.1.0+2:before",
        "remove release 1.1.0+2:after",
        "commit:before",
        "commit:after",
    ];
    for point in points {
        for r in &rels {
            node.installed(r);
        }
        let out = node
            .command(&["--config", &strict, "gc"])
            .env("BERTH_FAULT", point)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{point} was not reached: {out:?}"
        );
        assert_eq!(assert_whole(&node, point, &pool), "1.3.0+4", "{point}");
        // What the strict gc keeps is there and works: a rollback to the
        // last healthy release before the current one.
        assert!(
            node.release_dir("1.2.0+3").join("files").is_dir(),
            "{point}"
        );
        node.rollback(&[]).ok();
        node.assert_current("1.2.0+3");
        node.agent(&["gc"]).ok();
        assert_eq!(node.inconsistencies(), Vec::<String>::new(), "{point}");
    }
    // The snapshot removals, killed: the ids are the newest rows' but one.
    for r in &rels {
        node.installed(r);
    }
    let ids = node.sql("SELECT id FROM snapshots ORDER BY id DESC");
    let victim = ids
        .lines()
        .nth(1)
        .expect("two snapshots at least")
        .to_owned();
    for when in ["before", "after"] {
        let point = format!("remove snapshot {victim}:{when}");
        let out = node
            .command(&["--config", &strict, "gc"])
            .env("BERTH_FAULT", &point)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{point} was not reached: {out:?}"
        );
        assert_whole(&node, &point, &pool);
        let left = node.sql(&format!(
            "SELECT count(*) FROM snapshots WHERE id = {victim}"
        ));
        // Killed before the rename, the snapshot is whole and kept (the
        // next gc removes it); after it, its removal is finished.
        assert_eq!(left, if when == "before" { "1" } else { "0" }, "{point}");
    }
    node.rollback(&[]).ok();
}

#[test]
fn installing_the_current_release_again_to_repair_it_never_leaves_the_target_without_a_tree() {
    let node = Node::new();
    let a = rel("1.0.0", 1);
    node.publish(&a);
    node.installed(&a);
    let page = node.release_dir(&a.vb()).join("files/index.html");
    let drift = "`index.html` is 21 bytes, the manifest says 24".to_owned();
    // The damaged release dir is replaced while the target points at it:
    // killed before, between the swap and the removal of the old copy,
    // and after.
    for point in ["unpack:before", "unpack:exchanged", "unpack:after", ""] {
        std::fs::write(&page, "<h1>patched here</h1>").unwrap();
        let out = node
            .command(&["--repo", REPO, "--channel", "staging", "install", &a.spec()])
            .env("BERTH_FAULT", point)
            .output()
            .unwrap();
        if point.is_empty() {
            assert!(out.status.success(), "{out:?}");
        } else {
            assert_eq!(out.status.signal(), Some(9), "{point}: {out:?}");
        }
        let recovered = node.agent(&["recover", "--json"]).ok().json();
        if point == "unpack:exchanged" {
            // The old copy, swapped out, was left for recovery to remove.
            let staging = node
                .path("/var/lib/berth/releases/webapp")
                .join(format!(".staging-{}", a.vb()));
            assert_eq!(
                recovered["removed"],
                serde_json::json!([staging.display().to_string()])
            );
        }
        assert_eq!(node.target(), Some(node.release_dir(&a.vb()).join("files")));
        let verify = node.agent(&["verify", "webapp", "--json"]);
        let found = verify.json()["drift"].clone();
        if point == "unpack:before" {
            assert_eq!(found, serde_json::json!([drift]), "{point}");
        } else {
            assert_eq!(verify.code, 0, "{point}: {found}");
            node.assert_current(&a.vb());
        }
        assert_eq!(node.leftovers(), Vec::<String>::new(), "{point}");
        assert_eq!(node.inconsistencies(), Vec::<String>::new(), "{point}");
    }
}
