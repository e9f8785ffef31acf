//! `packager build`: the minimal package file, artifact layout and interop
//! with GNU tar and zstd.

use berth_tests::{MINIMAL_PACKAGE_TOML, TestEnv};

#[test]
fn the_minimal_package_file_builds_as_written() {
    let env = TestEnv::new();
    env.app("app", MINIMAL_PACKAGE_TOML);
    let run = env
        .packager(["build", "app", "--build", "173", "--out", "out", "--json"])
        .ok();
    let v = run.json();
    assert_eq!(v["name"], "webapp");
    assert_eq!(v["build"], 173);
    assert!(env.join("out/webapp_1.4.2+173.tar.zst").is_file());
    let listing = env
        .tool("tar", ["--zstd", "-tf", "out/webapp_1.4.2+173.tar.zst"])
        .ok()
        .stdout;
    assert!(
        listing.starts_with("MANIFEST.toml\nhooks/\nhooks/health\nfiles/\n"),
        "{listing}"
    );
}
