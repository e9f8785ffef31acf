//! How the agent opens its repository: a directory as it is; an `http://`
//! or `https://` URL with agent.toml's `[http]` settings (timeouts,
//! retries, the CA certificate of `--ca-cert` or `http.ca_cert`, basic or
//! bearer credentials). Credentials come from the configuration only: a
//! URL that holds some is refused (by the repository layer, which prints
//! it with them left out).

use std::path::PathBuf;
use std::time::Duration;

use berth_core::repo::{HttpAuth, Open, RemoteOptions, Repository};

use crate::config::Secret;
use crate::error::Error;
use crate::node::Node;

/// Opens the node's repository `url`.
pub fn open(node: &Node, url: &str) -> Result<Repository, Error> {
    let options = options(node)?;
    Ok(Repository::open_with(url, Open::Existing, &options)?.0)
}

/// The client settings: agent.toml's `[http]`, `--ca-cert` over its
/// `ca_cert`, credential files read (paths on the node, under `--root`).
pub fn options(node: &Node) -> Result<RemoteOptions, Error> {
    let http = &node.config.http;
    let on_node = |p: &PathBuf| node.layout.path(&p.display().to_string());
    let ca_certs = match (&node.options.ca_cert, &http.ca_cert) {
        (Some(flag), _) => vec![flag.clone()],
        (None, Some(path)) => vec![on_node(path)],
        (None, None) => Vec::new(),
    };
    let secret = |key: &str, inline: &Option<Secret>, file: &Option<PathBuf>| {
        let Some(path) = file else {
            return Ok(inline.clone());
        };
        let path = on_node(path);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::HttpSetting {
            key: key.to_owned(),
            reason: format!("cannot read `{}` as text: {e}", path.display()),
        })?;
        Ok::<_, Error>(Some(Secret::new(text.trim_end_matches(['\n', '\r']))))
    };
    let password = secret("password_file", &http.password, &http.password_file)?;
    let token = secret("token_file", &http.token, &http.token_file)?;
    let auth = match (&http.username, password, token) {
        (Some(user), Some(password), _) => Some(HttpAuth::Basic {
            user: user.clone(),
            password,
        }),
        (_, _, Some(token)) => Some(HttpAuth::Bearer(token)),
        _ => None,
    };
    Ok(RemoteOptions {
        ca_certs,
        connect_timeout: Duration::from_secs(http.connect_timeout_secs),
        stall_timeout: Duration::from_secs(http.stall_timeout_secs),
        retries: http.retries as usize,
        retry_timeout: Duration::from_secs(http.retry_timeout_secs),
        auth,
    })
}
