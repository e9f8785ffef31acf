//! The agent killed (SIGKILL, through the `BERTH_FAULT` switch) at each
//! named point of an install: after every kill the next command recovers,
//! the target resolves to the complete old or new release, the state
//! database agrees, `agent verify` is clean, nothing temporary is left,
//! and the following install succeeds.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use crate::agent_support::{Node, rel};
use crate::repo_support::REPO;

/// Every point an install from one release to another passes, in order.
const INSTALL_POINTS: [&str; 22] = [
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
    "commit:before",
    "commit:after",
    // Points the install never reaches must not kill it: a typo here
    // would make the test pass without testing anything, so two controls.
    "no-such-point",
    "",
];

/// Files and directories whose names say they are temporary.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in walk(dir) {
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") || name.starts_with(".staging-") {
            found.push(e.display().to_string());
        }
    }
    found
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

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
        let mut cmd = node.env.cmd("agent");
        cmd.arg("--root")
            .arg(node.root())
            .args(["--repo", REPO, "--channel", "staging", "install"])
            .arg(other.spec())
            .env("BERTH_FAULT", point);
        let out = cmd.output().unwrap();
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
        assert_eq!(leftovers(&node.root()), Vec::<String>::new(), "{point}");
        // Before the switch the node is on the old release; after the
        // commit, on the new one.
        let switched = INSTALL_POINTS
            .iter()
            .position(|p| *p == point)
            .is_some_and(|i| i > 12);
        let expected = if switched || control { other } else { &current };
        assert_eq!(on.vb(), expected.vb(), "{point}");
        current = on.clone();
    }
    // And installs go on.
    let other = if current.vb() == a.vb() { &b } else { &a };
    node.install(&other.spec(), &[]).ok();
    node.assert_current(&other.vb());
}
