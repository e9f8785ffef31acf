//! Progress: bars on a terminal (a pseudo-terminal made by `script`), not
//! a byte of them when the output is piped.

use berth_tests::{MINIMAL_PACKAGE_TOML, TestEnv, bin};

/// An app whose payload takes long enough to pack that a bar gets drawn.
fn large_app(env: &TestEnv) {
    let app = env.app("app", MINIMAL_PACKAGE_TOML);
    // 48 MiB of incompressible bytes from a fixed seed.
    let mut state: u64 = 0x9e3779b97f4a7c15;
    let mut bytes = vec![0u8; 48 << 20];
    for chunk in bytes.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(app.join("dist/blob.bin"), bytes).unwrap();
}

#[test]
fn build_and_publish_draw_progress_on_a_terminal() {
    let env = TestEnv::new();
    large_app(&env);
    let packager = bin("packager");
    let script = format!(
        "{p} build app --build 1 --out out && {p} publish out/webapp_1.4.2+1.tar.zst --repo repo --channel staging",
        p = packager.display()
    );
    // `script` runs the command on a pseudo-terminal and copies what it
    // printed; TERM must name a real terminal for the bars to draw.
    let mut env = env;
    env.set("TERM", "xterm");
    let run = env.tool("script", ["-qefc", &script, "/dev/null"]).ok();
    for phase in ["hashing", "packing", "verifying"] {
        assert!(
            run.stdout.contains(phase),
            "no `{phase}` bar on the terminal:\n{run}"
        );
    }
    assert!(
        run.stdout.contains("published webapp@1.4.2+1 to staging"),
        "{run}"
    );
}

#[test]
fn piped_output_carries_no_progress() {
    let mut env = TestEnv::new();
    large_app(&env);
    env.set("TERM", "xterm");
    let run = env
        .packager(["build", "app", "--build", "1", "--out", "out"])
        .ok();
    assert!(
        run.stderr
            .starts_with("built webapp@1.4.2+1: 5 entries, 48.0 MiB payload")
            && run.stderr.lines().count() == 1,
        "only the summary line, no progress:\n{run}"
    );
    let run = env
        .packager([
            "publish",
            "out/webapp_1.4.2+1.tar.zst",
            "--repo",
            "repo",
            "--channel",
            "staging",
        ])
        .ok();
    assert_eq!(
        run.stderr,
        format!("created a new repository at `{}`\n", "repo")
    );
}
