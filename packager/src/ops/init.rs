//! `packager init`: writes a commented `package.toml` to start from.

use std::path::{Path, PathBuf};

use berth_core::fsutil::{self, IoResultExt};
use berth_core::name;
use berth_core::package::PACKAGE_FILE;

use crate::Error;

/// What `init` writes, with the package name and install target filled in.
pub fn template(name: &str) -> String {
    format!(
        r#"# How berth packages this application. Keep it in the application's
# repository; `packager build` reads it. Paths are relative to this file.

[package]
name = "{name}"             # lowercase letters, digits, `.` and `-`
version = "0.1.0"           # the build number comes from CI: --build or BUILD_NUMBER
description = "{name}"
payload = "dist"            # directory shipped as files/ (the release tree)
# Files that look like secrets (.env, *.pem, *.key, id_rsa*) are refused
# unless listed here by path relative to the payload:
# allow_secrets = ["certs/public-ca.pem"]

# [source]
# url = "https://git.example.com/{name}.git"   # else from CI variables or git

[install]
target = "/srv/{name}"      # a symlink the agent flips atomically to each release
keep_releases = 3           # unpacked releases kept on the node for instant rollback
# shared = ["storage", "log"]        # node-local dirs kept across releases
# preserve = ["config/local.toml"]   # node-local files carried to the new release
# env_file = true                    # link the node's env file (secrets) into the release
# allow_special_modes = ["tmp"]      # paths that may keep setuid/setgid/sticky/world-write bits

[hooks]
# Executables, run by the agent with BERTH_* variables (docs/hooks.md).
# backup = "hooks/backup"           # copy data into $BERTH_SNAPSHOT_DIR before the switch
# dump = "hooks/dump"               # dump databases into $BERTH_SNAPSHOT_DIR/dumps
# pre_install = "hooks/stop"        # before the switch
# post_install = "hooks/start"      # after the switch
# health = "hooks/health"           # a failure rolls the node back
# restore = "hooks/restore"         # puts the dumps back on `agent rollback --with-data`
timeout_secs = 300

[rollback]
data_epoch = 1              # bump when a release changes its data format (a migration)
"#
    )
}

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub dir: PathBuf,
    pub name: Option<String>,
    pub force: bool,
}

/// Writes `<dir>/package.toml`; returns its path.
pub fn init(opts: &InitOptions) -> Result<PathBuf, Error> {
    let path = opts.dir.join(PACKAGE_FILE);
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => default_name(&opts.dir),
    };
    name::check_package_name(&name)?;
    if path.exists() && !opts.force {
        return Err(Error::InitExists { path });
    }
    fsutil::create_dir_all_synced(&opts.dir)?;
    fsutil::write_atomic(&path, template(&name).as_bytes())?;
    std::fs::metadata(&path).at("cannot read back", &path)?;
    Ok(path)
}

/// The directory's name made into a valid package name, or `app`.
fn default_name(dir: &Path) -> String {
    let base = std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let cleaned: String = base
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned();
    if name::check_package_name(&cleaned).is_ok() {
        cleaned
    } else {
        "app".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::package::PackageFile;

    #[test]
    fn the_template_is_a_valid_package_file() {
        let f = PackageFile::parse(&template("webapp"), Path::new("package.toml")).unwrap();
        assert_eq!(f.package.name.get_ref(), "webapp");
        assert_eq!(f.install.get_ref().target, "/srv/webapp");
        assert_eq!(f.hooks().timeout_secs, 300);
        assert_eq!(default_name(Path::new("/nonexistent/My_App")), "app");
    }
}
