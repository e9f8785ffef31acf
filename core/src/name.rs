//! Names, versions, build numbers and channel names: what each may contain,
//! how releases are written (`webapp@1.4.2+173`) and how versions sort.
//!
//! Everything here ends up in file names and URLs, so the allowed characters
//! are deliberately narrow and checked before anything touches the disk.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A name, version, build or channel that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`: {reason}")]
pub struct InvalidName {
    pub what: &'static str,
    pub value: String,
    pub reason: String,
}

impl InvalidName {
    fn new(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        InvalidName {
            what,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }

    /// The rule, worded as the way out.
    pub fn hint(&self) -> &'static str {
        match self.what {
            "package name" => {
                "a package name is 1 to 64 characters: lowercase letters, digits, `.` and `-`, starting with a letter or digit"
            }
            "version" => {
                "a version is 1 to 64 characters: letters, digits, `.`, `-`, `_` and `~`, starting with a letter or digit (the build number goes in `--build`, not after a `+`)"
            }
            "build number" => "a build number is a whole number from 1 up, e.g. `--build 173`",
            "channel name" => {
                "a channel name is 1 to 64 characters: lowercase letters, digits and `-`, starting with a letter or digit, e.g. `staging`"
            }
            _ => "write a release as NAME@VERSION+BUILD, e.g. `webapp@1.4.2+173`",
        }
    }
}

const MAX_LEN: usize = 64;

fn check(
    what: &'static str,
    value: &str,
    allowed: impl Fn(char) -> bool,
) -> Result<(), InvalidName> {
    if value.is_empty() {
        return Err(InvalidName::new(what, value, "it is empty"));
    }
    if value.len() > MAX_LEN {
        return Err(InvalidName::new(
            what,
            value,
            format!("it is {} bytes long, the limit is {MAX_LEN}", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|&c| !allowed(c)) {
        return Err(InvalidName::new(
            what,
            value,
            format!("the character {c:?} is not allowed"),
        ));
    }
    let first = value.chars().next().unwrap_or('-');
    if !first.is_ascii_alphanumeric() {
        return Err(InvalidName::new(
            what,
            value,
            "it must start with a letter or digit",
        ));
    }
    Ok(())
}

/// Package names become file names (`<name>_<version>+<build>.tar.zst`) and
/// index keys, so `_`, `+` and `@` are reserved as separators.
pub fn check_package_name(name: &str) -> Result<(), InvalidName> {
    check("package name", name, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'
    })
}

/// Versions are free text within a safe alphabet; `+` is reserved for the
/// build number.
pub fn check_version(version: &str) -> Result<(), InvalidName> {
    check("version", version, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~')
    })
}

/// Channel names are directory names in the repository.
pub fn check_channel(channel: &str) -> Result<(), InvalidName> {
    check("channel name", channel, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    })
}

/// Parses a build number: a whole number from 1 up.
pub fn parse_build(text: &str) -> Result<u64, InvalidName> {
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(0) => Err(InvalidName::new(
            "build number",
            text,
            "build numbers start at 1",
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(InvalidName::new(
            "build number",
            text,
            "it is not a whole number",
        )),
    }
}

/// One exact release: `webapp@1.4.2+173`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReleaseId {
    pub name: String,
    pub version: String,
    pub build: u64,
}

impl ReleaseId {
    pub fn new(name: &str, version: &str, build: u64) -> Result<Self, InvalidName> {
        check_package_name(name)?;
        check_version(version)?;
        if build == 0 {
            return Err(InvalidName::new(
                "build number",
                "0",
                "build numbers start at 1",
            ));
        }
        Ok(ReleaseId {
            name: name.to_owned(),
            version: version.to_owned(),
            build,
        })
    }

    /// `1.4.2+173`, the release within its package.
    pub fn version_build(&self) -> String {
        format!("{}+{}", self.version, self.build)
    }

    /// The artifact's file name: `webapp_1.4.2+173.tar.zst`.
    pub fn artifact_file_name(&self) -> String {
        format!("{}_{}+{}.tar.zst", self.name, self.version, self.build)
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}+{}", self.name, self.version, self.build)
    }
}

impl FromStr for ReleaseId {
    type Err = InvalidName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || InvalidName::new("release", s, "expected NAME@VERSION+BUILD");
        let (name, rest) = s.split_once('@').ok_or_else(malformed)?;
        let (version, build) = rest.rsplit_once('+').ok_or_else(malformed)?;
        ReleaseId::new(name, version, parse_build(build)?)
    }
}

/// `NAME` or `NAME@VERSION+BUILD`, as `packager show` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseQuery {
    Package(String),
    Exact(ReleaseId),
}

impl FromStr for ReleaseQuery {
    type Err = InvalidName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('@') {
            s.parse().map(ReleaseQuery::Exact)
        } else {
            check_package_name(s)?;
            Ok(ReleaseQuery::Package(s.to_owned()))
        }
    }
}

/// Orders versions the way semver and dpkg users expect, with one rule for
/// every string so that sorting is a total order: runs of digits compare as
/// numbers (`1.10 > 1.9`), letters before punctuation, and `~` and `-` sort
/// before the end of the string, so a pre-release comes before its release
/// (`1.0.0-rc.1 < 1.0.0`, `1.0~rc1 < 1.0`).
///
/// Semver's own comparison is not used even where both sides parse: mixing
/// two orders in one list is not transitive, and a sort needs that.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        // Non-digit run, byte by byte, with `~` lowest and end next.
        loop {
            let ca = a.first().filter(|c| !c.is_ascii_digit());
            let cb = b.first().filter(|c| !c.is_ascii_digit());
            let weight = |c: Option<&u8>| match c {
                Some(b'~') => -2i32,
                Some(b'-') => -1,
                None => 0,
                Some(c) if c.is_ascii_alphabetic() => i32::from(*c),
                Some(c) => i32::from(*c) + 256,
            };
            match (ca, cb) {
                (None, None) => break,
                _ => match weight(ca).cmp(&weight(cb)) {
                    Ordering::Equal => {
                        a = &a[1..];
                        b = &b[1..];
                    }
                    other => return other,
                },
            }
        }
        // Digit run, as a number (leading zeros ignored).
        let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
        let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let strip = |s: &[u8]| -> Vec<u8> {
            let s: Vec<u8> = s.iter().copied().skip_while(|&c| c == b'0').collect();
            s
        };
        let (na, nb) = (strip(&a[..da]), strip(&b[..db]));
        let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(&nb));
        if ord != Ordering::Equal {
            return ord;
        }
        a = &a[da..];
        b = &b[db..];
        if a.is_empty() && b.is_empty() {
            return Ordering::Equal;
        }
    }
}

/// Orders releases by version, then build.
pub fn compare_releases(a: (&str, u64), b: (&str, u64)) -> Ordering {
    compare_versions(a.0, b.0).then(a.1.cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_people_expect() {
        let mut v = vec![
            "1.10.0",
            "1.9.0",
            "1.0.0-rc.2",
            "1.0.0",
            "2.0",
            "1.10",
            "1.9",
            "1.0~rc1",
            "1.0",
            "1.0.0-rc.10",
            "1.0.0-beta",
            "1.0.0-1",
        ];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            v,
            vec![
                "1.0~rc1",
                "1.0",
                "1.0.0-1",
                "1.0.0-beta",
                "1.0.0-rc.2",
                "1.0.0-rc.10",
                "1.0.0",
                "1.9",
                "1.9.0",
                "1.10",
                "1.10.0",
                "2.0"
            ]
        );
        assert_eq!(compare_versions("1.2.3", "1.2.3"), Ordering::Equal);
        assert_eq!(compare_versions("1.02", "1.2"), Ordering::Equal);
        assert_eq!(compare_versions("1.0a", "1.0"), Ordering::Greater);
    }

    #[test]
    fn release_ids_parse_and_print() {
        let id: ReleaseId = "webapp@1.4.2+173".parse().unwrap();
        assert_eq!(id.version, "1.4.2");
        assert_eq!(id.build, 173);
        assert_eq!(id.to_string(), "webapp@1.4.2+173");
        assert_eq!(id.artifact_file_name(), "webapp_1.4.2+173.tar.zst");
        for bad in [
            "webapp",
            "webapp@1.4.2",
            "webapp@1.4.2+0",
            "webapp@1.4.2+x",
            "Web@1+1",
            "@1+1",
            "web_app@1+1",
            "webapp@+1",
        ] {
            assert!(bad.parse::<ReleaseId>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_package_name("web-app.2").is_ok());
        assert!(check_package_name("").is_err());
        assert!(check_package_name("-x").is_err());
        assert!(check_package_name(&"a".repeat(65)).is_err());
        assert!(check_channel("staging").is_ok());
        assert!(check_channel("Prod").is_err());
        assert!(check_channel("a/b").is_err());
        assert!(check_channel("..").is_err());
        assert!(check_version("1.4.2-rc.1").is_ok());
        assert!(check_version("1.4+2").is_err());
        assert!(check_version("1 4").is_err());
        assert_eq!(parse_build("173"), Ok(173));
        assert!(parse_build("0").is_err());
        assert!(parse_build("-1").is_err());
        assert!(parse_build("abc").is_err());
    }
}
