//! Signed channels, end to end: `packager keygen`, every index write
//! signed (publish, promote, yank, gc, resign) and checked by the Debian
//! `minisign` CLI; a signature made by the CLI accepted by the agent; and
//! each refusal of an agent that trusts keys (unsigned, unknown key,
//! tampered, foreign, expired, replayed, oversized download) exits 5 or 1,
//! names the attack and leaves the node exactly as it was.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_tests::{MINIMAL_PACKAGE_TOML, Run, TestEnv, write};
use serde_json::Value;

use crate::agent_support::{Node, assert_unchanged, rel};
use crate::repo_support::{
    REPO, args, artifacts, assert_says, index, killed_at, paused_at, refused, run_all,
};

/// `packager keygen --out PREFIX --unencrypted`: the key pair's paths.
fn keygen(env: &TestEnv, prefix: &str) -> (PathBuf, PathBuf) {
    let r = env
        .packager(["keygen", "--out", prefix, "--unencrypted", "--json"])
        .ok()
        .json();
    (
        env.join(r["secret_key"].as_str().unwrap()),
        env.join(r["public_key"].as_str().unwrap()),
    )
}

/// The Debian `minisign` CLI verifies `channels/CHANNEL/webapp.json` with
/// `public`; returns its trusted comment.
#[track_caller]
fn minisign_verifies(env: &TestEnv, channel: &str, public: &Path) -> String {
    let index = env
        .join(REPO)
        .join(format!("channels/{channel}/webapp.json"));
    let run = env
        .tool(
            "minisign",
            [
                "-V",
                "-m",
                index.to_str().unwrap(),
                "-p",
                public.to_str().unwrap(),
            ],
        )
        .ok();
    assert_says(
        &run,
        "stdout",
        &["Signature and comment signature verified"],
    );
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Trusted comment: "))
        .unwrap()
        .to_owned()
}

fn sign_args<'a>(key: &'a str, cmd: &[&'a str]) -> Vec<&'a str> {
    let mut all = cmd.to_vec();
    all.extend(["--sign-key", key, "--json"]);
    all
}

#[test]
fn keygen_writes_a_minisign_pair_and_never_an_unasked_unencrypted_key() {
    let mut env = TestEnv::new();
    // No password and no `--unencrypted`: refused, nothing written.
    let run = refused(&env, &["keygen", "--out", "ci"], 2);
    assert_says(
        &run,
        "stderr",
        &["BERTH_SIGN_PASSWORD is not set", "--unencrypted"],
    );
    // A bare prefix writes into the working directory.
    let (secret, public) = keygen(&env, "ci");
    assert_eq!(secret, env.join("ci.key"));
    assert_eq!(
        fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        fs::read_to_string(&public)
            .unwrap()
            .starts_with("untrusted comment: ")
    );
    // Never over an existing key.
    let run = refused(&env, &["keygen", "--out", "ci", "--unencrypted"], 2);
    assert_says(&run, "stderr", &["already exists", "ci.key"]);

    // Encrypted with BERTH_SIGN_PASSWORD (minisign's own scrypt cost), and
    // usable only with that password.
    env.set("BERTH_SIGN_PASSWORD", "correct horse");
    let r = env
        .packager(["keygen", "--out", "keys/enc", "--json"])
        .ok()
        .json();
    assert_eq!(r["encrypted"], true);
    let run = refused(&env, &["keygen", "--out", "other", "--unencrypted"], 2);
    assert_says(&run, "stderr", &["--unencrypted"]);
    let arts = artifacts(&env, "1.0.0", [1]);
    env.set("BERTH_SIGN_PASSWORD", "wrong");
    let run = refused(
        &env,
        &publish_args(&arts[0].path, "staging", &["--sign-key", "keys/enc.key"]),
        2,
    );
    assert_says(&run, "stderr", &["wrong password", "BERTH_SIGN_PASSWORD"]);
    assert!(!env.join(REPO).exists());
    env.set("BERTH_SIGN_PASSWORD", "correct horse");
    publish_signed(&env, &arts[0].path, "staging", "keys/enc.key");
    minisign_verifies(&env, "staging", &env.join("keys/enc.pub"));
}

fn publish_signed(env: &TestEnv, artifact: &str, channel: &str, key: &str) -> Value {
    env.packager(publish_args(
        artifact,
        channel,
        &["--sign-key", key, "--json"],
    ))
    .ok()
    .json()
}

/// `publish ARTIFACT --repo repo --channel CHANNEL EXTRA...`.
fn publish_args(artifact: &str, channel: &str, extra: &[&str]) -> Vec<String> {
    let mut all = args(&["publish", artifact, "--repo", REPO, "--channel", channel]);
    all.extend(args(extra));
    all
}

#[test]
fn every_index_write_is_signed_and_the_minisign_cli_verifies_it() {
    let env = TestEnv::new();
    let (_, public) = keygen(&env, "ci");
    let arts = artifacts(&env, "1.0.0", [1, 2]);
    let (a1, a2) = (&arts[0].release(), &arts[1].release());

    let r = publish_signed(&env, &arts[0].path, "staging", "ci.key");
    let comment = minisign_verifies(&env, "staging", &public);
    // The key id, as minisign's own comment in the .pub names it.
    let pub_text = fs::read_to_string(&public).unwrap();
    let key_id = r["signed_by"].as_str().unwrap();
    assert!(
        pub_text.contains(key_id.trim_start_matches('0')),
        "{pub_text} / {r}"
    );
    let again = publish_signed(&env, &arts[0].path, "staging", "ci.key");
    assert_eq!(
        again["signed_by"],
        Value::Null,
        "nothing written, nothing signed"
    );
    assert!(
        comment.starts_with("berth index channel:staging package:webapp sequence:1 expires:"),
        "{comment}"
    );
    // The default lifetime: 30 days from the write.
    let idx = index(&env, "staging");
    let updated: jiff::Timestamp = idx["updated"].as_str().unwrap().parse().unwrap();
    let expires: jiff::Timestamp = idx["expires"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires.duration_since(updated).as_secs(), 30 * 86_400);

    publish_signed(&env, &arts[1].path, "staging", "ci.key");
    let writes: [Vec<&str>; 5] = [
        vec![
            "promote",
            a1,
            "--from",
            "staging",
            "--to",
            "production",
            "--repo",
            REPO,
        ],
        vec!["yank", a1, "--channel", "staging", "--repo", REPO],
        vec!["yank", a1, "--channel", "staging", "--repo", REPO, "--undo"],
        vec!["gc", "--repo", REPO, "--keep", "1"],
        vec!["resign", "--repo", REPO, "--expires", "2h"],
    ];
    let mut sequence = 2;
    for cmd in writes {
        env.packager(sign_args("ci.key", &cmd)).ok();
        if cmd[0] != "promote" {
            sequence += 1;
        }
        let comment = minisign_verifies(&env, "staging", &public);
        assert!(
            comment.contains(&format!("sequence:{sequence} ")),
            "after `{}`: {comment}",
            cmd.join(" ")
        );
        minisign_verifies(&env, "production", &public);
    }
    let idx = index(&env, "staging");
    let updated: jiff::Timestamp = idx["updated"].as_str().unwrap().parse().unwrap();
    let expires: jiff::Timestamp = idx["expires"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires.duration_since(updated).as_secs(), 2 * 3600);
    assert_eq!(idx["releases"][0]["version"], "1.0.0");
    assert_eq!(idx["releases"][0]["build"], 2, "gc --keep 1 kept {a2} only");

    // `resign --sequence N` moves the index past N - 1 (a restore from
    // backup), and names what it signed.
    let r = env
        .packager(sign_args(
            "ci.key",
            &[
                "resign",
                "--repo",
                REPO,
                "--channel",
                "staging",
                "--sequence",
                "100",
            ],
        ))
        .ok()
        .json();
    assert_eq!(r["resigned"].as_array().unwrap().len(), 1);
    assert_eq!(r["resigned"][0]["sequence"], 100);
    assert_eq!(r["resigned"][0]["before"], "signed by this key");
    assert!(minisign_verifies(&env, "staging", &public).contains("sequence:100 "));
}

#[test]
fn signing_refusals_change_nothing() {
    let env = TestEnv::new();
    keygen(&env, "ci");
    let arts = artifacts(&env, "1.0.0", [1, 2]);
    publish_signed(&env, &arts[0].path, "staging", "ci.key");
    // An unsigned write into a signed channel would leave it unsigned.
    let run = refused(&env, &publish_args(&arts[1].path, "staging", &[]), 2);
    assert_says(&run, "stderr", &["is signed", "--sign-key", ".minisig"]);
    let a1 = arts[0].release();
    let run = refused(
        &env,
        &["yank", &a1, "--channel", "staging", "--repo", REPO],
        2,
    );
    assert_says(&run, "stderr", &["would leave it unsigned"]);
    // `--expires` means nothing without a key; a bad lifetime is refused.
    let run = refused(
        &env,
        &publish_args(&arts[1].path, "dev", &["--expires", "1d"]),
        2,
    );
    assert_says(&run, "stderr", &["no signing key"]);
    for bad in ["0h", "30", "1y", "99999w"] {
        let run = refused(
            &env,
            &publish_args(
                &arts[1].path,
                "staging",
                &["--sign-key", "ci.key", "--expires", bad],
            ),
            2,
        );
        assert_says(&run, "stderr", &[bad]);
    }
    // A key file that is not a key; resign without a key; resign of nothing.
    write(&env.join("bogus.key"), "not a key\n");
    let run = refused(
        &env,
        &publish_args(&arts[1].path, "staging", &["--sign-key", "bogus.key"]),
        2,
    );
    assert_says(&run, "stderr", &["not a minisign secret key"]);
    let run = refused(&env, &["resign", "--repo", REPO], 2);
    assert_says(&run, "stderr", &["needs the signing key"]);
    let run = refused(
        &env,
        &[
            "resign",
            "--repo",
            REPO,
            "--sign-key",
            "ci.key",
            "--channel",
            "production",
        ],
        2,
    );
    assert_says(&run, "stderr", &["no index to sign", "production"]);
}

#[test]
fn promote_signs_only_what_the_key_signed_before() {
    let env = TestEnv::new();
    keygen(&env, "ci");
    keygen(&env, "old");
    let arts = artifacts(&env, "1.0.0", [1]);
    let a1 = arts[0].release();
    let promote = |key: &str| {
        vec![
            "promote".to_owned(),
            a1.clone(),
            "--from".into(),
            "staging".into(),
            "--to".into(),
            "production".into(),
            "--repo".into(),
            REPO.into(),
            "--sign-key".into(),
            key.into(),
        ]
    };
    // From a channel nobody signed: refused, nothing written.
    env.packager(publish_args(&arts[0].path, "staging", &[]))
        .ok();
    let run = refused(&env, &promote("ci.key"), 2);
    assert_says(
        &run,
        "stderr",
        &[
            "is not signed",
            "would vouch for entries nobody signed",
            "packager resign --channel staging",
        ],
    );
    // Signed by another key (an earlier one, or an intruder's).
    let old = env
        .packager(["resign", "--repo", REPO, "--sign-key", "old.key", "--json"])
        .ok()
        .json();
    assert_eq!(old["resigned"][0]["before"], "unsigned");
    let run = refused(&env, &promote("ci.key"), 2);
    assert_says(
        &run,
        "stderr",
        &["does not verify with the signing key", "not trusted"],
    );
    // Signed by this key but altered since: an intruder pointed the
    // release at other bytes.
    let adopted = env
        .packager(["resign", "--repo", REPO, "--sign-key", "ci.key", "--json"])
        .ok()
        .json();
    assert_eq!(
        adopted["resigned"][0]["before"],
        format!("signed by key {}", old["key_id"].as_str().unwrap())
    );
    let path = env.join(REPO).join("channels/staging/webapp.json");
    let text = fs::read_to_string(&path).unwrap();
    let sha = arts[0].sha256.as_str();
    fs::write(&path, text.replace(sha, &"0".repeat(64))).unwrap();
    let run = refused(&env, &promote("ci.key"), 2);
    assert_says(
        &run,
        "stderr",
        &["does not verify", "does not match the data"],
    );
    // As it was signed: promoted and signed.
    fs::write(&path, text).unwrap();
    env.packager(promote("ci.key")).ok();
}

#[test]
fn a_signed_write_never_vouches_for_entries_its_key_did_not_sign() {
    let env = TestEnv::new();
    keygen(&env, "ci");
    let arts = artifacts(&env, "1.0.0", [1, 2, 3]);
    let publish = |i: usize| publish_args(&arts[i].path, "staging", &["--sign-key", "ci.key"]);
    // A channel published unsigned is adopted only on purpose, by resign.
    env.packager(publish_args(&arts[0].path, "staging", &[]))
        .ok();
    let run = refused(&env, &publish(1), 2);
    assert_says(
        &run,
        "stderr",
        &["is not signed", "packager resign --channel staging"],
    );
    env.packager(["resign", "--repo", REPO, "--sign-key", "ci.key"])
        .ok();
    env.packager(publish(1)).ok();
    // An intruder adds an entry to the signed index: the next signed
    // publish refuses to sign it along, and uploads nothing.
    let path = env.join(REPO).join("channels/staging/webapp.json");
    let text = fs::read_to_string(&path).unwrap();
    let mut idx: Value = serde_json::from_str(&text).unwrap();
    let mut evil = idx["releases"][1].clone();
    evil["build"] = 99.into();
    evil["sha256"] = "e".repeat(64).into();
    idx["releases"].as_array_mut().unwrap().push(evil);
    fs::write(&path, serde_json::to_vec_pretty(&idx).unwrap()).unwrap();
    let run = refused(&env, &publish(2), 2);
    assert_says(
        &run,
        "stderr",
        &[
            "does not verify with the signing key",
            "may have been altered",
        ],
    );
    for cmd in [
        vec![
            "yank",
            &arts[1].release(),
            "--channel",
            "staging",
            "--repo",
            REPO,
            "--sign-key",
            "ci.key",
        ],
        vec!["gc", "--repo", REPO, "--keep", "1", "--sign-key", "ci.key"],
    ] {
        let run = refused(&env, &cmd, 2);
        assert_says(&run, "stderr", &["does not verify with the signing key"]);
    }
    fs::write(&path, text).unwrap();
    env.packager(publish(2)).ok();
}

#[test]
fn twenty_signed_publishers_at_once_leave_a_verified_index() {
    let env = TestEnv::new();
    let (_, public) = keygen(&env, "ci");
    let builds: Vec<u64> = (1..=20).collect();
    let arts = artifacts(&env, "1.0.0", builds.clone());
    let commands: Vec<Vec<String>> = arts
        .iter()
        .map(|a| publish_args(&a.path, "staging", &["--sign-key", "ci.key"]))
        .collect();
    for run in run_all(&env, &commands) {
        run.ok();
    }
    let comment = minisign_verifies(&env, "staging", &public);
    assert!(comment.contains("sequence:20 "), "{comment}");
    assert_eq!(
        index(&env, "staging")["releases"].as_array().unwrap().len(),
        20
    );
}

/// A second package, `api`, built and published signed (with `ci.key`)
/// into `staging`: a channel that holds more than the package at stake.
fn publish_signed_api(env: &TestEnv) {
    env.app(
        "app-api",
        &MINIMAL_PACKAGE_TOML.replace("name = \"webapp\"", "name = \"api\""),
    );
    let api = env
        .packager(["build", "app-api", "--build", "1", "--out", "out", "--json"])
        .ok()
        .json();
    publish_signed(env, api["artifact"].as_str().unwrap(), "staging", "ci.key");
}

#[test]
fn a_signed_publish_killed_at_any_point_leaves_an_index_its_signature_verifies() {
    // The index and its signature are two files; they appear together, by
    // one swap of the channel's directory, so a publisher killed anywhere
    // leaves the old pair or the new pair, and the channel's other
    // packages as they were.
    let env = TestEnv::new();
    let (_, public) = keygen(&env, "ci");
    publish_signed_api(&env);
    let arts = artifacts(&env, "1.0.0", 1..=5);
    publish_signed(&env, &arts[0].path, "staging", "ci.key");
    let points = [
        ("index:written", false),
        ("signature:written", false),
        ("index:renamed", true),
        ("index:cleaned", true),
    ];
    for (art, (point, done)) in arts[1..].iter().zip(points) {
        let before = index(&env, "staging")["sequence"].as_u64().unwrap();
        killed_at(
            &env,
            point,
            &publish_args(&art.path, "staging", &["--sign-key", "ci.key"]),
        );
        let sequence = before + u64::from(done);
        let comment = minisign_verifies(&env, "staging", &public);
        assert!(
            comment.contains(&format!("sequence:{sequence} ")),
            "{point}: {comment}"
        );
        assert_eq!(index(&env, "staging")["sequence"], sequence, "{point}");
        let api_index = env.join(REPO).join("channels/staging/api.json");
        env.tool(
            "minisign",
            [
                "-Vq",
                "-p",
                public.to_str().unwrap(),
                "-m",
                api_index.to_str().unwrap(),
            ],
        )
        .ok();
        // The next signed write is not refused as tampered with.
        let r = publish_signed(&env, &art.path, "staging", "ci.key");
        assert_eq!(r["changed"], !done, "{point}: {r}");
        minisign_verifies(&env, "staging", &public);
    }
    assert_eq!(
        index(&env, "staging")["releases"].as_array().unwrap().len(),
        5
    );
}

#[test]
fn a_signed_write_into_a_channel_directory_holding_a_directory_is_refused() {
    // A signed write rebuilds the channel's directory from hard links; a
    // directory someone put in it cannot be linked, and is not dropped.
    let env = TestEnv::new();
    keygen(&env, "ci");
    let art = artifacts(&env, "1.0.0", [1]).remove(0);
    publish_signed(&env, &art.path, "staging", "ci.key");
    write(
        &env.join(REPO).join("channels/staging/notes/todo.txt"),
        "x\n",
    );
    let release = art.release();
    let run = refused(
        &env,
        &[
            "yank",
            &release,
            "--channel",
            "staging",
            "--repo",
            REPO,
            "--sign-key",
            "ci.key",
        ],
        2,
    );
    assert_says(
        &run,
        "stderr",
        &[
            "`channels/staging/notes` in `repo` is a directory inside a channel's directory",
            "move `channels/staging/notes` out of the repository",
        ],
    );
}

#[test]
fn a_listing_that_read_a_channel_directory_swapped_meanwhile_is_taken_again() {
    // `packager list` reads the repository without its lock; it stops
    // having opened `channels/staging` and not read it yet, a signed
    // publish swaps that directory and removes the one it had opened,
    // and the listing must still show every package.
    let env = TestEnv::new();
    keygen(&env, "ci");
    publish_signed_api(&env);
    let arts = artifacts(&env, "1.0.0", 1..=2);
    publish_signed(&env, &arts[0].path, "staging", "ci.key");
    let lister = paused_at(&env, "list:dir", &["list", "--repo", REPO, "--json"]);
    publish_signed(&env, &arts[1].path, "staging", "ci.key");
    let listed: Value = serde_json::from_str(&lister.resume().ok().stdout).unwrap();
    let releases: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}+{}",
                e["package"].as_str().unwrap(),
                e["version"].as_str().unwrap(),
                e["build"]
            )
        })
        .collect();
    assert_eq!(
        releases,
        ["api 1.4.2+1", "webapp 1.0.0+1", "webapp 1.0.0+2"]
    );
}

// ---- the agent ----

/// A node whose repository's staging channel is signed with `ci.key`, and
/// which trusts `ci.pub` through agent.toml.
pub fn signed_node() -> Node {
    let mut node = Node::new();
    keygen(&node.env, "ci");
    node.env.set("BERTH_SIGN_KEY", "ci.key");
    write(
        &node.path("/etc/berth/agent.toml"),
        "trusted_keys = [\"/etc/berth/keys/ci.pub\"]\n",
    );
    fs::create_dir_all(node.path("/etc/berth/keys")).unwrap();
    fs::copy(node.env.join("ci.pub"), node.path("/etc/berth/keys/ci.pub")).unwrap();
    node
}

/// `agent --repo repo --channel staging install webapp`, refused with `code`
/// (the node unchanged, no hook run); the run for its message.
fn install_refused(node: &Node, code: i32) -> Run {
    node.refused(
        &["--repo", REPO, "--channel", "staging", "install", "webapp"],
        code,
    )
}

fn index_path(node: &Node, channel: &str) -> PathBuf {
    node.env
        .join(REPO)
        .join(format!("channels/{channel}/webapp.json"))
}

fn sig_path(node: &Node, channel: &str) -> PathBuf {
    node.env
        .join(REPO)
        .join(format!("channels/{channel}/webapp.json.minisig"))
}

#[test]
fn a_node_that_trusts_the_key_installs_and_remembers_the_sequence() {
    let node = signed_node();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    let run = node.installed(&v1);
    assert!(!run.stderr.contains("not authenticated"), "{run}");
    node.assert_current(&v1.vb());
    assert_eq!(
        node.sql("SELECT channel, package, sequence FROM channel_sequences"),
        "staging|webapp|1"
    );
    // The same index again is fine; a newer one raises the floor.
    node.install("webapp", &[]).ok();
    let v2 = rel("1.1.0", 2);
    node.publish(&v2);
    node.install("webapp", &[]).ok();
    node.assert_current(&v2.vb());
    assert_eq!(node.sql("SELECT sequence FROM channel_sequences"), "2");
    assert!(!run.stderr.contains("warning"), "{run}");
    // An index that expires within three days still works, with a warning
    // that the publisher is late re-signing.
    node.env
        .packager(["resign", "--repo", REPO, "--expires", "2d"])
        .ok();
    let run = node.install("webapp", &[]).ok();
    assert_says(
        &run,
        "stderr",
        &[
            "warning: the index of `webapp` in channel `staging` expires at",
            "packager resign",
        ],
    );
}

#[test]
fn an_unsigned_index_is_refused_as_possibly_forged() {
    let mut node = signed_node();
    node.env.unset("BERTH_SIGN_KEY");
    node.publish(&rel("1.0.0", 1));
    let run = install_refused(&node, 5);
    assert_says(
        &run,
        "stderr",
        &[
            "is not signed",
            "webapp.json.minisig",
            "possibly forged",
            "packager resign",
        ],
    );
}

#[test]
fn an_index_signed_by_an_unknown_key_is_refused() {
    let mut node = signed_node();
    keygen(&node.env, "intruder");
    node.env.set("BERTH_SIGN_KEY", "intruder.key");
    node.publish(&rel("1.0.0", 1));
    let run = install_refused(&node, 5);
    assert_says(
        &run,
        "stderr",
        &["forged or tampered", "which is not trusted", "rotated"],
    );
    // `--trusted-key` adds a key on the command line.
    let run = node.agent(&[
        "--repo",
        REPO,
        "--channel",
        "staging",
        "--trusted-key",
        node.env.join("intruder.pub").to_str().unwrap(),
        "install",
        "webapp",
    ]);
    run.ok();
}

#[test]
fn a_tampered_index_is_refused() {
    let node = signed_node();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    node.installed(&v1);
    node.publish(&rel("1.1.0", 2));
    // Point the newest release at the older artifact, keep the signature.
    let path = index_path(&node, "staging");
    let mut idx: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    idx["releases"][1]["sha256"] = idx["releases"][0]["sha256"].clone();
    idx["releases"][1]["size"] = idx["releases"][0]["size"].clone();
    fs::write(&path, serde_json::to_vec_pretty(&idx).unwrap()).unwrap();
    let run = install_refused(&node, 5);
    assert_says(
        &run,
        "stderr",
        &["forged or tampered", "does not match the data"],
    );
    // The publisher's resign signs it again, and says it did not hold.
    let run = node.env.packager(["resign", "--repo", REPO, "--json"]).ok();
    assert_says(
        &run,
        "stderr",
        &["did not verify before it was signed again"],
    );
    let before = run.json()["resigned"][0]["before"].clone();
    assert!(
        before
            .as_str()
            .unwrap()
            .starts_with("signature did not hold: the signature by key"),
        "{run}"
    );
}

#[test]
fn an_index_moved_from_another_channel_is_refused() {
    let node = signed_node();
    node.publish_to(&rel("0.9.0", 1), "dev");
    node.publish(&rel("1.0.0", 2));
    // A genuine, signed index of `dev` served as staging's.
    fs::copy(index_path(&node, "dev"), index_path(&node, "staging")).unwrap();
    fs::copy(sig_path(&node, "dev"), sig_path(&node, "staging")).unwrap();
    let run = install_refused(&node, 5);
    assert_says(
        &run,
        "stderr",
        &["is the index of `webapp` in channel `dev`", "mix-and-match"],
    );
}

#[test]
fn an_expired_index_is_refused() {
    let mut node = signed_node();
    node.publish(&rel("1.0.0", 1));
    let key = node.env.join("ci.key");
    node.env.unset("BERTH_SIGN_KEY");
    node.env
        .packager([
            "resign",
            "--repo",
            REPO,
            "--sign-key",
            key.to_str().unwrap(),
            "--expires",
            "1s",
        ])
        .ok();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let run = install_refused(&node, 5);
    assert_says(
        &run,
        "stderr",
        &["expired at", "ago", "freeze attack", "packager resign"],
    );
}

#[test]
fn an_older_index_replayed_is_refused() {
    let node = signed_node();
    node.publish(&rel("1.0.0", 1));
    let old_index = fs::read(index_path(&node, "staging")).unwrap();
    let old_sig = fs::read(sig_path(&node, "staging")).unwrap();
    let v2 = rel("1.1.0", 2);
    node.publish(&v2);
    node.installed(&v2);
    // A mirror serves the older, genuinely signed index again.
    fs::write(index_path(&node, "staging"), old_index).unwrap();
    fs::write(sig_path(&node, "staging"), old_sig).unwrap();
    let run = install_refused(&node, 5);
    assert_says(
        &run,
        "stderr",
        &[
            "sequence 1, lower than 2",
            "rollback attack",
            "--sequence 3",
        ],
    );
    // The publisher's way out after a real restore from backup.
    node.env
        .packager(["resign", "--repo", REPO, "--sequence", "3"])
        .ok();
    node.install("webapp", &[]).ok();
    assert_eq!(node.sql("SELECT sequence FROM channel_sequences"), "3");
}

#[test]
fn a_download_stops_at_the_size_the_signed_index_gives() {
    let node = signed_node();
    let v1 = rel("1.0.0", 1);
    node.publish(&v1);
    node.installed(&v1);
    let v2 = rel("1.1.0", 2);
    node.publish(&v2);
    let idx: Value =
        serde_json::from_slice(&fs::read(index_path(&node, "staging")).unwrap()).unwrap();
    let sha = idx["releases"][1]["sha256"].as_str().unwrap();
    let blob = node
        .env
        .join(REPO)
        .join(format!("blobs/sha256/{}/{sha}.tar.zst", &sha[..2]));
    // The mirror serves endless bytes in its place (a large file stands
    // in for it here).
    let size = idx["releases"][1]["size"].as_u64().unwrap();
    fs::write(&blob, vec![0u8; (size * 50) as usize]).unwrap();
    // Nothing changes but the cache directory's mtime: the download went
    // to a temp file there, removed when it was stopped.
    let cache = "var/lib/berth/cache";
    let mut before = node.state();
    let run = node
        .agent(&["--repo", REPO, "--channel", "staging", "install", "webapp"])
        .code(1);
    let mut after = node.state();
    assert!(before.files.remove(cache).is_some());
    assert!(after.files.remove(cache).is_some());
    assert_unchanged(&before, &after, &run);
    assert_eq!(
        fs::read_dir(node.path("/var/lib/berth/cache"))
            .unwrap()
            .count(),
        1
    );
    assert_says(
        &run,
        "stderr",
        &[
            "larger than the",
            &format!("{size} bytes its index gives"),
            "download was stopped",
        ],
    );
}

#[test]
fn a_minisign_cli_signature_over_an_index_verifies_in_the_agent() {
    let mut node = signed_node();
    node.publish(&rel("1.0.0", 1));
    // Re-sign the index with a key made and used by the minisign CLI only.
    node.env
        .tool("minisign", ["-G", "-W", "-p", "cli.pub", "-s", "cli.key"])
        .ok();
    let index = index_path(&node, "staging");
    node.env
        .tool(
            "minisign",
            ["-S", "-s", "cli.key", "-m", index.to_str().unwrap()],
        )
        .ok();
    node.env.unset("BERTH_SIGN_KEY");
    // The node trusts only the CLI's key now.
    write(
        &node.path("/etc/berth/agent.toml"),
        &format!("trusted_keys = [\"{}\"]\n", "/etc/berth/keys/cli.pub"),
    );
    fs::copy(
        node.env.join("cli.pub"),
        node.path("/etc/berth/keys/cli.pub"),
    )
    .unwrap();
    node.install("webapp", &[]).ok();
    node.assert_current("1.0.0+1");
}

#[test]
fn key_rotation_keeps_nodes_installing_throughout() {
    let mut node = signed_node();
    node.publish(&rel("1.0.0", 1));
    node.install("webapp", &[]).ok();
    // 1. A new key; nodes trust both.
    keygen(&node.env, "ci-2027");
    fs::copy(
        node.env.join("ci-2027.pub"),
        node.path("/etc/berth/keys/ci-2027.pub"),
    )
    .unwrap();
    write(
        &node.path("/etc/berth/agent.toml"),
        "trusted_keys = [\"/etc/berth/keys/ci.pub\", \"/etc/berth/keys/ci-2027.pub\"]\n",
    );
    node.install("webapp", &[]).ok();
    // 2. The publisher re-signs everything with the new key and uses it.
    node.env.set("BERTH_SIGN_KEY", "ci-2027.key");
    node.env.packager(["resign", "--repo", REPO]).ok();
    node.publish(&rel("1.1.0", 2));
    node.install("webapp", &[]).ok();
    node.assert_current("1.1.0+2");
    // 3. Nodes drop the old key; an index still signed by it is refused.
    write(
        &node.path("/etc/berth/agent.toml"),
        "trusted_keys = [\"/etc/berth/keys/ci-2027.pub\"]\n",
    );
    node.install("webapp", &[]).ok();
    node.env.set("BERTH_SIGN_KEY", "ci.key");
    node.env.packager(["resign", "--repo", REPO]).ok();
    let run = install_refused(&node, 5);
    assert_says(&run, "stderr", &["which is not trusted"]);
}

#[test]
fn a_missing_trusted_key_file_is_a_clear_error() {
    let node = signed_node();
    node.publish(&rel("1.0.0", 1));
    fs::remove_file(node.path("/etc/berth/keys/ci.pub")).unwrap();
    let run = install_refused(&node, 2);
    assert_says(
        &run,
        "stderr",
        &["trusted key", "ci.pub", "cannot be used", "trusted_keys"],
    );
}

#[test]
fn without_trusted_keys_the_agent_warns_once_per_run() {
    let node = Node::new();
    let v1 = rel("1.0.0", 1);
    node.publish_to(&v1, "dev");
    node.publish(&v1);
    let run = node
        .agent(&[
            "--repo",
            REPO,
            "--channel",
            "hotfix",
            "--channel",
            "staging",
            "install",
            "webapp",
        ])
        .ok();
    assert_eq!(
        run.stderr.matches("is not authenticated").count(),
        1,
        "{run}"
    );
    assert_says(
        &run,
        "stderr",
        &["warning: the repository", "trusted_keys", "docs/trust.md"],
    );
    // A command that reads no repository says nothing of it.
    let run = node.agent(&["status"]).ok();
    assert!(!run.stderr.contains("not authenticated"), "{run}");
}

#[test]
fn agents_reading_while_signed_publishers_write_never_see_a_mismatch() {
    // A publisher swaps a new index and signature in; an agent that read
    // the index before the swap and the signature after reads again
    // instead of calling it tampering.
    let node = signed_node();
    node.publish(&rel("1.0.0", 1));
    let builds: Vec<u64> = (2..=13).collect();
    let arts = artifacts(&node.env, "1.1.0", builds);
    let mut publishers: Vec<std::process::Child> = arts
        .iter()
        .map(|a| {
            node.env
                .cmd("packager")
                .args(["publish", &a.path, "--repo", REPO, "--channel", "staging"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut reads = 0;
    while publishers
        .iter_mut()
        .any(|p| p.try_wait().unwrap().is_none())
        || reads < 10
    {
        node.install("webapp", &["--dry-run"]).ok();
        reads += 1;
    }
    for mut p in publishers {
        assert!(p.wait().unwrap().success());
    }
    node.install("webapp", &["--dry-run"]).ok();
}
