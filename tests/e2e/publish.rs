//! `packager publish`: creating a repository, content-addressed blobs, the
//! channel index, idempotent re-runs and immutable releases.

use std::fs;
use std::io::{Seek, SeekFrom, Write};

use berth_tests::{TestEnv, tree_state, write};
use serde_json::Value;

use crate::repo_support::{
    Artifact, REPO, artifact, artifacts, assert_says, big_app, blob_path, blobs, digests, index,
    index_releases, killed_at, paused_at, publish, published, refused, same_release_twice,
    version_builds,
};

/// Checks a first publish's report and the tree it left at `repo_dir`.
#[track_caller]
fn assert_created(repo_dir: &std::path::Path, art: &Artifact, report: &Value) {
    assert_eq!(report["created_repository"], true, "{report}");
    assert_eq!(report["changed"], true);
    assert_eq!(report["blob"], "uploaded");
    assert_eq!(report["channel"], "staging");
    assert_eq!(report["name"], "webapp");
    assert_eq!(report["version"], art.version.as_str());
    assert_eq!(report["build"], art.build);
    assert_eq!(report["sha256"], art.sha256.as_str());
    assert_eq!(report["size"], art.size);
    assert_eq!(report["sequence"], 1);
    assert_eq!(report["signed_by"], Value::Null);
    assert!(repo_dir.join("repo.toml").is_file());
    assert_eq!(blobs(repo_dir), digests(&[art]));
    assert!(blob_path(repo_dir, &art.sha256).is_file());
    assert_eq!(berth_tests::names(&repo_dir.join("channels")), ["staging"]);
    assert_eq!(
        berth_tests::names(&repo_dir.join("channels/staging")),
        ["webapp.json"]
    );
}

#[test]
fn publish_into_a_missing_directory_creates_the_repository() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    let run = publish(&env, &art, REPO, "staging").ok();
    assert_says(&run, "stderr", &["created a new repository"]);
    assert_created(&env.join(REPO), &art, &run.json());
    let repo_toml = fs::read_to_string(env.join("repo/repo.toml")).unwrap();
    assert!(repo_toml.contains("format = 1"), "{repo_toml}");
}

#[test]
fn publish_into_an_existing_empty_directory_creates_the_repository() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    fs::create_dir(env.join(REPO)).unwrap();
    let run = publish(&env, &art, REPO, "staging").ok();
    assert_says(&run, "stderr", &["created a new repository"]);
    assert_created(&env.join(REPO), &art, &run.json());
}

#[test]
fn a_first_publish_killed_before_repo_toml_is_finished_by_the_next() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    let args = ["publish", &art.path, "--repo", REPO, "--channel", "staging"];
    killed_at(&env, "repo:dirs", &args);
    assert!(env.join("repo/channels").is_dir());
    assert!(!env.join("repo/repo.toml").exists());
    // What a creator killed while writing repo.toml leaves as well.
    write(&env.join("repo/.tmp-A1b2C3"), "format = 1\n");
    // Not a repository yet: readers say so.
    let run = env.packager(["list", "--repo", REPO]).code(2);
    assert_says(&run, "stderr", &["there is no berth repository"]);

    let run = publish(&env, &art, REPO, "staging").ok();
    assert_says(&run, "stderr", &["created a new repository"]);
    assert_created(&env.join(REPO), &art, &run.json());
}

#[test]
fn an_artifact_changed_while_it_is_published_is_refused_and_nothing_is_stored() {
    let env = TestEnv::new();
    published(&env, &artifact(&env, 1), "staging");
    big_app(&env, "2.0", 3);
    let art = artifacts(&env, "2.0", [2]).remove(0);
    // Every path, and every file's bytes and times; a directory's mtime
    // moves with the temp file that came and went.
    let files = || {
        let mut state = tree_state(&env.join(REPO));
        for v in state.values_mut() {
            if v.starts_with("40") {
                v.truncate(5);
            }
        }
        state
    };
    let before = files();
    let paused = paused_at(
        &env,
        "blob:partial",
        &["publish", &art.path, "--repo", REPO, "--channel", "staging"],
    );
    // A megabyte is stored; the rest of the file changes in place, as
    // when a build writes into the artifact being published.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(env.join(&art.path))
        .unwrap();
    file.seek(SeekFrom::End(-16)).unwrap();
    file.write_all(&[0; 16]).unwrap();
    drop(file);
    let run = paused.resume().code(2);
    assert_says(
        &run,
        "stderr",
        &[
            &format!("blob {} was not stored", art.sha256),
            "changed after it was hashed",
            "publish it again once it is complete",
        ],
    );
    assert_eq!(
        before,
        files(),
        "the refused publish changed the repository"
    );
}

#[test]
fn a_file_url_names_the_same_repository_as_its_path() {
    let env = TestEnv::new();
    let arts = artifacts(&env, "1.4.2", [1, 2]);
    let url = format!("file://{}", env.join("deep/repo").display());
    let run = publish(&env, &arts[0], &url, "staging").ok();
    assert_says(&run, "stderr", &["created a new repository"]);
    assert_created(&env.join("deep/repo"), &arts[0], &run.json());

    let again = publish(&env, &arts[0], "deep/repo", "staging").ok().json();
    assert_eq!(again["changed"], false, "the path sees what the URL wrote");
    let second = publish(&env, &arts[1], &url, "staging").ok().json();
    assert_eq!(second["created_repository"], false);
    assert_eq!(second["sequence"], 2);
}

#[test]
fn the_blob_is_the_artifact_byte_for_byte() {
    let env = TestEnv::new();
    let art = artifact(&env, 7);
    published(&env, &art, "staging");
    let blob = blob_path(&env.join(REPO), &art.sha256);
    assert_eq!(
        fs::read(&blob).unwrap(),
        fs::read(env.join(&art.path)).unwrap()
    );
    let sum = env.tool("sha256sum", [blob.to_str().unwrap()]).ok().stdout;
    assert_eq!(sum.split_whitespace().next(), Some(art.sha256.as_str()));
}

#[test]
fn publishing_the_same_artifact_again_is_unchanged_and_writes_nothing() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    let before = tree_state(&env.join(REPO));

    let human = env
        .packager(["publish", &art.path, "--repo", REPO, "--channel", "staging"])
        .ok();
    assert!(human.stdout.starts_with("unchanged"), "{human}");
    assert!(!human.stderr.contains("created"), "{human}");
    let v = published(&env, &art, "staging");
    assert_eq!(v["changed"], false);
    assert_eq!(v["blob"], "unchanged");
    assert_eq!(v["created_repository"], false);
    assert_eq!(v["sequence"], 1);
    assert_eq!(
        before,
        tree_state(&env.join(REPO)),
        "a re-run wrote something"
    );
}

#[test]
fn a_second_channel_gets_its_own_index_and_reuses_the_blob() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    let blob_tree = tree_state(&env.join("repo/blobs"));

    let human = env
        .packager(["publish", &art.path, "--repo", REPO, "--channel", "dev"])
        .ok();
    assert_says(
        &human,
        "stdout",
        &["published webapp@1.4.2+1 to dev", "already present"],
    );
    assert_eq!(index(&env, "dev")["sequence"], 1);
    assert_eq!(index(&env, "dev")["channel"], "dev");
    assert_eq!(index_releases(&env, "dev"), ["1.4.2+1"]);
    assert_eq!(index_releases(&env, "staging"), ["1.4.2+1"]);
    assert_eq!(blobs(&env.join(REPO)), digests(&[&art]));
    assert_eq!(
        blob_tree,
        tree_state(&env.join("repo/blobs")),
        "the blob was rewritten"
    );

    let v = publish(&env, &art, REPO, "qa").ok().json();
    assert_eq!(v["blob"], "unchanged");
    assert_eq!(v["changed"], true, "the qa index changed");
}

#[test]
fn the_same_release_with_other_bytes_is_refused_in_every_channel() {
    let env = TestEnv::new();
    let (first, second) = same_release_twice(&env, 1);
    published(&env, &first, "staging");
    for channel in ["staging", "dev"] {
        let args = [
            "publish",
            &second.path,
            "--repo",
            REPO,
            "--channel",
            channel,
        ];
        let run = refused(&env, &args, 2);
        assert_says(
            &run,
            "stderr",
            &[
                "webapp@1.4.2+1",
                "immutable",
                &first.sha256,
                &second.sha256,
                "new build number",
            ],
        );
    }
    assert_eq!(blobs(&env.join(REPO)), digests(&[&first]));
}

#[test]
fn the_index_records_every_release_field_and_counts_writes() {
    let mut env = TestEnv::new();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    env.set("GIT_COMMIT", commit);
    let arts = artifacts(&env, "1.4.2", [1, 2]);
    for (n, art) in arts.iter().enumerate() {
        assert_eq!(published(&env, art, "staging")["sequence"], n + 1);
    }
    let ix = index(&env, "staging");
    assert_eq!(ix["format"], 1);
    assert_eq!(ix["channel"], "staging");
    assert_eq!(ix["package"], "webapp");
    assert_eq!(ix["sequence"], 2);
    assert!(
        ix["updated"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{ix}"
    );
    let releases = ix["releases"].as_array().unwrap();
    assert_eq!(
        index_releases(&env, "staging"),
        version_builds(&[&arts[0], &arts[1]])
    );
    for (r, art) in releases.iter().zip(&arts) {
        assert_eq!(r["version"], "1.4.2");
        assert_eq!(r["build"], art.build);
        assert_eq!(r["sha256"], art.sha256.as_str());
        assert_eq!(r["size"], art.size);
        assert_eq!(r["size"], fs::metadata(env.join(&art.path)).unwrap().len());
        assert!(
            r["published"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{r}"
        );
        assert_eq!(r["promoted_from"], Value::Null);
        assert_eq!(r["yanked"], false);
        assert_eq!(r["source"]["commit"], commit);
    }
}

#[test]
fn berth_repo_stands_in_for_the_repo_flag() {
    let mut env = TestEnv::new();
    let arts = artifacts(&env, "1.4.2", [1, 2]);
    env.set("BERTH_REPO", REPO);
    let v = env
        .packager(["publish", &arts[0].path, "--channel", "staging", "--json"])
        .ok()
        .json();
    assert_eq!(v["created_repository"], true);
    assert!(env.join("repo/repo.toml").is_file());
    let listed = env.packager(["list", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // The flag wins over the variable.
    env.set("BERTH_REPO", "elsewhere");
    publish(&env, &arts[1], REPO, "staging").ok();
    assert!(!env.join("elsewhere").exists());
    assert_eq!(index_releases(&env, "staging"), ["1.4.2+1", "1.4.2+2"]);
}
