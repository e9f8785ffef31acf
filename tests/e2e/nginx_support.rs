//! An nginx (Debian's package, which tests/run.sh installs) serving a
//! repository on 127.0.0.1, for the HTTP tests and benchmarks: started as
//! a child of the test (no daemon, one process, so that killing it drops
//! every connection), with its prefix, pid file, logs and temp paths in a
//! temp dir of its own, and stopped on drop, also when a test fails. A
//! server that cannot start fails the test: there is no skipping.
//!
//! The repository is served under several prefixes, each with its own
//! fault on the blobs (`blobs/`) while repo.toml and the indexes are served
//! as they are, so that an agent resolves the release and then meets the
//! fault while fetching the artifact:
//!
//! | prefix | blobs |
//! | --- | --- |
//! | `/repo/` | as they are |
//! | `/slow/` | at [`SLOW_RATE`] bytes a second (time to kill the server mid-download) |
//! | `/e500/` | `500 Internal Server Error`, always |
//! | `/stall/` | proxied to a socket that accepts and never answers |
//! | `/trunc/` | from a copy of the tree whose blobs were cut short ([`Nginx::truncate_blob`]) |
//! | `/basic/` | everything behind basic auth, user [`USER`], password [`PASSWORD`] |
//! | `/bearer/` | everything behind `Authorization: Bearer` [`TOKEN`] |
//!
//! It listens for `https://` too, on [`Nginx::tls_port`], with a
//! certificate for 127.0.0.1 signed by a CA made for it
//! ([`Nginx::ca_cert`]), which no system trusts.
//!
//! The access log has one line a request: `METHOD URI STATUS BYTES
//! "RANGE" "IF-NONE-MATCH"` ([`Nginx::log`]); credentials are not logged.

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes a second of the `/slow/` blobs.
pub const SLOW_RATE: u64 = 256 << 10;
/// Basic auth of `/basic/`.
pub const USER: &str = "deploy";
pub const PASSWORD: &str = "pw-7c1e55d0a9";
/// Bearer token of `/bearer/`.
pub const TOKEN: &str = "tok-41b9e2f7c3";

/// The nginx binary of Debian's package.
const NGINX: &str = "/usr/sbin/nginx";

/// One access log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub method: String,
    pub uri: String,
    pub status: u16,
    pub bytes: u64,
    /// The request's `Range` header, `-` when it had none.
    pub range: String,
    /// The request's `If-None-Match` header, `-` when it had none.
    pub if_none_match: String,
}

/// A running nginx; see the module's doc.
#[derive(Debug)]
pub struct Nginx {
    dir: tempfile::TempDir,
    pub port: u16,
    pub tls_port: u16,
    child: Option<Child>,
    /// The socket `/stall/` proxies to: the kernel accepts connections
    /// into its backlog, and nothing ever reads or answers them.
    _stall: TcpListener,
}

impl Nginx {
    /// Serves `repo` (a directory the packager wrote) on a free port of
    /// 127.0.0.1. Panics, failing the test, when nginx cannot start.
    pub fn serve(repo: &Path) -> Nginx {
        assert!(
            Path::new(NGINX).is_file(),
            "{NGINX} is missing: install Debian's nginx package (bash tests/run.sh does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("berth-nginx-")
            .tempdir()
            .unwrap();
        for sub in ["tmp", "trunc"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        make_certificates(dir.path());
        fs::write(
            dir.path().join("htpasswd"),
            format!("{USER}:{{PLAIN}}{PASSWORD}\n"),
        )
        .unwrap();
        let stall = TcpListener::bind("127.0.0.1:0").unwrap();
        let stall_port = stall.local_addr().unwrap().port();
        let repo = fs::canonicalize(repo).unwrap();
        // A port that was free a moment ago may be taken by the time nginx
        // binds it: try a few.
        let mut nginx = Nginx {
            dir,
            port: 0,
            tls_port: 0,
            child: None,
            _stall: stall,
        };
        let mut last = String::new();
        for _ in 0..5 {
            nginx.port = free_port();
            nginx.tls_port = free_port();
            fs::write(
                nginx.dir().join("nginx.conf"),
                config(nginx.dir(), &repo, [nginx.port, nginx.tls_port], stall_port),
            )
            .unwrap();
            match nginx.start() {
                Ok(()) => return nginx,
                Err(e) => last = e,
            }
        }
        panic!("nginx did not start: {last}")
    }

    /// `http://127.0.0.1:PORT/PREFIX`, a repository URL.
    pub fn url(&self, prefix: &str) -> String {
        format!("http://127.0.0.1:{}/{prefix}", self.port)
    }

    /// `https://127.0.0.1:TLS_PORT/PREFIX`.
    pub fn https_url(&self, prefix: &str) -> String {
        format!("https://127.0.0.1:{}/{prefix}", self.tls_port)
    }

    /// The PEM certificate of the CA that signed the server's certificate.
    pub fn ca_cert(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Its own directory (config, logs, temp paths).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the server with its config and waits until it answers.
    fn start(&mut self) -> Result<(), String> {
        let conf = self.dir.path().join("nginx.conf");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(self.dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {NGINX}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!(
                    "nginx exited ({status}) on port {}: {}",
                    self.port,
                    fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
                ));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "nginx did not listen on port {} in 10 s",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL (every connection drops at once) and
    /// waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, after [`Nginx::kill`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "nginx is still running");
        self.start()
            .unwrap_or_else(|e| panic!("nginx did not start again: {e}"));
    }

    /// Serves, under `/trunc/`, the blob of `sha256` cut to `len` bytes.
    pub fn truncate_blob(&self, repo: &Path, sha256: &str, len: u64) {
        let rel = format!("blobs/sha256/{}/{sha256}.tar.zst", &sha256[..2]);
        let to = self.dir.path().join("trunc").join(&rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        let mut bytes = Vec::new();
        fs::File::open(repo.join(&rel))
            .unwrap()
            .take(len)
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(
            bytes.len() as u64,
            len,
            "the blob is longer than {len} bytes"
        );
        fs::write(to, bytes).unwrap();
    }

    /// The access log so far, one [`Hit`] a request (nginx writes a line
    /// when the response is over).
    pub fn log(&self) -> Vec<Hit> {
        let text = fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines().map(parse_hit).collect()
    }

    /// The access log's requests for URIs ending in `suffix`.
    pub fn hits(&self, suffix: &str) -> Vec<Hit> {
        self.log()
            .into_iter()
            .filter(|h| h.uri.ends_with(suffix))
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn parse_hit(line: &str) -> Hit {
    // METHOD URI STATUS BYTES "RANGE" "IF-NONE-MATCH"
    let (head, quoted) = line.split_once(" \"").unwrap_or((line, ""));
    let mut words = head.split(' ');
    let mut next = || words.next().unwrap_or_default().to_owned();
    let (method, uri, status, bytes) = (next(), next(), next(), next());
    let mut quotes = quoted.split('"').filter(|s| !s.trim().is_empty());
    Hit {
        method,
        uri,
        status: status.parse().unwrap_or(0),
        bytes: bytes.parse().unwrap_or(0),
        range: quotes.next().unwrap_or("-").to_owned(),
        if_none_match: quotes.next().unwrap_or("-").to_owned(),
    }
}

/// A CA and a certificate for 127.0.0.1 it signed, by the openssl CLI,
/// into `dir`: ca.pem, server.pem, server.key.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (Debian's openssl package; tests/run.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=berth test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    run(&ca);
    let mut req = vec!["req", "-subj", "/CN=127.0.0.1"];
    req.extend(ec);
    req.extend(["-keyout", "server.key", "-out", "server.csr"]);
    run(&req);
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}

/// The server's configuration: see the module's doc.
fn config(dir: &Path, repo: &Path, [port, tls_port]: [u16; 2], stall_port: u16) -> String {
    let d = dir.display();
    let r = repo.display();
    format!(
        r#"# berth's test nginx: one process in the foreground, everything under {d}
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    types {{ application/json json; }}
    default_type application/octet-stream;
    sendfile on;
    log_format berth '$request_method $uri $status $body_bytes_sent "$http_range" "$http_if_none_match"';
    access_log {d}/access.log berth;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        server_name localhost;
        location /repo/ {{ alias {r}/; }}
        location /slow/blobs/ {{ alias {r}/blobs/; limit_rate {SLOW_RATE}; }}
        location /slow/ {{ alias {r}/; }}
        location /e500/blobs/ {{ return 500; }}
        location /e500/ {{ alias {r}/; }}
        location /stall/blobs/ {{
            proxy_pass http://127.0.0.1:{stall_port};
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
        location /stall/ {{ alias {r}/; }}
        location /trunc/blobs/ {{ alias {d}/trunc/blobs/; }}
        location /trunc/ {{ alias {r}/; }}
        location /basic/ {{
            alias {r}/;
            auth_basic "berth";
            auth_basic_user_file {d}/htpasswd;
        }}
        location /bearer/ {{
            alias {r}/;
            if ($http_authorization != "Bearer {TOKEN}") {{ return 401; }}
        }}
    }}
}}
"#
    )
}

#[test]
fn the_server_serves_logs_and_comes_back_after_a_kill() {
    let env = berth_tests::TestEnv::new();
    let repo = env.join("repo");
    berth_tests::write(&repo.join("repo.toml"), "format = 1\n");
    let mut nginx = Nginx::serve(&repo);
    let get = |env: &berth_tests::TestEnv, url: String| {
        env.tool(
            "curl",
            ["-s", "-o", "/dev/null", "-w", "%{http_code}", &url],
        )
        .stdout
    };
    assert_eq!(get(&env, nginx.url("repo/repo.toml")), "200");
    assert_eq!(get(&env, nginx.url("repo/missing")), "404");
    assert_eq!(get(&env, nginx.url("e500/blobs/x")), "500");
    assert_eq!(get(&env, nginx.url("basic/repo.toml")), "401");
    assert_eq!(get(&env, nginx.url("bearer/repo.toml")), "401");
    let sha = "ab".repeat(32);
    let blob = format!("blobs/sha256/ab/{sha}.tar.zst");
    berth_tests::write(&repo.join(&blob), "0123456789");
    nginx.truncate_blob(&repo, &sha, 4);
    let body = |env: &berth_tests::TestEnv, url: String| env.tool("curl", ["-s", &url]).stdout;
    assert_eq!(body(&env, nginx.url(&format!("repo/{blob}"))), "0123456789");
    assert_eq!(body(&env, nginx.url(&format!("trunc/{blob}"))), "0123");
    // https:// with the test CA, and refused without it.
    let ca = nginx.ca_cert().display().to_string();
    let tls = env
        .tool(
            "curl",
            ["-s", "--cacert", &ca, &nginx.https_url("repo/repo.toml")],
        )
        .stdout;
    assert_eq!(tls, "format = 1\n");
    assert_eq!(get(&env, nginx.https_url("repo/repo.toml")), "000");
    let hits = nginx.hits("/repo/repo.toml");
    assert_eq!(hits[0].status, 200);
    assert_eq!(hits[0].bytes, 11);
    assert_eq!(hits.len(), 2, "{hits:?}");
    nginx.kill();
    assert_eq!(get(&env, nginx.url("repo/repo.toml")), "000");
    nginx.restart();
    assert_eq!(get(&env, nginx.url("repo/repo.toml")), "200");
}
