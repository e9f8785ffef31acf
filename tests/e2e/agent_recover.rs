//! `agent recover`: an agent killed (SIGKILL) in the middle of an install
//! leaves a transaction running; `recover` closes it as failed, keeps the
//! release the target points at current, removes staging directories,
//! says what it did, and the next install succeeds.

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
    assert_eq!(r["current"][0]["release"], "1.0.0+1");
    assert_eq!(r["removed"][0], staging.display().to_string());
    assert!(!staging.exists());
    assert_eq!(
        node.sql("SELECT result, error FROM transactions ORDER BY id DESC LIMIT 1"),
        "failed|interrupted; recovered by the next command"
    );
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
