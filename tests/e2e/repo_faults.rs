//! The packager killed (SIGKILL, through the `BERTH_FAULT` switch) at each
//! named point of publish, promote, yank and gc, in an unsigned and in a
//! signed repository. After every kill the repository must be whole (the
//! checks of `RepoCheck`: every blob hashes to its name, every index
//! parses and `minisign -V` verifies it, every entry's blob is there,
//! `list` and `show` work), each index must hold its old content or its
//! new one (the old one before the write is visible, the new one after),
//! the dead writer's temp files must be exactly those the point implies,
//! `packager gc` must report and remove them all, the command run again
//! must succeed, and so must a following publish.

use std::collections::BTreeSet;

use berth_tests::{Run, TestEnv};

use crate::repo_support::{
    Artifact, Content, REPO, RepoCheck, app, args, build_into, killed_at, ok_json, promote_args,
    temps,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Publish,
    Promote,
    Yank,
    Gc,
}

/// What a kill at a point leaves of the command's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing visible: every index as it was.
    Before,
    /// gc between the rewrites of two indexes: some new, some old.
    Between,
    /// The whole change: every index as the command run to the end
    /// leaves it.
    After,
}

/// Points no command reaches: the command must run to the end. A typo in
/// a point name would otherwise pass without testing anything.
const CONTROLS: [&str; 2] = ["no-such-point", ""];

/// Every point `op` passes, in order, with what a kill there leaves and
/// how many temp files or directories the dead writer leaves behind.
fn points(op: Op, signed: bool) -> Vec<(&'static str, Phase, usize)> {
    use Phase::*;
    let mut index = vec![("index:lock", Before, 0), ("index:written", Before, 1)];
    if signed {
        // The new directory, then the old one it replaced.
        index.extend([
            ("signature:written", Before, 1),
            ("index:renamed", After, 1),
            ("index:cleaned", After, 0),
        ]);
    } else {
        index.push(("index:renamed", After, 0));
    }
    let mut all = match op {
        Op::Publish => vec![
            ("blob:partial", Before, 1),
            ("blob:written", Before, 1),
            ("blob:renamed", Before, 0),
        ],
        _ => Vec::new(),
    };
    match op {
        Op::Gc => {
            // Retention rewrites several indexes; the kill comes at the
            // first. The sweep follows them all.
            all.extend(
                index
                    .into_iter()
                    .map(|(p, phase, t)| (p, if phase == After { Between } else { phase }, t)),
            );
            all.extend([
                ("gc:sweep", After, 0),
                ("blob:deleted", After, 0),
                ("temp:removed", After, 0),
            ]);
        }
        _ => all.extend(index),
    }
    all.extend(CONTROLS.map(|c| (c, After, 0)));
    all
}

/// A repository with two channels and enough history for every command
/// to have work.
struct World {
    env: TestEnv,
    check: RepoCheck,
    built: u64,
    kills: usize,
}

impl World {
    fn new(signed: bool) -> World {
        let mut env = TestEnv::new();
        let public = signed.then(|| {
            let keys = ok_json(&env, &["keygen", "--out", "ci", "--unencrypted"]);
            env.set("BERTH_SIGN_KEY", "ci.key");
            env.join(keys["public_key"].as_str().unwrap())
        });
        app(&env, "app-1.0", "1.0");
        let check = RepoCheck::new(env.join(REPO), public);
        let mut world = World {
            env,
            check,
            built: 0,
            kills: 0,
        };
        let first = world.published();
        world.published();
        world.ok(&[
            "promote",
            &first.release(),
            "--from",
            "staging",
            "--to",
            "production",
        ]);
        world
    }

    /// A new build of the application.
    fn fresh(&mut self) -> Artifact {
        self.built += 1;
        build_into(&self.env, "app-1.0", self.built, "out")
    }

    fn publish_args(art: &Artifact) -> Vec<String> {
        args(&["publish", &art.path, "--channel", "staging"])
    }

    /// Runs `packager ARGS --repo repo --json`, which must succeed.
    fn ok(&self, cmd: &[&str]) -> serde_json::Value {
        let mut all = cmd.to_vec();
        all.extend(["--repo", REPO]);
        ok_json(&self.env, &all)
    }

    /// Publishes a new build into staging.
    fn published(&mut self) -> Artifact {
        let art = self.fresh();
        self.ok(&["publish", &art.path, "--channel", "staging"]);
        art
    }

    /// Prepares the repository for `op` and returns the command to kill
    /// (without `--repo`).
    fn setup(&mut self, op: Op, round: usize) -> Vec<String> {
        match op {
            Op::Publish => Self::publish_args(&self.fresh()),
            Op::Promote => {
                let art = self.published();
                promote_args(&art.release(), &[])
            }
            Op::Yank => {
                let art = self.published();
                let release = art.release();
                if round % 2 == 1 {
                    self.ok(&["yank", &release, "--channel", "staging"]);
                    args(&["yank", &release, "--channel", "staging", "--undo"])
                } else {
                    args(&["yank", &release, "--channel", "staging"])
                }
            }
            Op::Gc => {
                // Two new releases in staging: retention drops the older,
                // whose blob no other channel holds; and a publisher that
                // died mid-blob, whose temp file this gc must remove.
                self.published();
                self.published();
                let promoted = self.published();
                self.ok(&[
                    "promote",
                    &promoted.release(),
                    "--from",
                    "staging",
                    "--to",
                    "production",
                ]);
                let cut = self.fresh();
                let mut cmd = Self::publish_args(&cut);
                cmd.extend(args(&["--repo", REPO]));
                killed_at(&self.env, "blob:partial", &cmd);
                args(&["gc", "--keep", "1"])
            }
        }
    }

    fn state(&mut self, when: &str) -> Content {
        self.check
            .check(&self.env)
            .unwrap_or_else(|e| panic!("{when}: {e}"))
    }

    /// Kills `op` at `point` and checks everything after it.
    fn kill(&mut self, op: Op, round: usize, (point, phase, left): (&str, Phase, usize)) {
        let what = format!("{op:?} at `{point}`");
        let mut cmd = self.setup(op, round);
        let old = self.state(&format!("{what}, before"));
        // gc's own setup left one dead writer's temp file.
        let planted = temps(&self.env.join(REPO));
        cmd.extend(args(&["--repo", REPO]));
        let control = CONTROLS.contains(&point);
        if control {
            let out = self
                .env
                .cmd("packager")
                .args(&cmd)
                .env("BERTH_FAULT", point)
                .output()
                .unwrap();
            Run::from(out).ok();
        } else {
            killed_at(&self.env, point, &cmd);
            self.kills += 1;
        }
        let mid = self.state(&format!("{what}, after the kill"));

        // The dead writer's leftovers: exactly what the point implies, all
        // reported and removed by gc.
        let left_now = temps(&self.env.join(REPO));
        // A gc that got to its sweep of temp files took the planted one.
        let swept_planted = op == Op::Gc && (point == "temp:removed" || control);
        let planted_left = if swept_planted { 0 } else { planted.len() };
        assert_eq!(
            left_now.len(),
            left + planted_left,
            "{what}: temp files {left_now:?}"
        );
        let swept = self.ok(&["gc"]);
        let reported: BTreeSet<String> = swept["abandoned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["path"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            reported,
            left_now.iter().cloned().collect(),
            "{what}: gc reported {swept}"
        );
        assert_eq!(swept["in_progress"], serde_json::json!([]), "{what}");
        assert_eq!(temps(&self.env.join(REPO)), Vec::<String>::new(), "{what}");

        // The command again, to the end: the new content.
        let again: Vec<&str> = cmd.iter().map(String::as_str).collect();
        ok_json(&self.env, &again);
        let new = self.state(&format!("{what}, run again"));
        assert_ne!(old, new, "{what}: the command changed nothing");
        let keys: BTreeSet<&String> = old.keys().chain(mid.keys()).chain(new.keys()).collect();
        for key in keys {
            let m = mid.get(key);
            assert!(
                m == old.get(key) || m == new.get(key),
                "{what}: `{key}` is neither old nor new:\nold {:?}\nmid {m:?}\nnew {:?}",
                old.get(key),
                new.get(key)
            );
        }
        match phase {
            Phase::Before => assert_eq!(mid, old, "{what}: a change is visible"),
            Phase::After => assert_eq!(mid, new, "{what}: the change is not whole"),
            Phase::Between => assert_ne!(mid, old, "{what}: no index was rewritten"),
        }

        // A following publish succeeds.
        self.published();
    }
}

fn kill_at_each_point(ops: &[Op], signed: bool) {
    let mut world = World::new(signed);
    for &op in ops {
        for (round, point) in points(op, signed).into_iter().enumerate() {
            world.kill(op, round, point);
        }
    }
    let expected: usize = ops
        .iter()
        .map(|&op| points(op, signed).len() - CONTROLS.len())
        .sum();
    assert_eq!(world.kills, expected);
    eprintln!(
        "{} repository: {} kills of {ops:?}, 0 inconsistencies",
        if signed { "signed" } else { "unsigned" },
        world.kills
    );
}

#[test]
fn publish_killed_at_each_point_leaves_the_old_or_the_new_channel() {
    kill_at_each_point(&[Op::Publish], false);
}

#[test]
fn signed_publish_killed_at_each_point_leaves_a_verified_old_or_new_channel() {
    kill_at_each_point(&[Op::Publish], true);
}

#[test]
fn promote_and_yank_killed_at_each_point_leave_the_old_or_the_new_channel() {
    kill_at_each_point(&[Op::Promote, Op::Yank], false);
}

#[test]
fn signed_promote_and_yank_killed_at_each_point_leave_a_verified_channel() {
    kill_at_each_point(&[Op::Promote, Op::Yank], true);
}

#[test]
fn gc_killed_at_each_point_loses_nothing_a_channel_references() {
    kill_at_each_point(&[Op::Gc], false);
}

#[test]
fn signed_gc_killed_at_each_point_leaves_verified_indexes() {
    kill_at_each_point(&[Op::Gc], true);
}
