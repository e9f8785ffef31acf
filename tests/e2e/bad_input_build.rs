//! `packager build` refusing bad input: a missing or invalid package.toml,
//! bad names, versions and build numbers, a missing or wrong payload or
//! hook, payload entries that must not ship (escaping symlinks, fifos,
//! setuid files, secrets). Each is exit 2 with a message naming the thing,
//! the reason and the way out, and writes nothing anywhere. Also what the
//! secret check lets through.

// Helpers below are test code too: a panic is how they report.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use berth_tests::{MINIMAL_PACKAGE_TOML, Run, TestEnv, names, tree_state, write};

use crate::build::{ARTIFACT, assert_stderr_has, build_app, listing};

/// A world with the minimal app at `app/`, its package.toml changed by
/// replacing `from` with `to`, and an `out/` that already holds a file.
fn app_with(from: &str, to: &str) -> TestEnv {
    let text = MINIMAL_PACKAGE_TOML.replace(from, to);
    assert!(
        from.is_empty() || text != MINIMAL_PACKAGE_TOML,
        "`{from}` is not in the file"
    );
    let env = TestEnv::new();
    env.app("app", &text);
    write(&env.join("out/earlier.txt"), "kept\n");
    env
}

/// The minimal app, unchanged, with an `out/` that already holds a file.
fn app() -> TestEnv {
    app_with("", "")
}

/// Runs `packager build app --out out ARGS...` and asserts a refusal as bad
/// input that wrote nothing: the whole temp tree is as it was and `out/`
/// holds no new file (artifact or `.tmp-*`).
#[track_caller]
fn refused_with(env: &TestEnv, args: &[&str]) -> Run {
    let before = tree_state(env.path());
    let run = env
        .packager(["build", "app", "--out", "out"].iter().chain(args))
        .code(2);
    assert!(run.stderr.starts_with("error: "), "{run}");
    assert!(run.stderr.contains("\nhint: "), "no hint:\n{run}");
    assert_eq!(names(&env.join("out")), ["earlier.txt"], "{run}");
    assert_eq!(
        tree_state(env.path()),
        before,
        "a refused build wrote:\n{run}"
    );
    run
}

/// [`refused_with`] with `--build 1`.
#[track_caller]
fn refused(env: &TestEnv) -> Run {
    refused_with(env, &["--build", "1"])
}

fn chmod(env: &TestEnv, rel: &str, mode: u32) {
    fs::set_permissions(env.join(rel), fs::Permissions::from_mode(mode)).unwrap();
}

// --- the package file -------------------------------------------------------

#[test]
fn a_missing_package_file_points_to_packager_init() {
    let env = app();
    fs::remove_file(env.join("app/package.toml")).unwrap();
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &["no package file at `app/package.toml`", "`packager init`"],
    );
}

#[test]
fn malformed_toml_is_reported_with_its_line_and_column() {
    let env = app_with("version = \"1.4.2\"", "version = \"1.4.2");
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &[
            "`app/package.toml` is not a valid package file",
            "line 3, column 17",
        ],
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let env = app_with("[install]\n", "[install]\ncolour = \"blue\"\n");
    let run = refused(&env);
    assert_stderr_has(&run, &["unknown field `colour`", "line 8, column 1"]);
}

#[test]
fn an_empty_package_name_is_refused_at_its_line_and_column() {
    let env = app_with("name = \"webapp\"", "name = \"\"");
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &[
            "`app/package.toml` line 2, column 8: invalid package name ``: it is empty",
            "lowercase",
        ],
    );
}

#[test]
fn an_uppercase_package_name_is_refused() {
    let env = app_with("name = \"webapp\"", "name = \"WebApp\"");
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &[
            "line 2, column 8: invalid package name `WebApp`: the character 'W' is not allowed",
            "lowercase",
        ],
    );
}

#[test]
fn an_underscore_in_the_package_name_is_refused() {
    let env = app_with("name = \"webapp\"", "name = \"web_app\"");
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &["invalid package name `web_app`: the character '_' is not allowed"],
    );
}

#[test]
fn a_space_in_the_version_is_refused() {
    let env = app_with("\"1.4.2\"", "\"1.4 2\"");
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &["line 3, column 11: invalid version `1.4 2`: the character ' ' is not allowed"],
    );
}

#[test]
fn a_plus_in_the_version_is_refused_with_a_pointer_to_build() {
    let env = app_with("\"1.4.2\"", "\"1.4.2+173\"");
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &[
            "invalid version `1.4.2+173`: the character '+' is not allowed",
            "`--build`",
        ],
    );
}

// --- build numbers ----------------------------------------------------------

/// Asserts `--build VALUE` is refused as an invalid build number.
#[track_caller]
fn build_flag_refused(value: &str, reason: &str) {
    let env = app();
    let run = refused_with(&env, &["--build", value]);
    assert_stderr_has(
        &run,
        &[
            &format!("invalid build number `{value}`: {reason}"),
            "whole number from 1 up",
        ],
    );
}

/// Asserts `BUILD_NUMBER=VALUE` is refused, naming the variable.
#[track_caller]
fn build_number_var_refused(value: &str, reason: &str) {
    let mut env = app();
    env.set("BUILD_NUMBER", value);
    let run = refused_with(&env, &[]);
    assert_stderr_has(
        &run,
        &[
            &format!("invalid build number `{value}` in `BUILD_NUMBER`: {reason}"),
            "whole number from 1 up",
        ],
    );
}

#[test]
fn a_non_numeric_build_flag_is_refused() {
    build_flag_refused("abc", "it is not a whole number");
}

#[test]
fn a_zero_build_flag_is_refused() {
    build_flag_refused("0", "build numbers start at 1");
}

#[test]
fn a_negative_build_flag_is_refused_as_a_build_number() {
    build_flag_refused("-1", "it is not a whole number");
}

#[test]
fn a_negative_build_flag_written_with_equals_is_refused() {
    let env = app();
    let run = refused_with(&env, &["--build=-1"]);
    assert_stderr_has(
        &run,
        &["invalid build number `-1`: it is not a whole number"],
    );
}

#[test]
fn a_non_numeric_build_number_variable_is_refused() {
    build_number_var_refused("abc", "it is not a whole number");
}

#[test]
fn a_zero_build_number_variable_is_refused() {
    build_number_var_refused("0", "build numbers start at 1");
}

#[test]
fn a_negative_build_number_variable_is_refused() {
    build_number_var_refused("-5", "it is not a whole number");
}

#[test]
fn no_build_number_at_all_points_to_build_number() {
    let env = app();
    let run = refused_with(&env, &[]);
    assert_stderr_has(
        &run,
        &[
            "error: no build number",
            "--build N",
            "BUILD_NUMBER",
            "CI_PIPELINE_IID",
        ],
    );
}

#[test]
fn a_source_date_epoch_that_is_not_a_number_is_named_as_such() {
    let mut env = app();
    env.set("SOURCE_DATE_EPOCH", "yesterday");
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &["SOURCE_DATE_EPOCH", "`yesterday`", "seconds since 1970"],
    );
    assert!(
        !run.stderr.contains("payload"),
        "SOURCE_DATE_EPOCH is a variable, not a payload entry:\n{run}"
    );
}

// --- payload and hooks ------------------------------------------------------

#[test]
fn a_missing_payload_directory_is_named() {
    let env = app_with("payload = \"dist\"", "payload = \"build\"");
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &[
            "the payload directory `app/build` does not exist",
            "`payload`",
        ],
    );
}

#[test]
fn a_payload_that_is_a_file_is_refused() {
    let env = app_with("payload = \"dist\"", "payload = \"dist/VERSION\"");
    let run = refused(&env);
    assert_stderr_has(&run, &["the payload `app/dist/VERSION` is not a directory"]);
}

#[test]
fn a_hook_named_but_missing_is_refused_with_its_path() {
    let env = app();
    fs::remove_file(env.join("app/hooks/health")).unwrap();
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &[
            "hook `health` is `app/hooks/health`, which does not exist",
            "relative to package.toml",
        ],
    );
}

#[test]
fn a_hook_that_is_not_executable_is_refused_with_the_chmod_to_run() {
    let env = app();
    chmod(&env, "app/hooks/health", 0o644);
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &[
            "hook `health` is `app/hooks/health`, which is not executable",
            "`chmod +x app/hooks/health`",
        ],
    );
}

#[test]
fn a_symlink_to_an_absolute_path_is_refused() {
    let env = app();
    symlink("/etc/passwd", env.join("app/dist/passwd")).unwrap();
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &[
            "payload symlink `passwd` -> `/etc/passwd` leaves the payload",
            "absolute path",
            "relative",
        ],
    );
}

#[test]
fn a_symlink_climbing_out_of_the_payload_is_refused() {
    let env = app();
    symlink("../../etc", env.join("app/dist/static/etc")).unwrap();
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &[
            "payload symlink `static/etc` -> `../../etc` leaves the payload",
            "climbs above the release root",
        ],
    );
}

#[test]
fn a_fifo_in_the_payload_is_refused() {
    let env = app();
    env.tool("mkfifo", ["app/dist/pipe"]).ok();
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &[
            "payload entry `pipe` is refused: fifos are not allowed",
            "remove it",
        ],
    );
}

#[test]
fn a_setuid_file_in_the_payload_is_refused() {
    let env = app();
    write(&env.join("app/dist/bin/tool"), "#!/bin/sh\n");
    chmod(&env, "app/dist/bin/tool", 0o4755);
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &[
            "payload entry `bin/tool` is refused: its mode 4755 has setuid, setgid, sticky or world-write bits, and [install] allow_special_modes does not list its path",
            "chmod ug-s,o-tw",
            "allow_special_modes = [\"bin/tool\"]",
        ],
    );
}

#[test]
fn a_world_writable_file_in_the_payload_is_refused() {
    let env = app();
    write(&env.join("app/dist/shared.txt"), "anyone\n");
    chmod(&env, "app/dist/shared.txt", 0o666);
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &[
            "payload entry `shared.txt` is refused: its mode 0666 has setuid, setgid, sticky or world-write bits",
        ],
    );
}

#[test]
fn special_modes_allowed_by_path_ship_and_install_as_they_are() {
    let env = app_with(
        "target = \"/srv/webapp\"",
        "target = \"/srv/webapp\"\nallow_special_modes = [\"bin/tool\", \"tmp\"]",
    );
    write(&env.join("app/dist/bin/tool"), "#!/bin/sh\n");
    chmod(&env, "app/dist/bin/tool", 0o4755);
    fs::create_dir(env.join("app/dist/tmp")).unwrap();
    chmod(&env, "app/dist/tmp", 0o1777);
    build_app(&env, "out");
    let run = env.packager(["verify", ARTIFACT]).ok();
    assert!(run.stdout.starts_with("ok: "), "{run}");
    let run = env
        .cmd("agent")
        .arg("--root")
        .arg(env.join("node"))
        .args(["install", "--file", ARTIFACT])
        .output()
        .unwrap();
    let run = Run::from(run).ok();
    let tree = env.join("node/srv/webapp");
    let mode = |rel: &str| fs::metadata(tree.join(rel)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("bin/tool"), 0o4755, "{run}");
    assert_eq!(mode("tmp"), 0o1777, "{run}");

    // A path the package does not allow is still refused.
    chmod(&env, "app/dist/VERSION", 0o4644);
    let run = env
        .packager(["build", "app", "--build", "2", "--out", "out2"])
        .code(2);
    assert_stderr_has(
        &run,
        &["payload entry `VERSION` is refused: its mode 4644 has"],
    );
    assert!(!env.join("out2/webapp_1.4.2+2.tar.zst").exists());
}

// --- secrets ------------------------------------------------------------------

/// Asserts that a payload holding a file at `rel` is refused as a secret,
/// naming it and the `allow_secrets` way out.
#[track_caller]
fn secret_refused(rel: &str) {
    let env = app();
    write(&env.join("app/dist").join(rel), "s3cr3t\n");
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &[
            "look",
            "like",
            "secret",
            &format!("`{rel}`"),
            &format!("allow_secrets = [\"{rel}\"]"),
        ],
    );
}

#[test]
fn a_dotenv_file_is_refused_as_a_secret() {
    secret_refused(".env");
}

#[test]
fn a_pem_file_is_refused_as_a_secret() {
    secret_refused("certs/server.pem");
}

#[test]
fn an_ssh_private_key_is_refused_as_a_secret() {
    secret_refused(".ssh/id_rsa");
}

#[test]
fn a_key_file_is_refused_as_a_secret() {
    secret_refused("tls.key");
}

#[test]
fn a_single_secret_is_reported_in_the_singular() {
    let env = app();
    write(&env.join("app/dist/.env"), "TOKEN=x\n");
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &["the payload holds a file that looks like a secret: `.env`"],
    );
}

#[test]
fn several_secrets_are_listed_together_and_the_hint_allows_them_all() {
    let env = app();
    let secrets = [".env", ".ssh/id_rsa", "certs/server.pem", "tls.key"];
    for s in secrets {
        write(&env.join("app/dist").join(s), "s3cr3t\n");
    }
    let run = refused(&env);
    assert_stderr_has(
        &run,
        &[
            "the payload holds 4 files that look like secrets: `.env`, `.ssh/id_rsa`, `certs/server.pem`, `tls.key`",
        ],
    );
    let quoted: Vec<String> = secrets.iter().map(|s| format!("\"{s}\"")).collect();
    assert_stderr_has(&run, &[&format!("allow_secrets = [{}]", quoted.join(", "))]);
}

/// The minimal app with `allow_secrets` set to `allow` and the files
/// `secrets` in its payload; asserts it builds and ships them.
fn secrets_allowed(allow: &str, secrets: &[&str]) {
    let env = TestEnv::new();
    let toml = MINIMAL_PACKAGE_TOML.replace(
        "[install]",
        &format!("allow_secrets = {allow}\n\n[install]"),
    );
    env.app("app", &toml);
    for s in secrets {
        write(&env.join("app/dist").join(s), "meant to ship\n");
    }
    build_app(&env, "out");
    let entries = listing(&env, ARTIFACT);
    for s in secrets {
        assert!(
            entries.contains(&format!("files/{s}")),
            "{s} not shipped: {entries:?}"
        );
    }
}

#[test]
fn secrets_allowed_by_path_build() {
    secrets_allowed(
        r#"[".env", "certs/server.pem", ".ssh/id_rsa", "tls.key"]"#,
        &[".env", "certs/server.pem", ".ssh/id_rsa", "tls.key"],
    );
}

#[test]
fn a_directory_in_allow_secrets_allows_everything_below_it() {
    secrets_allowed(
        r#"["certs"]"#,
        &["certs/server.pem", "certs/tls.key", "certs/deep/ca.pem"],
    );
}

#[test]
fn a_directory_in_allow_secrets_does_not_allow_a_sibling_with_the_same_prefix() {
    let env = app_with("[install]", "allow_secrets = [\"certs\"]\n\n[install]");
    write(&env.join("app/dist/certs-old/server.pem"), "s3cr3t\n");
    let run = refused(&env);
    assert_stderr_has(&run, &["`certs-old/server.pem`"]);
}

#[test]
fn env_templates_and_public_keys_are_not_secrets() {
    secrets_allowed("[]", &[".env.example", ".ssh/id_rsa.pub"]);
}

// --- init -------------------------------------------------------------------

#[test]
fn init_refuses_an_invalid_name_and_writes_nothing() {
    let env = TestEnv::new();
    let before = tree_state(env.path());
    let run = env.packager(["init", "svc", "--name", "Web_App"]).code(2);
    assert_stderr_has(&run, &["invalid package name `Web_App`", "lowercase"]);
    assert_eq!(tree_state(env.path()), before);
}
