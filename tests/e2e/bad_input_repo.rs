//! Bad input to the repository commands: each is refused with exit 2, a
//! message that names the problem, and nothing changed on disk.

use berth_tests::{TestEnv, write};

use crate::repo_support::{Artifact, REPO, args, artifact, assert_says, published, refused};

/// Every repository command, aimed at `repo`, with a release that exists
/// when the repository does.
fn every_command(art: &Artifact, repo: &str) -> Vec<Vec<String>> {
    let release = art.release();
    vec![
        args(&["publish", &art.path, "--repo", repo, "--channel", "staging"]),
        args(&["list", "--repo", repo]),
        args(&["show", "webapp", "--repo", repo]),
        args(&["show", &release, "--repo", repo]),
        args(&[
            "promote",
            &release,
            "--from",
            "staging",
            "--to",
            "production",
            "--repo",
            repo,
        ]),
        args(&["yank", &release, "--channel", "staging", "--repo", repo]),
        args(&["gc", "--repo", repo]),
    ]
}

/// The commands that need an existing repository (all but publish).
fn reading_commands(art: &Artifact, repo: &str) -> Vec<Vec<String>> {
    every_command(art, repo).split_off(1)
}

#[test]
fn a_non_empty_directory_without_repo_toml_is_not_a_repository() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    write(&env.join("site/index.html"), "not a repository\n");
    for cmd in every_command(&art, "site") {
        let run = refused(&env, &cmd, 2);
        assert_says(
            &run,
            "stderr",
            &["`site`", "not a berth repository", "repo.toml", "hint:"],
        );
    }
}

#[test]
fn a_regular_file_is_not_a_repository() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    write(&env.join("repo.txt"), "a file\n");
    for cmd in every_command(&art, "repo.txt") {
        let run = refused(&env, &cmd, 2);
        assert_says(&run, "stderr", &["`repo.txt`", "is a file"]);
    }
}

#[test]
fn commands_other_than_publish_need_an_existing_repository() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    std::fs::create_dir(env.join("empty")).unwrap();
    for repo in ["missing", "empty"] {
        for cmd in reading_commands(&art, repo) {
            let run = refused(&env, &cmd, 2);
            assert_says(
                &run,
                "stderr",
                &[
                    "no berth repository",
                    &format!("`{repo}`"),
                    "packager publish",
                ],
            );
        }
    }
    assert!(!env.join("missing").exists());
}

/// Uppercase, a slash, a parent reference, empty, and one byte too long.
fn bad_channels() -> Vec<String> {
    let too_long = "a".repeat(65);
    args(&["Prod", "a/b", "../x", "", &too_long])
}

#[test]
fn bad_channel_names_are_refused_by_every_command() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    let release = art.release();
    for bad in &bad_channels() {
        let commands: [&[&str]; 5] = [
            &["publish", &art.path, "--repo", REPO, "--channel", bad],
            &[
                "promote", &release, "--from", bad, "--to", "qa", "--repo", REPO,
            ],
            &[
                "promote", &release, "--from", "staging", "--to", bad, "--repo", REPO,
            ],
            &["yank", &release, "--channel", bad, "--repo", REPO],
            &["list", "--repo", REPO, "--channel", bad],
        ];
        for cmd in commands {
            let run = refused(&env, cmd, 2);
            assert_says(
                &run,
                "stderr",
                &[&format!("invalid channel name `{bad}`"), "hint:"],
            );
        }
    }
}

#[test]
fn promote_of_a_release_missing_from_the_source_channel_is_refused() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    for (release, from) in [
        ("webapp@1.4.2+9", "staging"),
        ("webapp@1.4.2+1", "dev"),
        ("other@1.0+1", "staging"),
    ] {
        let run = refused(
            &env,
            &[
                "promote", release, "--from", from, "--to", "qa", "--repo", REPO,
            ],
            2,
        );
        assert_says(
            &run,
            "stderr",
            &[release, &format!("is not in channel `{from}`")],
        );
    }
    let run = refused(
        &env,
        &[
            "yank",
            "webapp@1.4.2+9",
            "--channel",
            "staging",
            "--repo",
            REPO,
        ],
        2,
    );
    assert_says(
        &run,
        "stderr",
        &["webapp@1.4.2+9", "is not in channel `staging`"],
    );
}

#[test]
fn promote_to_its_own_source_channel_is_refused() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    let release = art.release();
    let run = refused(
        &env,
        &[
            "promote", &release, "--from", "staging", "--to", "staging", "--repo", REPO,
        ],
        2,
    );
    assert_says(
        &run,
        "stderr",
        &["`--from` and `--to`", "`staging`", "hint:"],
    );
}

#[test]
fn malformed_release_specs_are_refused() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    let cases = [
        ("webapp", "NAME@VERSION+BUILD"),
        ("webapp@1.0", "NAME@VERSION+BUILD"),
        ("webapp@1.0+0", "build numbers start at 1"),
        ("webapp@1.0+x", "not a whole number"),
    ];
    for (spec, why) in cases {
        let mut commands: Vec<Vec<&str>> = vec![
            vec![
                "promote", spec, "--from", "staging", "--to", "qa", "--repo", REPO,
            ],
            vec!["yank", spec, "--channel", "staging", "--repo", REPO],
        ];
        if spec.contains('@') {
            commands.push(vec!["show", spec, "--repo", REPO]);
        }
        for cmd in commands {
            let run = refused(&env, &cmd, 2);
            assert_says(&run, "stderr", &["invalid", why, "hint:"]);
        }
    }
}

#[test]
fn unsupported_repository_urls_are_refused_by_scheme() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    for (url, shown, why) in [
        (
            "ftp://example.com/berth",
            "ftp://example.com/berth",
            "`ftp://` scheme is not supported",
        ),
        (
            "https://ci:s3cret@127.0.0.1:9/berth",
            "https://…@127.0.0.1:9/berth",
            "credentials in a URL",
        ),
        ("s3:///berth", "s3:///berth", "no bucket"),
        (
            "file://relative/berth",
            "file://relative/berth",
            "absolute path",
        ),
    ] {
        for cmd in every_command(&art, url) {
            let run = refused(&env, &cmd, 2);
            assert_says(
                &run,
                "stderr",
                &["unsupported repository", shown, why, "file:///"],
            );
            assert!(
                !run.stderr.contains("s3cret"),
                "a password in the URL is never printed:\n{run}"
            );
        }
    }
}

#[test]
fn show_of_an_unknown_package_is_refused() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    let run = refused(&env, &["show", "nope", "--repo", REPO], 2);
    assert_says(
        &run,
        "stderr",
        &["package `nope`", "no channel", "packager list"],
    );
    let run = refused(&env, &["show", "Bad_Name", "--repo", REPO], 2);
    assert_says(&run, "stderr", &["invalid package name `Bad_Name`"]);
}

#[test]
fn show_of_an_unknown_release_says_it_is_in_no_channel() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    let run = refused(&env, &["show", "webapp@9.9+1", "--repo", REPO], 2);
    assert_says(&run, "stderr", &["webapp@9.9+1", "no channel"]);
    assert!(
        !run.stderr.contains("`any`"),
        "`any` is not a channel of the repository:\n{run}"
    );
}

#[test]
fn publish_of_a_file_that_is_not_an_artifact_is_refused() {
    let env = TestEnv::new();
    let art = artifact(&env, 1);
    published(&env, &art, "staging");
    write(&env.join("junk.tar.zst"), "this is not tar+zstd\n");
    for repo in [REPO, "new-repo"] {
        let run = refused(
            &env,
            &[
                "publish",
                "junk.tar.zst",
                "--repo",
                repo,
                "--channel",
                "staging",
            ],
            2,
        );
        assert_says(
            &run,
            "stderr",
            &["`junk.tar.zst`", "not a valid artifact", "hint:"],
        );
    }
    assert!(!env.join("new-repo").exists());
}

#[test]
fn publish_of_a_missing_artifact_is_bad_input() {
    let env = TestEnv::new();
    let run = refused(
        &env,
        &[
            "publish",
            "out/nothing.tar.zst",
            "--repo",
            REPO,
            "--channel",
            "staging",
        ],
        2,
    );
    assert_says(&run, "stderr", &["`out/nothing.tar.zst`", "hint:"]);
    assert!(!env.join(REPO).exists());
}
