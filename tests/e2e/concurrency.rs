//! Concurrent writers: many `packager publish` processes at once lose no
//! entry, create one repository, store a blob once, keep a release
//! immutable and leave no temp files; gc racing publishers or promotes never
//! leaves an index entry without its blob.

use std::collections::BTreeSet;

use berth_tests::{Run, TestEnv};
use serde_json::Value;

use crate::repo_support::{
    Artifact, REPO, args, artifact, artifacts, blob_path, blobs, digests, index, index_releases,
    list, published, run_all, same_release_twice, set_repo_toml, temp_files,
};

fn publish_args(art: &Artifact, repo: &str) -> Vec<String> {
    args(&[
        "publish",
        &art.path,
        "--repo",
        repo,
        "--channel",
        "staging",
        "--json",
    ])
}

/// Runs one publisher per artifact, all at once; each must succeed.
fn publish_at_once(env: &TestEnv, arts: &[Artifact], repo: &str) -> Vec<Value> {
    let commands: Vec<Vec<String>> = arts.iter().map(|a| publish_args(a, repo)).collect();
    run_all(env, &commands)
        .into_iter()
        .map(|run| run.ok().json())
        .collect()
}

/// The repository holds exactly `arts` in staging, one blob each (plus
/// those of `others`), and no writer's temp file.
#[track_caller]
fn assert_holds_exactly(env: &TestEnv, arts: &[Artifact], others: &[Artifact]) {
    let want: Vec<String> = {
        let mut w: Vec<&Artifact> = arts.iter().collect();
        w.sort_by_key(|a| a.build);
        w.dedup_by_key(|a| a.build);
        w.iter().map(|a| a.version_build()).collect()
    };
    assert_eq!(index_releases(env, "staging"), want);
    assert_eq!(index(env, "staging")["sequence"], want.len());
    assert_eq!(
        blobs(&env.join(REPO)),
        digests(&arts.iter().chain(others).collect::<Vec<_>>())
    );
    assert_eq!(
        temp_files(&env.join(REPO)),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn twenty_publishers_into_one_channel_lose_no_entry() {
    let env = TestEnv::new();
    let arts = artifacts(&env, "1.4.2", 1..=20);
    let seed = artifacts(&env, "0.1", [1]);
    published(&env, &seed[0], "dev");

    let reports = publish_at_once(&env, &arts, REPO);
    assert!(reports.iter().all(|r| r["changed"] == true));
    let sequences: BTreeSet<u64> = reports
        .iter()
        .map(|r| r["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sequences,
        (1..=20).collect(),
        "every write got its own sequence"
    );
    assert_holds_exactly(&env, &arts, &seed);
}

#[test]
fn twenty_publishers_into_a_missing_directory_create_one_repository() {
    let env = TestEnv::new();
    let arts = artifacts(&env, "1.4.2", 1..=20);
    let reports = publish_at_once(&env, &arts, REPO);
    let created = reports
        .iter()
        .filter(|r| r["created_repository"] == true)
        .count();
    assert_eq!(created, 1, "exactly one publisher created the repository");
    assert_holds_exactly(&env, &arts, &[]);

    // repo.toml is whole: the same bytes a lone first publish writes.
    let lone = artifact(&env, 99);
    crate::repo_support::publish(&env, &lone, "lone", "staging").ok();
    assert_eq!(
        std::fs::read(env.join("repo/repo.toml")).unwrap(),
        std::fs::read(env.join("lone/repo.toml")).unwrap()
    );
}

#[test]
fn twenty_publishers_announce_the_new_repository_once() {
    let env = TestEnv::new();
    let arts = artifacts(&env, "1.4.2", 1..=20);
    let human: Vec<Vec<String>> = arts
        .iter()
        .map(|a| {
            let mut cmd = publish_args(a, REPO);
            cmd.pop(); // --json
            cmd
        })
        .collect();
    let runs: Vec<Run> = run_all(&env, &human).into_iter().map(Run::ok).collect();
    let announced = runs
        .iter()
        .filter(|r| r.stderr.contains("created a new repository"))
        .count();
    assert_eq!(announced, 1, "{runs:#?}");
}

#[test]
fn ten_publishers_of_the_same_artifact_store_it_once() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    let same = vec![art.clone(); 10];
    let reports = publish_at_once(&env, &same, REPO);
    let uploaded = reports.iter().filter(|r| r["blob"] == "uploaded").count();
    assert_eq!(uploaded, 1, "the blob was written once: {reports:#?}");
    assert!(reports.iter().all(|r| r["sequence"] == 1), "{reports:#?}");
    assert_holds_exactly(&env, &same, &[]);
}

#[test]
fn gc_racing_publishers_never_leaves_an_entry_without_its_blob() {
    let env = TestEnv::new();
    let arts = artifacts(&env, "1.4.2", 1..=20);
    published(&env, &arts[0], "staging");
    let mut commands: Vec<Vec<String>> = arts[1..].iter().map(|a| publish_args(a, REPO)).collect();
    for slot in [0, 5, 10, 15] {
        commands.insert(slot, args(&["gc", "--repo", REPO]));
    }
    for run in run_all(&env, &commands) {
        run.ok();
    }
    assert_holds_exactly(&env, &arts, &[]);
    assert_every_entry_has_its_blob(&env);
}

/// Every entry of every channel's index points at a blob that is there.
#[track_caller]
fn assert_every_entry_has_its_blob(env: &TestEnv) {
    let dangling: Vec<String> = list(env, None)
        .iter()
        .filter(|e| !blob_path(&env.join(REPO), e["sha256"].as_str().unwrap()).is_file())
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap().to_owned();
            format!("{} {}+{}", text("channel"), text("version"), e["build"])
        })
        .collect();
    assert!(
        dangling.is_empty(),
        "entries whose blob gc deleted: {dangling:#?}"
    );
}

#[test]
fn promotes_racing_gc_never_reference_a_deleted_blob() {
    let env = TestEnv::new();
    let arts = artifacts(&env, "1.4.2", 1..=30);
    publish_at_once(&env, &arts, REPO);
    // staging keeps one release: every gc sweeps the blobs of the others
    // that production does not reference yet.
    set_repo_toml(
        &env,
        "format = 1\n[channels.production]\npromote_only = true\n[channels.staging]\nkeep = 1\n",
    );
    let mut commands: Vec<Vec<String>> = arts[..29]
        .iter()
        .map(|a| {
            let release = a.release();
            args(&[
                "promote",
                &release,
                "--from",
                "staging",
                "--to",
                "production",
                "--repo",
                REPO,
            ])
        })
        .collect();
    for slot in [3, 9, 15, 21] {
        commands.insert(slot, args(&["gc", "--repo", REPO]));
    }
    for run in run_all(&env, &commands) {
        // A promote that comes after gc dropped its release may be refused.
        if run.code != 0 {
            assert!(
                run.code == 2 && run.stderr.contains("is not in channel"),
                "{run}"
            );
        }
    }
    assert_every_entry_has_its_blob(&env);
}

#[test]
fn racing_publishers_of_one_release_with_other_bytes_leave_one_digest() {
    let env = TestEnv::new();
    let (a, b) = same_release_twice(&env, 50);
    let seed = artifact(&env, 1);
    published(&env, &seed, "dev");
    let commands: Vec<Vec<String>> = (1..=16)
        .flat_map(|n| [(&a, format!("a{n}")), (&b, format!("b{n}"))])
        .map(|(art, channel)| args(&["publish", &art.path, "--repo", REPO, "--channel", &channel]))
        .collect();
    for run in run_all(&env, &commands) {
        if run.code != 0 {
            assert!(run.code == 2 && run.stderr.contains("immutable"), "{run}");
        }
    }
    let digests: BTreeSet<String> = list(&env, None)
        .iter()
        .filter(|e| e["build"] == 50)
        .map(|e| e["sha256"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        digests.len(),
        1,
        "webapp@1.4.2+50 is in the repository with {} different digests",
        digests.len()
    );
}
