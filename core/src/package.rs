//! `package.toml`, the file an application keeps in its own repository to
//! say how it is packaged: `[package]`, `[install]`, `[hooks]` (paths
//! relative to the file) and `[rollback]`. Unknown keys are refused and
//! every error points at a line and column.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::manifest::{Hooks, Install, Rollback, check_entry_path};
use crate::name::{self, InvalidName};
use crate::{Diagnose, Fault};

/// The package file's name in an application's directory.
pub const PACKAGE_FILE: &str = "package.toml";

/// A parsed and checked package file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageFile {
    pub package: PackageSection,
    #[serde(default)]
    pub source: SourceSection,
    pub install: Spanned<Install>,
    #[serde(default)]
    hooks: Option<Spanned<Hooks>>,
    #[serde(default)]
    pub rollback: Rollback,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSection {
    pub name: Spanned<String>,
    pub version: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// The directory shipped as `files/`, relative to the package file.
    #[serde(default)]
    pub payload: Option<Spanned<String>>,
    /// Payload paths that look like secrets but are meant to ship.
    #[serde(default)]
    pub allow_secrets: Vec<String>,
}

/// What CI variables cannot tell: the repository's address, if wanted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    #[serde(default)]
    pub url: Option<String>,
}

/// The payload directory when `payload` is not set.
pub const DEFAULT_PAYLOAD: &str = "dist";

/// Why a package file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PackageFileError {
    #[error("no package file at `{}`", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` is not a valid package file: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("`{}` line {line}, column {column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        hint: String,
    },
}

impl Diagnose for PackageFileError {
    fn fault(&self) -> Fault {
        Fault::Input
    }

    fn hint(&self) -> Option<String> {
        match self {
            PackageFileError::Missing { .. } => Some(
                "run `packager init` in the application's directory to write a commented one, or pass the directory that holds it".into(),
            ),
            PackageFileError::Read { .. } => None,
            PackageFileError::Parse { .. } => Some(
                "the keys are described in `packager init`'s commented file and in docs/package-toml.md".into(),
            ),
            PackageFileError::Invalid { hint, .. } => Some(hint.clone()),
        }
    }
}

impl PackageFile {
    /// Reads, parses and checks `path`.
    pub fn load(path: &Path) -> Result<PackageFile, PackageFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PackageFileError::Missing {
                    path: path.to_owned(),
                });
            }
            Err(source) => {
                return Err(PackageFileError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::parse(&text, path)
    }

    /// Parses and checks the text of a package file; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<PackageFile, PackageFileError> {
        let file: PackageFile = toml::from_str(text).map_err(|source| PackageFileError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        let invalid = |span: std::ops::Range<usize>, message: String, hint: String| {
            let (line, column) = line_column(text, span.start);
            PackageFileError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message,
                hint,
            }
        };
        let from_name = |span, e: InvalidName| invalid(span, e.to_string(), e.hint().into());
        name::check_package_name(file.package.name.get_ref())
            .map_err(|e| from_name(file.package.name.span(), e))?;
        name::check_version(file.package.version.get_ref())
            .map_err(|e| from_name(file.package.version.span(), e))?;
        if let Some(payload) = &file.package.payload
            && (Path::new(payload.get_ref()).is_absolute() || payload.get_ref().is_empty())
        {
            return Err(invalid(
                payload.span(),
                format!(
                    "payload `{}` must be a directory relative to the package file",
                    payload.get_ref()
                ),
                "e.g. payload = \"dist\"".into(),
            ));
        }
        for p in &file.package.allow_secrets {
            if let Err(reason) = check_entry_path(p) {
                return Err(invalid(
                    file.package.name.span(),
                    format!("allow_secrets entry `{p}`: {reason}"),
                    "list paths relative to the payload directory, e.g. allow_secrets = [\"certs/ca.pem\"]".into(),
                ));
            }
        }
        file.install.get_ref().check().map_err(|m| {
            invalid(
                file.install.span(),
                format!("[install] {m}"),
                "see docs/package-toml.md for the [install] keys".into(),
            )
        })?;
        let hooks_span = file.hooks.as_ref().map_or(0..0, |h| h.span());
        for (hook, p) in file.hooks().iter() {
            if p.is_empty() || Path::new(p).is_absolute() {
                return Err(invalid(
                    hooks_span.clone(),
                    format!("[hooks] {hook} = \"{p}\" must be a path relative to the package file"),
                    "e.g. health = \"hooks/health\"".into(),
                ));
            }
        }
        if file.hooks().timeout_secs == 0 {
            return Err(invalid(
                hooks_span,
                "[hooks] timeout_secs must be at least 1".into(),
                "the default is 300 seconds".into(),
            ));
        }
        Ok(file)
    }

    /// The `[hooks]` table (all unset when the file has none).
    pub fn hooks(&self) -> Hooks {
        self.hooks
            .as_ref()
            .map(|h| h.get_ref().clone())
            .unwrap_or_default()
    }

    /// The payload directory, relative to the package file.
    pub fn payload(&self) -> &str {
        self.package
            .payload
            .as_ref()
            .map_or(DEFAULT_PAYLOAD, |p| p.get_ref().as_str())
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"[package]
name = "webapp"
version = "1.4.2"
description = "Example web application"
payload = "dist"            # directory shipped as files/

[install]
target = "/srv/webapp"

[hooks]
health = "hooks/health"

[rollback]
data_epoch = 1
"#;

    fn parse(text: &str) -> Result<PackageFile, PackageFileError> {
        PackageFile::parse(text, Path::new("package.toml"))
    }

    #[test]
    fn the_minimal_file_parses() {
        let f = parse(MINIMAL).unwrap();
        assert_eq!(f.package.name.get_ref(), "webapp");
        assert_eq!(f.payload(), "dist");
        assert_eq!(f.install.get_ref().keep_releases, 3);
        assert_eq!(f.hooks().health.as_deref(), Some("hooks/health"));
        assert_eq!(f.hooks().timeout_secs, 300);
        assert_eq!(f.rollback.data_epoch, 1);
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let err = parse(&MINIMAL.replace("\"1.4.2\"", "\"1.4 2\"")).unwrap_err();
        insta::assert_snapshot!(err, @r#"`package.toml` line 3, column 11: invalid version `1.4 2`: the character ' ' is not allowed"#);
        let err = parse(&MINIMAL.replace("data_epoch", "data_epoc")).unwrap_err();
        assert!(err.to_string().contains("line 14, column 1"), "{err}");
        assert!(
            err.to_string().contains("unknown field `data_epoc`"),
            "{err}"
        );
        let err = parse(&MINIMAL.replace("name = \"webapp\"\n", "")).unwrap_err();
        assert!(err.to_string().contains("missing field `name`"), "{err}");
        let err = parse(&MINIMAL.replace("/srv/webapp", "srv/webapp")).unwrap_err();
        assert!(
            err.to_string()
                .contains("line 7, column 1: [install] target"),
            "{err}"
        );
        let err = parse(&MINIMAL.replace("[hooks]", "[hooks]\ntimeout_secs = 0")).unwrap_err();
        assert!(err.to_string().contains("timeout_secs"), "{err}");
        let err = parse("[package\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
