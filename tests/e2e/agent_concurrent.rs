//! Ten agents started at once on one node root: one at a time holds the
//! node. Without `--wait` the others exit 4 naming the holder; with it
//! they queue, and installs of different releases, rollbacks, gc and
//! recover all succeed, one after the other. Either way the node is
//! whole afterwards: transactions that never overlap, `PRAGMA
//! integrity_check` ok, `agent verify` clean, the target on the release
//! the last committed transaction went to, nothing temporary left.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use berth_tests::Run;

use crate::agent_support::{Node, Rel, rel};
use crate::repo_support::{REPO, assert_says};

/// Runs each of `commands` (agent arguments after the global ones) in its
/// own process, all released at once from a barrier; returns each one's
/// pid and run, in order.
fn all_at_once(node: &Node, commands: &[Vec<String>]) -> Vec<(u32, Run)> {
    let barrier = Arc::new(Barrier::new(commands.len()));
    std::thread::scope(|scope| {
        let handles: Vec<_> = commands
            .iter()
            .map(|args| {
                let barrier = Arc::clone(&barrier);
                let mut all = vec!["--repo", REPO, "--channel", "staging"];
                all.extend(args.iter().map(String::as_str));
                let mut cmd = node.command(&all);
                scope.spawn(move || {
                    barrier.wait();
                    let child = cmd
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .expect("the agent starts");
                    let pid = child.id();
                    (pid, Run::from(child.wait_with_output().unwrap()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The pid in `… holds the node lock `…`: pid N (…`.
#[track_caller]
fn holder_pid(run: &Run) -> u32 {
    let after = run.stderr.split(": pid ").nth(1).expect("a holder's pid");
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no pid in:\n{run}"))
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// The checks after a storm: transactions one after the other, the state
/// database sound, the node whole and on the release the last committed
/// transaction went to, nothing to recover and nothing temporary left.
/// Returns the transactions, oldest first.
#[track_caller]
fn assert_whole(node: &Node) -> Vec<serde_json::Value> {
    let mut history = node.report("history").as_array().unwrap().clone();
    history.reverse();
    let time = |t: &serde_json::Value, key: &str| -> jiff::Timestamp {
        t[key]
            .as_str()
            .unwrap_or_else(|| panic!("no `{key}` in {t}"))
            .parse()
            .unwrap()
    };
    for pair in history.windows(2) {
        assert!(
            time(&pair[0], "finished") <= time(&pair[1], "started"),
            "transactions overlap:\n{}\n{}",
            pair[0],
            pair[1]
        );
    }
    assert!(
        history.iter().all(|t| t["result"] != "running"),
        "{history:?}"
    );
    assert_eq!(node.sql("PRAGMA integrity_check"), "ok");
    assert_eq!(node.sql("PRAGMA foreign_key_check"), "");
    let last = history
        .iter()
        .rev()
        .find(|t| t["result"] == "committed" && t["kind"] != "gc")
        .expect("a committed install or rollback");
    node.assert_current(last["to"].as_str().unwrap());
    node.agent(&["verify", "webapp"]).ok();
    assert_eq!(node.leftovers(), Vec::<String>::new());
    assert_says(
        &node.agent(&["recover"]).ok(),
        "stdout",
        &["nothing to recover"],
    );
    history
}

#[test]
fn ten_installs_at_once_without_wait_run_one_at_a_time_and_the_others_name_the_holder() {
    let node = Node::new();
    let releases: Vec<Rel> = (1..=5).map(|b| rel("1.0.0", b)).collect();
    for r in &releases {
        node.publish(r);
    }
    // A fresh node: the ten race to create its state too.
    let commands: Vec<Vec<String>> = (0..10)
        .map(|i| args(&["install", &releases[i % 5].spec()]))
        .collect();

    let runs = all_at_once(&node, &commands);
    let winners: BTreeSet<u32> = runs
        .iter()
        .filter(|(_, r)| r.code == 0)
        .map(|(pid, _)| *pid)
        .collect();
    assert!(!winners.is_empty(), "none got the node");
    for (_, run) in &runs {
        match run.code {
            0 => {}
            4 => {
                assert_says(
                    run,
                    "stderr",
                    &[
                        "another berth operation holds the node lock",
                        "(install webapp) since ",
                        "hint: wait for it to finish, or pass `--wait SECS`",
                    ],
                );
                // The holder named is one of the ten, and it got through.
                let pid = holder_pid(run);
                assert!(
                    winners.contains(&pid),
                    "holder {pid} is not a winner:\n{run}"
                );
            }
            _ => panic!("expected exit 0 or 4:\n{run}"),
        }
    }
    let history = assert_whole(&node);
    // Each winner that found the node on another release made one
    // committed install; nobody else wrote a transaction.
    assert!(history.len() <= winners.len(), "{history:?}");
    assert!(history.iter().all(|t| t["result"] == "committed"));
    eprintln!(
        "{} of 10 got the node, {} transactions",
        winners.len(),
        history.len()
    );
}

#[test]
fn ten_operations_at_once_with_wait_all_succeed_one_after_the_other() {
    let node = Node::new();
    let releases: Vec<Rel> = (1..=4).map(|b| rel("1.0.0", b).files(50)).collect();
    for r in &releases {
        node.publish(r);
    }
    // Snapshots of two releases, so that every rollback has one to go to.
    for r in &releases[..3] {
        node.installed(r);
    }
    let before = node.report("history").as_array().unwrap().len();
    let wait = ["--wait", "120"];
    let with_wait = |words: &[&str]| {
        let mut a = args(&wait);
        a.extend(args(words));
        a
    };
    let commands = vec![
        with_wait(&["install", &releases[3].spec()]),
        with_wait(&["rollback", "webapp"]),
        with_wait(&["install", &releases[0].spec()]),
        with_wait(&["gc"]),
        with_wait(&["install", &releases[1].spec()]),
        with_wait(&["rollback", "webapp"]),
        with_wait(&["recover"]),
        with_wait(&["install", &releases[2].spec()]),
        with_wait(&["rollback", "webapp"]),
        with_wait(&["install", &releases[3].spec()]),
    ];

    let runs = all_at_once(&node, &commands);
    for ((_, run), command) in runs.iter().zip(&commands) {
        assert_eq!(run.code, 0, "`{}` failed:\n{run}", command.join(" "));
    }
    let history = assert_whole(&node);
    let new = &history[before..];
    let kinds = |kind: &str| new.iter().filter(|t| t["kind"] == kind).count();
    // Every rollback made a transaction; an install may have found its
    // release current already (`unchanged`, no transaction).
    assert_eq!(kinds("rollback"), 3, "{new:?}");
    assert!(kinds("install") >= 1, "{new:?}");
    assert!(new.iter().all(|t| t["result"] == "committed"), "{new:?}");
}
