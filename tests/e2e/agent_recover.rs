//! `agent recover`: an agent killed (SIGKILL) in the middle of an install
//! leaves a transaction running; `recover` undoes it (before the switch,
//! or after it while the health check had not passed) or finishes it
//! (after), keeps the release the target points at current, removes
//! staging directories, says what it did, and the next install succeeds.

use std::fs;
use std::time::{Duration, Instant};

use crate::agent_support::{HOOK_LOG, Node, rel};
use crate::repo_support::assert_says;

#[test]
fn an_install_killed_before_the_switch_is_recovered_on_the_old_release() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    node.installed(&v1);
    let nothing = node.agent(&["recover"]).ok();
    assert_says(&nothing, "stdout", &["nothing to recover"]);

    // v2's pre_install hangs; the agent is killed while it runs.
    let v2 = rel("1.1.0", 2).slow("pre_install");
    node.publish(&v2);
    let mut agent = node.spawn_staging(&["install", "webapp"]);
    let pid_file = node.env.join(&format!("{HOOK_LOG}.pre_install.pid"));
    let started = Instant::now();
    while !pid_file.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "pre_install never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    let hook_pid = fs::read_to_string(&pid_file).unwrap();
    node.env.tool("kill", ["-9", hook_pid.trim()]);
    // What a crash in unpacking would have left too.
    let staging = node.path("/var/lib/berth/releases/webapp/.staging-1.2.0+3");
    fs::create_dir_all(staging.join("files")).unwrap();

    node.assert_current(&v1.vb());
    assert_eq!(
        node.sql("SELECT count(*) FROM transactions WHERE result = 'running'"),
        "1"
    );
    let r = node.agent(&["recover", "--json"]).ok().json();
    assert_eq!(r["changed"], true, "{r}");
    assert_eq!(r["closed"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["closed"][0]["kind"], "install");
    assert_eq!(r["closed"][0]["package"], "webapp");
    assert_eq!(r["closed"][0]["from"], "1.0.0+1");
    assert_eq!(r["closed"][0]["to"], "1.1.0+2");
    assert_eq!(r["closed"][0]["outcome"], "undone");
    let detail = r["closed"][0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("undone: interrupted before the switch; its snapshot removed; "),
        "{detail}"
    );
    assert_eq!(r["current"][0]["release"], "1.0.0+1");
    assert_eq!(
        r["removed"],
        serde_json::json!([staging.display().to_string()])
    );
    assert!(!staging.exists());
    // What the install made before the switch is gone: the release dir
    // it unpacked and the snapshot it took of 1.0.0+1.
    assert!(!node.release_dir(&v2.vb()).exists());
    assert_eq!(node.sql("SELECT count(*) FROM snapshots"), "0");
    assert!(berth_tests::names(&node.path("/var/lib/berth/snapshots")).is_empty());
    assert_eq!(
        node.sql("SELECT result, error FROM transactions ORDER BY id DESC LIMIT 1"),
        format!("failed|{detail}")
    );
    assert_eq!(node.release_state(&v2.vb()), "failed");
    node.assert_current(&v1.vb());
    let again = node.agent(&["recover"]).ok();
    assert_says(&again, "stdout", &["nothing to recover"]);

    // The next install goes through.
    let v3 = rel("1.2.0", 3);
    node.publish(&v3);
    node.installed(&v3);
    node.assert_current(&v3.vb());
    node.agent(&["verify", "webapp"]).ok();
}

#[test]
fn recover_on_a_fresh_node_creates_nothing() {
    let node = Node::new();
    let run = node.agent(&["recover"]).ok();
    assert_says(&run, "stdout", &["nothing to recover"]);
    assert!(!node.root().exists() || berth_tests::names(&node.root()).is_empty());
}

/// Waits for `hook` of a `.slow(hook)` release to start; returns its pid.
fn wait_for_hook(node: &Node, hook: &str) -> String {
    let pid_file = node.env.join(&format!("{HOOK_LOG}.{hook}.pid"));
    let started = Instant::now();
    while !pid_file.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{hook} never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::read_to_string(&pid_file).unwrap().trim().to_owned()
}

#[test]
fn an_install_killed_during_its_health_check_is_switched_back_and_the_old_release_restarted() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    node.installed(&v1);
    let v2 = rel("1.1.0", 2).slow("health");
    node.publish(&v2);
    let mut agent = node.spawn_staging(&["install", "webapp"]);
    let hook_pid = wait_for_hook(&node, "health");
    agent.kill().unwrap();
    agent.wait().unwrap();
    node.env.tool("kill", ["-9", &hook_pid]);
    // Killed on the new release, never proven healthy.
    assert_eq!(
        node.target(),
        Some(node.release_dir(&v2.vb()).join("files"))
    );

    let since = node.hook_log().len();
    let run = node.agent(&["recover"]).ok();
    assert_says(
        &run,
        "stdout",
        &[
            "(install webapp 1.0.0+1 -> 1.1.0+2",
            "undone: interrupted after the switch to 1.1.0+2, before its health check passed; switched back to 1.0.0+1",
            "webapp is on 1.0.0+1",
        ],
    );
    node.assert_current(&v1.vb());
    // The release switched back to is started again, as after a failed
    // health check.
    assert_eq!(
        node.hooks_run_since(since),
        ["post_install 1.0.0+1 rollback"]
    );
    assert_eq!(node.release_state(&v2.vb()), "failed");
    assert_eq!(node.release_state(&v1.vb()), "healthy");
    assert_eq!(
        node.sql("SELECT result FROM transactions ORDER BY id DESC LIMIT 1"),
        "rolled-back"
    );
    // The snapshot of 1.0.0+1 stays: 1.1.0+2 ran against its data.
    assert_eq!(node.sql("SELECT count(*) FROM snapshots"), "1");
    node.agent(&["verify", "webapp"]).ok();
    assert_eq!(node.leftovers(), Vec::<String>::new());
    let again = node.agent(&["recover"]).ok();
    assert_says(&again, "stdout", &["nothing to recover"]);
}

#[test]
fn an_install_killed_after_its_health_check_passed_is_finished() {
    let node = Node::new();
    let (v1, v2) = (rel("1.0.0", 1), rel("1.1.0", 2));
    node.publish(&v1);
    node.publish(&v2);
    node.installed(&v1);
    let out = node
        .command(&[
            "--repo",
            crate::repo_support::REPO,
            "--channel",
            "staging",
            "install",
            "webapp",
        ])
        .env("BERTH_FAULT", "commit:before")
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9)
    );
    assert_eq!(node.release_state(&v2.vb()), "installing");

    let since = node.hook_log().len();
    let r = node.agent(&["recover", "--json"]).ok().json();
    assert_eq!(r["closed"][0]["outcome"], "finished", "{r}");
    assert_eq!(
        r["closed"][0]["detail"],
        "finished: 1.1.0+2 had passed its health check; committed"
    );
    node.assert_current(&v2.vb());
    assert!(node.hooks_run_since(since).is_empty(), "no hook runs again");
    assert_eq!(node.release_state(&v2.vb()), "healthy");
    assert_eq!(node.release_state(&v1.vb()), "superseded");
    assert_eq!(
        node.sql("SELECT result FROM transactions WHERE kind = 'install' ORDER BY id DESC LIMIT 1"),
        "committed"
    );
    // And it rolls back like any committed install.
    node.rollback(&[]).ok();
    node.assert_current(&v1.vb());
}
