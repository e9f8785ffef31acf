//! `packager gc`: retention per channel, never deleting a blob that any
//! channel's index still references, and removing what killed publishers
//! left (never what a live one is writing).

use std::fs;

use berth_tests::{TestEnv, tree_state};
use serde_json::Value;

use crate::repo_support::{
    Artifact, REPO, RepoCheck, args, artifacts, assert_says, big_app, blob_path, blobs, digests,
    index, index_releases, killed_at, ok_json, paused_at, promoted, published, refused,
    set_repo_toml, temps, yanked,
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

/// The paths a gc report lists under `key` (`abandoned` entries are
/// objects with a path; `in_progress` entries are paths).
fn paths(report: &Value, key: &str) -> Vec<String> {
    let mut v: Vec<String> = report[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.get("path").unwrap_or(a).as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn gc_removes_what_killed_publishers_left_and_says_so() {
    let env = TestEnv::new();
    let arts = staged(&env, 1);
    big_app(&env, "2.0", 3);
    let more = artifacts(&env, "2.0", [2, 3]);
    // One publisher dies a megabyte into its blob, another after writing
    // its blob and the temp file of the new index.
    let publish =
        |art: &Artifact| args(&["publish", &art.path, "--repo", REPO, "--channel", "staging"]);
    killed_at(&env, "blob:partial", &publish(&more[0]));
    killed_at(&env, "index:written", &publish(&more[1]));
    let left = temps(&env.join(REPO));
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter().any(|t| t.starts_with("blobs/sha256/")),
        "{left:?}"
    );
    assert!(
        left.iter().any(|t| t.starts_with("channels/staging/.tmp-")),
        "{left:?}"
    );
    let partial = left.iter().find(|t| t.starts_with("blobs/")).unwrap();
    let partial_size = fs::metadata(env.join(REPO).join(partial)).unwrap().len();
    assert!(
        partial_size > 0 && partial_size < more[0].size,
        "the blob was cut: {partial_size} of {} bytes",
        more[0].size
    );

    let before = tree_state(&env.join(REPO));
    let dry = gc(&env, &["--dry-run"]);
    assert_eq!(paths(&dry, "abandoned"), left);
    assert_eq!(
        before,
        tree_state(&env.join(REPO)),
        "the dry run removed something"
    );
    let human = env.packager(["gc", "--repo", REPO, "--dry-run"]).ok();
    assert_says(
        &human,
        "stdout",
        &[
            &format!("would remove `{partial}`, left by a writer that died before it finished"),
            "2 abandoned writes",
        ],
    );

    let v = gc(&env, &[]);
    assert_eq!(paths(&v, "abandoned"), left);
    assert_eq!(paths(&v, "in_progress"), Vec::<String>::new());
    let sizes: Vec<u64> = v["abandoned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["size"].as_u64().unwrap())
        .collect();
    assert!(sizes.contains(&partial_size), "{v}");
    // The second publisher's blob was complete and in place, but in no
    // index: an orphan, deleted like any other.
    assert_eq!(deleted(&v), digests(&[&more[1]]));
    assert_eq!(v["changed"], true);
    assert_eq!(temps(&env.join(REPO)), Vec::<String>::new());
    assert_eq!(index_releases(&env, "staging"), ["1.4.2+1"]);
    assert_eq!(blobs(&env.join(REPO)), digests(&[&arts[0]]));

    // Nothing stands in the way of the next publishers.
    for art in &more {
        published(&env, art, "staging");
    }
    assert_eq!(
        index_releases(&env, "staging"),
        ["1.4.2+1", "2.0+2", "2.0+3"]
    );
    let again = gc(&env, &[]);
    assert_eq!(paths(&again, "abandoned"), Vec::<String>::new());
}

#[test]
fn gc_keeps_the_upload_a_live_publisher_is_writing() {
    let env = TestEnv::new();
    staged(&env, 1);
    big_app(&env, "2.0", 3);
    let art = artifacts(&env, "2.0", [2]).remove(0);
    // Stopped a megabyte into its blob, as a slow upload would be.
    let paused = paused_at(
        &env,
        "blob:partial",
        &[
            "publish",
            &art.path,
            "--repo",
            REPO,
            "--channel",
            "staging",
            "--json",
        ],
    );
    let writing = temps(&env.join(REPO));
    assert_eq!(writing.len(), 1, "{writing:?}");
    let path = env.join(REPO).join(&writing[0]);
    let size = fs::metadata(&path).unwrap().len();
    assert!(size > 0 && size < art.size, "{size} of {} bytes", art.size);

    let v = gc(&env, &["--keep", "1"]);
    assert_eq!(
        paths(&v, "in_progress"),
        writing,
        "gc did not see the upload"
    );
    assert_eq!(paths(&v, "abandoned"), Vec::<String>::new());
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        size,
        "gc touched the upload"
    );
    let human = env.packager(["gc", "--repo", REPO]).ok();
    assert_says(
        &human,
        "stdout",
        &[&format!(
            "kept `{}`: a writer is still writing it",
            writing[0]
        )],
    );

    let report = paused.resume().ok().json();
    assert_eq!(report["blob"], "uploaded");
    assert_eq!(index_releases(&env, "staging"), ["1.4.2+1", "2.0+2"]);
    assert!(blob_path(&env.join(REPO), &art.sha256).is_file());
    assert_eq!(temps(&env.join(REPO)), Vec::<String>::new());
    let mut check = RepoCheck::new(env.join(REPO), None);
    check.check(&env).unwrap();
}
