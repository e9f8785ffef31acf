//! The ready hooks in hooks/, run for real: `http-health` against Python's
//! HTTP server on loopback.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_tests::{Run, TestEnv, write};

fn hook(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../hooks")
        .join(name)
}

/// `python3 -m http.server` serving `root` on 127.0.0.1; stopped on drop.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    /// Starts on `port` (0: any free port) and waits until it listens.
    fn start(root: &Path, port: u16) -> HttpServer {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs (the README's test command installs it)");
        // "Serving HTTP on 127.0.0.1 port 43567 (http://127.0.0.1:43567/) ..."
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the server says where it listens");
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the HTTP server did not start: {line:?}"));
        HttpServer { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_health(env: &TestEnv, vars: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(hook("http-health"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .current_dir(env.path());
    Run::from(cmd.output().expect("the hook runs"))
}

fn serving_version(env: &TestEnv) -> HttpServer {
    write(&env.join("site/health"), "ok 1.4.2\n");
    HttpServer::start(&env.join("site"), 0)
}

#[test]
fn http_health_passes_when_the_url_answers_with_the_expected_text() {
    let env = TestEnv::new();
    let server = serving_version(&env);
    let run = http_health(
        &env,
        &[
            ("HEALTH_URL", &server.url("health")),
            ("HEALTH_EXPECT", "1.4.2"),
        ],
    )
    .ok();
    assert!(run.stdout.contains("answered 200"), "{run}");
}

#[test]
fn http_health_fails_on_the_wrong_text_after_its_retries() {
    let env = TestEnv::new();
    let server = serving_version(&env);
    let run = http_health(
        &env,
        &[
            ("HEALTH_URL", &server.url("health")),
            ("HEALTH_EXPECT", "2.0.0"),
            ("HEALTH_RETRIES", "2"),
            ("HEALTH_INTERVAL", "0"),
        ],
    )
    .code(1);
    assert!(
        run.stderr.contains("without \"2.0.0\" (attempt 2/2)"),
        "{run}"
    );
    assert!(run.stderr.contains("not healthy after 2 attempts"), "{run}");
}

#[test]
fn http_health_fails_on_an_error_status() {
    let env = TestEnv::new();
    let server = serving_version(&env);
    let run = http_health(
        &env,
        &[
            ("HEALTH_URL", &server.url("missing")),
            ("HEALTH_RETRIES", "1"),
        ],
    )
    .code(1);
    assert!(run.stderr.contains("answered 404"), "{run}");
}

#[test]
fn http_health_fails_when_nothing_listens() {
    let env = TestEnv::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/health");
    let run = http_health(
        &env,
        &[
            ("HEALTH_URL", &url),
            ("HEALTH_RETRIES", "2"),
            ("HEALTH_INTERVAL", "0"),
        ],
    )
    .code(1);
    assert!(run.stderr.contains("(attempt 1/2)"), "{run}");
    assert!(run.stderr.contains("not healthy after 2 attempts"), "{run}");
}

#[test]
fn http_health_retries_until_a_slow_server_comes_up() {
    let env = TestEnv::new();
    write(&env.join("site/health"), "ok\n");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/health");
    let hook = Command::new(hook("http-health"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([
            ("HEALTH_URL", url.as_str()),
            ("HEALTH_RETRIES", "30"),
            ("HEALTH_INTERVAL", "1"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _server = HttpServer::start(&env.join("site"), port);
    let run = Run::from(hook.wait_with_output().unwrap()).ok();
    assert!(
        run.stderr.contains("(attempt 1/30)"),
        "the first attempts failed:\n{run}"
    );
    assert!(run.stdout.contains("answered 200"), "{run}");
}

#[test]
fn http_health_refuses_to_run_unconfigured() {
    let env = TestEnv::new();
    let run = http_health(&env, &[]).code(2);
    assert!(run.stderr.contains("HEALTH_URL is not set"), "{run}");
    let run = http_health(
        &env,
        &[
            ("HEALTH_URL", "http://127.0.0.1:1/"),
            ("HEALTH_RETRIES", "x"),
        ],
    )
    .code(2);
    assert!(run.stderr.contains("whole numbers"), "{run}");
}
