//! Concurrent writers: many `packager publish` processes at once lose no
//! entry, create one repository, store a blob once, keep a release
//! immutable and leave no temp files; gc racing publishers, promotes and
//! yanks loses nothing a channel references and never leaves an index
//! entry without its blob, in free-running rounds and with each race
//! window held open (`BERTH_FAULT_STOP`).

use std::collections::BTreeSet;

use berth_tests::{Run, TestEnv};
use serde_json::Value;

use crate::repo_support::{
    Artifact, REPO, RepoCheck, args, artifact, artifacts, assert_says, blob_path, blobs, digests,
    index, index_releases, list, ok_json, paused_at, promote_args, published, run_all,
    same_release_twice, set_repo_toml, temp_files,
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

/// What the gc reports of a round say they did: the releases dropped
/// (`channel VERSION+BUILD`) and the digests deleted.
fn gc_effects(reports: &[Value]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut dropped = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    for r in reports {
        for d in r["dropped"].as_array().unwrap() {
            dropped.insert(format!(
                "{} {}",
                d["channel"].as_str().unwrap(),
                d["release"].as_str().unwrap()
            ));
        }
        for d in r["deleted"].as_array().unwrap() {
            deleted.insert(d["sha256"].as_str().unwrap().to_owned());
        }
    }
    (dropped, deleted)
}

/// The `channel VERSION+BUILD` of every entry, and every referenced digest.
fn entries(env: &TestEnv) -> (BTreeSet<String>, BTreeSet<String>) {
    let listed = list(env, None);
    let entries = listed
        .iter()
        .map(|e| {
            format!(
                "{} {}+{}",
                e["channel"].as_str().unwrap(),
                e["version"].as_str().unwrap(),
                e["build"]
            )
        })
        .collect();
    let digests = listed
        .iter()
        .map(|e| e["sha256"].as_str().unwrap().to_owned())
        .collect();
    (entries, digests)
}

/// A refusal a racing command may meet: its release was dropped by a gc,
/// or yanked by a yank, in the meantime.
#[track_caller]
fn raced_out(run: &Run) {
    assert!(
        run.code == 2
            && (run.stderr.contains("is not in channel") || run.stderr.contains("is yanked")),
        "{run}"
    );
}

#[test]
fn gc_racing_publishers_yanks_and_promotes_never_leaves_an_entry_without_its_blob() {
    // Rounds of 8 publishers, 2 promotes, 2 yanks and 3 gc with a small
    // retention, all started at once. After each round the repository is
    // whole, and every release a publisher or a promote added is still in
    // its channel unless a gc reported dropping it: nothing is lost.
    let env = TestEnv::new();
    let rounds = 5;
    let arts = artifacts(&env, "1.4.2", 1..=(8 * rounds as u64 + 2));
    published(&env, &arts[0], "staging");
    published(&env, &arts[1], "staging");
    let mut check = RepoCheck::new(env.join(REPO), None);
    let (mut reuploaded, mut dropped_fresh, mut raced) = (0, 0, 0);
    for round in 0..rounds {
        let fresh = &arts[2 + 8 * round..2 + 8 * (round + 1)];
        let (before, _) = entries(&env);
        let staged: Vec<&str> = before
            .iter()
            .filter_map(|e| e.strip_prefix("staging "))
            .collect();
        let mut commands: Vec<Vec<String>> = fresh.iter().map(|a| publish_args(a, REPO)).collect();
        for (i, vb) in staged.iter().rev().take(2).enumerate() {
            let release = format!("webapp@{vb}");
            commands.insert(
                2 * i + 1,
                promote_args(&release, &["--repo", REPO, "--json"]),
            );
        }
        for (i, vb) in staged.iter().take(2).enumerate() {
            let release = format!("webapp@{vb}");
            commands.insert(
                4 * i + 2,
                args(&[
                    "yank",
                    &release,
                    "--channel",
                    "staging",
                    "--repo",
                    REPO,
                    "--json",
                ]),
            );
        }
        for slot in [0, 5, 10] {
            commands.insert(slot, args(&["gc", "--repo", REPO, "--keep", "2", "--json"]));
        }
        let runs = run_all(&env, &commands);
        let mut added = BTreeSet::new();
        let mut gcs = Vec::new();
        for (cmd, run) in commands.iter().zip(runs) {
            match cmd[0].as_str() {
                "publish" => {
                    let r = run.ok().json();
                    assert_eq!(r["changed"], true, "{r}");
                    added.insert(format!(
                        "staging {}+{}",
                        r["version"].as_str().unwrap(),
                        r["build"]
                    ));
                }
                "promote" if run.code == 0 => {
                    let r = run.json();
                    added.insert(format!(
                        "production {}+{}",
                        r["version"].as_str().unwrap(),
                        r["build"]
                    ));
                }
                "gc" => gcs.push(run.ok().json()),
                _ if run.code == 0 => {}
                _ => {
                    raced += 1;
                    raced_out(&run);
                }
            }
        }
        check
            .check(&env)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(
            temp_files(&env.join(REPO)),
            Vec::<std::path::PathBuf>::new()
        );
        let (dropped, deleted) = gc_effects(&gcs);
        let (after, referenced) = entries(&env);
        let lost: Vec<&String> = added
            .iter()
            .filter(|e| !after.contains(*e) && !dropped.contains(*e))
            .collect();
        assert!(lost.is_empty(), "round {round}: entries lost: {lost:?}");
        // A blob a gc deleted that an index references now was a
        // publisher's upload that gc swept before its index update; the
        // publisher uploaded it again.
        reuploaded += deleted.intersection(&referenced).count();
        dropped_fresh += dropped.intersection(&added).count();
    }
    eprintln!(
        "{rounds} rounds of 8 publishes, 2 promotes, 2 yanks and 3 gc --keep 2 at once: \
         {reuploaded} blobs swept by gc between a publisher's upload and its index update \
         and uploaded again, {dropped_fresh} entries added in a round and dropped by a gc of \
         the same round, {raced} promotes or yanks refused because a gc or yank got there \
         first; nothing lost"
    );
}

#[test]
fn a_gc_between_a_publisher_s_upload_and_its_index_update_never_loses_the_entry() {
    // The window, held open: publishers stopped after their upload, right
    // before they take the repository lock, while a gc stopped holding it
    // has taken stock of the references; the gc then deletes their blobs,
    // and each publisher, finding its blob gone under the lock, uploads
    // it again.
    let env = TestEnv::new();
    let arts = artifacts(&env, "1.4.2", 1..=5);
    for art in &arts[..3] {
        published(&env, art, "staging");
    }
    let gc = paused_at(
        &env,
        "gc:sweep",
        &["gc", "--repo", REPO, "--keep", "2", "--json"],
    );
    let publishers: Vec<_> = arts[3..]
        .iter()
        .map(|a| paused_at(&env, "index:lock", &publish_args(a, REPO)))
        .collect();
    for art in &arts[3..] {
        assert!(blob_path(&env.join(REPO), &art.sha256).is_file());
    }
    let report = gc.resume().ok().json();
    let (dropped, deleted) = gc_effects(&[report]);
    assert_eq!(dropped, BTreeSet::from(["staging 1.4.2+1".to_owned()]));
    assert_eq!(
        deleted,
        digests(&[&arts[0], &arts[3], &arts[4]])
            .into_iter()
            .collect(),
        "gc deleted the uploads not yet in an index"
    );
    for p in publishers {
        let r = p.resume().ok().json();
        assert_eq!(r["changed"], true, "{r}");
        assert_eq!(r["blob"], "uploaded", "{r}");
    }
    assert_eq!(
        index_releases(&env, "staging"),
        ["1.4.2+2", "1.4.2+3", "1.4.2+4", "1.4.2+5"]
    );
    RepoCheck::new(env.join(REPO), None).check(&env).unwrap();
}

#[test]
fn a_promote_whose_release_gc_drops_meanwhile_is_refused_and_references_nothing() {
    // The promote has found the release in staging and stops before it
    // takes the lock; a gc drops the release from staging and deletes its
    // blob; the promote, checking again under the lock, is refused.
    let env = TestEnv::new();
    let arts = artifacts(&env, "1.4.2", 1..=2);
    for art in &arts {
        published(&env, art, "staging");
    }
    let promote = paused_at(
        &env,
        "index:lock",
        &promote_args(&arts[0].release(), &["--repo", REPO]),
    );
    let report = ok_json(&env, &["gc", "--repo", REPO, "--keep", "1"]);
    assert_eq!(
        gc_effects(&[report]).1,
        digests(&[&arts[0]]).into_iter().collect()
    );
    let run = promote.resume().code(2);
    assert_says(&run, "stderr", &["is not in channel `staging`"]);
    assert!(
        !env.join(REPO)
            .join("channels/production/webapp.json")
            .exists()
    );
    RepoCheck::new(env.join(REPO), None).check(&env).unwrap();
}

#[test]
fn promotes_and_yanks_racing_gc_never_reference_a_deleted_blob() {
    // Rounds: staging keeps one release, so every gc sweeps the blobs of
    // the others that production does not reference yet, while promotes
    // copy them and yanks mark them.
    let env = TestEnv::new();
    let rounds = 3;
    let per_round = 12;
    let arts = artifacts(&env, "1.4.2", 1..=(per_round * rounds) as u64);
    set_repo_toml(
        &env,
        "format = 1\n[channels.production]\npromote_only = true\n[channels.staging]\nkeep = 1\n",
    );
    let mut check = RepoCheck::new(env.join(REPO), None);
    let (mut refused, mut promoted, mut swept) = (0, 0, 0);
    for round in 0..rounds {
        let batch = &arts[per_round * round..per_round * (round + 1)];
        publish_at_once(&env, batch, REPO);
        let mut commands: Vec<Vec<String>> = batch[..per_round - 1]
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let release = a.release();
                if i % 4 == 3 {
                    args(&["yank", &release, "--channel", "staging", "--repo", REPO])
                } else {
                    promote_args(&release, &["--repo", REPO])
                }
            })
            .collect();
        for slot in [2, 6, 10] {
            commands.insert(slot, args(&["gc", "--repo", REPO, "--json"]));
        }
        for (cmd, run) in commands.iter().zip(run_all(&env, &commands)) {
            match (cmd[0].as_str(), run.code) {
                ("gc", _) => swept += gc_effects(&[run.ok().json()]).1.len(),
                ("promote", 0) => promoted += 1,
                (_, 0) => {}
                _ => {
                    refused += 1;
                    raced_out(&run);
                }
            }
        }
        check
            .check(&env)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
    eprintln!(
        "{rounds} rounds of {} promotes, {} yanks and 3 gc at once: {promoted} promoted, \
         {refused} refused because a gc dropped the release or a yank marked it first, {swept} blobs swept",
        (per_round - 1) * 3 / 4 + 1,
        (per_round - 1) / 4,
    );
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
