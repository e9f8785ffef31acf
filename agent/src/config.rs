//! `agent.toml`, the node's configuration: which repository, which
//! channels in priority order, and per-package settings. Flags override
//! it: `--repo R --channel C` alone are enough to drive a node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_core::name;
pub use berth_core::repo::Secret;
use serde::Deserialize;

/// A parsed and checked `agent.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The repository: a directory or a `file://` URL.
    #[serde(default)]
    pub repository: Option<String>,
    /// Channels in priority order: the first that holds a package wins.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Public keys whose signatures on channel indexes are trusted.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// Retention of snapshots on this node.
    #[serde(default)]
    pub retention: Retention,
    /// Per-package settings.
    #[serde(default)]
    pub packages: BTreeMap<String, PackageConfig>,
    /// How an `http://` or `https://` repository is read.
    #[serde(default)]
    pub http: HttpConfig,
}

/// `[http]`: timeouts, retries, TLS roots and credentials for a
/// repository served over HTTP(S).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Seconds to wait for a connection to be made.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds without a byte from the server, waiting for its answer or
    /// in the middle of a download, after which the attempt fails.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_secs: u64,
    /// Attempts after the first one for a request that failed on the way
    /// (connection refused or reset, a timeout, a 5xx answer): with
    /// exponential backoff, and a download resumes with `Range` where it
    /// stopped. 0: no retry.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Seconds after a request's first attempt past which it is not tried
    /// again.
    #[serde(default = "default_retry_timeout")]
    pub retry_timeout_secs: u64,
    /// A PEM file of CA certificates trusted for `https://` on top of the
    /// system's roots (a path on the node, under `--root`).
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Basic authentication: the user, with `password` or `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Bearer authentication (`Authorization: Bearer TOKEN`).
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_stall_timeout() -> u64 {
    30
}

fn default_retries() -> u32 {
    8
}

fn default_retry_timeout() -> u64 {
    120
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout_secs: default_connect_timeout(),
            stall_timeout_secs: default_stall_timeout(),
            retries: default_retries(),
            retry_timeout_secs: default_retry_timeout(),
            ca_cert: None,
            username: None,
            password: None,
            password_file: None,
            token: None,
            token_file: None,
        }
    }
}

impl HttpConfig {
    fn check(&self) -> Result<(), String> {
        for (key, value) in [
            ("connect_timeout_secs", self.connect_timeout_secs),
            ("stall_timeout_secs", self.stall_timeout_secs),
            ("retry_timeout_secs", self.retry_timeout_secs),
        ] {
            if value == 0 {
                return Err(format!("http.{key} must be at least 1"));
            }
        }
        let password = self.password.is_some() as u8 + self.password_file.is_some() as u8;
        let token = self.token.is_some() as u8 + self.token_file.is_some() as u8;
        if password > 1 {
            return Err("http.password and http.password_file: give one of them".into());
        }
        if token > 1 {
            return Err("http.token and http.token_file: give one of them".into());
        }
        match (&self.username, password, token) {
            (Some(_), 0, _) => {
                Err("http.username needs http.password or http.password_file".into())
            }
            (None, 1, _) => Err("http.password needs http.username".into()),
            (Some(_), _, 1) => Err(
                "http.username and http.token: a repository takes basic or bearer credentials, not both"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}

/// How many snapshots the node keeps, by count and by bytes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Snapshots kept per package.
    #[serde(default = "default_snapshots")]
    pub snapshots: u32,
    /// Total bytes of snapshots kept per package (0: no limit).
    #[serde(default)]
    pub snapshot_bytes: u64,
}

fn default_snapshots() -> u32 {
    5
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            snapshots: default_snapshots(),
            snapshot_bytes: 0,
        }
    }
}

/// Settings of one package on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageConfig {
    /// The env file (secrets) linked into each release when the package
    /// asks for one (`env_file = true` in its [install]).
    #[serde(default)]
    pub env_file: Option<PathBuf>,
    /// Unpacked releases kept; overrides the package's own `keep_releases`.
    #[serde(default)]
    pub keep_releases: Option<u32>,
    /// Channels for this package only, in priority order.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the configuration file `{}` does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` is not a valid agent configuration: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl Config {
    /// Reads `path`. A missing file is an empty configuration when
    /// `required` is false (the default path on a node driven by flags), and
    /// an error when the user named it.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing {
                    path: path.to_owned(),
                });
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Config::parse(&text).map_err(|reason| ConfigError::Invalid {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses and checks the text of `agent.toml`; `Err` is the reason.
    pub fn parse(text: &str) -> Result<Config, String> {
        // The message and where, never the line itself: it may hold a
        // credential.
        let config: Config = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("{message} (line {line})")
                }
                None => message.to_owned(),
            }
        })?;
        let all_channels = config
            .channels
            .iter()
            .chain(config.packages.values().flat_map(|p| &p.channels));
        for c in all_channels {
            name::check_channel(c).map_err(|e| e.to_string())?;
        }
        config.http.check()?;
        for (package, p) in &config.packages {
            name::check_package_name(package).map_err(|e| e.to_string())?;
            if p.keep_releases == Some(0) {
                return Err(format!(
                    "packages.{package}.keep_releases must be at least 1"
                ));
            }
        }
        Ok(config)
    }

    /// The channels to read `package` from, in priority order: the
    /// command line's, else the package's own, else the node's.
    pub fn channels_for<'a>(&'a self, package: &str, flags: &'a [String]) -> &'a [String] {
        if !flags.is_empty() {
            return flags;
        }
        match self.packages.get(package) {
            Some(p) if !p.channels.is_empty() => &p.channels,
            _ => &self.channels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
repository = "file:///srv/berth"
channels = ["hotfix", "production"]

[retention]
snapshots = 3
snapshot_bytes = 1000000

[packages.webapp]
env_file = "/etc/berth/env/webapp.env"
keep_releases = 5

[packages.api]
channels = ["staging"]
"#;

    #[test]
    fn the_example_parses_and_flags_win() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.repository.as_deref(), Some("file:///srv/berth"));
        assert_eq!(c.retention.snapshots, 3);
        assert_eq!(c.channels_for("webapp", &[]), ["hotfix", "production"]);
        assert_eq!(c.channels_for("api", &[]), ["staging"]);
        let flags = vec!["dev".to_owned()];
        assert_eq!(c.channels_for("api", &flags), ["dev"]);
        assert_eq!(Config::default().retention.snapshots, 5);
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let e = Config::parse("repositry = \"x\"").unwrap_err();
        assert!(e.contains("unknown field `repositry`"), "{e}");
        let e = Config::parse("channels = [\"Prod\"]").unwrap_err();
        assert!(e.contains("invalid channel name"), "{e}");
        let e = Config::parse("[packages.web_app]").unwrap_err();
        assert!(e.contains("invalid package name"), "{e}");
        let e = Config::parse("[packages.webapp]\nkeep_releases = 0").unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
    }

    #[test]
    fn http_settings_have_defaults_and_credentials_are_checked_and_never_printed() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.http, HttpConfig::default());
        assert_eq!(
            (
                c.http.connect_timeout_secs,
                c.http.stall_timeout_secs,
                c.http.retries
            ),
            (10, 30, 8)
        );
        let c = Config::parse(
            "[http]\nretries = 0\nstall_timeout_secs = 5\nusername = \"deploy\"\npassword = \"hunter2\"\n",
        )
        .unwrap();
        assert_eq!((c.http.retries, c.http.stall_timeout_secs), (0, 5));
        assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
        for (text, says) in [
            ("[http]\nusername = \"u\"", "needs http.password"),
            ("[http]\npassword = \"p\"", "needs http.username"),
            (
                "[http]\ntoken = \"t\"\ntoken_file = \"/f\"",
                "give one of them",
            ),
            (
                "[http]\nusername = \"u\"\npassword = \"p\"\ntoken = \"t\"",
                "not both",
            ),
            ("[http]\nstall_timeout_secs = 0", "at least 1"),
            ("[http]\nretry = 3", "unknown field `retry`"),
            ("[http]\nusername = \"u\"\npassword = hunter2", "(line 3)"),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains("hunter2"));
        }
    }

    #[test]
    fn a_missing_file_is_empty_unless_required() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        assert_eq!(Config::load(&path, false).unwrap(), Config::default());
        assert!(matches!(
            Config::load(&path, true),
            Err(ConfigError::Missing { .. })
        ));
        std::fs::write(&path, "channels = 3").unwrap();
        assert!(matches!(
            Config::load(&path, false),
            Err(ConfigError::Invalid { .. })
        ));
    }
}
