//! The kill harness: installs, rollbacks and gc of releases of hundreds
//! to thousands of files, each killed with SIGKILL at a random moment, and
//! after every kill the node must be whole: the next command (`agent
//! recover`) succeeds, the target resolves to a complete release, `agent
//! verify` is clean, the state database calls that release current,
//! nothing temporary is left, and a following install succeeds.
//!
//! `BERTH_KILLS` sets the number of kills (default 200), `BERTH_KILL_FILES`
//! the payload files of each release (default 2,000: several thousand
//! files per release, which every install unpacks and fsyncs; about three
//! minutes here), `BERTH_KILL_SEED` the random seed. The figures are printed at
//! the end (`cargo nextest run -p berth-tests agent_kills --no-capture`).

use std::time::{Duration, Instant};

use berth_tests::{Rng, env_number};

use crate::agent_support::{Node, Rel, rel};

/// Which release the node is on after recovery, or what is wrong.
fn check(node: &Node, pool: &[Rel]) -> Result<String, String> {
    let recover = node.agent(&["recover"]);
    if recover.code != 0 {
        return Err(format!("recover failed: {recover}"));
    }
    let link = node.target().ok_or("the target is not a symlink")?;
    let on = pool
        .iter()
        .find(|r| link == node.release_dir(&r.vb()).join("files"))
        .ok_or_else(|| format!("the target points at {}", link.display()))?;
    let current = node.sql(
        "SELECT version || '+' || build FROM releases WHERE package = 'webapp' AND is_current = 1",
    );
    if current != on.vb() {
        return Err(format!(
            "the target is {} but the database says `{current}`",
            on.vb()
        ));
    }
    let verify = node.agent(&["verify", "webapp"]);
    if verify.code != 0 {
        return Err(format!("verify: {verify}"));
    }
    let left = node.leftovers();
    if !left.is_empty() {
        return Err(format!("left behind: {left:?}"));
    }
    let wrong = node.inconsistencies();
    if !wrong.is_empty() {
        return Err(format!("the database and the disk disagree: {wrong:?}"));
    }
    Ok(on.vb())
}

#[test]
fn random_kills_of_installs_rollbacks_and_gc_never_leave_a_node_between_releases() {
    let kills = env_number("BERTH_KILLS", 200);
    let files = env_number("BERTH_KILL_FILES", 2000);
    let seed = env_number("BERTH_KILL_SEED", 0x5eed) as u64;
    let node = Node::new();
    // Three releases installed in turn, all three kept:
    // every install unpacks thousands of files from the cache, snapshots,
    // runs every hook and prunes (a gc transaction). `agent gc` runs with
    // a stricter configuration (no release kept besides the current and
    // the one a rollback goes to, one snapshot), so it has release dirs
    // and snapshots to remove.
    let pool = [
        rel("1.0.0", 1).files(files),
        rel("1.1.0", 2).files(files),
        rel("1.2.0", 3).files(files),
    ];
    for r in &pool {
        node.publish(r);
    }
    berth_tests::write(
        &node.path("/etc/berth/agent.toml"),
        "[packages.webapp]\nkeep_releases = 3\n",
    );
    let strict = node.path("/etc/berth/strict.toml");
    berth_tests::write(
        &strict,
        "[retention]\nsnapshots = 1\n\n[packages.webapp]\nkeep_releases = 1\n",
    );
    let strict = strict.display().to_string();
    for r in &pool {
        node.installed(r);
    }

    let mut rng = Rng::new(seed);
    let mut on = pool[2].vb();
    let mut counts = std::collections::BTreeMap::<&str, (usize, usize)>::new();
    // How long each kind of operation took the last time it ran to the
    // end: the next kill of that kind falls in that time (or a little
    // past it).
    let mut span = std::collections::BTreeMap::<&str, u64>::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    for i in 0..kills {
        let at = pool.iter().position(|r| r.vb() == on).unwrap_or(0);
        let next = pool[(at + 1) % pool.len()].spec();
        let (what, args): (&str, Vec<&str>) = match i % 6 {
            4 => ("rollback", vec!["rollback", "webapp"]),
            5 => ("gc", vec!["--config", &strict, "gc"]),
            _ => ("install", vec!["install", &next]),
        };
        let begun = Instant::now();
        let mut child = node.spawn_staging(&args);
        let estimate = *span.get(what).unwrap_or(&200_000);
        std::thread::sleep(Duration::from_micros(rng.below(estimate * 11 / 10)));
        let entry = counts.entry(what).or_default();
        match child.try_wait().expect("waiting for the agent") {
            Some(_) => {
                entry.1 += 1;
                span.insert(what, begun.elapsed().as_micros() as u64);
            }
            None => {
                entry.0 += 1;
                child.kill().expect("SIGKILL");
                child.wait().expect("reaping the agent");
            }
        }
        match check(&node, &pool) {
            Ok(now) => on = now,
            Err(e) => {
                failures.push(format!("kill {i} ({what}): {e}"));
                break;
            }
        }
        // A following install succeeds: of the release before this one in
        // the cycle, which the node usually still keeps (a whole
        // transaction: snapshot, hooks, switch, commit, prune), so the
        // next kill lands in the unpacking of the one after.
        let at = pool.iter().position(|r| r.vb() == on).unwrap_or(0);
        let back = &pool[(at + pool.len() - 1) % pool.len()];
        let run = node.install(&back.spec(), &[]);
        if run.code != 0 {
            failures.push(format!(
                "kill {i} ({what}): the following install failed: {run}"
            ));
            break;
        }
        on = back.vb();
    }
    // A last install after all that.
    let at = pool.iter().position(|r| r.vb() == on).unwrap_or(0);
    let last = &pool[(at + 1) % pool.len()];
    node.install(&last.spec(), &[]).ok();
    node.assert_current(&last.vb());
    let mid: usize = counts.values().map(|c| c.0).sum();
    eprintln!(
        "kill harness: {kills} kills of releases of {files} files, seed {seed}: \
         {mid} killed mid-operation, {} finished before the kill \
         (per operation, killed/finished: {counts:?}); {} inconsistencies; {:.1} s; \
         last uncut run per operation: {span:?} us",
        kills - mid,
        failures.len(),
        started.elapsed().as_secs_f64(),
    );
    assert_eq!(failures, Vec::<String>::new());
}
