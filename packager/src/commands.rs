//! One function per verb: fill the operation's options from the arguments,
//! run it, print its report (a human summary, or JSON with `--json`).

use berth_core::name::{ReleaseId, ReleaseQuery};
use packager::Error;
use packager::ops;
use serde_json::{Value, json};

use crate::cli::{Command, SignArgs};
use berth_cli::{Bar, human_bytes, note};

/// How a command ended without success.
pub enum Failure {
    /// The operation failed; print it.
    Op(Error),
    /// stdout was closed (e.g. piped into `head`): stop quietly.
    Pipe,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Op(e)
    }
}

impl From<berth_core::name::InvalidName> for Failure {
    fn from(e: berth_core::name::InvalidName) -> Self {
        Failure::Op(e.into())
    }
}

/// Writes to stdout; a closed pipe ends the command quietly.
fn out(text: &str) -> Result<(), Failure> {
    match berth_cli::out(text) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Failure::Pipe),
        Err(e) => Err(stdout_error(e)),
    }
}

fn out_json(value: &Value) -> Result<(), Failure> {
    match berth_cli::out_json(value) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Failure::Pipe),
        Err(e) => Err(stdout_error(e)),
    }
}

fn stdout_error(e: std::io::Error) -> Failure {
    Failure::Op(Error::Io(berth_core::fsutil::PathError::new(
        "cannot write to",
        std::path::Path::new("stdout"),
        e,
    )))
}

fn entries(n: usize) -> String {
    if n == 1 {
        "1 entry".into()
    } else {
        format!("{n} entries")
    }
}

/// The key's password: BERTH_SIGN_PASSWORD, never a flag (a flag shows
/// in `ps` and in shell history). Empty counts as unset.
fn sign_password() -> Option<String> {
    std::env::var("BERTH_SIGN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
}

fn sign_options(args: SignArgs) -> ops::sign::SignOptions {
    ops::sign::SignOptions {
        key: args.sign_key,
        expires: args.expires,
        password: sign_password(),
    }
}

/// `, index signed by key K` after a write that signed.
fn signed(key: &Option<String>) -> String {
    match key {
        Some(k) => format!(", index signed by key {k}"),
        None => String::new(),
    }
}

fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
}

pub fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Init { dir, name, force } => {
            let path = ops::init::init(&ops::init::InitOptions { dir, name, force })?;
            note(&format!(
                "wrote `{}`: set the payload directory, install target and hooks, then `packager build --build N`",
                path.display()
            ));
            Ok(())
        }
        Command::Build {
            dir,
            build,
            out: out_dir,
            json,
        } => {
            let env = |k: &str| std::env::var(k).ok();
            let bar = Bar::for_stderr();
            let r = ops::build::build(
                &ops::build::BuildOptions {
                    dir,
                    build,
                    out_dir,
                },
                &env,
                &bar,
            )?;
            if json {
                return out_json(&json!({
                    "artifact": r.artifact,
                    "name": r.release.name,
                    "version": r.release.version,
                    "build": r.release.build,
                    "sha256": r.sha256,
                    "size": r.size,
                }));
            }
            note(&format!(
                "built {}: {}, {} payload, {} artifact",
                r.release,
                entries(r.files),
                human_bytes(r.payload_bytes),
                human_bytes(r.size)
            ));
            out(&format!("{}  {}\n", r.sha256, r.artifact.display()))
        }
        Command::Verify { artifact, json } => {
            let v = ops::verify::verify(&artifact, &Bar::for_stderr())?;
            let m = &v.manifest;
            if json {
                return out_json(&json!({
                    "artifact": v.path,
                    "name": m.package.name,
                    "version": m.package.version,
                    "build": m.package.build,
                    "sha256": v.sha256,
                    "size": v.size,
                    "files": m.files.len(),
                    "hooks": m.hook_files.keys().collect::<Vec<_>>(),
                    "ok": true,
                }));
            }
            out(&format!(
                "ok: `{}` is {} ({}, {} payload, sha256 {})\n",
                v.path.display(),
                m.release(),
                entries(m.files.len()),
                human_bytes(m.payload_bytes()),
                v.sha256
            ))
        }
        Command::Publish {
            artifact,
            repo,
            channel,
            sign,
            json,
        } => {
            let r = ops::publish::publish(
                &ops::publish::PublishOptions {
                    artifact,
                    repo,
                    channel,
                    sign: sign_options(sign),
                },
                &Bar::for_stderr(),
            )?;
            if r.created_repository {
                note(&format!("created a new repository at `{}`", r.repository));
            }
            if json {
                return out_json(&json!({
                    "repository": r.repository,
                    "created_repository": r.created_repository,
                    "channel": r.channel,
                    "name": r.release.name,
                    "version": r.release.version,
                    "build": r.release.build,
                    "sha256": r.sha256,
                    "size": r.size,
                    "blob": if r.blob_written { "uploaded" } else { "unchanged" },
                    "changed": r.index_changed || r.blob_written,
                    "sequence": r.sequence,
                    "signed_by": r.signed_by,
                }));
            }
            if r.index_changed {
                out(&format!(
                    "published {} to {} (sha256 {}, {}, blob {}){}\n",
                    r.release,
                    r.channel,
                    short(&r.sha256),
                    human_bytes(r.size),
                    if r.blob_written {
                        "uploaded"
                    } else {
                        "already present"
                    },
                    signed(&r.signed_by)
                ))
            } else {
                out(&format!(
                    "unchanged: {} is already in {}\n",
                    r.release, r.channel
                ))
            }
        }
        Command::Promote {
            release,
            from,
            to,
            repo,
            sign,
            json,
        } => {
            let release: ReleaseId = release.parse()?;
            let r = ops::promote::promote(&ops::promote::PromoteOptions {
                release,
                from,
                to,
                repo,
                sign: sign_options(sign),
            })?;
            if json {
                return out_json(&json!({
                    "repository": r.repository,
                    "name": r.release.name,
                    "version": r.release.version,
                    "build": r.release.build,
                    "from": r.from,
                    "to": r.to,
                    "sha256": r.sha256,
                    "changed": r.changed,
                    "sequence": r.sequence,
                    "signed_by": r.signed_by,
                }));
            }
            if r.changed {
                out(&format!(
                    "promoted {} from {} to {} (sha256 {}){}\n",
                    r.release,
                    r.from,
                    r.to,
                    short(&r.sha256),
                    signed(&r.signed_by)
                ))
            } else {
                out(&format!(
                    "unchanged: {} is already in {}\n",
                    r.release, r.to
                ))
            }
        }
        Command::Yank {
            release,
            channel,
            repo,
            undo,
            sign,
            json,
        } => {
            let release: ReleaseId = release.parse()?;
            let r = ops::yank::yank(&ops::yank::YankOptions {
                release,
                channel,
                repo,
                undo,
                sign: sign_options(sign),
            })?;
            if json {
                return out_json(&json!({
                    "repository": r.repository,
                    "name": r.release.name,
                    "version": r.release.version,
                    "build": r.release.build,
                    "channel": r.channel,
                    "yanked": r.yanked,
                    "changed": r.changed,
                    "sequence": r.sequence,
                    "signed_by": r.signed_by,
                }));
            }
            let state = if r.yanked { "yanked" } else { "not yanked" };
            if r.changed {
                out(&format!(
                    "{} is now {state} in {}{}\n",
                    r.release,
                    r.channel,
                    signed(&r.signed_by)
                ))
            } else {
                out(&format!(
                    "unchanged: {} is already {state} in {}\n",
                    r.release, r.channel
                ))
            }
        }
        Command::List {
            repo,
            channel,
            json,
        } => {
            let listed = ops::query::list(&repo, channel.as_deref())?;
            let empty = match &channel {
                Some(c) => format!("channel `{c}` holds no releases"),
                None => "the repository holds no releases yet".to_owned(),
            };
            print_listed(&listed, json, &empty)
        }
        Command::Show { query, repo, json } => match query.parse::<ReleaseQuery>()? {
            ReleaseQuery::Package(name) => {
                let listed = ops::query::show_package(&repo, &name)?;
                print_listed(&listed, json, "")
            }
            ReleaseQuery::Exact(release) => {
                let s = ops::query::show_release(&repo, &release)?;
                print_shown(&s, json)
            }
        },
        Command::Gc {
            repo,
            keep,
            dry_run,
            sign,
            json,
        } => {
            let r = ops::gc::gc(&ops::gc::GcOptions {
                repo,
                keep,
                dry_run,
                sign: sign_options(sign),
            })?;
            if json {
                return out_json(&json!({
                    "repository": r.repository,
                    "dry_run": r.dry_run,
                    "dropped": r.dropped.iter().map(|(c, p, rel)| json!({"channel": c, "package": p, "release": rel})).collect::<Vec<_>>(),
                    "deleted": r.deleted.iter().map(|(sha, size)| json!({"sha256": sha, "size": size})).collect::<Vec<_>>(),
                    "bytes_freed": r.bytes_freed(),
                    "kept_blobs": r.kept_blobs,
                    "abandoned": r.abandoned.iter().map(|a| json!({"path": a.key, "size": a.size})).collect::<Vec<_>>(),
                    "in_progress": r.in_progress,
                    "changed": !r.dry_run && (!r.dropped.is_empty() || !r.deleted.is_empty() || !r.abandoned.is_empty()),
                }));
            }
            let verb = if r.dry_run { "would drop" } else { "dropped" };
            let mut text = String::new();
            for (c, p, rel) in &r.dropped {
                text.push_str(&format!("{verb} {p}@{rel} from {c}\n"));
            }
            let verb = if r.dry_run { "would delete" } else { "deleted" };
            for (sha, size) in &r.deleted {
                text.push_str(&format!("{verb} blob {sha} ({})\n", human_bytes(*size)));
            }
            let verb = if r.dry_run { "would remove" } else { "removed" };
            for a in &r.abandoned {
                text.push_str(&format!(
                    "{verb} `{}`, left by a writer that died before it finished ({})\n",
                    a.key,
                    human_bytes(a.size)
                ));
            }
            for key in &r.in_progress {
                text.push_str(&format!("kept `{key}`: a writer is still writing it\n"));
            }
            text.push_str(&format!(
                "{}: {} index entries, {} blobs ({}), {} abandoned writes ({}), {} blobs kept\n",
                if r.dry_run { "dry run" } else { "gc done" },
                r.dropped.len(),
                r.deleted.len(),
                human_bytes(r.bytes_freed()),
                r.abandoned.len(),
                human_bytes(r.abandoned_bytes()),
                r.kept_blobs
            ));
            out(&text)
        }
        Command::Keygen {
            out: prefix,
            unencrypted,
            json,
        } => {
            let r = ops::sign::keygen(&ops::sign::KeygenOptions {
                out: prefix,
                password: sign_password(),
                unencrypted,
            })?;
            if json {
                return out_json(&json!({
                    "secret_key": r.secret_key,
                    "public_key": r.public_key,
                    "key_id": r.key_id.to_string(),
                    "encrypted": r.encrypted,
                }));
            }
            out(&format!(
                "key {}: secret key `{}` ({}), public key `{}`\n",
                r.key_id,
                r.secret_key.display(),
                if r.encrypted {
                    "encrypted"
                } else {
                    "NOT encrypted"
                },
                r.public_key.display()
            ))?;
            note(
                "keep the secret key where only the publisher reads it; put the public key in each agent's trusted_keys",
            );
            Ok(())
        }
        Command::Resign {
            repo,
            channels,
            packages,
            sequence,
            sign,
            json,
        } => {
            let r = ops::sign::resign(&ops::sign::ResignOptions {
                repo,
                channels,
                packages,
                sequence,
                sign: sign_options(sign),
            })?;
            for x in &r.resigned {
                if let ops::sign::Before::Invalid(why) = &x.before {
                    berth_cli::warn(&format!(
                        "the index of {} in {} did not verify before it was signed again ({why}): it was altered, or a publish stopped between writing it and its signature; check what it lists",
                        x.package, x.channel
                    ));
                }
            }
            if json {
                return out_json(&json!({
                    "repository": r.repository,
                    "key_id": r.key_id.to_string(),
                    "resigned": r.resigned.iter().map(|x| json!({
                        "channel": x.channel,
                        "package": x.package,
                        "sequence": x.sequence,
                        "expires": x.expires,
                        "before": x.before.describe(),
                    })).collect::<Vec<_>>(),
                    "changed": true,
                }));
            }
            let mut text = String::new();
            for x in &r.resigned {
                text.push_str(&format!(
                    "signed {} in {} with key {}: sequence {}, expires {} (before: {})\n",
                    x.package,
                    x.channel,
                    r.key_id,
                    x.sequence,
                    x.expires.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    x.before.describe()
                ));
            }
            out(&text)
        }
    }
}

fn entry_json(l: &ops::query::Listed) -> Value {
    json!({
        "channel": l.channel,
        "package": l.package,
        "version": l.entry.version,
        "build": l.entry.build,
        "sha256": l.entry.sha256,
        "size": l.entry.size,
        "published": l.entry.published,
        "promoted_from": l.entry.promoted_from,
        "yanked": l.entry.yanked,
        "newest": l.newest,
        "source": l.entry.source,
    })
}

/// Prints releases as a table (or JSON); `empty` is said when there are none.
fn print_listed(listed: &[ops::query::Listed], json: bool, empty: &str) -> Result<(), Failure> {
    if json {
        return out_json(&Value::Array(listed.iter().map(entry_json).collect()));
    }
    if listed.is_empty() {
        note(empty);
        return Ok(());
    }
    let rows: Vec<[String; 6]> = listed
        .iter()
        .map(|l| {
            let mut notes = Vec::new();
            if l.newest {
                notes.push("newest".to_owned());
            }
            if l.entry.yanked {
                notes.push("yanked".to_owned());
            }
            if let Some(from) = &l.entry.promoted_from {
                notes.push(format!("from {from}"));
            }
            [
                l.channel.clone(),
                l.package.clone(),
                l.entry.version_build(),
                l.entry.published.strftime("%Y-%m-%d %H:%M:%S").to_string(),
                short(&l.entry.sha256).to_owned(),
                notes.join(", "),
            ]
        })
        .collect();
    out(&table(
        [
            "CHANNEL",
            "PACKAGE",
            "RELEASE",
            "PUBLISHED (UTC)",
            "SHA256",
            "NOTES",
        ],
        &rows,
    ))
}

fn table<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = head.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        text.push_str(l.trim_end());
        text.push('\n');
    };
    line(head.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    text
}

fn print_shown(s: &ops::query::Shown, json: bool) -> Result<(), Failure> {
    let m = &s.manifest;
    let (_, first) = &s.channels[0];
    if json {
        return out_json(&json!({
            "name": s.release.name,
            "version": s.release.version,
            "build": s.release.build,
            "sha256": first.sha256,
            "size": first.size,
            "channels": s.channels.iter().map(|(c, e)| json!({
                "channel": c,
                "published": e.published,
                "promoted_from": e.promoted_from,
                "yanked": e.yanked,
            })).collect::<Vec<_>>(),
            "description": m.package.description,
            "source": m.source,
            "install": m.install,
            "hooks": m.hooks,
            "rollback": m.rollback,
            "files": m.files.len(),
            "payload_bytes": m.payload_bytes(),
        }));
    }
    let mut t = format!("{}\n", s.release);
    let mut kv = |k: &str, v: String| t.push_str(&format!("  {k:<12} {v}\n"));
    if let Some(d) = &m.package.description {
        kv("description", d.clone());
    }
    kv("sha256", first.sha256.clone());
    kv("size", human_bytes(first.size));
    kv(
        "payload",
        format!(
            "{}, {}",
            entries(m.files.len()),
            human_bytes(m.payload_bytes())
        ),
    );
    kv("target", m.install.target.clone());
    let hooks: Vec<&str> = m.hooks.iter().map(|(n, _)| n).collect();
    kv(
        "hooks",
        if hooks.is_empty() {
            "none".into()
        } else {
            hooks.join(", ")
        },
    );
    kv("data epoch", m.rollback.data_epoch.to_string());
    if let Some(c) = &m.source.commit {
        kv("commit", c.clone());
    }
    if let Some(b) = &m.source.branch {
        kv("branch", b.clone());
    }
    if let Some(u) = &m.source.url {
        kv("source", u.clone());
    }
    for (c, e) in &s.channels {
        let mut notes = vec![format!(
            "since {}",
            e.published.strftime("%Y-%m-%d %H:%M:%S UTC")
        )];
        if let Some(from) = &e.promoted_from {
            notes.push(format!("from {from}"));
        }
        if e.yanked {
            notes.push("yanked".into());
        }
        kv(&format!("in {c}"), notes.join(", "));
    }
    out(&t)
}
