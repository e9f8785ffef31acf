//! How the agent opens its repository: a directory as it is; an `http://`
//! or `https://` URL with agent.toml's `[http]` settings (timeouts,
//! retries, the CA certificate of `--ca-cert` or `http.ca_cert`, basic or
//! bearer credentials). Credentials come from the configuration only: a
//! URL that holds some is refused, and printed with them masked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_core::repo::{Open, Repository};

use crate::config::{HttpConfig, Secret};
use crate::error::Error;
use crate::node::Node;

/// What the agent asks of an HTTP(S) client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    pub stall_timeout: Duration,
    pub retries: u32,
    pub retry_timeout: Duration,
    /// PEM certificates trusted on top of the system's roots.
    pub ca_cert: Option<Vec<u8>>,
    /// The `Authorization` header's value.
    pub authorization: Option<Secret>,
}

/// Opens the node's repository `url`.
pub fn open(node: &Node, url: &str) -> Result<Repository, Error> {
    refuse_credentials(url)?;
    if is_http(url) {
        let settings = settings(node)?;
        return Ok(open_http(url, &settings)?);
    }
    Ok(Repository::open(url, Open::Existing)?.0)
}

fn is_http(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

fn open_http(
    url: &str,
    settings: &HttpSettings,
) -> Result<Repository, berth_core::repo::RepoError> {
    let _ = settings;
    Ok(Repository::open(url, Open::Existing)?.0)
}

/// A URL whose authority holds `user[:password]@` is refused.
fn refuse_credentials(url: &str) -> Result<(), Error> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(());
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => Err(Error::CredentialsInUrl {
            url: format!(
                "{scheme}://***@{}{}",
                &authority[at + 1..],
                &rest[authority_end..]
            ),
        }),
        None => Ok(()),
    }
}

/// The `[http]` settings with the command line's `--ca-cert`, files read.
pub fn settings(node: &Node) -> Result<HttpSettings, Error> {
    let http: &HttpConfig = &node.config.http;
    let on_node = |p: &Path| node.layout.path(&p.display().to_string());
    let ca_cert = match (&node.options.ca_cert, &http.ca_cert) {
        (Some(flag), _) => Some(read_setting("ca_cert", flag.clone())?),
        (None, Some(path)) => Some(read_setting("ca_cert", on_node(path))?),
        (None, None) => None,
    };
    let secret = |key: &str, inline: &Option<Secret>, file: &Option<PathBuf>| {
        Ok::<_, Error>(match (inline, file) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(path)) => {
                let bytes = read_setting(key, on_node(path))?;
                let text = String::from_utf8(bytes).map_err(|_| Error::HttpSetting {
                    key: key.to_owned(),
                    reason: format!("`{}` is not text", on_node(path).display()),
                })?;
                Some(Secret::new(text.trim_end_matches(['\n', '\r']).to_owned()))
            }
            (None, None) => None,
        })
    };
    let password = secret("password_file", &http.password, &http.password_file)?;
    let token = secret("token_file", &http.token, &http.token_file)?;
    let authorization = match (&http.username, password, token) {
        (Some(user), Some(password), _) => Some(Secret::new(format!(
            "Basic {}",
            base64(format!("{user}:{}", password.expose()).as_bytes())
        ))),
        (_, _, Some(token)) => Some(Secret::new(format!("Bearer {}", token.expose()))),
        _ => None,
    };
    Ok(HttpSettings {
        connect_timeout: Duration::from_secs(http.connect_timeout_secs),
        stall_timeout: Duration::from_secs(http.stall_timeout_secs),
        retries: http.retries,
        retry_timeout: Duration::from_secs(http.retry_timeout_secs),
        ca_cert,
        authorization,
    })
}

fn read_setting(key: &str, path: PathBuf) -> Result<Vec<u8>, Error> {
    std::fs::read(&path).map_err(|e| Error::HttpSetting {
        key: key.to_owned(),
        reason: format!("cannot read `{}`: {e}", path.display()),
    })
}

/// Standard base64 with padding (RFC 4648), for a basic `Authorization`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
    }

    #[test]
    fn credentials_in_a_url_are_refused_and_masked() {
        let err = refuse_credentials("https://deploy:hunter2@repo.example/berth?x=1").unwrap_err();
        let text = err.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("deploy"),
            "{text}"
        );
        assert!(
            text.contains("https://***@repo.example/berth?x=1"),
            "{text}"
        );
        assert!(refuse_credentials("https://repo.example/a@b").is_ok());
        assert!(refuse_credentials("/srv/berth").is_ok());
    }
}
