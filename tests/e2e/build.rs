//! `packager build`: the minimal package file, `packager init`, where the
//! build number and `[source]` come from, the artifact's name, layout,
//! manifest and JSON/human output, reproducibility, and payload shapes
//! (empty dirs, symlinks, long and UTF-8 names, modes) read back with GNU tar
//! and zstd.
//!
//! The `pub(crate)` helpers at the top are shared with `verify` and
//! `bad_input_build`.

// Helpers below are test code too: a panic is how they report.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use berth_tests::{MINIMAL_PACKAGE_TOML, Run, TestEnv, names, tree_state, write, write_exec};

/// Where [`build_app`] writes the default app's artifact.
pub(crate) const ARTIFACT: &str = "out/webapp_1.4.2+173.tar.zst";

/// A test world holding the issue's minimal app at `app/`.
pub(crate) fn minimal_app() -> TestEnv {
    let env = TestEnv::new();
    env.app("app", MINIMAL_PACKAGE_TOML);
    env
}

/// Builds `app/` as build 173 into `out`, asserting success; returns the
/// `--json` report.
pub(crate) fn build_app(env: &TestEnv, out: &str) -> serde_json::Value {
    env.packager(["build", "app", "--build", "173", "--out", out, "--json"])
        .ok()
        .json()
}

/// The sha256 `sha256sum` computes for a file under the temp root.
pub(crate) fn sha256sum(env: &TestEnv, rel: &str) -> String {
    let run = env.tool("sha256sum", [rel]).ok();
    run.stdout
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `tar --zstd -tf ARTIFACT`, one entry a line, names unescaped.
pub(crate) fn listing(env: &TestEnv, artifact: &str) -> Vec<String> {
    let run = env
        .tool(
            "tar",
            ["--zstd", "-tf", artifact, "--quoting-style=literal"],
        )
        .ok();
    run.stdout.lines().map(str::to_owned).collect()
}

/// Asserts that stderr holds every one of `parts`.
#[track_caller]
pub(crate) fn assert_stderr_has(run: &Run, parts: &[&str]) {
    for part in parts {
        assert!(run.stderr.contains(part), "stderr lacks {part:?}:\n{run}");
    }
}

/// `MANIFEST.toml` of an artifact, read by GNU tar.
fn manifest(env: &TestEnv, artifact: &str) -> String {
    env.tool("tar", ["--zstd", "-xOf", artifact, "MANIFEST.toml"])
        .ok()
        .stdout
}

/// The value of `key` in `[section]` of a TOML text, quotes and trailing
/// comment removed. Enough TOML for the manifest's head and `init`'s file,
/// whose values are plain strings and numbers.
fn toml_value(text: &str, section: &str, key: &str) -> Option<String> {
    let header = format!("[{section}]");
    text.lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = match v.strip_prefix('"') {
                Some(quoted) => quoted.split('"').next().unwrap_or_default(),
                None => v.split('#').next().unwrap_or_default().trim(),
            };
            (k.trim() == key).then(|| v.to_owned())
        })
}

/// The non-empty lines of a manifest's `[table]`, in order.
fn table_lines(manifest: &str, table: &str) -> Vec<String> {
    let header = format!("[{table}]");
    manifest
        .lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Adds to `app/dist` one of each payload shape: a 0755 script, a 0600
/// file, an empty directory and two relative symlinks.
fn add_payload_shapes(env: &TestEnv) {
    let dist = env.join("app/dist");
    write_exec(&dist.join("bin/run.sh"), "#!/bin/sh\nexec true\n");
    write(&dist.join("config/local.conf"), "listen = 8080\n");
    chmod(&dist.join("config/local.conf"), 0o600);
    fs::create_dir_all(dist.join("var/empty")).unwrap();
    symlink("static/app.js", dist.join("app.js")).unwrap();
    symlink("../VERSION", dist.join("static/version")).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets every mtime under `rel` (symlinks themselves included) to `epoch`.
fn touch_all(env: &TestEnv, rel: &str, epoch: &str) {
    let date = format!("@{epoch}");
    env.tool(
        "find",
        [rel, "-exec", "touch", "-h", "-d", date.as_str(), "{}", "+"],
    )
    .ok();
}

/// Every entry under `root`, relative and sorted the way the manifest sorts.
fn payload_entries(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            let rel = path.strip_prefix(root).unwrap().to_str().unwrap();
            out.push(rel.to_owned());
        }
    }
    out.sort();
    out
}

/// The manifest line the file system says `rel` (under `root`) must have.
fn expected_manifest_line(env: &TestEnv, root: &str, rel: &str) -> String {
    let path = env.join(root).join(rel);
    let meta = fs::symlink_metadata(&path).unwrap();
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(&path).unwrap();
        format!(
            "\"{rel}\" = {{ type = \"symlink\", target = \"{}\" }}",
            target.display()
        )
    } else if meta.is_dir() {
        format!("\"{rel}\" = {{ type = \"dir\", mode = \"{mode:04o}\" }}")
    } else {
        let sha = sha256sum(env, &format!("{root}/{rel}"));
        format!(
            "\"{rel}\" = {{ sha256 = \"{sha}\", size = {}, mode = \"{mode:04o}\" }}",
            meta.len()
        )
    }
}

// --- the package file -------------------------------------------------------

#[test]
fn the_minimal_package_file_builds_as_written() {
    let env = minimal_app();
    let v = build_app(&env, "out");
    assert_eq!(v["name"], "webapp");
    assert_eq!(v["version"], "1.4.2");
    assert_eq!(v["build"], 173);
    assert_eq!(v["artifact"], ARTIFACT);
    assert_eq!(names(&env.join("out")), ["webapp_1.4.2+173.tar.zst"]);
    let m = manifest(&env, ARTIFACT);
    assert_eq!(
        toml_value(&m, "package", "description").as_deref(),
        Some("Example web application")
    );
    assert_eq!(
        toml_value(&m, "install", "target").as_deref(),
        Some("/srv/webapp")
    );
    assert_eq!(
        toml_value(&m, "hooks", "health").as_deref(),
        Some("hooks/health")
    );
    assert_eq!(
        toml_value(&m, "rollback", "data_epoch").as_deref(),
        Some("1")
    );
}

#[test]
fn init_in_an_empty_dir_writes_a_package_file_that_builds_once_dist_exists() {
    let env = TestEnv::new();
    fs::create_dir(env.join("shop")).unwrap();
    let init = Run::from(
        env.cmd("packager")
            .arg("init")
            .current_dir(env.join("shop"))
            .output()
            .unwrap(),
    )
    .ok();
    assert_stderr_has(&init, &["wrote `./package.toml`", "packager build"]);
    let text = fs::read_to_string(env.join("shop/package.toml")).unwrap();
    assert_eq!(
        toml_value(&text, "package", "name").as_deref(),
        Some("shop")
    );

    write(&env.join("shop/dist/index.html"), "<h1>shop</h1>\n");
    let v = env
        .packager(["build", "shop", "--build", "1", "--out", "out", "--json"])
        .ok()
        .json();
    assert_eq!(v["artifact"], "out/shop_0.1.0+1.tar.zst");
    env.packager(["verify", "out/shop_0.1.0+1.tar.zst"]).ok();
}

#[test]
fn init_refuses_to_overwrite_without_force_and_replaces_with_it() {
    let env = minimal_app();
    let before = tree_state(env.path());
    let run = env.packager(["init", "app"]).code(2);
    assert_stderr_has(&run, &["`app/package.toml` already exists", "--force"]);
    assert_eq!(tree_state(env.path()), before, "a refused init wrote");

    env.packager(["init", "app", "--force", "--name", "shop"])
        .ok();
    let text = fs::read_to_string(env.join("app/package.toml")).unwrap();
    assert_eq!(
        toml_value(&text, "package", "name").as_deref(),
        Some("shop")
    );
}

// --- build number -----------------------------------------------------------

/// The build number a build of the minimal app gets with these variables
/// and extra arguments; also checks it is in the file name.
fn build_number_with(vars: &[(&str, &str)], args: &[&str]) -> u64 {
    let mut env = minimal_app();
    for (k, v) in vars {
        env.set(k, v);
    }
    let run = env
        .packager(
            ["build", "app", "--out", "out", "--json"]
                .iter()
                .chain(args),
        )
        .ok();
    let build = run.json()["build"].as_u64().unwrap();
    assert_eq!(
        names(&env.join("out")),
        [format!("webapp_1.4.2+{build}.tar.zst")]
    );
    build
}

#[test]
fn build_number_comes_from_the_build_flag() {
    assert_eq!(build_number_with(&[], &["--build", "41"]), 41);
}

#[test]
fn build_number_comes_from_jenkins_build_number() {
    assert_eq!(build_number_with(&[("BUILD_NUMBER", "42")], &[]), 42);
}

#[test]
fn build_number_comes_from_gitlab_ci_pipeline_iid() {
    assert_eq!(build_number_with(&[("CI_PIPELINE_IID", "43")], &[]), 43);
}

#[test]
fn the_build_flag_wins_over_the_ci_variables() {
    let vars = [("BUILD_NUMBER", "42"), ("CI_PIPELINE_IID", "43")];
    assert_eq!(build_number_with(&vars, &["--build", "41"]), 41);
}

#[test]
fn build_number_wins_over_ci_pipeline_iid() {
    let vars = [("BUILD_NUMBER", "42"), ("CI_PIPELINE_IID", "43")];
    assert_eq!(build_number_with(&vars, &[]), 42);
}

// --- [source] ---------------------------------------------------------------

const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SHA_C: &str = "cccccccccccccccccccccccccccccccccccccccc";

/// The manifest's `[source] commit` of a build of the minimal app with
/// these variables.
fn source_commit_with(vars: &[(&str, &str)]) -> Option<String> {
    let mut env = minimal_app();
    for (k, v) in vars {
        env.set(k, v);
    }
    build_app(&env, "out");
    toml_value(&manifest(&env, ARTIFACT), "source", "commit")
}

#[test]
fn source_commit_comes_from_jenkins_git_commit() {
    assert_eq!(
        source_commit_with(&[("GIT_COMMIT", SHA_A)]).as_deref(),
        Some(SHA_A)
    );
}

#[test]
fn source_commit_comes_from_gitlab_ci_commit_sha() {
    assert_eq!(
        source_commit_with(&[("CI_COMMIT_SHA", SHA_B)]).as_deref(),
        Some(SHA_B)
    );
}

#[test]
fn source_commit_comes_from_github_sha() {
    assert_eq!(
        source_commit_with(&[("GITHUB_SHA", SHA_C)]).as_deref(),
        Some(SHA_C)
    );
}

#[test]
fn git_commit_wins_over_ci_commit_sha_which_wins_over_github_sha() {
    let all = [
        ("GIT_COMMIT", SHA_A),
        ("CI_COMMIT_SHA", SHA_B),
        ("GITHUB_SHA", SHA_C),
    ];
    assert_eq!(source_commit_with(&all).as_deref(), Some(SHA_A));
    assert_eq!(source_commit_with(&all[1..]).as_deref(), Some(SHA_B));
}

#[test]
fn source_commit_and_branch_come_from_the_git_repository_without_ci_variables() {
    let env = minimal_app();
    let git = |args: &[&str]| {
        let mut all = vec![
            "-C",
            "app",
            "-c",
            "user.name=CI",
            "-c",
            "user.email=ci@example.com",
        ];
        all.extend_from_slice(args);
        env.tool("git", all).ok().stdout.trim().to_owned()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "first"]);
    let head = git(&["rev-parse", "HEAD"]);
    assert_eq!(head.len(), 40, "{head}");

    build_app(&env, "out");
    let m = manifest(&env, ARTIFACT);
    assert_eq!(toml_value(&m, "source", "commit"), Some(head));
    assert_eq!(toml_value(&m, "source", "branch").as_deref(), Some("main"));
}

// --- the artifact and the output ---------------------------------------------

#[test]
fn the_file_name_is_name_underscore_version_plus_build() {
    let env = TestEnv::new();
    env.app("app", &MINIMAL_PACKAGE_TOML.replace("1.4.2", "2.0.0-rc.1"));
    let v = env
        .packager(["build", "app", "--build", "7", "--out", "out", "--json"])
        .ok()
        .json();
    assert_eq!(v["artifact"], "out/webapp_2.0.0-rc.1+7.tar.zst");
    assert_eq!(names(&env.join("out")), ["webapp_2.0.0-rc.1+7.tar.zst"]);
}

#[test]
fn entries_are_the_manifest_then_hooks_then_the_sorted_payload() {
    let env = minimal_app();
    build_app(&env, "out");
    let expected = [
        "MANIFEST.toml",
        "hooks/",
        "hooks/health",
        "files/",
        "files/VERSION",
        "files/index.html",
        "files/static/",
        "files/static/app.js",
    ];
    assert_eq!(listing(&env, ARTIFACT), expected);
    let piped = env
        .tool("sh", ["-c", &format!("zstd -dc '{ARTIFACT}' | tar -t")])
        .ok();
    assert_eq!(piped.stdout.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn the_zstd_frame_carries_a_checksum_that_zstd_accepts() {
    let env = minimal_app();
    build_app(&env, "out");
    env.tool("zstd", ["-t", ARTIFACT]).ok();
    let info = env.tool("zstd", ["-lv", ARTIFACT]).ok();
    assert!(info.stdout.contains("Check: XXH64"), "{info}");
}

#[test]
fn json_output_has_exactly_the_documented_keys_and_the_true_digest_and_size() {
    let env = minimal_app();
    let v = build_app(&env, "out");
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["artifact", "build", "name", "sha256", "size", "version"]
    );
    assert_eq!(v["sha256"], sha256sum(&env, ARTIFACT));
    assert_eq!(v["size"], fs::metadata(env.join(ARTIFACT)).unwrap().len());
}

#[test]
fn human_output_is_a_sha256sum_line_on_stdout_and_a_summary_on_stderr() {
    let env = minimal_app();
    let run = env
        .packager(["build", "app", "--build", "173", "--out", "out"])
        .ok();
    assert_eq!(
        run.stdout,
        format!("{}  {ARTIFACT}\n", sha256sum(&env, ARTIFACT))
    );
    write(&env.join("SHA256SUMS"), &run.stdout);
    let check = env.tool("sha256sum", ["-c", "SHA256SUMS"]).ok();
    assert_eq!(check.stdout, format!("{ARTIFACT}: OK\n"));
    assert_stderr_has(&run, &["built webapp@1.4.2+173"]);
}

#[test]
fn the_manifest_lists_every_payload_entry_with_the_digest_size_and_mode_on_disk() {
    let env = minimal_app();
    add_payload_shapes(&env);
    build_app(&env, "out");
    let m = manifest(&env, ARTIFACT);

    let expected: Vec<String> = payload_entries(&env.join("app/dist"))
        .iter()
        .map(|rel| expected_manifest_line(&env, "app/dist", rel))
        .collect();
    assert_eq!(table_lines(&m, "files"), expected, "manifest:\n{m}");
    assert_eq!(
        table_lines(&m, "hook_files"),
        [expected_manifest_line(&env, "app/hooks", "health")],
        "manifest:\n{m}"
    );
}

// --- reproducibility --------------------------------------------------------

#[test]
fn the_same_tree_builds_to_the_same_bytes_in_different_out_dirs() {
    let env = minimal_app();
    add_payload_shapes(&env);
    let first = build_app(&env, "out1");
    let second = build_app(&env, "out2");
    assert_eq!(first["sha256"], second["sha256"]);
    let cmp = env.tool(
        "cmp",
        [
            "out1/webapp_1.4.2+173.tar.zst",
            "out2/webapp_1.4.2+173.tar.zst",
        ],
    );
    cmp.ok();
}

#[test]
fn new_mtimes_on_every_payload_file_do_not_change_the_sha256() {
    let env = minimal_app();
    add_payload_shapes(&env);
    let before = build_app(&env, "out1");
    touch_all(&env, "app", "1234567890");
    let after = build_app(&env, "out2");
    assert_eq!(before["sha256"], after["sha256"]);
}

#[test]
fn a_copy_of_the_app_elsewhere_builds_to_the_same_sha256() {
    let env = minimal_app();
    add_payload_shapes(&env);
    let here = build_app(&env, "out1");
    fs::create_dir_all(env.join("elsewhere/deeper")).unwrap();
    env.tool("cp", ["-R", "app", "elsewhere/deeper/copy"]).ok();
    let there = env
        .packager([
            "build",
            "elsewhere/deeper/copy",
            "--build",
            "173",
            "--out",
            "out2",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(here["sha256"], there["sha256"]);
}

#[test]
fn source_date_epoch_dates_every_entry_owned_by_root_and_changes_the_sha256() {
    let mut env = minimal_app();
    env.set("TZ", "UTC");
    let default_epoch = build_app(&env, "out1");
    env.set("SOURCE_DATE_EPOCH", "1600000000");
    let other_epoch = build_app(&env, "out2");
    assert_ne!(default_epoch["sha256"], other_epoch["sha256"]);

    let run = env
        .tool(
            "tar",
            [
                "--zstd",
                "-tvf",
                "out2/webapp_1.4.2+173.tar.zst",
                "--numeric-owner",
            ],
        )
        .ok();
    assert_eq!(run.stdout.lines().count(), 8, "{run}");
    for line in run.stdout.lines() {
        assert!(line.contains(" 0/0 "), "not owned by 0/0: {line}");
        assert!(
            line.contains(" 2020-09-13 12:26 "),
            "not dated SOURCE_DATE_EPOCH: {line}"
        );
    }
}

#[test]
fn without_source_date_epoch_every_entry_is_dated_1970() {
    let mut env = minimal_app();
    env.set("TZ", "UTC");
    env.unset("SOURCE_DATE_EPOCH");
    build_app(&env, "out");
    let run = env.tool("tar", ["--zstd", "-tvf", ARTIFACT]).ok();
    for line in run.stdout.lines() {
        assert!(line.contains(" 1970-01-01 00:00 "), "not dated 0: {line}");
    }
}

// --- payload shapes ---------------------------------------------------------

/// Extracts an artifact with GNU tar into `dir`, keeping modes.
fn extract(env: &TestEnv, artifact: &str, dir: &str) {
    fs::create_dir_all(env.join(dir)).unwrap();
    env.tool("tar", ["--zstd", "-xpf", artifact, "-C", dir])
        .ok();
}

#[test]
fn empty_directories_ship() {
    let env = minimal_app();
    add_payload_shapes(&env);
    build_app(&env, "out");
    assert!(listing(&env, ARTIFACT).contains(&"files/var/empty/".to_owned()));
    extract(&env, ARTIFACT, "x");
    assert!(env.join("x/files/var/empty").is_dir());
}

#[test]
fn relative_symlinks_inside_the_payload_ship_as_symlinks() {
    let env = minimal_app();
    add_payload_shapes(&env);
    build_app(&env, "out");
    let run = env.tool("tar", ["--zstd", "-tvf", ARTIFACT]).ok();
    for (link, target) in [
        ("files/app.js", "static/app.js"),
        ("files/static/version", "../VERSION"),
    ] {
        let line = run
            .stdout
            .lines()
            .find(|l| l.ends_with(&format!(" {link} -> {target}")))
            .unwrap_or_else(|| panic!("no symlink {link} -> {target}:\n{run}"));
        assert!(line.starts_with('l'), "{line}");
    }
    extract(&env, ARTIFACT, "x");
    assert_eq!(
        fs::read_link(env.join("x/files/static/version")).unwrap(),
        Path::new("../VERSION")
    );
    assert_eq!(
        fs::read_to_string(env.join("x/files/static/version")).unwrap(),
        "1.4.2\n"
    );
}

#[test]
fn long_paths_and_utf8_names_round_trip_through_gnu_tar_byte_for_byte() {
    let env = minimal_app();
    let long = format!(
        "{}/{}/{}.txt",
        "a-directory-name-long-enough-to-matter",
        "and-another-one-below-it-for-good-measure",
        "a-file-name-that-pushes-the-whole-path-well-past-one-hundred-bytes"
    );
    assert!(format!("files/{long}").len() > 100);
    let utf8 = "données/héllo wörld ✓ 日本語.txt";
    write(&env.join("app/dist").join(&long), "long\n");
    write(&env.join("app/dist").join(utf8), "ünïcödé\n");
    build_app(&env, "out");

    let entries = listing(&env, ARTIFACT);
    assert!(entries.contains(&format!("files/{long}")), "{entries:?}");
    assert!(entries.contains(&format!("files/{utf8}")), "{entries:?}");
    extract(&env, ARTIFACT, "x");
    env.tool("diff", ["-r", "--no-dereference", "app/dist", "x/files"])
        .ok();
}

#[test]
fn file_modes_are_kept() {
    let env = minimal_app();
    add_payload_shapes(&env);
    build_app(&env, "out");
    let run = env.tool("tar", ["--zstd", "-tvf", ARTIFACT]).ok();
    let mode_of = |entry: &str| {
        run.stdout
            .lines()
            .find(|l| l.ends_with(&format!(" {entry}")))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {entry}:\n{run}"))
    };
    assert_eq!(mode_of("files/bin/run.sh"), "-rwxr-xr-x");
    assert_eq!(mode_of("files/config/local.conf"), "-rw-------");
    assert_eq!(mode_of("hooks/health"), "-rwxr-xr-x");

    extract(&env, ARTIFACT, "x");
    let mode = |rel: &str| fs::metadata(env.join(rel)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("x/files/bin/run.sh"), 0o755);
    assert_eq!(mode("x/files/config/local.conf"), 0o600);
}
