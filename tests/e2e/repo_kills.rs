//! The repository kill harness: publish, promote, yank and gc of releases
//! whose blobs are a few megabytes, in an unsigned and a signed repository
//! in turn, each killed with SIGKILL at a random moment. After every kill
//! the repository must be whole (`RepoCheck`: every blob hashes to its
//! name, every index parses and `minisign -V` verifies it, every entry's
//! blob is there, `list` and `show` work), `packager gc` must report every
//! temp file the dead writer left as abandoned and remove it, the command
//! run again must succeed, every index must then hold its content from
//! before the kill or the one the command leaves, and a following publish
//! must succeed.
//!
//! `BERTH_REPO_KILLS` sets the number of kills (default 100),
//! `BERTH_REPO_KILL_MIB` the payload of each release in MiB (default 4,
//! incompressible), `BERTH_REPO_KILL_SEED` the random seed. The figures
//! are printed at the end (`cargo nextest run -p berth-tests repo_kills
//! --no-capture`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_tests::{Rng, Run, TestEnv, env_number};

use crate::repo_support::{Artifact, Content, REPO, RepoCheck, artifacts, big_app, ok_json, temps};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Publish,
    Promote,
    Yank,
    Gc,
}

/// One repository and the releases it is fed from.
struct World {
    env: TestEnv,
    check: RepoCheck,
    pool: Vec<Artifact>,
}

/// A channel's releases in `content`: (`VERSION+BUILD`, yanked).
fn releases(content: &Content, channel: &str) -> Vec<(String, bool)> {
    content
        .get(&format!("{channel}/webapp"))
        .into_iter()
        .flatten()
        .map(|r| {
            let vb = r.split(' ').next().unwrap_or_default().to_owned();
            (vb, r.contains(" yanked:true "))
        })
        .collect()
}

impl World {
    fn new(signed: bool, mib: usize) -> World {
        let mut env = TestEnv::new();
        let public = signed.then(|| {
            let keys = ok_json(&env, &["keygen", "--out", "ci", "--unencrypted"]);
            env.set("BERTH_SIGN_KEY", "ci.key");
            env.join(keys["public_key"].as_str().unwrap())
        });
        big_app(&env, "3.0", mib);
        let pool = artifacts(&env, "3.0", 1..=6);
        let check = RepoCheck::new(env.join(REPO), public);
        let world = World { env, check, pool };
        for art in &world.pool[..2] {
            world
                .run(&["publish", &art.path, "--channel", "staging"])
                .ok();
        }
        world
    }

    /// `packager ARGS --repo repo --json`.
    fn run<S: AsRef<str>>(&self, cmd: &[S]) -> Run {
        let mut all: Vec<&str> = cmd.iter().map(AsRef::as_ref).collect();
        all.extend(["--repo", REPO, "--json"]);
        self.env.packager(all)
    }

    /// A pool release that `channel` does not hold.
    fn absent(&self, content: &Content, channel: &str, rng: &mut Rng) -> Option<&Artifact> {
        let held: BTreeSet<String> = releases(content, channel)
            .into_iter()
            .map(|(vb, _)| vb)
            .collect();
        let absent: Vec<&Artifact> = self
            .pool
            .iter()
            .filter(|a| !held.contains(&a.version_build()))
            .collect();
        (!absent.is_empty()).then(|| absent[rng.below(absent.len() as u64) as usize])
    }

    /// The next command: publish, promote, yank or gc with retention.
    fn choose(&self, content: &Content, rng: &mut Rng) -> (Op, Vec<String>) {
        let to_s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let staging = releases(content, "staging");
        let production: BTreeSet<String> = releases(content, "production")
            .into_iter()
            .map(|(vb, _)| vb)
            .collect();
        let roll = rng.below(100);
        if (45..60).contains(&roll) {
            let candidates: Vec<&String> = staging
                .iter()
                .filter(|(vb, yanked)| !yanked && !production.contains(vb))
                .map(|(vb, _)| vb)
                .collect();
            if !candidates.is_empty() {
                let vb = candidates[rng.below(candidates.len() as u64) as usize];
                let release = format!("webapp@{vb}");
                return (
                    Op::Promote,
                    to_s(&[
                        "promote",
                        &release,
                        "--from",
                        "staging",
                        "--to",
                        "production",
                    ]),
                );
            }
        } else if (60..75).contains(&roll) && !staging.is_empty() {
            let (vb, yanked) = &staging[rng.below(staging.len() as u64) as usize];
            let release = format!("webapp@{vb}");
            let mut cmd = to_s(&["yank", &release, "--channel", "staging"]);
            if *yanked {
                cmd.push("--undo".into());
            }
            return (Op::Yank, cmd);
        } else if roll >= 75 {
            return (Op::Gc, to_s(&["gc", "--keep", "2"]));
        }
        let art = self
            .absent(content, "staging", rng)
            .unwrap_or(&self.pool[rng.below(self.pool.len() as u64) as usize]);
        (
            Op::Publish,
            to_s(&["publish", &art.path, "--channel", "staging"]),
        )
    }

    fn state(&mut self, when: &str) -> Result<Content, String> {
        self.check
            .check(&self.env)
            .map_err(|e| format!("{when}: {e}"))
    }

    /// Everything after a kill (or a run that ended first); the number of
    /// temp files the dead writer left.
    fn after(&mut self, old: &Content, cmd: &[String], rng: &mut Rng) -> Result<usize, String> {
        let mid = self.state("after the kill")?;

        let left = temps(&self.env.join(REPO));
        let gc = self.run(&["gc"]);
        if gc.code != 0 {
            return Err(format!("gc after the kill failed: {gc}"));
        }
        let report = gc.json();
        let reported: Vec<String> = report["abandoned"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a["path"].as_str().unwrap_or_default().to_owned())
            .collect();
        let mut reported_sorted = reported.clone();
        reported_sorted.sort();
        if reported_sorted != left || report["in_progress"] != serde_json::json!([]) {
            return Err(format!(
                "the dead writer left {left:?}; gc reported {report}"
            ));
        }
        let still = temps(&self.env.join(REPO));
        if !still.is_empty() {
            return Err(format!("gc left {still:?}"));
        }

        let again = self.run(cmd);
        if again.code != 0 {
            return Err(format!("the command run again failed: {again}"));
        }
        let new = self.state("after the command ran again")?;
        let keys: BTreeSet<&String> = old.keys().chain(mid.keys()).chain(new.keys()).collect();
        for key in keys {
            let m = mid.get(key);
            if m != old.get(key) && m != new.get(key) {
                return Err(format!(
                    "`{key}` is neither old nor new:\nold {:?}\nmid {m:?}\nnew {:?}",
                    old.get(key),
                    new.get(key)
                ));
            }
        }

        // A following publish succeeds.
        let following = ["staging", "dev"].into_iter().find_map(|channel| {
            self.absent(&new, channel, rng)
                .map(|art| (art.path.clone(), channel))
        });
        if let Some((path, channel)) = following {
            let run = self.run(&["publish", &path, "--channel", channel]);
            if run.code != 0 {
                return Err(format!("the following publish failed: {run}"));
            }
        }
        Ok(left.len())
    }
}

#[test]
fn random_kills_of_publish_promote_yank_and_gc_leave_a_whole_repository() {
    let kills = env_number("BERTH_REPO_KILLS", 100);
    let mib = env_number("BERTH_REPO_KILL_MIB", 4);
    let seed = env_number("BERTH_REPO_KILL_SEED", 0x5eed) as u64;
    let mut worlds = [World::new(false, mib), World::new(true, mib)];
    let mut rng = Rng::new(seed);
    // Per operation: (killed mid-operation, finished before the kill).
    let mut counts = BTreeMap::<Op, (usize, usize)>::new();
    // How long each operation took the last time it ran to the end: the
    // next kill of that kind falls in that time (or a little past it).
    let mut span = BTreeMap::<Op, u64>::new();
    let mut temps_left = 0;
    let mut failures = Vec::new();
    let started = Instant::now();
    for i in 0..kills {
        let world = &mut worlds[i % 2];
        let kind = if i % 2 == 1 { "signed" } else { "unsigned" };
        let old = match world.state("before") {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("kill {i} ({kind}): {e}"));
                break;
            }
        };
        let (op, cmd) = world.choose(&old, &mut rng);
        let begun = Instant::now();
        let mut child = world
            .env
            .cmd("packager")
            .args(&cmd)
            .args(["--repo", REPO])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("packager starts");
        let estimate = *span.get(&op).unwrap_or(&300_000);
        std::thread::sleep(Duration::from_micros(rng.below(estimate * 11 / 10)));
        let entry = counts.entry(op).or_default();
        match child.try_wait().expect("waiting for packager") {
            Some(status) => {
                entry.1 += 1;
                span.insert(op, begun.elapsed().as_micros() as u64);
                if !status.success() {
                    let out = child.wait_with_output().expect("packager's output");
                    failures.push(format!(
                        "kill {i} ({kind}): `packager {}` failed: {}",
                        cmd.join(" "),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                    break;
                }
            }
            None => {
                entry.0 += 1;
                child.kill().expect("SIGKILL");
                child.wait().expect("reaping packager");
            }
        }
        match world.after(&old, &cmd, &mut rng) {
            Ok(left) => temps_left += left,
            Err(e) => {
                failures.push(format!(
                    "kill {i} ({kind}, {op:?} `{}`): {e}",
                    cmd.join(" ")
                ));
                break;
            }
        }
    }
    let mid: usize = counts.values().map(|c| c.0).sum();
    eprintln!(
        "repository kill harness: {kills} kills of {mib} MiB releases, seed {seed}: \
         {mid} killed mid-operation, {} finished before the kill \
         (per operation, killed/finished: {counts:?}); {temps_left} temp files of \
         dead writers, all removed by gc; {} inconsistencies; {:.1} s; \
         last uncut run per operation: {span:?} us",
        kills - mid,
        failures.len(),
        started.elapsed().as_secs_f64(),
    );
    assert_eq!(failures, Vec::<String>::new());
    assert!(kills == 0 || mid > 0, "no kill landed mid-operation");
}
