//! `MANIFEST.toml`, the first entry of every artifact: what the release is,
//! where and how it installs, its hooks, its data epoch, and the digest,
//! size and mode of every entry it ships. The agent verifies against it and
//! `agent verify` finds drift with it.
//!
//! The head sections go through serde; the `[hook_files]` and `[files]`
//! tables are written by hand as one inline table a line, so a manifest of
//! 20,000 files stays readable and its bytes never depend on a serializer's
//! whims.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::name::{self, InvalidName};
use crate::rules;

/// The manifest's path inside an artifact: always the first entry.
pub const MANIFEST_PATH: &str = "MANIFEST.toml";
/// The archive directory of hook executables.
pub const HOOKS_DIR: &str = "hooks";
/// The archive directory of the payload, installed as the release tree.
pub const FILES_DIR: &str = "files";
/// The manifest format this code writes and reads.
pub const FORMAT: u32 = 1;
/// The hooks a package may have, in the order they run.
pub const HOOK_NAMES: [&str; 6] = [
    "backup",
    "dump",
    "pre_install",
    "post_install",
    "health",
    "restore",
];

/// A parsed and checked manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub package: PackageInfo,
    #[serde(default)]
    pub source: Source,
    pub install: Install,
    #[serde(default)]
    pub hooks: Hooks,
    #[serde(default)]
    pub rollback: Rollback,
    #[serde(default)]
    pub hook_files: BTreeMap<String, Entry>,
    #[serde(default)]
    pub files: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    pub build: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Where the build came from, filled from CI variables or git.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Source {
    pub fn is_empty(&self) -> bool {
        self.commit.is_none() && self.branch.is_none() && self.url.is_none()
    }
}

/// How the release is laid out on a node; the same table in package.toml
/// and in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    /// The symlink the agent owns and flips atomically.
    pub target: String,
    #[serde(default = "default_keep_releases")]
    pub keep_releases: u32,
    /// Node-local directories kept across releases, linked into each.
    #[serde(default)]
    pub shared: Vec<String>,
    /// Node-local files carried from the old release to the new.
    #[serde(default)]
    pub preserve: Vec<String>,
    /// Link the node's env file (secrets) into the release.
    #[serde(default)]
    pub env_file: bool,
    /// Payload paths allowed to have setuid, setgid, sticky or world-write
    /// bits (see [`rules::SPECIAL_BITS`]); exact paths, never hooks.
    /// Written only when set, so older manifests keep their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_special_modes: Vec<String>,
}

fn default_keep_releases() -> u32 {
    3
}

/// Hook paths (in package.toml: relative to the file; in the manifest:
/// `hooks/<name>` inside the artifact) and their timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_install: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_install: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    300
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            backup: None,
            dump: None,
            pre_install: None,
            post_install: None,
            health: None,
            restore: None,
            timeout_secs: default_timeout_secs(),
        }
    }
}

impl Hooks {
    /// The hooks that are set, as (name, path), in [`HOOK_NAMES`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            &self.backup,
            &self.dump,
            &self.pre_install,
            &self.post_install,
            &self.health,
            &self.restore,
        ]
        .into_iter()
        .zip(HOOK_NAMES)
        .filter_map(|(path, name)| path.as_deref().map(|p| (name, p)))
    }

    /// The same hooks, each pointing at `hooks/<name>` in the artifact.
    pub fn in_artifact(&self) -> Hooks {
        let at = |p: &Option<String>, name: &str| p.as_ref().map(|_| format!("{HOOKS_DIR}/{name}"));
        Hooks {
            backup: at(&self.backup, "backup"),
            dump: at(&self.dump, "dump"),
            pre_install: at(&self.pre_install, "pre_install"),
            post_install: at(&self.post_install, "post_install"),
            health: at(&self.health, "health"),
            restore: at(&self.restore, "restore"),
            timeout_secs: self.timeout_secs,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// Bumped when a release changes its data format; a code-only rollback
    /// across a different epoch is refused.
    #[serde(default)]
    pub data_epoch: u64,
}

/// A permission mode, written in the manifest as an octal string ("0755").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode(pub u32);

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Mode {
    fn parse(s: &str) -> Result<Mode, String> {
        match u32::from_str_radix(s, 8) {
            Ok(m) if m <= 0o7777 && !s.is_empty() => Ok(Mode(m)),
            _ => Err(format!(
                "mode `{s}` is not an octal permission like \"0644\""
            )),
        }
    }
}

/// One entry of the payload (or of the hooks).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawEntry")]
pub enum Entry {
    File {
        sha256: String,
        size: u64,
        mode: Mode,
    },
    Dir {
        mode: Mode,
    },
    Symlink {
        target: String,
    },
}

impl Entry {
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::File { .. } => "file",
            Entry::Dir { .. } => "dir",
            Entry::Symlink { .. } => "symlink",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    sha256: Option<String>,
    size: Option<u64>,
    mode: Option<String>,
    target: Option<String>,
}

impl TryFrom<RawEntry> for Entry {
    type Error = String;

    fn try_from(raw: RawEntry) -> Result<Self, Self::Error> {
        let mode = raw.mode.as_deref().map(Mode::parse).transpose()?;
        match raw.kind.as_deref().unwrap_or("file") {
            "file" => {
                let sha256 = raw.sha256.ok_or("a file entry needs `sha256`")?;
                if !crate::digest::is_sha256_hex(&sha256) {
                    return Err(format!("`{sha256}` is not a lowercase hex sha256"));
                }
                if raw.target.is_some() {
                    return Err("a file entry has no `target`".into());
                }
                Ok(Entry::File {
                    sha256,
                    size: raw.size.ok_or("a file entry needs `size`")?,
                    mode: mode.ok_or("a file entry needs `mode`")?,
                })
            }
            "dir" => {
                if raw.sha256.is_some() || raw.size.is_some() || raw.target.is_some() {
                    return Err("a dir entry has only `mode`".into());
                }
                Ok(Entry::Dir {
                    mode: mode.ok_or("a dir entry needs `mode`")?,
                })
            }
            "symlink" => {
                if raw.sha256.is_some() || raw.size.is_some() || mode.is_some() {
                    return Err("a symlink entry has only `target`".into());
                }
                Ok(Entry::Symlink {
                    target: raw.target.ok_or("a symlink entry needs `target`")?,
                })
            }
            other => Err(format!(
                "unknown entry type `{other}` (expected file, dir or symlink)"
            )),
        }
    }
}

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not valid TOML or has unexpected content: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("the manifest has format {0}, this berth reads format {FORMAT}")]
    Format(u32),
    #[error(transparent)]
    Name(#[from] InvalidName),
    #[error("the manifest's [install] {0}")]
    Install(String),
    #[error(
        "the manifest's hook `{name}` is `{path}`, expected `{HOOKS_DIR}/{name}` listed in [hook_files]"
    )]
    Hook { name: String, path: String },
    #[error(
        "the manifest lists `{}`: {}",
        rules::printable(path),
        rules::printable(reason)
    )]
    Entry { path: String, reason: String },
}

/// The longest file name (one path component) Linux filesystems take
/// (`NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// Checks a path inside the payload (or under `hooks/`): relative, `/`
/// separated, no empty, `.` or `..` components, none longer than
/// [`MAX_NAME_BYTES`], no backslash or NUL.
pub fn check_entry_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("the path is empty");
    }
    if path.starts_with('/') {
        return Err("absolute paths are not allowed");
    }
    if path.contains('\\') {
        return Err("backslashes are not allowed in paths");
    }
    if path.contains('\0') {
        return Err("NUL bytes are not allowed in paths");
    }
    for comp in path.split('/') {
        match comp {
            "" => return Err("empty path components (`//` or a trailing `/`) are not allowed"),
            "." => return Err("`.` components are not allowed"),
            ".." => return Err("`..` components are not allowed"),
            c if c.len() > MAX_NAME_BYTES => {
                return Err(
                    "a path component is longer than 255 bytes, the most a Linux filesystem takes",
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks that a symlink at `link` (a payload path) with `target` stays
/// inside the release: relative, leading `..` only, never climbing above the
/// release root. Every symlink being checked the same way, chains of them
/// stay inside too.
pub fn check_symlink_target(link: &str, target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("the symlink target is empty".into());
    }
    if target.starts_with('/') {
        return Err(format!(
            "the symlink points to the absolute path `{target}`, outside the release"
        ));
    }
    if target.contains('\0') || target.contains('\\') {
        return Err("the symlink target contains a NUL or a backslash".into());
    }
    let depth = link.split('/').count() - 1;
    let mut ups = 0;
    let mut seen_normal = false;
    for comp in target.split('/') {
        match comp {
            ".." if !seen_normal => ups += 1,
            ".." | "." | "" => {
                return Err(format!(
                    "the symlink target `{target}` is not a plain relative path (only leading `..` components, no `.` or `//`)"
                ));
            }
            _ => seen_normal = true,
        }
    }
    if ups > depth {
        return Err(format!(
            "the symlink target `{target}` climbs above the release root"
        ));
    }
    Ok(())
}

impl Install {
    /// Checks the install table; `Err` is the reason.
    pub fn check(&self) -> Result<(), String> {
        let t = &self.target;
        if !t.starts_with('/') || t == "/" {
            return Err(format!(
                "target `{t}` must be an absolute path below `/`, e.g. \"/srv/webapp\""
            ));
        }
        if t.ends_with('/') || check_entry_path(&t[1..]).is_err() {
            return Err(format!(
                "target `{t}` must be a normal absolute path (no `.`, `..`, `//` or trailing `/`)"
            ));
        }
        if self.keep_releases == 0 {
            return Err("keep_releases must be at least 1".into());
        }
        for (what, list) in [
            ("shared", &self.shared),
            ("preserve", &self.preserve),
            ("allow_special_modes", &self.allow_special_modes),
        ] {
            for p in list {
                check_entry_path(p).map_err(|r| {
                    format!("{what} path `{p}` must be relative to the release: {r}")
                })?;
            }
        }
        Ok(())
    }
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = toml::from_str(text)?;
        m.check()?;
        Ok(m)
    }

    /// The release this manifest describes.
    pub fn release(&self) -> name::ReleaseId {
        name::ReleaseId {
            name: self.package.name.clone(),
            version: self.package.version.clone(),
            build: self.package.build,
        }
    }

    /// Checks everything that parsing alone does not.
    pub fn check(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(ManifestError::Format(self.format));
        }
        name::ReleaseId::new(
            &self.package.name,
            &self.package.version,
            self.package.build,
        )?;
        self.install.check().map_err(ManifestError::Install)?;
        for (name, path) in self.hooks.iter() {
            let expected = format!("{HOOKS_DIR}/{name}");
            if path != expected || !self.hook_files.contains_key(name) {
                return Err(ManifestError::Hook {
                    name: name.into(),
                    path: path.into(),
                });
            }
        }
        for (name, entry) in &self.hook_files {
            let bad = |reason: String| ManifestError::Entry {
                path: format!("{HOOKS_DIR}/{name}"),
                reason,
            };
            let Entry::File { mode, .. } = entry else {
                return Err(bad("it is not a hook named in [hooks]".into()));
            };
            if self.hooks.iter().all(|(n, _)| n != name) {
                return Err(bad("it is not a hook named in [hooks]".into()));
            }
            if mode.0 & rules::SPECIAL_BITS != 0 {
                return Err(bad(rules::special_mode_hook(*mode)));
            }
        }
        // Names that differ only in their Unicode normalization, by their
        // NFC form; ASCII names (nearly all) are their own.
        let mut normalized: HashMap<Cow<'_, str>, &str> = HashMap::new();
        for (path, entry) in &self.files {
            let bad = |reason: String| ManifestError::Entry {
                path: path.clone(),
                reason,
            };
            check_entry_path(path).map_err(|r| bad(r.into()))?;
            let nfc = if path.is_ascii()
                || unicode_normalization::is_nfc_quick(path.chars())
                    == unicode_normalization::IsNormalized::Yes
            {
                Cow::Borrowed(path.as_str())
            } else {
                Cow::Owned(path.nfc().collect::<String>())
            };
            if let Some(other) = normalized.insert(nfc, path) {
                return Err(bad(rules::nfc_collision(other)));
            }
            match entry {
                Entry::Symlink { target } => check_symlink_target(path, target).map_err(bad)?,
                Entry::File { mode, .. } | Entry::Dir { mode } => {
                    rules::check_mode(path, *mode, &self.install.allow_special_modes)
                        .map_err(bad)?;
                }
            }
            // Every parent must be a listed directory, so nothing is created
            // through a symlink or implicitly.
            if let Some((parent, _)) = path.rsplit_once('/')
                && !matches!(self.files.get(parent), Some(Entry::Dir { .. }))
            {
                return Err(bad(format!(
                    "its parent `{parent}` is not listed as a directory"
                )));
            }
        }
        for path in &self.install.allow_special_modes {
            if !matches!(
                self.files.get(path),
                Some(Entry::File { .. } | Entry::Dir { .. })
            ) {
                return Err(ManifestError::Install(format!(
                    "allow_special_modes lists `{path}`, which is not a file or directory of the payload"
                )));
            }
        }
        Ok(())
    }

    /// Total bytes of the payload's regular files.
    pub fn payload_bytes(&self) -> u64 {
        self.files
            .values()
            .map(|e| match e {
                Entry::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }

    /// The manifest as TOML, byte for byte the same for the same manifest.
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct Head<'a> {
            format: u32,
            package: &'a PackageInfo,
            #[serde(skip_serializing_if = "Source::is_empty")]
            source: &'a Source,
            install: &'a Install,
            hooks: &'a Hooks,
            rollback: &'a Rollback,
        }
        let head = Head {
            format: self.format,
            package: &self.package,
            source: &self.source,
            install: &self.install,
            hooks: &self.hooks,
            rollback: &self.rollback,
        };
        let mut out = String::from(
            "# berth release manifest, written by `packager build`; the agent verifies\n\
             # the release against it. Paths in [files] are relative to the release root.\n",
        );
        out.push_str(&toml::to_string(&head).expect("the manifest head always serializes"));
        for (table, entries) in [("hook_files", &self.hook_files), ("files", &self.files)] {
            let _ = write!(out, "\n[{table}]\n");
            for (path, entry) in entries {
                out.push_str(&toml_string(path));
                out.push_str(" = ");
                match entry {
                    Entry::File { sha256, size, mode } => {
                        let _ = writeln!(
                            out,
                            "{{ sha256 = \"{sha256}\", size = {size}, mode = \"{mode}\" }}"
                        );
                    }
                    Entry::Dir { mode } => {
                        let _ = writeln!(out, "{{ type = \"dir\", mode = \"{mode}\" }}");
                    }
                    Entry::Symlink { target } => {
                        let _ = writeln!(
                            out,
                            "{{ type = \"symlink\", target = {} }}",
                            toml_string(target)
                        );
                    }
                }
            }
        }
        out
    }
}

/// A TOML basic string with everything that needs it escaped.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut files = BTreeMap::new();
        files.insert("bin".into(), Entry::Dir { mode: Mode(0o755) });
        files.insert(
            "bin/app".into(),
            Entry::File {
                sha256: "a".repeat(64),
                size: 12,
                mode: Mode(0o755),
            },
        );
        files.insert(
            "we\"ird name\t\u{1}é".into(),
            Entry::File {
                sha256: "b".repeat(64),
                size: 0,
                mode: Mode(0o600),
            },
        );
        files.insert(
            "current".into(),
            Entry::Symlink {
                target: "bin/app".into(),
            },
        );
        let mut hook_files = BTreeMap::new();
        hook_files.insert(
            "health".into(),
            Entry::File {
                sha256: "c".repeat(64),
                size: 3,
                mode: Mode(0o755),
            },
        );
        Manifest {
            format: FORMAT,
            package: PackageInfo {
                name: "webapp".into(),
                version: "1.4.2".into(),
                build: 173,
                description: Some("Example".into()),
            },
            source: Source {
                commit: Some("3f2a9c1".into()),
                ..Source::default()
            },
            install: Install {
                target: "/srv/webapp".into(),
                keep_releases: 3,
                shared: vec!["log".into()],
                preserve: vec![],
                env_file: false,
                allow_special_modes: vec![],
            },
            hooks: Hooks {
                health: Some("hooks/health".into()),
                ..Hooks::default()
            },
            rollback: Rollback { data_epoch: 1 },
            hook_files,
            files,
        }
    }

    #[test]
    fn manifest_round_trips_through_its_toml() {
        let m = sample();
        let text = m.to_toml();
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        assert_eq!(text, Manifest::parse(&text).unwrap().to_toml());
    }

    #[test]
    fn manifest_refuses_unknown_keys_and_bad_entries() {
        let text = sample().to_toml();
        let err =
            Manifest::parse(&text.replace("[rollback]", "[rollback]\nsurprise = 1")).unwrap_err();
        assert!(err.to_string().contains("surprise"), "{err}");
        let err = Manifest::parse(&format!(
            "{text}\"../x\" = {{ type = \"dir\", mode = \"0755\" }}\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("`..`"), "{err}");
        let err = Manifest::parse(&format!(
            "{text}\"a/b\" = {{ type = \"dir\", mode = \"0755\" }}\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("parent `a`"), "{err}");
        let err = Manifest::parse(&text.replace("mode = \"0600\"", "mode = \"999\"")).unwrap_err();
        assert!(err.to_string().contains("octal"), "{err}");
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        assert!(check_symlink_target("a", "b").is_ok());
        assert!(check_symlink_target("d/a", "../b").is_ok());
        assert!(check_symlink_target("d/e/a", "../../b/c").is_ok());
        assert!(check_symlink_target("a", "../b").is_err());
        assert!(check_symlink_target("d/a", "../../b").is_err());
        assert!(check_symlink_target("a", "/etc/passwd").is_err());
        assert!(check_symlink_target("d/a", "x/../../..").is_err());
        assert!(check_symlink_target("a", "./b").is_err());
        assert!(check_symlink_target("a", "").is_err());
    }

    #[test]
    fn entry_paths_are_plain_and_relative() {
        assert!(check_entry_path("a/b.txt").is_ok());
        for bad in [
            "", "/a", "a//b", "a/", "./a", "a/../b", "..", "a\\b", "a\0b",
        ] {
            assert!(check_entry_path(bad).is_err(), "{bad:?}");
        }
        let longest = "n".repeat(MAX_NAME_BYTES);
        assert!(check_entry_path(&format!("a/{longest}")).is_ok());
        assert_eq!(
            check_entry_path(&format!("a/{longest}n/b")),
            Err("a path component is longer than 255 bytes, the most a Linux filesystem takes")
        );
    }

    #[test]
    fn names_equal_once_normalized_are_refused() {
        let mut m = sample();
        let file = m.files["bin/app"].clone();
        m.files.insert("caf\u{e9}".into(), file.clone());
        m.check().unwrap();
        m.files.insert("cafe\u{301}".into(), file);
        let err = m.check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the manifest lists `caf\u{e9}`: its name and `cafe\u{301}`'s are the same once Unicode-normalized (NFC)"
        );
    }

    #[test]
    fn special_modes_need_the_package_to_allow_them_by_path() {
        let mut m = sample();
        m.files
            .insert("tmp".into(), Entry::Dir { mode: Mode(0o1777) });
        let err = m.check().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the manifest lists `tmp`: {}",
                rules::special_mode(Mode(0o1777))
            )
        );
        m.install.allow_special_modes = vec!["tmp".into()];
        m.check().unwrap();
        assert_eq!(Manifest::parse(&m.to_toml()).unwrap(), m);
        m.install.allow_special_modes.push("nowhere".into());
        let err = m.check().unwrap_err();
        assert!(
            err.to_string()
                .contains("`nowhere`, which is not a file or directory"),
            "{err}"
        );
        // Hooks never.
        let mut m = sample();
        if let Some(Entry::File { mode, .. }) = m.hook_files.get_mut("health") {
            *mode = Mode(0o4755);
        }
        let err = m.check().unwrap_err();
        assert!(err.to_string().contains("which a hook never may"), "{err}");
    }
}
