//! Hooks that misbehave, through `agent install` and `agent rollback`:
//! one that hangs (ignoring SIGTERM, with a background child) is killed
//! with its whole process group at the package's timeout; one that
//! crashes is reported with its signal; one that prints gigabytes is
//! stored bounded and counted while the agent runs under a memory cap.
//! Before the switch each leaves the node untouched; after it, the node
//! is rolled back. A hook that deletes files of its own release: `agent
//! verify` names exactly those, the next install snapshots the modified
//! tree as a tarball and a rollback brings it back as it was; a release
//! dir whose `MANIFEST.toml` or hooks were deleted is rebuilt from the
//! cached artifact when it is rolled back to.

use std::fs;
use std::process::Stdio;
use std::time::Instant;

use berth_tests::Run;

use crate::agent_support::{Node, Rel, rel};
use crate::repo_support::{REPO, assert_says};

/// A hook body that hangs: it ignores SIGTERM, starts a background child
/// (which ignores it too), writes both pids to `pids`, and loops.
fn hang(pids: &std::path::Path) -> String {
    format!(
        "trap '' TERM\nsleep 300 &\necho \"$$ $!\" > '{}'\necho 'waiting forever'\nwhile :; do sleep 1; done",
        pids.display()
    )
}

/// Asserts that every pid in the file `pids` is gone (or a zombie that
/// its new parent has not reaped yet).
#[track_caller]
fn assert_gone(pids: &std::path::Path) {
    let text = fs::read_to_string(pids).expect("the hook wrote its pids");
    let pids: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "{text}");
    for pid in pids {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(
            status.is_empty() || status.contains("State:\tZ"),
            "process {pid} of the hook survived:\n{status}"
        );
    }
}

/// The newest transaction in `agent history --json`.
fn last_txn(node: &Node) -> serde_json::Value {
    node.report("history")[0].clone()
}

/// The step `name` of transaction `txn`: (state, detail).
#[track_caller]
fn step(txn: &serde_json::Value, name: &str) -> (String, String) {
    let s = txn["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step `{name}` in {txn}"));
    (
        s["state"].as_str().unwrap().to_owned(),
        s["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

/// `agent logs TXN` of the newest transaction.
fn logs(node: &Node) -> Run {
    let id = last_txn(node)["id"].as_i64().unwrap().to_string();
    node.agent(&["logs", &id]).ok()
}

/// A node on v1 with `v2` published.
fn on_v1_with(v2: &Rel) -> Node {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    node.installed(&v1);
    node.publish(v2);
    node
}

#[test]
fn a_health_hook_that_hangs_is_killed_with_its_children_at_the_timeout_and_rolled_back() {
    let pids = tempfile::NamedTempFile::new().unwrap();
    let v2 = rel("1.1.0", 2)
        .timeout_secs(3)
        .script("health", &hang(pids.path()));
    let node = on_v1_with(&v2);

    let run = node.install(&v2.spec(), &[]).code(3);
    assert_says(
        &run,
        "stderr",
        &[
            "the health hook of webapp@1.1.0+2 failed (timed out after 3 s, the package's [hooks] timeout_secs) after the switch",
            "the node is back on webapp@1.0.0+1",
            "[webapp health] waiting forever",
        ],
    );
    assert_gone(pids.path());
    node.assert_current("1.0.0+1");
    assert_eq!(node.release_state("1.1.0+2"), "failed");
    node.agent(&["verify", "webapp"]).ok();

    let txn = last_txn(&node);
    assert_eq!(txn["result"], "rolled-back");
    assert_eq!(
        step(&txn, "hook health"),
        (
            "failed".to_owned(),
            "timed out after 3 s, the package's [hooks] timeout_secs".to_owned()
        )
    );
    assert_eq!(step(&txn, "switch back").0, "done");
    assert_says(
        &logs(&node),
        "stdout",
        &["--- hook health (timed out, 16 bytes of output)\nwaiting forever\n"],
    );
    assert_eq!(
        node.sql("select timed_out, exit_code is null from hook_runs where hook = 'health' order by id desc limit 1"),
        "1|1"
    );
}

#[test]
fn a_pre_install_that_hangs_is_killed_at_the_timeout_and_nothing_is_switched() {
    let pids = tempfile::NamedTempFile::new().unwrap();
    let v2 = rel("1.1.0", 2)
        .timeout_secs(3)
        .script("pre_install", &hang(pids.path()));
    let node = on_v1_with(&v2);
    let before = node.untouched();

    let run = node.install(&v2.spec(), &[]).code(1);
    assert_says(
        &run,
        "stderr",
        &[
            "the pre_install hook of webapp@1.1.0+2 failed (timed out after 3 s, the package's [hooks] timeout_secs); nothing was switched",
        ],
    );
    assert_gone(pids.path());
    node.assert_untouched(&before, Some(&v2), &run);
    node.assert_current("1.0.0+1");
    assert_says(
        &logs(&node),
        "stdout",
        &["--- hook pre_install (timed out, 16 bytes of output)"],
    );
}

#[test]
fn a_rollback_whose_health_hook_hangs_goes_back_to_where_it_started() {
    // v1's health hangs, but only when it is rolled back to.
    let pids = tempfile::NamedTempFile::new().unwrap();
    let v1 = rel("1.0.0", 1).timeout_secs(3).script(
        "health",
        &format!(
            "if [ \"$BERTH_ACTION\" = rollback ]; then\n{}\nfi",
            hang(pids.path())
        ),
    );
    let v2 = rel("1.1.0", 2);
    let node = Node::new();
    node.publish(&v1);
    node.installed(&v1);
    node.publish(&v2);
    node.installed(&v2);
    let hooks = node.hook_log().len();

    let run = node.rollback(&[]).code(3);
    assert_says(
        &run,
        "stderr",
        &[
            "the health hook of webapp@1.0.0+1 failed (timed out after 3 s",
            "the node is back on webapp@1.1.0+2",
        ],
    );
    assert_gone(pids.path());
    node.assert_current("1.1.0+2");
    node.agent(&["verify", "webapp"]).ok();
    assert_eq!(last_txn(&node)["result"], "rolled-back");
    // v1's hooks ran, then v2, back on, was started again.
    assert_eq!(
        node.hooks_run_since(hooks),
        [
            "backup 1.1.0+2 rollback",
            "dump 1.1.0+2 rollback",
            "pre_install 1.0.0+1 rollback",
            "post_install 1.0.0+1 rollback",
            "health 1.0.0+1 rollback",
            "post_install 1.1.0+2 rollback",
        ]
    );
}

#[test]
fn a_backup_hook_that_crashes_aborts_naming_its_signal_and_changes_nothing() {
    let v2 = rel("1.1.0", 2).script("backup", "echo 'about to crash'\nkill -SEGV $$");
    let node = on_v1_with(&v2);
    let before = node.untouched();

    let run = node.install(&v2.spec(), &[]).code(1);
    assert_says(
        &run,
        "stderr",
        &[
            "the backup hook of webapp@1.1.0+2 failed (killed by signal 11 (SIGSEGV)); nothing was switched",
            "[webapp backup] about to crash",
        ],
    );
    node.assert_untouched(&before, Some(&v2), &run);
    node.assert_current("1.0.0+1");
    assert_says(
        &logs(&node),
        "stdout",
        &["--- hook backup (killed by signal 11 (SIGSEGV), 15 bytes of output)"],
    );
}

#[test]
fn a_health_hook_that_crashes_is_rolled_back_naming_its_signal() {
    let v2 = rel("1.1.0", 2).script("health", "kill -SEGV $$");
    let node = on_v1_with(&v2);

    let run = node.install(&v2.spec(), &[]).code(3);
    assert_says(
        &run,
        "stderr",
        &[
            "the health hook of webapp@1.1.0+2 failed (killed by signal 11 (SIGSEGV)) after the switch; the node is back on webapp@1.0.0+1",
        ],
    );
    node.assert_current("1.0.0+1");
    assert_eq!(node.release_state("1.1.0+2"), "failed");
    node.agent(&["verify", "webapp"]).ok();
    assert_eq!(
        step(&last_txn(&node), "hook health"),
        (
            "failed".to_owned(),
            "killed by signal 11 (SIGSEGV)".to_owned()
        )
    );
}

#[test]
fn a_rollback_whose_pre_install_crashes_changes_nothing() {
    // v1's pre_install crashes, but only when it is rolled back to.
    let v1 = rel("1.0.0", 1).script(
        "pre_install",
        "if [ \"$BERTH_ACTION\" = rollback ]; then kill -ABRT $$; fi",
    );
    let node = Node::new();
    node.publish(&v1);
    node.installed(&v1);
    let v2 = rel("1.1.0", 2);
    node.publish(&v2);
    node.installed(&v2);
    let before = node.untouched();

    let run = node.rollback(&[]).code(1);
    assert_says(
        &run,
        "stderr",
        &[
            "the pre_install hook of webapp@1.0.0+1 failed (killed by signal 6 (SIGABRT)); nothing was switched",
        ],
    );
    node.assert_untouched(&before, None, &run);
    node.assert_current("1.1.0+2");
}

/// Runs `agent install SPEC` with its address space capped at `cap`
/// bytes (`prlimit --as`, which the hooks inherit too) and its stderr,
/// which streams the hooks' output, discarded; returns the run (stderr
/// empty) and the seconds it took.
fn install_capped(node: &Node, spec: &str, cap: u64) -> (Run, f64) {
    let started = Instant::now();
    let out = node
        .env
        .program("prlimit")
        .arg(format!("--as={cap}"))
        .arg("--")
        .arg(berth_tests::bin("agent"))
        .arg("--root")
        .arg(node.root())
        .args(["--repo", REPO, "--channel", "staging", "install", spec])
        .stderr(Stdio::null())
        .output()
        .expect("prlimit (util-linux) runs");
    (Run::from(out), started.elapsed().as_secs_f64())
}

/// The agent's address-space cap for the flood tests: a debug build
/// installs under 32 MiB (and fails to start under 16), so this leaves
/// room, and buffering a sixteenth of the 2 GiB printed would fail it (as
/// it did when a line was read whole).
const MEMORY_CAP: u64 = 128 << 20;

#[test]
fn a_hook_printing_2_gib_without_a_newline_is_kept_bounded_and_counted() {
    const PRINTED: u64 = 2 << 30;
    let v2 = rel("1.1.0", 2).script(
        "health",
        "head -c 2G /dev/zero\necho\necho 'healthy after all'",
    );
    let node = on_v1_with(&v2);

    let (run, secs) = install_capped(&node, &v2.spec(), MEMORY_CAP);
    eprintln!("2 GiB with no newline through the health hook: {secs:.1} s");
    run.ok();
    node.assert_current("1.1.0+2");
    let total = PRINTED + 1 + "healthy after all\n".len() as u64;
    let omitted = total - (128 << 10);
    assert_eq!(
        node.sql("select output_bytes_total, length(cast(output as blob)) from hook_runs where hook = 'health' order by id desc limit 1"),
        format!(
            "{total}|{}",
            (128 << 10) + marker(omitted).len()
        )
    );
    let logs = logs(&node);
    assert_says(
        &logs,
        "stdout",
        &[
            &format!("--- hook health (exit code 0, {total} bytes of output)"),
            &marker(omitted),
            "\nhealthy after all\n",
        ],
    );
    assert!(logs.stdout.len() < 200 << 10, "{} bytes", logs.stdout.len());
}

#[test]
fn a_hook_printing_many_short_lines_is_kept_bounded_and_counted() {
    // 16 Mi lines of "y", each passed on to the agent's stderr: this
    // costs per line (about 0.2 µs in a debug build), so far less than the
    // 2 GiB without a newline above, still 128 times the bytes kept.
    const PRINTED: u64 = 32 << 20;
    let v2 = rel("1.1.0", 2).script(
        "post_install",
        &format!("yes | head -c {PRINTED}\necho 'started'"),
    );
    let node = on_v1_with(&v2);

    let (run, secs) = install_capped(&node, &v2.spec(), MEMORY_CAP);
    eprintln!("{PRINTED} bytes in lines of 2 through post_install: {secs:.1} s");
    run.ok();
    node.assert_current("1.1.0+2");
    let total = PRINTED + "started\n".len() as u64;
    let omitted = total - (128 << 10);
    assert_eq!(
        node.sql("select output_bytes_total from hook_runs where hook = 'post_install' order by id desc limit 1"),
        total.to_string()
    );
    assert_says(
        &logs(&node),
        "stdout",
        &[
            &format!("--- hook post_install (exit code 0, {total} bytes of output)\ny\ny\n"),
            &format!("y\n{}y\n", marker(omitted)),
            "y\nstarted\n",
        ],
    );
}

/// `agent verify webapp --json`: (exit code, drift lines).
fn verify(node: &Node) -> (i32, Vec<String>) {
    let run = node.agent(&["verify", "webapp", "--json"]);
    let drift = run.json()["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    (run.code, drift)
}

/// The kind of the newest snapshot.
fn newest_snapshot_kind(node: &Node) -> String {
    node.report("snapshots")[0]["kind"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn files_a_hook_deletes_from_its_release_are_reported_snapshotted_and_rolled_back_to_as_they_were()
{
    // v2's post_install deletes two files of its own tree when installed.
    let v2 = rel("1.1.0", 2).script(
        "post_install",
        "if [ \"$BERTH_ACTION\" = install ]; then rm \"$BERTH_RELEASE_DIR/static/app.js\" \"$BERTH_RELEASE_DIR/VERSION\"; fi",
    );
    let node = on_v1_with(&v2);
    node.installed(&v2);
    let deleted = vec![
        "`VERSION` is missing (a file in the manifest)".to_owned(),
        "`static/app.js` is missing (a file in the manifest)".to_owned(),
    ];
    assert_eq!(verify(&node), (1, deleted.clone()));
    let human = node.agent(&["verify", "webapp"]).code(1);
    assert_says(
        &human,
        "stdout",
        &["1.1.0+2: 2 differences from its manifest"],
    );

    // The next install keeps v2's tree as it is now.
    let v3 = rel("1.2.0", 3);
    node.publish(&v3);
    node.installed(&v3);
    assert_eq!(newest_snapshot_kind(&node), "tree-tarball");
    let tarball = format!(
        "{}/tree.tar.zst",
        node.report("snapshots")[0]["dir"].as_str().unwrap()
    );
    let listing = node.env.tool("tar", ["--zstd", "-tf", &tarball]).ok();
    let mut entries: Vec<&str> = listing
        .stdout
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/'))
        .filter(|l| !l.is_empty())
        .collect();
    entries.sort_unstable();
    assert_eq!(entries, ["index.html", "static"], "{listing}");
    // v2's kept dir is damaged further since: the rollback must not trust it.
    fs::remove_file(node.release_dir("1.1.0+2").join("files/index.html")).unwrap();

    node.rollback(&[]).ok();
    node.assert_current("1.1.0+2");
    assert_eq!(verify(&node), (1, deleted));
    let tree = node.release_dir("1.1.0+2").join("files");
    assert_eq!(
        fs::read_to_string(tree.join("static/app.js")).ok(),
        None,
        "a deleted file came back"
    );
    // Back to v3, which was intact: by reference, and clean.
    node.rollback(&[]).ok();
    node.assert_current("1.2.0+3");
    assert_eq!(verify(&node), (0, vec![]));
    assert_eq!(node.leftovers(), Vec::<String>::new());
}

/// v1 installed, then v2, whose post_install deletes `what` (relative to
/// the release dir) when installed; then v3; then a rollback to v2, which
/// finds v2's dir `rebuilt` from the cached artifact (`what` is back) or
/// used as it is. Returns `agent verify` of v2 before v3.
fn release_dir_damaged(what: &str, rebuilt: bool) -> (i32, Vec<String>) {
    let v2 = rel("1.1.0", 2).script(
        "post_install",
        &format!(
            "if [ \"$BERTH_ACTION\" = install ]; then rm \"$BERTH_RELEASE_DIR/../{what}\"; fi"
        ),
    );
    let node = on_v1_with(&v2);
    node.installed(&v2);
    assert!(!node.release_dir("1.1.0+2").join(what).exists());
    let verified = verify(&node);

    let v3 = rel("1.2.0", 3);
    node.publish(&v3);
    node.installed(&v3);
    // The tree was intact: the snapshot references the artifact.
    assert_eq!(newest_snapshot_kind(&node), "artifact-ref", "{what}");
    let hooks = node.hook_log().len();
    node.rollback(&[]).ok();
    node.assert_current("1.1.0+2");
    assert_eq!(verify(&node), (0, vec![]), "{what}");
    assert_eq!(
        node.release_dir("1.1.0+2").join(what).exists(),
        rebuilt,
        "{what}"
    );
    // v2's own hooks ran, from a whole release dir.
    assert_eq!(
        node.hooks_run_since(hooks)[2..],
        [
            "pre_install 1.1.0+2 rollback",
            "post_install 1.1.0+2 rollback",
            "health 1.1.0+2 rollback"
        ],
        "{what}"
    );
    assert_eq!(node.leftovers(), Vec::<String>::new());
    verified
}

#[test]
fn a_release_dir_whose_manifest_a_hook_deleted_is_reported_and_rebuilt_on_rollback() {
    let verified = release_dir_damaged("MANIFEST.toml", true);
    assert_eq!(
        verified,
        (
            1,
            vec!["the release's `MANIFEST.toml` is missing".to_owned()]
        )
    );
}

#[test]
fn a_release_dir_whose_hook_a_hook_deleted_is_reported_and_rebuilt_on_rollback() {
    let verified = release_dir_damaged("hooks/pre_install", true);
    assert_eq!(
        verified,
        (
            1,
            vec!["hook `pre_install` is missing (a file in the manifest)".to_owned()]
        )
    );
}

#[test]
fn a_release_dir_whose_stamp_a_hook_deleted_is_checked_by_digest_instead() {
    // The stamp only lets the agent trust metadata; without it the tree,
    // hooks and manifest are compared by digest, and, intact, used as
    // they are.
    let verified = release_dir_damaged(".unpacked", false);
    assert_eq!(verified, (0, vec![]));
}

#[test]
fn installing_a_release_whose_dir_a_hook_damaged_again_repairs_it() {
    let v2 = rel("1.1.0", 2).script(
        "post_install",
        "if [ \"$BERTH_ACTION\" = install ] && [ ! -e \"$BERTH_ROOT/../damaged\" ]; then\n\
         touch \"$BERTH_ROOT/../damaged\"\n\
         rm \"$BERTH_RELEASE_DIR/../MANIFEST.toml\" \"$BERTH_RELEASE_DIR/../hooks/restore\" \"$BERTH_RELEASE_DIR/index.html\"\n\
         fi",
    );
    let node = on_v1_with(&v2);
    node.installed(&v2);
    let (code, drift) = verify(&node);
    assert_eq!((code, drift.len()), (1, 3), "{drift:?}");

    let run = node.install(&v2.spec(), &[]).ok();
    assert_says(&run, "stdout", &["installed webapp@1.1.0+2"]);
    node.assert_current("1.1.0+2");
    assert_eq!(verify(&node), (0, vec![]));
    assert_eq!(node.leftovers(), Vec::<String>::new());
}

/// The agent's line for output left out (agent/src/store/output.rs).
fn marker(omitted: u64) -> String {
    format!(
        "\n[berth: {omitted} bytes of output omitted here; the first and last 64 KiB are kept]\n"
    )
}
