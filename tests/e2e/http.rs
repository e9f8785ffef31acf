//! The agent reading a repository over HTTP(S) from a real nginx on
//! 127.0.0.1 (tests/e2e/nginx_support.rs), the repository written by the
//! packager and signed, the node trusting the key: install, upgrade and
//! rollback; the indexes revalidated with a conditional GET (304, from
//! nginx's access log); a server killed mid-download and started again
//! (the download resumes with `Range`: a 206 in the log); a truncated
//! body, a missing index, release or blob, a server answering 500 and a
//! server that stalls, each a clear error that leaves the node exactly as
//! it was; basic and bearer credentials, never printed; https with the
//! node's CA certificate.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_tests::{Run, write};
use serde_json::Value;

use crate::agent_support::{Node, Rel, assert_unchanged, rel};
use crate::nginx_support::{Hit, Nginx, PASSWORD, SLOW_RATE, TOKEN, USER};
use crate::repo_support::{REPO, assert_says};

/// A node whose repository's staging channel is signed with `ci.key` and
/// served by nginx; agent.toml trusts `ci.pub` and holds `http` (the
/// lines of its `[http]` table).
struct HttpNode {
    node: Node,
    nginx: Nginx,
}

impl HttpNode {
    fn new(lines: &str) -> HttpNode {
        let node = crate::trust::signed_node();
        fs::create_dir_all(node.env.join(REPO)).unwrap();
        let nginx = Nginx::serve(&node.env.join(REPO));
        let http = HttpNode { node, nginx };
        http.set_http(lines);
        http
    }

    /// Rewrites agent.toml with these `[http]` lines.
    fn set_http(&self, lines: &str) {
        write(
            &self.node.path("/etc/berth/agent.toml"),
            &format!("trusted_keys = [\"/etc/berth/keys/ci.pub\"]\n\n[http]\n{lines}\n"),
        );
    }

    /// The arguments of `agent --repo URL/PREFIX --channel staging
    /// ARGS...` (no `--channel staging` when ARGS name a channel).
    fn args(&self, prefix: &str, args: &[&str]) -> Vec<String> {
        let mut all = vec!["--repo".to_owned(), self.nginx.url(prefix)];
        if !args.contains(&"--channel") {
            all.extend(["--channel".to_owned(), "staging".to_owned()]);
        }
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    /// `agent --repo URL/PREFIX --channel staging ARGS...`.
    fn agent(&self, prefix: &str, args: &[&str]) -> Run {
        let all = self.args(prefix, args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.node.agent(&all)
    }

    /// Runs the agent expecting exit `code`, and asserts that it changed
    /// nothing on the node (the cache directory's own mtime aside: a
    /// download went to a temp file there and was removed), ran no hook,
    /// and left nothing temporary.
    #[track_caller]
    fn refused(&self, prefix: &str, args: &[&str], code: i32) -> Run {
        let cache = "var/lib/berth/cache";
        let mut before = self.node.state();
        let hooks = self.node.hook_log().len();
        let run = self.agent(prefix, args).code(code);
        let mut after = self.node.state();
        before.files.remove(cache);
        after.files.remove(cache);
        assert_unchanged(&before, &after, &run);
        assert_eq!(
            self.node.hooks_run_since(hooks),
            Vec::<String>::new(),
            "{run}"
        );
        assert_eq!(self.node.leftovers(), Vec::<String>::new(), "{run}");
        if self.node.path("/var/lib/berth/state.db").exists() {
            assert_eq!(self.node.inconsistencies(), Vec::<String>::new(), "{run}");
        }
        run
    }

    /// The sha256 of `r` in the staging index.
    fn sha256(&self, r: &Rel) -> String {
        let index: Value = serde_json::from_slice(
            &fs::read(
                self.node
                    .env
                    .join(REPO)
                    .join("channels/staging/webapp.json"),
            )
            .unwrap(),
        )
        .unwrap();
        index["releases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["version"] == r.version && e["build"] == r.build)
            .unwrap()["sha256"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn blob_path(&self, sha: &str) -> PathBuf {
        self.node
            .env
            .join(REPO)
            .join(format!("blobs/sha256/{}/{sha}.tar.zst", &sha[..2]))
    }

    /// The access log's requests for the blob of `sha`.
    fn blob_hits(&self, sha: &str) -> Vec<Hit> {
        self.nginx.hits(&format!("{sha}.tar.zst"))
    }
}

#[test]
fn install_upgrade_and_rollback_over_http_with_indexes_revalidated() {
    let h = HttpNode::new("");
    let (v1, v2) = (rel("1.0.0", 1), rel("1.1.0", 2));
    h.node.publish(&v1);
    let run = h.agent("repo", &["install", "webapp"]).ok();
    assert!(!run.stderr.contains("not authenticated"), "{run}");
    h.node.assert_current(&v1.vb());
    let sha1 = h.sha256(&v1);
    let get = h.blob_hits(&sha1);
    assert_eq!(get.len(), 1, "{get:?}");
    assert_eq!((get[0].status, get[0].range.as_str()), (200, "-"));

    // A re-poll: the index and its signature come back 304 from the
    // node's copy, checked as ever; nothing is downloaded or changed.
    let before = h.node.state();
    let index_hits = h.nginx.hits("/staging/webapp.json").len();
    let run = h.agent("repo", &["install", "webapp", "--json"]).ok();
    assert_eq!(run.json()["changed"], false, "{run}");
    assert_unchanged(&before, &h.node.state(), &run);
    let index = h.nginx.hits("/staging/webapp.json");
    let again = &index[index_hits..];
    assert_eq!(again.len(), 1, "{index:?}");
    assert_eq!(again[0].status, 304, "{index:?}");
    assert_ne!(
        again[0].if_none_match, "-",
        "asked with the ETag: {index:?}"
    );
    let sig = h.nginx.hits("/staging/webapp.json.minisig");
    assert_eq!(sig.last().unwrap().status, 304, "{sig:?}");
    assert_eq!(h.blob_hits(&sha1).len(), 1);

    // A new release: the index changed, so it is sent whole (200).
    h.node.publish(&v2);
    h.agent("repo", &["install", "webapp"]).ok();
    h.node.assert_current(&v2.vb());
    let index = h.nginx.hits("/staging/webapp.json");
    assert_eq!(index.last().unwrap().status, 200, "{index:?}");
    assert_eq!(
        h.node.sql("SELECT sequence FROM channel_sequences"),
        "2",
        "the floor rose with the new index"
    );

    // Rollback and roll forward again (the artifact from the cache).
    h.node.rollback(&[]).ok();
    h.node.assert_current(&v1.vb());
    h.agent("repo", &["install", &v2.spec()]).ok();
    h.node.assert_current(&v2.vb());
    assert_eq!(h.blob_hits(&h.sha256(&v2)).len(), 1, "fetched once");
    assert_eq!(h.node.inconsistencies(), Vec::<String>::new());
    assert_eq!(h.node.leftovers(), Vec::<String>::new());
}

#[test]
fn a_stale_or_tampered_copy_of_an_index_is_not_trusted() {
    let h = HttpNode::new("");
    let v1 = rel("1.0.0", 1);
    h.node.publish(&v1);
    h.agent("repo", &["install", "webapp"]).ok();
    // The node's copy is altered (a disk error, a hand edit): the server
    // still says 304, the trust checks refuse the copy, and the index is
    // read again whole.
    let copy = h
        .node
        .path("/var/lib/berth/cache/indexes/staging/webapp.toml");
    let text = fs::read_to_string(&copy).unwrap();
    fs::write(&copy, text.replace("1.0.0", "1.0.9")).unwrap();
    assert_ne!(
        fs::read_to_string(&copy).unwrap(),
        text,
        "the copy was altered"
    );
    let run = h.agent("repo", &["install", "webapp", "--json"]).ok();
    assert_eq!(run.json()["changed"], false, "{run}");
    let index = h.nginx.hits("/staging/webapp.json");
    let last: Vec<u16> = index.iter().rev().take(2).map(|h| h.status).collect();
    assert_eq!(
        last,
        [200, 304],
        "a 304 refused, then the whole index: {index:?}"
    );
    assert_eq!(
        fs::read_to_string(&copy).unwrap(),
        text,
        "the copy is whole again"
    );
}

#[test]
fn a_server_killed_mid_download_is_resumed_with_range() {
    let mut h = HttpNode::new("retries = 10\nretry_timeout_secs = 60");
    let v1 = rel("1.0.0", 1).noise(1536);
    h.node.publish(&v1);
    let sha = h.sha256(&v1);
    let size = fs::metadata(h.blob_path(&sha)).unwrap().len();
    let args = h.args("slow", &["install", "webapp"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = h
        .node
        .command(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until a quarter of the artifact is in the cache's temp file.
    let cache = h.node.path("/var/lib/berth/cache");
    let deadline = Instant::now() + Duration::from_secs(30);
    let partial = loop {
        let got: u64 = fs::read_dir(&cache)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum();
        if got >= size / 4 {
            break got;
        }
        assert!(Instant::now() < deadline, "the download did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(partial < size, "killed mid-download: {partial} of {size}");
    h.nginx.kill();
    std::thread::sleep(Duration::from_millis(500));
    h.nginx.restart();
    let run = Run::from(agent.wait_with_output().unwrap()).ok();
    h.node.assert_current(&v1.vb());
    let hits = h.blob_hits(&sha);
    // The killed response is never logged; the resumed one is a 206 from
    // where the first stopped, and it carried the rest of the artifact.
    let resumed: Vec<&Hit> = hits.iter().filter(|h| h.status == 206).collect();
    assert_eq!(resumed.len(), 1, "{hits:?}\n{run}");
    let from: u64 = resumed[0]
        .range
        .strip_prefix("bytes=")
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a range from an offset: {hits:?}"));
    assert!(from >= partial && from < size, "{from} of {size}: {hits:?}");
    assert_eq!(resumed[0].bytes, size - from, "{hits:?}");
    assert!(size > 4 * SLOW_RATE, "the download takes seconds");
    assert_eq!(h.node.leftovers(), Vec::<String>::new());
}

#[test]
fn a_truncated_body_is_a_digest_error_and_installs_nothing() {
    let h = HttpNode::new("");
    let (v1, v2) = (rel("1.0.0", 1), rel("1.1.0", 2).noise(64));
    h.node.publish(&v1);
    h.agent("repo", &["install", "webapp"]).ok();
    h.node.publish(&v2);
    let sha = h.sha256(&v2);
    let size = fs::metadata(h.blob_path(&sha)).unwrap().len();
    h.nginx
        .truncate_blob(&h.node.env.join(REPO), &sha, size / 2);
    let run = h.refused("trunc", &["install", "webapp"], 1);
    assert_says(
        &run,
        "stderr",
        &[
            "has the wrong digest",
            &format!("expected {sha}"),
            &format!("({} bytes)", size / 2),
        ],
    );
    h.node.assert_current(&v1.vb());
    // The whole artifact from the real server installs.
    h.agent("repo", &["install", "webapp"]).ok();
    h.node.assert_current(&v2.vb());
}

#[test]
fn what_the_server_does_not_have_is_named() {
    let h = HttpNode::new("");
    let (v1, v2) = (rel("1.0.0", 1), rel("1.1.0", 2));
    h.node.publish(&v1);
    h.agent("repo", &["install", "webapp"]).ok();
    // A release, a package, a channel the repository does not have.
    let run = h.refused("repo", &["install", "webapp@9.9"], 2);
    assert_says(&run, "stderr", &["webapp@9.9 is not in channel `staging`"]);
    let run = h.refused("repo", &["install", "api"], 2);
    assert_says(&run, "stderr", &["`api` is not in channel `staging`"]);
    let run = h.refused(
        "repo",
        &["--channel", "nightly", "install", "webapp@1.0.0"],
        2,
    );
    assert_says(&run, "stderr", &["not in channel"]);
    // A blob the index lists and the server does not have.
    h.node.publish(&v2);
    let sha = h.sha256(&v2);
    fs::remove_file(h.blob_path(&sha)).unwrap();
    let run = h.refused("repo", &["install", "webapp"], 1);
    assert_says(
        &run,
        "stderr",
        &["has no artifact", &sha, "which its index lists"],
    );
    // A URL where no repository is.
    let run = h.refused("nothing-here", &["install", "webapp"], 2);
    assert_says(&run, "stderr", &["no berth repository"]);
}

#[test]
fn a_server_error_is_retried_then_reported() {
    let h = HttpNode::new("retries = 2");
    let (v1, v2) = (rel("1.0.0", 1), rel("1.1.0", 2));
    h.node.publish(&v1);
    h.agent("repo", &["install", "webapp"]).ok();
    h.node.publish(&v2);
    let run = h.refused("e500", &["install", "webapp"], 1);
    assert_says(&run, "stderr", &["500"]);
    let hits = h.blob_hits(&h.sha256(&v2));
    let statuses: Vec<u16> = hits.iter().map(|h| h.status).collect();
    assert_eq!(statuses, [500, 500, 500], "the first try and 2 retries");
}

#[test]
fn a_stalled_server_times_out() {
    let h = HttpNode::new("stall_timeout_secs = 2\nretries = 1");
    let (v1, v2) = (rel("1.0.0", 1), rel("1.1.0", 2));
    h.node.publish(&v1);
    h.agent("repo", &["install", "webapp"]).ok();
    h.node.publish(&v2);
    let started = Instant::now();
    let run = h.refused("stall", &["install", "webapp"], 1);
    let took = started.elapsed();
    assert_says(&run, "stderr", &["timed out"]);
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(30),
        "two attempts of 2 s: {took:?}\n{run}"
    );
}

#[test]
fn basic_and_bearer_credentials_come_from_the_config_and_are_never_printed() {
    let h = HttpNode::new("");
    let v1 = rel("1.0.0", 1);
    h.node.publish(&v1);
    // Without credentials: refused, saying so.
    let run = h.refused("basic", &["install", "webapp"], 1);
    assert_says(&run, "stderr", &["401"]);
    // A wrong password: refused, and the password is not printed.
    h.set_http(&format!(
        "username = \"{USER}\"\npassword = \"wrong-{PASSWORD}\""
    ));
    let run = h.refused("basic", &["install", "webapp"], 1);
    assert!(!format!("{run}").contains(PASSWORD), "{run}");
    // The right one, from a file.
    write(
        &h.node.path("/etc/berth/repo-password"),
        &format!("{PASSWORD}\n"),
    );
    h.set_http(&format!(
        "username = \"{USER}\"\npassword_file = \"/etc/berth/repo-password\""
    ));
    let run = h.agent("basic", &["install", "webapp"]).ok();
    assert!(!format!("{run}").contains(PASSWORD), "{run}");
    h.node.assert_current(&v1.vb());
    // Bearer.
    h.set_http(&format!("token = \"{TOKEN}\""));
    let run = h.agent("bearer", &["install", "webapp", "--json"]).ok();
    assert!(!format!("{run}").contains(TOKEN), "{run}");
    // Credentials in the URL are refused, and not echoed.
    let url = h
        .nginx
        .url("basic")
        .replace("http://", &format!("http://{USER}:{PASSWORD}@"));
    let run = h.node.refused(
        &["--repo", &url, "--channel", "staging", "install", "webapp"],
        2,
    );
    assert_says(&run, "stderr", &["credentials in a URL", "configuration"]);
    assert!(!format!("{run}").contains(PASSWORD), "{run}");
}

#[test]
fn https_needs_the_servers_ca_from_ca_cert_or_the_config() {
    let h = HttpNode::new("");
    let v1 = rel("1.0.0", 1);
    h.node.publish(&v1);
    let url = h.nginx.https_url("repo");
    let args = [
        "--repo",
        url.as_str(),
        "--channel",
        "staging",
        "install",
        "webapp",
    ];
    let run = h.node.refused(&args, 1);
    assert_says(&run, "stderr", &["certificate"]);
    let ca = h.nginx.ca_cert().display().to_string();
    let mut with_flag = vec!["--ca-cert", ca.as_str()];
    with_flag.extend(args);
    h.node.agent(&with_flag).ok();
    h.node.assert_current(&v1.vb());
    // agent.toml's http.ca_cert, a path on the node.
    fs::copy(h.nginx.ca_cert(), h.node.path("/etc/berth/ca.pem")).unwrap();
    h.set_http("ca_cert = \"/etc/berth/ca.pem\"");
    let run = h.node.agent(&[&args[..], &["--json"]].concat()).ok();
    assert_eq!(run.json()["changed"], false, "{run}");
}

#[test]
fn a_download_draws_a_bar_on_a_terminal_and_nothing_when_piped() {
    let mut h = HttpNode::new("");
    h.node.env.set("TERM", "xterm");
    let v1 = rel("1.0.0", 1).noise(768);
    h.node.publish(&v1);
    // `script` runs the agent on a pseudo-terminal; `/slow/` makes the
    // download last about three seconds.
    let script = format!(
        "{} --root {} --repo {} --channel staging install webapp",
        berth_tests::bin("agent").display(),
        h.node.root().display(),
        h.nginx.url("slow")
    );
    let run = h
        .node
        .env
        .tool("script", ["-qefc", &script, "/dev/null"])
        .ok();
    assert!(run.stdout.contains("fetching"), "no `fetching` bar:\n{run}");
    h.node.assert_current(&v1.vb());
    // Piped, on another node: not a byte of a bar.
    let other = h.node.env.join("other");
    let run = Run::from(
        h.node
            .env
            .cmd("agent")
            .args(["--root", other.to_str().unwrap(), "--trusted-key", "ci.pub"])
            .args(["--repo", &h.nginx.url("slow"), "--channel", "staging"])
            .args(["install", "webapp"])
            .output()
            .unwrap(),
    )
    .ok();
    assert!(!run.stderr.contains("fetching"), "{run}");
}
