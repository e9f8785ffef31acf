//! End-to-end tests: the real binaries in a hermetic environment. One test
//! binary lists its modules; `every_test_file_is_listed` guards against a
//! module file that was written but never compiled.

// A test that cannot set up its world should stop right there, loudly.
#![allow(clippy::unwrap_used)]

mod agent_bad_hooks;
mod agent_bad_input;
mod agent_concurrent;
mod agent_faults;
mod agent_install;
mod agent_kills;
mod agent_maintain;
mod agent_recover;
mod agent_rollback;
mod agent_state;
mod agent_support;
mod bad_input_build;
mod bad_input_repo;
mod build;
mod channels;
mod ci_script;
mod concurrency;
mod gc;
mod help;
mod hooks;
mod hostile;
mod http;
mod nginx_support;
mod progress;
mod publish;
mod quickstart;
mod repo_faults;
mod repo_kills;
mod repo_support;
mod trust;
mod verify;

#[test]
fn every_test_file_is_listed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e");
    let main = std::fs::read_to_string(dir.join("main.rs")).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(module) = name.strip_suffix(".rs").filter(|m| *m != "main") {
            assert!(
                main.contains(&format!("mod {module};")),
                "tests/e2e/{name} is not listed in tests/e2e/main.rs"
            );
        }
    }
}
