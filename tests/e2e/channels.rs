//! Channels: `promote`, `yank`, `list`, `show`, version ordering and the
//! promote-only policy of repo.toml.

use berth_tests::{TestEnv, tree_state};
use serde_json::Value;

use crate::repo_support::{
    REPO, artifact, artifacts, assert_says, blobs, digests, index, index_releases, list, newest,
    ok_json, promoted, published, refused, set_repo_toml, yanked,
};

#[test]
fn promote_copies_the_entry_and_no_blob() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    let blob_tree = tree_state(&env.join("repo/blobs"));

    let v = promoted(&env, &art, "staging", "production");
    assert_eq!(v["changed"], true);
    assert_eq!(v["from"], "staging");
    assert_eq!(v["to"], "production");
    assert_eq!(v["sha256"], art.sha256.as_str());
    assert_eq!(v["sequence"], 1);

    let staged = &index(&env, "staging")["releases"][0];
    let prod = &index(&env, "production")["releases"][0];
    for field in ["version", "build", "sha256", "size", "source", "yanked"] {
        assert_eq!(prod[field], staged[field], "{field} differs after promote");
    }
    assert_eq!(prod["promoted_from"], "staging");
    assert_eq!(blobs(&env.join(REPO)), digests(&[&art]));
    assert_eq!(
        blob_tree,
        tree_state(&env.join("repo/blobs")),
        "promote touched a blob"
    );
}

#[test]
fn promoting_again_is_unchanged_and_writes_nothing() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    promoted(&env, &art, "staging", "production");
    let before = tree_state(&env.join(REPO));

    let human = env
        .packager([
            "promote",
            &art.release(),
            "--from",
            "staging",
            "--to",
            "production",
            "--repo",
            REPO,
        ])
        .ok();
    assert!(human.stdout.starts_with("unchanged"), "{human}");
    let v = promoted(&env, &art, "staging", "production");
    assert_eq!(v["changed"], false);
    assert_eq!(v["sequence"], 1);
    assert_eq!(before, tree_state(&env.join(REPO)));
}

#[test]
fn a_yanked_release_cannot_be_promoted() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    yanked(&env, &art, "staging", false);
    let release = art.release();
    let run = refused(
        &env,
        &[
            "promote",
            &release,
            "--from",
            "staging",
            "--to",
            "production",
            "--repo",
            REPO,
        ],
        2,
    );
    assert_says(
        &run,
        "stderr",
        &["webapp@1.4.2+1", "is yanked", "`staging`", "--undo"],
    );
    assert!(!env.join("repo/channels/production").exists());
}

#[test]
fn yank_marks_a_release_and_newest_moves_back() {
    let env = TestEnv::new();
    let arts = artifacts(&env, "1.4.2", [1, 2]);
    for art in &arts {
        published(&env, art, "staging");
    }
    assert_eq!(newest(&env, "staging").as_deref(), Some("1.4.2+2"));

    let v = yanked(&env, &arts[1], "staging", false);
    assert_eq!(
        (v["yanked"].clone(), v["changed"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(v["sequence"], 3);
    let entries = list(&env, Some("staging"));
    assert_eq!(entries[1]["yanked"], true);
    assert_eq!(entries[0]["yanked"], false);
    assert_eq!(newest(&env, "staging").as_deref(), Some("1.4.2+1"));
    assert_eq!(index(&env, "staging")["releases"][1]["yanked"], true);

    let before = tree_state(&env.join(REPO));
    let again = yanked(&env, &arts[1], "staging", false);
    assert_eq!(again["changed"], false);
    assert_eq!(before, tree_state(&env.join(REPO)), "a second yank wrote");

    let undo = yanked(&env, &arts[1], "staging", true);
    assert_eq!(
        (undo["yanked"].clone(), undo["changed"].clone()),
        (false.into(), true.into())
    );
    assert_eq!(undo["sequence"], 4);
    assert_eq!(newest(&env, "staging").as_deref(), Some("1.4.2+2"));
    assert!(
        blobs(&env.join(REPO)).contains(&arts[1].sha256),
        "yank keeps the blob"
    );
}

#[test]
fn yanking_every_release_leaves_no_newest() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    yanked(&env, &art, "staging", false);
    assert_eq!(newest(&env, "staging"), None);
}

/// staging: 1.4.2+1 and +2; production: +1 promoted.
fn two_channels(env: &TestEnv) -> Vec<crate::repo_support::Artifact> {
    let arts = artifacts(env, "1.4.2", [1, 2]);
    for art in &arts {
        published(env, art, "staging");
    }
    promoted(env, &arts[0], "staging", "production");
    arts
}

#[test]
fn list_prints_a_table_of_every_channel_and_filters_by_channel() {
    let env = TestEnv::new();
    let arts = two_channels(&env);
    let all = env.packager(["list", "--repo", REPO]).ok();
    let lines: Vec<&str> = all.stdout.lines().collect();
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(&head[..3], ["CHANNEL", "PACKAGE", "RELEASE"], "{all}");
    let rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().take(3).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["production", "webapp", "1.4.2+1"],
            ["staging", "webapp", "1.4.2+1"],
            ["staging", "webapp", "1.4.2+2"],
        ]
    );
    assert_says(
        &all,
        "stdout",
        &[&arts[0].sha256[..12], "from staging", "newest"],
    );

    let staging = env
        .packager(["list", "--repo", REPO, "--channel", "staging"])
        .ok();
    assert_eq!(staging.stdout.lines().count(), 3, "{staging}");
    assert!(!staging.stdout.contains("production"), "{staging}");

    let json = list(&env, Some("production"));
    assert_eq!(json.len(), 1);
    let e = &json[0];
    for key in [
        "channel",
        "package",
        "version",
        "build",
        "sha256",
        "size",
        "published",
        "promoted_from",
        "yanked",
        "newest",
        "source",
    ] {
        assert!(e.get(key).is_some(), "list --json lacks `{key}`: {e}");
    }
    assert_eq!(e["channel"], "production");
    assert_eq!(e["promoted_from"], "staging");
    assert_eq!(e["sha256"], arts[0].sha256.as_str());
    assert_eq!(e["newest"], true);
    assert_eq!(list(&env, None).len(), 3);
}

#[test]
fn list_of_a_channel_without_releases_names_the_channel() {
    let env = TestEnv::new();
    two_channels(&env);
    let run = env
        .packager(["list", "--repo", REPO, "--channel", "hotfix"])
        .ok();
    assert_eq!(run.stdout, "");
    assert!(
        !run.stderr.contains("the repository holds no releases"),
        "the repository does hold releases, only the channel is empty:\n{run}"
    );
    assert_says(&run, "stderr", &["`hotfix`"]);
    assert_eq!(list(&env, Some("hotfix")), Vec::<Value>::new());
}

#[test]
fn show_package_lists_the_entries_of_every_channel() {
    let env = TestEnv::new();
    two_channels(&env);
    let human = env.packager(["show", "webapp", "--repo", REPO]).ok();
    assert_says(
        &human,
        "stdout",
        &["CHANNEL", "production", "staging", "1.4.2+2"],
    );
    let v = ok_json(&env, &["show", "webapp", "--repo", REPO]);
    let seen: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["channel"].as_str().unwrap().to_owned(),
                format!("{}+{}", e["version"].as_str().unwrap(), e["build"]),
            )
        })
        .collect();
    let want = [
        ("production", "1.4.2+1"),
        ("staging", "1.4.2+1"),
        ("staging", "1.4.2+2"),
    ];
    assert_eq!(seen, want.map(|(c, r)| (c.to_owned(), r.to_owned())));
}

#[test]
fn show_release_prints_its_manifest_and_the_channels_holding_it() {
    let env = TestEnv::new();
    let arts = two_channels(&env);
    let release = arts[0].release();
    let human = env.packager(["show", &release, "--repo", REPO]).ok();
    assert_says(
        &human,
        "stdout",
        &[
            "webapp@1.4.2+1",
            "Example web application",
            &arts[0].sha256,
            "/srv/webapp",
            "health",
            "data epoch",
            "in production",
            "from staging",
            "in staging",
        ],
    );

    let v = ok_json(&env, &["show", &release, "--repo", REPO]);
    assert_eq!(v["name"], "webapp");
    assert_eq!(v["sha256"], arts[0].sha256.as_str());
    assert_eq!(v["size"], arts[0].size);
    assert_eq!(v["description"], "Example web application");
    assert_eq!(v["install"]["target"], "/srv/webapp");
    assert_eq!(v["hooks"]["health"], "hooks/health");
    assert_eq!(v["rollback"]["data_epoch"], 1);
    let channels: Vec<&str> = v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["production", "staging"]);
    assert_eq!(v["channels"][0]["promoted_from"], "staging");
    let verified = ok_json(&env, &["verify", &arts[0].path]);
    assert_eq!(
        v["files"], verified["files"],
        "files counts the manifest's entries"
    );

    let only_staging = ok_json(&env, &["show", &arts[1].release(), "--repo", REPO]);
    assert_eq!(only_staging["channels"].as_array().unwrap().len(), 1);
}

#[test]
fn newest_follows_version_order_not_publish_order() {
    let env = TestEnv::new();
    let v1_10 = artifacts(&env, "1.10", [1, 2]);
    let v1_9 = artifacts(&env, "1.9", [5]);
    for art in [&v1_10[1], &v1_9[0], &v1_10[0]] {
        published(&env, art, "staging");
    }
    assert_eq!(
        index_releases(&env, "staging"),
        ["1.9+5", "1.10+1", "1.10+2"]
    );
    assert_eq!(newest(&env, "staging").as_deref(), Some("1.10+2"));
    yanked(&env, &v1_10[1], "staging", false);
    assert_eq!(newest(&env, "staging").as_deref(), Some("1.10+1"));
    yanked(&env, &v1_10[0], "staging", false);
    assert_eq!(newest(&env, "staging").as_deref(), Some("1.9+5"));
}

fn publish_args<'a>(art: &'a crate::repo_support::Artifact, channel: &'a str) -> [&'a str; 6] {
    ["publish", &art.path, "--repo", REPO, "--channel", channel]
}

#[test]
fn a_new_repository_makes_production_promote_only() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    let run = refused(&env, &publish_args(&art, "production"), 2);
    assert_says(
        &run,
        "stderr",
        &["`production`", "promote-only", "packager promote"],
    );
    promoted(&env, &art, "staging", "production");
}

#[test]
fn the_promote_only_hint_names_the_refused_channel() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    let run = refused(&env, &publish_args(&art, "production"), 2);
    assert_says(
        &run,
        "stderr",
        &["packager promote webapp@1.4.2+1 --from staging --to production"],
    );
}

#[test]
fn publish_into_production_of_a_missing_repository_creates_nothing() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    let run = refused(&env, &publish_args(&art, "production"), 2);
    assert_says(&run, "stderr", &["promote-only", "packager promote"]);
    assert!(
        !env.join(REPO).exists(),
        "the refused publish created the repository"
    );

    std::fs::create_dir(env.join(REPO)).unwrap();
    refused(&env, &publish_args(&art, "production"), 2);
    assert_eq!(berth_tests::names(&env.join(REPO)), Vec::<String>::new());
}

#[test]
fn a_hand_edited_repo_toml_policy_is_honoured() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    set_repo_toml(
        &env,
        "format = 1\n\n[channels.release]\npromote_only = true\n",
    );
    let run = refused(&env, &publish_args(&art, "release"), 2);
    assert_says(&run, "stderr", &["`release`", "promote-only"]);
    // production is no longer named, so it takes publishes.
    published(&env, &art, "production");
    promoted(&env, &art, "staging", "release");
    assert_eq!(index_releases(&env, "release"), ["1.4.2+1"]);
}

#[test]
fn an_invalid_repo_toml_is_reported_with_its_reason() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    let cases = [
        (
            "format = 1\n[channels.production]\npromote_only = \"yes\"\n",
            "boolean",
        ),
        ("format = 1\n[channels.Prod]\n", "`Prod`"),
        ("format = 7\n", "format 7"),
        ("garbage [[\n", "TOML"),
    ];
    for (text, reason) in cases {
        set_repo_toml(&env, text);
        for cmd in [
            &["list", "--repo", REPO][..],
            &publish_args(&art, "dev"),
            &["gc", "--repo", REPO, "--keep", "1"],
        ] {
            let run = refused(&env, cmd, 2);
            assert_says(
                &run,
                "stderr",
                &["`repo.toml`", "is invalid", reason, "hint:"],
            );
        }
    }
}
