//! One function per verb: fill the operation's options from the
//! arguments, run it, print its report (a human summary, or JSON with
//! `--json`). Returns the exit code of a successful run.

use std::time::Duration;

use agent::error::Error;
use agent::node::{Node, NodeOptions};
use agent::ops::{gc, install, query, rebuild, recover, rollback};
use agent::resolve::Wanted;
use agent::store::{HookExit, Release, TxnRecord};
use berth_cli::{Bar, human_bytes, note};
use serde_json::{Value, json};

use crate::cli::{Command, Global};

fn out(text: &str) -> Result<u8, Error> {
    berth_cli::out(text).map(|_| 0).map_err(|e| {
        berth_core::fsutil::PathError::new("cannot write to", "stdout".as_ref(), e).into()
    })
}

fn out_json(value: &Value) -> Result<u8, Error> {
    berth_cli::out_json(value).map(|_| 0).map_err(|e| {
        berth_core::fsutil::PathError::new("cannot write to", "stdout".as_ref(), e).into()
    })
}

fn time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn run(global: Global, command: Command) -> Result<u8, Error> {
    let node = Node::open(NodeOptions {
        root: global.root,
        config: global.config,
        repo: global.repo,
        channels: global.channels,
        wait: Duration::from_secs(global.wait),
        trusted_keys: global.trusted_keys,
        ca_cert: global.ca_cert,
    })?;
    match command {
        Command::Install {
            release,
            file,
            dry_run,
            no_auto_rollback,
            json,
        } => {
            let wanted = release.map(|r| r.parse::<Wanted>()).transpose()?;
            let r = install::install(
                &node,
                &install::InstallOptions {
                    wanted,
                    file,
                    dry_run,
                    auto_rollback: !no_auto_rollback,
                },
                &Bar::for_stderr(),
            )?;
            let changed = r.outcome == install::Outcome::Installed;
            if json {
                return out_json(&json!({
                    "package": r.release.name,
                    "version": r.release.version,
                    "build": r.release.build,
                    "channel": r.channel,
                    "changed": changed,
                    "dry_run": dry_run,
                    "would_change": r.outcome == install::Outcome::WouldInstall,
                    "previous": r.previous.as_ref().map(|p| p.version_build()),
                    "target": r.target,
                    "txn": r.txn,
                    "snapshot": r.snapshot,
                }));
            }
            let from = r
                .previous
                .as_ref()
                .map(|p| format!(", replacing {}", p.version_build()))
                .unwrap_or_default();
            let channel = r
                .channel
                .as_ref()
                .map(|c| format!(" from {c}"))
                .unwrap_or_default();
            out(&match r.outcome {
                install::Outcome::Installed => format!(
                    "installed {}{channel}{from} -> `{}`\n",
                    r.release,
                    r.target.display()
                ),
                install::Outcome::Unchanged => {
                    format!("unchanged: {} is installed and intact\n", r.release)
                }
                install::Outcome::WouldInstall => {
                    format!("would install {}{channel}{from}\n", r.release)
                }
            })
        }
        Command::Rollback {
            package,
            to,
            with_data,
            force,
            dry_run,
            json,
        } => {
            let to = to.as_deref().map(rollback::parse_to).transpose()?;
            let r = rollback::rollback(
                &node,
                &rollback::RollbackOptions {
                    package,
                    to,
                    with_data,
                    force,
                    dry_run,
                },
                &Bar::for_stderr(),
            )?;
            if json {
                return out_json(&json!({
                    "package": r.package,
                    "from": r.from.version_build(),
                    "to": r.to.version_build(),
                    "with_data": r.with_data,
                    "dry_run": r.dry_run,
                    "changed": r.txn.is_some(),
                    "txn": r.txn,
                }));
            }
            let data = if r.with_data {
                " with its data"
            } else {
                ", code only"
            };
            if r.dry_run {
                out(&format!(
                    "would roll back {} from {} to {}{data}\n",
                    r.package,
                    r.from.version_build(),
                    r.to.version_build()
                ))
            } else if r.txn.is_none() {
                out(&format!(
                    "unchanged: {} is on {} already\n",
                    r.package,
                    r.to.version_build()
                ))
            } else {
                if r.with_data {
                    note(
                        "the data was restored from the snapshot's dumps: whatever was written since is lost",
                    );
                }
                out(&format!(
                    "rolled back {} from {} to {}{data}\n",
                    r.package,
                    r.from.version_build(),
                    r.to.version_build()
                ))
            }
        }
        Command::Status { package, json } => {
            let status = query::status(&node, package.as_deref())?;
            if json {
                return out_json(&Value::Array(status.iter().map(status_json).collect()));
            }
            if status.is_empty() {
                note("nothing is installed on this node");
                return Ok(0);
            }
            let mut text = String::new();
            for s in &status {
                match &s.current {
                    Some(c) => text.push_str(&format!(
                        "{} {} ({})\n",
                        s.package,
                        c.release.version_build(),
                        c.state
                    )),
                    None => text.push_str(&format!("{} (no current release)\n", s.package)),
                }
                if let Some(t) = &s.target {
                    let to = s
                        .points_to
                        .as_ref()
                        .map_or("nothing".to_owned(), |p| format!("`{}`", p.display()));
                    text.push_str(&format!("  target  `{}` -> {to}\n", t.display()));
                }
                if !s.consistent {
                    text.push_str("  warning: the target does not point at the current release; `agent install` repairs it\n");
                }
                for r in &s.releases {
                    let kept = if r.dir.exists() { "kept" } else { "pruned" };
                    text.push_str(&format!(
                        "  {:<16} {:<11} {} installed {}\n",
                        r.release.version_build(),
                        r.state.to_string(),
                        kept,
                        time(r.installed_at)
                    ));
                }
            }
            out(&text)
        }
        Command::History { package, json } => {
            berth_core::name::check_package_name(&package)?;
            let history = query::history(&node, &package)?;
            if json {
                return out_json(&Value::Array(history.iter().map(txn_json).collect()));
            }
            if history.is_empty() {
                note(&format!(
                    "no install or rollback of `{package}` on this node"
                ));
                return Ok(0);
            }
            let mut text = String::new();
            for t in &history {
                let from = t
                    .from
                    .as_ref()
                    .map_or("nothing".to_owned(), |r| r.version_build());
                let to = t.to.as_ref().map_or("?".to_owned(), |r| r.version_build());
                text.push_str(&format!(
                    "#{} {} {} {from} -> {to}: {}\n",
                    t.id,
                    time(t.started_at),
                    t.kind,
                    t.result
                ));
                if let Some(e) = &t.error {
                    text.push_str(&format!("  error: {e}\n"));
                }
                for s in &t.steps {
                    text.push_str(&format!("  {:<20} {}\n", s.name, s.state));
                }
            }
            out(&text)
        }
        Command::Verify { package, json } => {
            berth_core::name::check_package_name(&package)?;
            let v = query::verify(&node, &package)?;
            let intact = v.drift.is_empty() && v.target_ok;
            if json {
                out_json(&json!({
                    "package": v.package,
                    "version": v.release.release.version,
                    "build": v.release.release.build,
                    "intact": intact,
                    "target_ok": v.target_ok,
                    "drift": v.drift.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                }))?;
            } else {
                let mut text = String::new();
                if !v.target_ok {
                    text.push_str("the target does not point at the current release\n");
                }
                for d in &v.drift {
                    text.push_str(&format!("{d}\n"));
                }
                if intact {
                    text.push_str(&format!("ok: {} matches its manifest\n", v.release.release));
                } else {
                    let n = v.drift.len();
                    let plural = if n == 1 { "difference" } else { "differences" };
                    text.push_str(&format!(
                        "{}: {n} {plural} from its manifest\n",
                        v.release.release
                    ));
                }
                out(&text)?;
            }
            Ok(if intact { 0 } else { 1 })
        }
        Command::Logs { txn, json } => {
            let l = query::logs(&node, txn)?;
            if json {
                let mut value = txn_json(&l.txn);
                value["hooks"] = Value::Array(
                    l.hooks
                        .iter()
                        .map(|h| {
                            json!({
                                "hook": h.hook,
                                "started": h.started_at,
                                "finished": h.finished_at,
                                "exit": h.exit.map(exit_text),
                                "timed_out": h.timed_out,
                                "output": h.output,
                                "output_bytes_total": h.output_bytes_total,
                            })
                        })
                        .collect(),
                );
                value["events"] = Value::Array(
                    l.events
                        .iter()
                        .map(|e| json!({"time": e.time, "level": e.level.to_string(), "message": e.message}))
                        .collect(),
                );
                return out_json(&value);
            }
            let t = &l.txn;
            let from = t
                .from
                .as_ref()
                .map_or("nothing".to_owned(), |r| r.version_build());
            let to = t.to.as_ref().map_or("?".to_owned(), |r| r.version_build());
            let mut text = format!(
                "#{} {} {} {from} -> {to}: {}\n",
                t.id, t.kind, t.package, t.result
            );
            if let Some(e) = &t.error {
                text.push_str(&format!("error: {e}\n"));
            }
            for s in &t.steps {
                let detail = s
                    .detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                text.push_str(&format!(
                    "  {} {:<20} {}{detail}\n",
                    time(s.started_at),
                    s.name,
                    s.state
                ));
            }
            for h in &l.hooks {
                let ending = match (h.exit, h.timed_out) {
                    (_, true) => "timed out".to_owned(),
                    (Some(e), _) => exit_text(e),
                    (None, false) => "?".to_owned(),
                };
                text.push_str(&format!(
                    "--- hook {} ({ending}, {} bytes of output)\n",
                    h.hook, h.output_bytes_total
                ));
                text.push_str(&h.output);
                if !h.output.ends_with('\n') && !h.output.is_empty() {
                    text.push('\n');
                }
            }
            for e in &l.events {
                text.push_str(&format!("{} {}: {}\n", time(e.time), e.level, e.message));
            }
            out(&text)
        }
        Command::Recover {
            rebuild: true,
            json,
        } => {
            let r = rebuild::rebuild(&node)?;
            let vb = |r: &berth_core::name::ReleaseId| r.version_build();
            if json {
                return out_json(&json!({
                    "moved_aside": r.moved_aside.iter().map(|(from, to)| json!({"from": from, "to": to})).collect::<Vec<_>>(),
                    "packages": r.packages.iter().map(|p| json!({
                        "package": p.package,
                        "releases": p.releases.iter().map(vb).collect::<Vec<_>>(),
                        "current": p.current.as_ref().map(vb),
                        "snapshots": p.snapshots,
                    })).collect::<Vec<_>>(),
                    "sequences": r.sequences,
                    "skipped": r.skipped.iter().map(|(path, why)| json!({"path": path, "why": why})).collect::<Vec<_>>(),
                    "changed": true,
                }));
            }
            let mut text = String::new();
            for (from, to) in &r.moved_aside {
                text.push_str(&format!(
                    "moved {} aside to {}\n",
                    from.display(),
                    to.display()
                ));
            }
            for p in &r.packages {
                text.push_str(&format!(
                    "{}: {} release(s) ({}), {} snapshot(s); {}\n",
                    p.package,
                    p.releases.len(),
                    p.releases.iter().map(vb).collect::<Vec<_>>().join(", "),
                    p.snapshots,
                    match &p.current {
                        Some(c) => format!("on {} (where its target points)", c.version_build()),
                        None => "its target points at no release found".into(),
                    }
                ));
            }
            text.push_str(&format!(
                "{} accepted index sequence(s) restored\n",
                r.sequences
            ));
            for (path, why) in &r.skipped {
                text.push_str(&format!("left out {}: {why}\n", path.display()));
            }
            text.push_str("rebuilt the state database from the disk; the history of earlier transactions is lost\n");
            out(&text)
        }
        Command::Recover {
            rebuild: false,
            json,
        } => {
            let r = recover::recover(&node)?;
            let vb =
                |r: &Option<berth_core::name::ReleaseId>| r.as_ref().map(|r| r.version_build());
            if json {
                return out_json(&json!({
                    "closed": r.closed.iter().map(|c| json!({
                        "txn": c.txn.id.0,
                        "kind": c.txn.kind.as_str(),
                        "package": c.txn.package,
                        "from": vb(&c.txn.from),
                        "to": vb(&c.txn.to),
                        "pid": c.txn.pid,
                        "outcome": c.outcome.as_str(),
                        "detail": c.detail,
                    })).collect::<Vec<_>>(),
                    "current": r.current.iter().map(|(p, rel)| json!({"package": p, "release": vb(rel)})).collect::<Vec<_>>(),
                    "removed": r.removed,
                    "changed": !r.is_empty(),
                }));
            }
            if r.is_empty() {
                return out(
                    "nothing to recover: no interrupted transaction, no staging directory\n",
                );
            }
            let mut text = String::new();
            for c in &r.closed {
                let t = &c.txn;
                text.push_str(&format!(
                    "transaction #{} ({} {}{}, process {}) was interrupted; {}\n",
                    t.id.0,
                    t.kind.as_str(),
                    t.package,
                    match (&t.from, &t.to) {
                        (Some(f), Some(to)) =>
                            format!(" {} -> {}", f.version_build(), to.version_build()),
                        (None, Some(to)) => format!(" -> {}", to.version_build()),
                        _ => String::new(),
                    },
                    t.pid,
                    c.detail
                ));
            }
            for (p, rel) in &r.current {
                text.push_str(&match rel {
                    Some(rel) => format!("{p} is on {} (where its target points)\n", rel.version_build()),
                    None => format!("{p} has no current release (its target points at no release this node knows)\n"),
                });
            }
            for d in &r.removed {
                text.push_str(&format!("removed {}\n", d.display()));
            }
            out(&text)
        }
        Command::Gc { dry_run, json } => {
            let r = gc::gc(&node, dry_run)?;
            if json {
                return out_json(&json!({
                    "dry_run": r.dry_run,
                    "releases": r.packages.iter().flat_map(|(p, pr)| pr.releases.iter().map(move |rel| json!({"package": p, "release": rel.version_build()}))).collect::<Vec<_>>(),
                    "snapshots": r.packages.iter().flat_map(|(p, pr)| pr.snapshots.iter().map(move |(id, rel)| json!({"package": p, "id": id, "release": rel.version_build()}))).collect::<Vec<_>>(),
                    "cache": r.cache.iter().map(|(sha, b)| json!({"sha256": sha, "bytes": b})).collect::<Vec<_>>(),
                    "bytes": r.bytes(),
                    "changed": !r.dry_run && r.bytes() > 0,
                }));
            }
            let verb = if r.dry_run { "would remove" } else { "removed" };
            let mut text = String::new();
            for (p, pr) in &r.packages {
                for rel in &pr.releases {
                    text.push_str(&format!(
                        "{verb} release {p}@{rel}\n",
                        rel = rel.version_build()
                    ));
                }
                for (id, rel) in &pr.snapshots {
                    text.push_str(&format!(
                        "{verb} snapshot #{id} of {p}@{}\n",
                        rel.version_build()
                    ));
                }
            }
            for (sha, b) in &r.cache {
                text.push_str(&format!(
                    "{verb} cached artifact {sha} ({})\n",
                    human_bytes(*b)
                ));
            }
            text.push_str(&format!(
                "{}: {} freed\n",
                if r.dry_run { "dry run" } else { "gc done" },
                human_bytes(r.bytes())
            ));
            out(&text)
        }
        Command::Snapshots { package, json } => {
            berth_core::name::check_package_name(&package)?;
            let snapshots = query::snapshots(&node, &package)?;
            if json {
                return out_json(&Value::Array(
                    snapshots
                        .iter()
                        .map(|s| {
                            json!({
                                "id": s.id.0,
                                "release": s.release.version_build(),
                                "created": s.created_at,
                                "kind": s.kind.to_string(),
                                "bytes": s.bytes,
                                "dir": s.dir,
                                "has_backup": s.has_backup,
                                "has_dumps": s.has_dumps,
                                "data_epoch": s.data_epoch,
                            })
                        })
                        .collect(),
                ));
            }
            if snapshots.is_empty() {
                note(&format!("no snapshot of `{package}` on this node"));
                return Ok(0);
            }
            let mut text = String::new();
            for s in &snapshots {
                let extra = [(s.has_backup, "backup"), (s.has_dumps, "dumps")]
                    .iter()
                    .filter(|(has, _)| *has)
                    .map(|(_, w)| *w)
                    .collect::<Vec<_>>()
                    .join(", ");
                text.push_str(&format!(
                    "#{} {} {:<16} {:<13} {:>10} {extra}\n",
                    s.id.0,
                    time(s.created_at),
                    s.release.version_build(),
                    s.kind.to_string(),
                    human_bytes(s.bytes)
                ));
            }
            out(&text)
        }
    }
}

fn exit_text(exit: HookExit) -> String {
    match exit {
        HookExit::Code(c) => format!("exit code {c}"),
        HookExit::Signal(s) => agent::hooks::signal_text(s),
    }
}

fn release_json(r: &Release) -> Value {
    json!({
        "version": r.release.version,
        "build": r.release.build,
        "state": r.state.to_string(),
        "current": r.current,
        "installed": r.installed_at,
        "dir": r.dir,
        "kept": r.dir.exists(),
        "data_epoch": r.data_epoch,
        "sha256": r.sha256,
    })
}

fn status_json(s: &query::PackageStatus) -> Value {
    json!({
        "package": s.package,
        "current": s.current.as_ref().map(release_json),
        "target": s.target,
        "points_to": s.points_to,
        "consistent": s.consistent,
        "releases": s.releases.iter().map(release_json).collect::<Vec<_>>(),
    })
}

fn txn_json(t: &TxnRecord) -> Value {
    json!({
        "id": t.id.0,
        "kind": t.kind.to_string(),
        "from": t.from.as_ref().map(|r| r.version_build()),
        "to": t.to.as_ref().map(|r| r.version_build()),
        "started": t.started_at,
        "finished": t.finished_at,
        "result": t.result.to_string(),
        "error": t.error,
        "steps": t.steps.iter().map(|s| json!({"name": s.name, "state": s.state.to_string(), "detail": s.detail})).collect::<Vec<_>>(),
    })
}
