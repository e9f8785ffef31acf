//! What a person sees first: `packager --help`, `packager build --help` and
//! `packager publish --help` pinned as insta snapshots, an `Examples:`
//! section in every subcommand's help, and `--version` of both binaries.

// Helpers below are test code too: a panic is how they report.

use berth_tests::{Run, TestEnv};

/// Every `packager` subcommand.
const SUBCOMMANDS: [&str; 9] = [
    "init", "build", "verify", "publish", "promote", "yank", "list", "show", "gc",
];

/// Runs `packager ARGS...` in a fresh environment, asserting success;
/// returns stdout.
fn packager_stdout(args: &[&str]) -> String {
    TestEnv::new().packager(args).ok().stdout
}

fn agent(args: &[&str]) -> Run {
    Run::from(TestEnv::new().cmd("agent").args(args).output().unwrap())
}

#[test]
fn packager_help_is_pinned() {
    insta::assert_snapshot!("packager_help", packager_stdout(&["--help"]));
}

#[test]
fn packager_build_help_is_pinned() {
    insta::assert_snapshot!("packager_build_help", packager_stdout(&["build", "--help"]));
}

#[test]
fn packager_publish_help_is_pinned() {
    insta::assert_snapshot!(
        "packager_publish_help",
        packager_stdout(&["publish", "--help"])
    );
}

#[test]
fn the_top_level_help_lists_every_subcommand() {
    let help = packager_stdout(&["--help"]);
    for sub in SUBCOMMANDS {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "`{sub}` is not listed:\n{help}"
        );
    }
}

#[test]
fn every_subcommand_help_has_examples_of_itself() {
    for sub in SUBCOMMANDS {
        let help = packager_stdout(&[sub, "--help"]);
        let (_, examples) = help
            .split_once("\nExamples:\n")
            .unwrap_or_else(|| panic!("`packager {sub} --help` has no Examples: section:\n{help}"));
        assert!(
            examples.contains(&format!("packager {sub}")),
            "`packager {sub} --help` has no example of `packager {sub}`:\n{help}"
        );
    }
}

/// The lines of `help`'s `Arguments:` and `Options:` sections that name an
/// argument or option but say nothing about it (at most clap's own
/// `[env: ...]` or `[default: ...]` note).
fn undescribed(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_section = false;
    for line in help.lines() {
        if line == "Arguments:" || line == "Options:" {
            in_section = true;
        } else if line.is_empty() || !line.starts_with(' ') {
            in_section = false;
        } else if in_section {
            let item = line.trim();
            let names_something = item.starts_with('-')
                || item.starts_with('<')
                || item.starts_with("[") && item[1..].starts_with(|c: char| c.is_ascii_uppercase());
            // clap puts `[env: ...]` and `[default: ...]` after the description.
            let described = item
                .split_once("  ")
                .is_some_and(|(_, text)| !text.trim_start().starts_with('['));
            if names_something && !described {
                out.push(item.to_owned());
            }
        }
    }
    out
}

#[test]
fn every_argument_and_option_of_every_subcommand_is_described() {
    let missing: Vec<String> = SUBCOMMANDS
        .iter()
        .flat_map(|sub| {
            undescribed(&packager_stdout(&[sub, "--help"]))
                .into_iter()
                .map(move |item| format!("packager {sub} {item}"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "--help says nothing about:\n{}",
        missing.join("\n")
    );
}

#[test]
fn packager_version_prints_the_crate_version() {
    assert_eq!(
        packager_stdout(&["--version"]),
        format!("packager {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn agent_help_exits_zero() {
    let run = agent(&["--help"]).ok();
    assert!(run.stdout.contains("Install berth releases"), "{run}");
}

#[test]
fn agent_version_prints_the_crate_version() {
    let run = agent(&["--version"]).ok();
    assert_eq!(run.stdout, format!("agent {}\n", env!("CARGO_PKG_VERSION")));
}
