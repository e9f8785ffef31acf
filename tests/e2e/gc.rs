//! `packager gc`: retention per channel, and never deleting a blob that any
//! channel's index still references.

use berth_tests::{TestEnv, tree_state, write};
use serde_json::Value;

use crate::repo_support::{
    Artifact, REPO, artifacts, assert_says, blob_path, blobs, digests, index, index_releases,
    ok_json, promoted, published, refused, set_repo_toml, yanked,
};

/// Publishes `webapp` 1.4.2 builds 1..=n into staging.
fn staged(env: &TestEnv, n: u64) -> Vec<Artifact> {
    let arts = artifacts(env, "1.4.2", 1..=n);
    for art in &arts {
        published(env, art, "staging");
    }
    arts
}

fn gc(env: &TestEnv, extra: &[&str]) -> Value {
    let mut args = vec!["gc", "--repo", REPO];
    args.extend(extra);
    ok_json(env, &args)
}

/// The `(channel, release)` pairs a gc report dropped.
fn dropped(report: &Value) -> Vec<(String, String)> {
    report["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["package"], "webapp");
            (
                d["channel"].as_str().unwrap().to_owned(),
                d["release"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The digests a gc report deleted, sorted.
fn deleted(report: &Value) -> Vec<String> {
    let mut v: Vec<String> = report["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["sha256"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

fn pairs(list: &[(&str, &Artifact)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(c, a)| ((*c).to_owned(), a.version_build()))
        .collect()
}

#[test]
fn gc_without_retention_deletes_nothing_referenced() {
    let env = TestEnv::new();
    let arts = staged(&env, 3);
    promoted(&env, &arts[0], "staging", "production");
    yanked(&env, &arts[1], "staging", false);
    let before = tree_state(&env.join(REPO));

    let v = gc(&env, &[]);
    assert_eq!(dropped(&v), []);
    assert_eq!(deleted(&v), Vec::<String>::new());
    assert_eq!(v["kept_blobs"], 3);
    assert_eq!(v["changed"], false);
    assert_eq!(before, tree_state(&env.join(REPO)), "gc without work wrote");
    assert_eq!(
        blobs(&env.join(REPO)),
        digests(&[&arts[0], &arts[1], &arts[2]])
    );
}

#[test]
fn a_yanked_release_keeps_its_blob_and_newer_yanked_entries_stay_as_history() {
    let env = TestEnv::new();
    let arts = staged(&env, 2);
    yanked(&env, &arts[1], "staging", false);
    let v = gc(&env, &["--keep", "1"]);
    assert_eq!(
        dropped(&v),
        [],
        "the newest live release is +1; the yanked +2 is newer"
    );
    assert_eq!(blobs(&env.join(REPO)), digests(&[&arts[0], &arts[1]]));
    assert_eq!(index_releases(&env, "staging"), ["1.4.2+1", "1.4.2+2"]);
}

#[test]
fn keep_drops_older_entries_and_deletes_their_unshared_blobs() {
    let env = TestEnv::new();
    let arts = staged(&env, 3);
    let v = gc(&env, &["--keep", "1"]);
    assert_eq!(
        dropped(&v)
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        pairs(&[("staging", &arts[0]), ("staging", &arts[1])])
            .into_iter()
            .collect()
    );
    assert_eq!(deleted(&v), digests(&[&arts[0], &arts[1]]));
    assert_eq!(v["bytes_freed"], arts[0].size + arts[1].size);
    assert_eq!(v["kept_blobs"], 1);
    assert_eq!(v["changed"], true);
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["repository"], REPO);
    assert_eq!(index_releases(&env, "staging"), ["1.4.2+3"]);
    assert_eq!(
        index(&env, "staging")["sequence"],
        4,
        "the drop is one more write"
    );
    assert_eq!(blobs(&env.join(REPO)), digests(&[&arts[2]]));
}

#[test]
fn keep_never_deletes_a_blob_another_channel_references() {
    let env = TestEnv::new();
    let arts = staged(&env, 3);
    // production holds +1 only; dev holds +2 and +3.
    promoted(&env, &arts[0], "staging", "production");
    for art in &arts[1..] {
        published(&env, art, "dev");
    }
    let v = gc(&env, &["--keep", "1"]);
    assert_eq!(
        dropped(&v),
        pairs(&[
            ("dev", &arts[1]),
            ("staging", &arts[1]),
            ("staging", &arts[0])
        ])
    );
    // +1 left staging but production references it; +2 left both channels
    // that held it.
    assert_eq!(deleted(&v), digests(&[&arts[1]]));
    assert!(blob_path(&env.join(REPO), &arts[0].sha256).is_file());
    assert_eq!(index_releases(&env, "production"), ["1.4.2+1"]);
    assert_eq!(blobs(&env.join(REPO)), digests(&[&arts[0], &arts[2]]));

    // A second run finds nothing more to do.
    let again = gc(&env, &["--keep", "1"]);
    assert_eq!((dropped(&again), deleted(&again)), (vec![], vec![]));
    assert_eq!(again["kept_blobs"], 2);
}

#[test]
fn keep_in_repo_toml_applies_to_its_channel_only() {
    let env = TestEnv::new();
    let arts = staged(&env, 3);
    for art in &arts {
        published(&env, art, "dev");
    }
    set_repo_toml(
        &env,
        "format = 1\n[channels.production]\npromote_only = true\n[channels.staging]\nkeep = 1\n",
    );
    let human = env.packager(["gc", "--repo", REPO]).ok();
    assert_says(
        &human,
        "stdout",
        &[
            "dropped webapp@1.4.2+1 from staging",
            "dropped webapp@1.4.2+2 from staging",
            "gc done",
        ],
    );
    assert!(
        !human.stdout.contains("deleted blob"),
        "dev still references them:\n{human}"
    );
    assert_eq!(index_releases(&env, "staging"), ["1.4.2+3"]);
    assert_eq!(
        index_releases(&env, "dev"),
        ["1.4.2+1", "1.4.2+2", "1.4.2+3"]
    );
    assert_eq!(blobs(&env.join(REPO)).len(), 3);

    // --keep on the command line overrides: now dev drops them and they go.
    let v = gc(&env, &["--keep", "1"]);
    assert_eq!(deleted(&v), digests(&[&arts[0], &arts[1]]));
}

#[test]
fn dry_run_reports_what_gc_does_and_changes_nothing() {
    let env = TestEnv::new();
    let arts = staged(&env, 3);
    promoted(&env, &arts[0], "staging", "production");
    let before = tree_state(&env.join(REPO));

    let dry = gc(&env, &["--keep", "1", "--dry-run"]);
    assert_eq!(before, tree_state(&env.join(REPO)), "the dry run wrote");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["changed"], false);
    let human = env
        .packager(["gc", "--repo", REPO, "--keep", "1", "--dry-run"])
        .ok();
    assert_says(
        &human,
        "stdout",
        &[
            "would drop webapp@1.4.2+1 from staging",
            "would delete blob",
            "dry run",
        ],
    );
    assert_eq!(before, tree_state(&env.join(REPO)), "the dry run wrote");

    let real = gc(&env, &["--keep", "1"]);
    assert_eq!(dropped(&dry), dropped(&real));
    assert_eq!(deleted(&dry), deleted(&real));
    assert_eq!(deleted(&real), digests(&[&arts[1]]));
    assert_eq!(dry["bytes_freed"], real["bytes_freed"]);
    assert_eq!(dry["kept_blobs"], real["kept_blobs"]);
}

#[test]
fn keep_zero_is_a_usage_error() {
    let env = TestEnv::new();
    staged(&env, 2);
    let run = refused(&env, &["gc", "--repo", REPO, "--keep", "0"], 2);
    assert_says(&run, "stderr", &["--keep"]);
}

#[test]
fn gc_leaves_a_publisher_s_upload_in_progress_alone() {
    let env = TestEnv::new();
    let arts = staged(&env, 1);
    let upload = env.join("repo/blobs/sha256/ab/.tmp-upload");
    write(&upload, "half an artifact");
    let v = gc(&env, &["--keep", "1"]);
    assert_eq!(deleted(&v), Vec::<String>::new());
    assert!(upload.is_file(), "gc deleted an upload in progress");
    assert_eq!(blobs(&env.join(REPO)), digests(&[&arts[0]]));
}
