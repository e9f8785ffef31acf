//! The README's quick start, examples/quickstart.sh, run as a user would
//! (with the binaries this test suite drives), so the first command a new
//! user types keeps working.

use std::path::Path;

use berth_tests::{TestEnv, bin_dir};

#[test]
fn the_quick_start_builds_publishes_installs_rolls_back_and_promotes() {
    let mut env = TestEnv::new();
    env.set("BERTH_BIN", &bin_dir().display().to_string());
    env.set("BERTH_DEMO", &env.join("demo").display().to_string());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart.sh");
    let run = env.tool("bash", [script]).ok();
    for line in [
        "unchanged: webapp@1.4.2+1 is installed and intact",
        "installed webapp@1.4.2+2 from staging, replacing 1.4.2+1",
        "rolled back webapp from 1.4.2+2 to 1.4.2+1, code only",
        "promoted webapp@1.4.2+1 from staging to production",
    ] {
        assert!(run.stdout.contains(line), "missing `{line}`:\n{run}");
    }
    assert!(
        run.stderr
            .contains("[webapp health] webapp 1.4.2 is healthy"),
        "{run}"
    );
    let target = std::fs::read_link(env.join("demo/node/srv/webapp")).unwrap();
    assert!(
        target.ends_with("releases/webapp/1.4.2+1/files"),
        "{}",
        target.display()
    );
}
