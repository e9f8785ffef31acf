//! Repositories in object storage and behind HTTP servers, through the
//! `object_store` crate (docs/remote.md says why that crate): an
//! `s3://bucket/prefix` bucket, or an `http://` / `https://` static server
//! (nginx, a CDN, a bucket's website endpoint), which is read-only. The
//! layout is the one a local directory holds; keys are the same.
//!
//! `object_store` is asynchronous; berth's commands are not. Each backend
//! owns a small single-threaded tokio runtime and blocks on it, and a blob
//! is read as a stream of the response's chunks, one `block_on` per chunk,
//! so an artifact is never held in memory.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, RetryConfig};

use super::{Backend, Conditional, MAX_SMALL_OBJECT, RepoError, Sweep, UpdateFn, Validators};

/// How the client talks to a remote repository: the settings a node's or a
/// CI job's configuration gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOptions {
    /// PEM files of certificate authorities trusted besides the system's.
    pub ca_certs: Vec<PathBuf>,
    /// How long a connection may take to open.
    pub connect_timeout: Duration,
    /// How long a response may send nothing before it is given up (a
    /// stalled server): a limit on silence, not on a download's length.
    pub stall_timeout: Duration,
    /// How many times a request is tried again after a connection error or
    /// a 5xx answer, with an exponential backoff between tries. A download
    /// cut off is tried again from where it stopped (`Range`), when the
    /// server still has the same object (the same ETag).
    pub retries: usize,
    /// No retry starts later than this after a request's first try.
    pub retry_timeout: Duration,
    /// Credentials for an `http(s)://` server, sent with every request.
    pub auth: Option<HttpAuth>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            ca_certs: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            retries: 5,
            retry_timeout: Duration::from_secs(120),
            auth: None,
        }
    }
}

/// A credential: never printed (its `Debug` says `<redacted>`), and no
/// message quotes it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How an HTTP server is told who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAuth {
    /// `Authorization: Basic base64(user:password)`.
    Basic { user: String, password: Secret },
    /// `Authorization: Bearer TOKEN`.
    Bearer(Secret),
}

impl HttpAuth {
    /// The `Authorization` header, marked sensitive (left out of the HTTP
    /// client's debug output).
    fn header(&self) -> Result<object_store::HeaderValue, String> {
        use base64::Engine;
        let value = match self {
            HttpAuth::Basic { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", password.expose()))
            ),
            HttpAuth::Bearer(token) => format!("Bearer {}", token.expose()),
        };
        let mut header = object_store::HeaderValue::from_str(&value)
            .map_err(|_| "the credentials hold characters an HTTP header cannot carry (a newline, a control character)".to_owned())?;
        header.set_sensitive(true);
        Ok(header)
    }
}

/// Which kind of remote a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKind {
    /// `http://` or `https://`: read-only.
    Http,
    /// `s3://bucket/prefix`.
    S3,
}

/// A repository in object storage or behind an HTTP server.
pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    runtime: Arc<tokio::runtime::Runtime>,
    /// The URL, as given, for messages.
    url: String,
    kind: RemoteKind,
}

impl std::fmt::Debug for ObjectBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBackend")
            .field("url", &self.url)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ObjectBackend {
    /// The backend for `url` when it names a remote repository, `None` for
    /// a local one.
    pub fn for_url(url: &str, options: &RemoteOptions) -> Result<Option<ObjectBackend>, RepoError> {
        let kind = if url.starts_with("http://") || url.starts_with("https://") {
            RemoteKind::Http
        } else if url.starts_with("s3://") {
            RemoteKind::S3
        } else {
            return Ok(None);
        };
        let unsupported = |reason: String| RepoError::UnsupportedUrl {
            url: url.to_owned(),
            reason,
        };
        let (_, rest) = url.split_once("://").unwrap_or_default();
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some((_, host)) = authority.rsplit_once('@') {
            // Said without them: the error is printed and may be logged.
            let (scheme, _) = url.split_once("://").unwrap_or_default();
            return Err(RepoError::UnsupportedUrl {
                url: format!("{scheme}://…@{host}{}", &rest[authority.len()..]),
                reason: "credentials in a URL end up in messages and logs: give them in the configuration instead".into(),
            });
        }
        if authority.is_empty() {
            return Err(unsupported(match kind {
                RemoteKind::Http => "the URL has no host".into(),
                RemoteKind::S3 => "the URL has no bucket, e.g. `s3://releases/berth`".into(),
            }));
        }
        let client = client_options(options, kind).map_err(unsupported)?;
        let retry = RetryConfig {
            max_retries: options.retries,
            retry_timeout: options.retry_timeout,
            ..RetryConfig::default()
        };
        let store: Arc<dyn ObjectStore> = match kind {
            RemoteKind::Http => Arc::new(
                object_store::http::HttpBuilder::new()
                    .with_url(url.trim_end_matches('/'))
                    .with_client_options(client)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| unsupported(e.to_string()))?,
            ),
            RemoteKind::S3 => {
                let prefix = rest[authority.len()..].trim_matches('/');
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(authority)
                    .with_client_options(client)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| unsupported(e.to_string()))?;
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
                }
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unsupported(format!("cannot start the network client: {e}")))?;
        Ok(Some(ObjectBackend {
            store,
            runtime: Arc::new(runtime),
            url: url.trim_end_matches('/').to_owned(),
            kind,
        }))
    }

    /// Which kind of remote this is.
    pub fn kind(&self) -> RemoteKind {
        self.kind
    }

    fn path(&self, key: &str) -> Result<ObjectPath, RepoError> {
        ObjectPath::parse(key).map_err(|e| RepoError::Invalid {
            repo: self.url.clone(),
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The whole body of a small object (repo.toml, an index), refused
    /// past [`MAX_SMALL_OBJECT`].
    fn small(&self, key: &str, got: object_store::GetResult) -> Result<Vec<u8>, RepoError> {
        if got.meta.size > MAX_SMALL_OBJECT {
            return Err(RepoError::TooLarge {
                path: format!("{}/{key}", self.url),
                max: MAX_SMALL_OBJECT,
            });
        }
        let mut reader = StreamReader {
            runtime: self.runtime.clone(),
            stream: got.into_stream(),
            chunk: bytes::Bytes::new(),
        }
        .take(MAX_SMALL_OBJECT + 1);
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| RepoError::Remote {
                repo: self.url.clone(),
                key: key.to_owned(),
                reason: e.to_string(),
            })?;
        if bytes.len() as u64 > MAX_SMALL_OBJECT {
            return Err(RepoError::TooLarge {
                path: format!("{}/{key}", self.url),
                max: MAX_SMALL_OBJECT,
            });
        }
        Ok(bytes)
    }

    fn remote_error(&self, key: &str, e: object_store::Error) -> RepoError {
        RepoError::Remote {
            repo: self.url.clone(),
            key: key.to_owned(),
            reason: error_chain(&e),
        }
    }

    fn read_only(&self) -> RepoError {
        RepoError::ReadOnly {
            repo: self.url.clone(),
            reason: match self.kind {
                RemoteKind::Http => "an HTTP server is only read from".into(),
                RemoteKind::S3 => "this version of berth does not write to s3:// yet".into(),
            },
        }
    }

    /// An object's content and metadata, `None` when it does not exist.
    fn get(
        &self,
        key: &str,
        options: GetOptions,
    ) -> Result<Option<object_store::GetResult>, RepoError> {
        let path = self.path(key)?;
        match self.runtime.block_on(self.store.get_opts(&path, options)) {
            Ok(got) => Ok(Some(got)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.remote_error(key, e)),
        }
    }
}

/// An error and its causes, each said once: the HTTP client's own message
/// ("error sending request") says little, its sources why (a timeout, a
/// certificate no root vouches for, a refused connection).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// The HTTP client's settings from berth's.
fn client_options(options: &RemoteOptions, kind: RemoteKind) -> Result<ClientOptions, String> {
    let mut client = ClientOptions::new()
        .with_connect_timeout(options.connect_timeout)
        .with_read_timeout(options.stall_timeout)
        // A download of any length is fine while bytes keep coming.
        .with_timeout_disabled()
        .with_allow_http(true);
    for path in &options.ca_certs {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the CA certificate `{}`: {e}", path.display()))?;
        let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
            format!(
                "`{}` is not a PEM file of certificates: {e}",
                path.display()
            )
        })?;
        if certs.is_empty() {
            return Err(format!("`{}` holds no PEM certificate", path.display()));
        }
        for cert in certs {
            client = client.with_root_certificate(cert);
        }
    }
    // S3 signs its requests itself; these are for a plain HTTP server.
    if let (Some(auth), RemoteKind::Http) = (&options.auth, kind) {
        let mut headers = object_store::HeaderMap::new();
        headers.insert("authorization", auth.header()?);
        client = client.with_default_headers(headers);
    }
    Ok(client)
}

/// A blob's response body as a `Read`: one chunk at a time.
struct StreamReader {
    runtime: Arc<tokio::runtime::Runtime>,
    stream: BoxStream<'static, object_store::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(io::Error::other(error_chain(&e))),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

impl Backend for ObjectBackend {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, RepoError> {
        match self.get(key, GetOptions::default())? {
            Some(got) => self.small(key, got).map(Some),
            None => Ok(None),
        }
    }

    fn read_if_changed(
        &self,
        key: &str,
        known: Option<&Validators>,
    ) -> Result<Conditional, RepoError> {
        let known = known.cloned().unwrap_or_default();
        let options = GetOptions {
            if_none_match: known.etag,
            if_modified_since: known
                .last_modified
                .map(|t| std::time::SystemTime::from(t).into()),
            ..GetOptions::default()
        };
        let path = self.path(key)?;
        let got = match self.runtime.block_on(self.store.get_opts(&path, options)) {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(Conditional::Missing),
            Err(object_store::Error::NotModified { .. }) => return Ok(Conditional::NotModified),
            Err(e) => return Err(self.remote_error(key, e)),
        };
        let modified = std::time::SystemTime::from(got.meta.last_modified);
        let validators = Validators {
            etag: got.meta.e_tag.clone(),
            // A server that gives no Last-Modified gets the epoch here.
            last_modified: jiff::Timestamp::try_from(modified)
                .ok()
                .filter(|t| *t != jiff::Timestamp::UNIX_EPOCH),
        };
        let bytes = self.small(key, got)?;
        Ok(Conditional::Changed { bytes, validators })
    }

    fn open(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>, RepoError> {
        let Some(got) = self.get(key, GetOptions::default())? else {
            return Ok(None);
        };
        Ok(Some(Box::new(StreamReader {
            runtime: self.runtime.clone(),
            stream: got.into_stream(),
            chunk: bytes::Bytes::new(),
        })))
    }

    fn size(&self, key: &str) -> Result<Option<u64>, RepoError> {
        let path = self.path(key)?;
        match self.runtime.block_on(self.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.remote_error(key, e)),
        }
    }

    fn put_new(&self, _key: &str, _data: &mut dyn Read) -> Result<bool, RepoError> {
        Err(self.read_only())
    }

    fn update(&self, _key: &str, _f: &mut UpdateFn<'_>) -> Result<bool, RepoError> {
        Err(self.read_only())
    }

    fn delete(&self, _key: &str) -> Result<(), RepoError> {
        Err(self.read_only())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, RepoError> {
        if self.kind == RemoteKind::Http {
            return Err(RepoError::ReadOnly {
                repo: self.url.clone(),
                reason: "a static HTTP server cannot list its files; list the repository where it is published (a directory or s3://)".into(),
            });
        }
        let base = self.path(prefix.trim_end_matches('/'))?;
        let listed = self.runtime.block_on(async {
            let mut keys = Vec::new();
            let mut listing = self.store.list(Some(&base));
            while let Some(meta) = listing.next().await {
                keys.push(meta?.location.to_string());
            }
            Ok::<_, object_store::Error>(keys)
        });
        let mut keys = listed.map_err(|e| self.remote_error(prefix, e))?;
        keys.sort();
        Ok(keys)
    }

    fn lock(&self) -> Result<Box<dyn Send>, RepoError> {
        Err(self.read_only())
    }

    fn sweep_abandoned(&self, _dry_run: bool) -> Result<Sweep, RepoError> {
        Err(self.read_only())
    }
}
