//! `packager verify`: a good artifact passes (also once GNU tar has packed it
//! again unchanged); damaged or tampered ones (flipped byte, truncated,
//! empty, not zstd, trailing bytes, an edited, extra or missing payload
//! file, the manifest not first) are refused with exit 2 and a message that
//! says what is wrong.

// Helpers below are test code too: a panic is how they report.

use std::fs;

use berth_tests::{TestEnv, write};

use crate::build::{ARTIFACT, assert_stderr_has, build_app, listing, minimal_app};

/// A world with the minimal app built into [`ARTIFACT`].
fn built() -> TestEnv {
    let env = minimal_app();
    build_app(&env, "out");
    env
}

/// Runs `packager verify` on `artifact`, asserting a refusal as bad input
/// that names the file and says how to get a good one; returns stderr.
#[track_caller]
fn refused(env: &TestEnv, artifact: &str) -> String {
    let run = env.packager(["verify", artifact]).code(2);
    assert_stderr_has(
        &run,
        &[
            &format!("error: `{artifact}` is not a valid artifact: "),
            "hint: the artifact is damaged",
        ],
    );
    run.stderr
}

/// Writes a copy of [`ARTIFACT`] at `rel` with `change` applied to its bytes.
fn damaged(env: &TestEnv, rel: &str, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(env.join(ARTIFACT)).unwrap();
    change(&mut bytes);
    fs::write(env.join(rel), bytes).unwrap();
}

/// Extracts [`ARTIFACT`] into `x/`, lets `edit` change the tree, then packs
/// `entries` again with GNU tar, in that order and without recursion, into
/// `repacked.tar.zst`; returns that path.
fn repack(env: &TestEnv, edit: impl FnOnce(&TestEnv), entries: &[String]) -> &'static str {
    const OUT: &str = "repacked.tar.zst";
    fs::create_dir_all(env.join("x")).unwrap();
    env.tool("tar", ["--zstd", "-xpf", ARTIFACT, "-C", "x"])
        .ok();
    edit(env);
    let out = env.join(OUT);
    let mut args = vec![
        "--zstd",
        "-cf",
        out.to_str().unwrap(),
        "--no-recursion",
        "-C",
        "x",
    ];
    args.extend(entries.iter().map(String::as_str));
    env.tool("tar", args).ok();
    OUT
}

/// The artifact's own entry list, as GNU tar prints it.
fn original_entries(env: &TestEnv) -> Vec<String> {
    listing(env, ARTIFACT)
}

#[test]
fn a_freshly_built_artifact_verifies() {
    let env = minimal_app();
    let built = build_app(&env, "out");

    let run = env.packager(["verify", ARTIFACT]).ok();
    assert!(
        run.stdout
            .starts_with(&format!("ok: `{ARTIFACT}` is webapp@1.4.2+173 (4 entries")),
        "{run}"
    );
    let sha = built["sha256"].as_str().unwrap();
    assert!(run.stdout.contains(sha), "{run}");

    let v = env.packager(["verify", ARTIFACT, "--json"]).ok().json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["sha256"], built["sha256"]);
    assert_eq!(v["size"], built["size"]);
    assert_eq!(v["name"], "webapp");
    assert_eq!(v["build"], 173);
    assert_eq!(v["files"], 4);
    assert_eq!(v["hooks"], serde_json::json!(["health"]));
}

#[test]
fn an_artifact_packed_again_unchanged_by_gnu_tar_still_verifies() {
    let env = built();
    let entries = original_entries(&env);
    let again = repack(&env, |_| {}, &entries);
    env.packager(["verify", again]).ok();
}

#[test]
fn a_flipped_byte_anywhere_in_the_compressed_file_is_reported_as_corruption() {
    let env = built();
    let len = fs::metadata(env.join(ARTIFACT)).unwrap().len() as usize;
    for at in [len / 4, len / 2, len * 3 / 4] {
        damaged(&env, "flipped.tar.zst", |b| b[at] ^= 0xff);
        let stderr = refused(&env, "flipped.tar.zst");
        assert!(
            stderr.to_lowercase().contains("corrupt"),
            "a byte flipped at {at} of {len} is not reported as corruption:\n{stderr}"
        );
    }
}

#[test]
fn a_truncated_artifact_is_refused_as_truncated() {
    let env = built();
    damaged(&env, "short.tar.zst", |b| b.truncate(b.len() / 2));
    let stderr = refused(&env, "short.tar.zst");
    assert!(stderr.contains("truncated"), "{stderr}");
}

#[test]
fn an_empty_file_is_refused_as_empty() {
    let env = built();
    write(&env.join("zero-bytes.tar.zst"), "");
    let stderr = refused(&env, "zero-bytes.tar.zst");
    assert!(stderr.contains("empty"), "{stderr}");
}

#[test]
fn a_plain_file_that_is_not_zstd_is_refused() {
    let env = built();
    write(
        &env.join("plain.tar.zst"),
        "just some text, not an artifact\n",
    );
    let stderr = refused(&env, "plain.tar.zst");
    assert!(stderr.contains("not tar+zstd"), "{stderr}");
}

#[test]
fn bytes_appended_after_the_artifact_are_refused() {
    let env = built();
    damaged(&env, "appended.tar.zst", |b| b.extend_from_slice(b"junk"));
    refused(&env, "appended.tar.zst");
}

#[test]
fn a_payload_file_edited_in_place_is_caught_by_its_sha256() {
    let env = built();
    let entries = original_entries(&env);
    let edited = repack(
        &env,
        |env| write(&env.join("x/files/index.html"), "<h1>HELLO</h1>\n"),
        &entries,
    );
    let stderr = refused(&env, edited);
    assert!(
        stderr.contains("entry `files/index.html` differs from the manifest: sha256 is "),
        "{stderr}"
    );
}

#[test]
fn a_payload_file_that_grew_is_caught_by_its_size() {
    let env = built();
    let entries = original_entries(&env);
    let edited = repack(
        &env,
        |env| write(&env.join("x/files/VERSION"), "1.4.2-evil\n"),
        &entries,
    );
    let stderr = refused(&env, edited);
    assert!(
        stderr.contains(
            "entry `files/VERSION` differs from the manifest: size is 11, the manifest says 6"
        ),
        "{stderr}"
    );
}

#[test]
fn an_extra_file_is_refused_as_not_listed_in_the_manifest() {
    let env = built();
    let mut entries = original_entries(&env);
    entries.push("files/zz-extra.txt".into());
    let edited = repack(
        &env,
        |env| write(&env.join("x/files/zz-extra.txt"), "smuggled\n"),
        &entries,
    );
    let stderr = refused(&env, edited);
    assert!(
        stderr.contains("entry `files/zz-extra.txt` is refused: it is not listed in the manifest"),
        "{stderr}"
    );
}

#[test]
fn an_artifact_whose_first_entry_is_not_the_manifest_is_refused() {
    let env = built();
    let mut entries = original_entries(&env);
    entries.rotate_left(1);
    assert_eq!(entries.last().map(String::as_str), Some("MANIFEST.toml"));
    let edited = repack(&env, |_| {}, &entries);
    let stderr = refused(&env, edited);
    assert!(
        stderr.contains("the first entry is `hooks`, but an artifact starts with `MANIFEST.toml`"),
        "{stderr}"
    );
}

#[test]
fn a_file_listed_in_the_manifest_but_missing_from_the_artifact_is_reported() {
    let env = built();
    let entries: Vec<String> = original_entries(&env)
        .into_iter()
        .filter(|e| e != "files/VERSION")
        .collect();
    let edited = repack(&env, |_| {}, &entries);
    let stderr = refused(&env, edited);
    assert!(
        stderr.contains("`files/VERSION` is in the manifest but not in the artifact"),
        "{stderr}"
    );
}

#[test]
fn a_refusal_with_json_also_prints_the_error_as_json_on_stdout() {
    let env = built();
    write(&env.join("plain.tar.zst"), "not an artifact\n");
    let run = env.packager(["verify", "plain.tar.zst", "--json"]).code(2);
    let v = run.json();
    assert_eq!(v["exit_code"], 2);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("`plain.tar.zst` is not a valid artifact"),
        "{run}"
    );
    assert!(v["hint"].as_str().is_some(), "{run}");
}

#[test]
fn a_path_that_does_not_exist_is_bad_input_naming_the_path() {
    let env = TestEnv::new();
    let run = env.packager(["verify", "nowhere.tar.zst"]).code(2);
    assert_stderr_has(&run, &["no artifact at `nowhere.tar.zst`"]);
}
