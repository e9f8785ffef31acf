//! packaging/ci/release.sh, the CI release steps, run for real: build and
//! publish to staging, promote after approval, re-runs change nothing.

use std::path::Path;
use std::process::Command;

use berth_tests::{MINIMAL_PACKAGE_TOML, Run, TestEnv, bin, tree_state};

fn release_sh(env: &TestEnv, args: &[&str], build: &str) -> Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/ci/release.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", env.join("home"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("PACKAGER", bin("packager"))
        .env("BERTH_REPO", env.join("repo"))
        .env("BUILD_NUMBER", build)
        .env("OUT_DIR", env.join("out"))
        .current_dir(env.path())
        .output()
        .unwrap();
    Run::from(out)
}

#[test]
fn the_release_script_publishes_to_staging_then_promotes_to_production() {
    let env = TestEnv::new();
    env.app("app", MINIMAL_PACKAGE_TOML);
    let run = release_sh(&env, &["publish", "app"], "41").ok();
    assert_eq!(run.stdout, "webapp@1.4.2+41\n");
    assert!(
        run.stderr.contains("published webapp@1.4.2+41 to staging"),
        "{run}"
    );

    // A re-run of the same CI job changes nothing.
    let before = tree_state(&env.join("repo"));
    let run = release_sh(&env, &["publish", "app"], "41").ok();
    assert!(run.stderr.contains("unchanged"), "{run}");
    assert_eq!(before, tree_state(&env.join("repo")));

    let run = release_sh(&env, &["promote", "webapp@1.4.2+41"], "41").ok();
    assert!(
        run.stdout
            .contains("promoted webapp@1.4.2+41 from staging to production"),
        "{run}"
    );
    let listed = env
        .packager([
            "list",
            "--repo",
            "repo",
            "--channel",
            "production",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(listed[0]["build"], 41);
    assert_eq!(listed[0]["promoted_from"], "staging");
}

#[test]
fn the_release_script_stops_on_a_failed_build_and_on_bad_usage() {
    let env = TestEnv::new();
    env.app("app", MINIMAL_PACKAGE_TOML);
    let run = release_sh(&env, &["publish", "app"], "0").code(2);
    assert!(run.stderr.contains("invalid build number"), "{run}");
    assert!(!env.join("repo").exists(), "nothing was published");
    let run = release_sh(&env, &["deploy"], "1").code(2);
    assert!(run.stderr.contains("release.sh publish"), "{run}");
}
