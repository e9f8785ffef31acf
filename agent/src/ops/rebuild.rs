//! `agent recover --rebuild`: the state database made again from what the
//! node keeps on disk, for when it is lost or damaged. Every release dir
//! holds its `MANIFEST.toml` and, in its `.unpacked` stamp, the digest of
//! the artifact it came from; every snapshot dir holds `SNAPSHOT.toml`
//! (which release, how, when) and that release's `MANIFEST.toml`; the
//! accepted index sequences are copied to `channel-sequences.toml`; the
//! target links say which release is current. What only the database
//! held, the history of past transactions with their steps and hook
//! output, is lost, and the report says so.
//!
//! A readable database is never replaced; a damaged one (and a `-wal`
//! without its database) is moved aside, not deleted. The new database is
//! built under a temporary name and renamed into place whole.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use berth_core::fsutil::{self, IoResultExt};
use berth_core::manifest::Manifest;
use berth_core::name::ReleaseId;
use berth_core::unpack;

use crate::error::Error;
use crate::node::Node;
use crate::ops::txn::{self, SNAPSHOT_RECORD, STAMP_KEY, SnapshotRecord, UNPACKED_STAMP};
use crate::store::{
    EventLevel, NewRelease, NewSnapshot, ReleaseState, SnapshotKind, Store, StoreError, TxnKind,
    TxnResult, files_of, sidecar,
};
use crate::trust::{SEQUENCES_FILE, SequencesFile};

/// What the rebuild found and did.
#[derive(Debug, Clone, Default)]
pub struct RebuildReport {
    /// Damaged files moved aside: (from, to).
    pub moved_aside: Vec<(PathBuf, PathBuf)>,
    pub packages: Vec<PackageRebuilt>,
    /// Accepted index sequences restored.
    pub sequences: usize,
    /// What was left out, and why (left in place on disk).
    pub skipped: Vec<(PathBuf, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct PackageRebuilt {
    pub package: String,
    pub releases: Vec<ReleaseId>,
    pub current: Option<ReleaseId>,
    pub snapshots: usize,
}

/// A release found on disk.
#[derive(Debug, Clone)]
struct Found {
    manifest: Manifest,
    sha256: String,
    installed_at: Option<std::time::SystemTime>,
}

/// A snapshot found on disk.
#[derive(Debug, Clone)]
struct FoundSnapshot {
    txn: i64,
    dir: PathBuf,
    release: ReleaseId,
    kind: SnapshotKind,
    sha256: String,
    taken_at: jiff::Timestamp,
}

pub fn rebuild(node: &Node) -> Result<RebuildReport, Error> {
    let _lock = node.lock("recover --rebuild")?;
    let mut report = RebuildReport::default();
    let db = node.layout.state_db();
    report.moved_aside = move_damaged_aside(&db)?;

    let (releases, snapshots) = scan(node, &mut report)?;
    let state = node.layout.state_dir();
    fsutil::create_dir_all_synced(&state)?;
    let temp = state.join(format!(".state.db.rebuild-{}", std::process::id()));
    remove_db_files(&temp);
    let result = (|| {
        let mut store = Store::open(&temp)?;
        fill(node, &mut store, &releases, &snapshots, &mut report)?;
        drop(store);
        fs::File::open(&temp)
            .and_then(|f| f.sync_all())
            .at("cannot sync", &temp)?;
        fs::rename(&temp, &db).at("cannot move into place", &db)?;
        fsutil::sync_dir(&state)?;
        Ok::<(), Error>(())
    })();
    remove_db_files(&temp);
    result?;
    Ok(report)
}

fn remove_db_files(path: &Path) {
    for p in files_of(path) {
        let _ = fs::remove_file(p);
    }
}

/// Refuses a readable database; moves a damaged one (with its `-wal` and
/// `-shm`), or a `-wal` whose database is gone, aside.
fn move_damaged_aside(db: &Path) -> Result<Vec<(PathBuf, PathBuf)>, Error> {
    let wal = sidecar(db, "-wal");
    if db.exists() {
        match Store::open(db) {
            Ok(_) => {
                return Err(Error::RebuildHealthy {
                    path: db.to_owned(),
                });
            }
            Err(
                StoreError::NotADatabase { .. }
                | StoreError::Corrupt { .. }
                | StoreError::Sqlite { .. },
            ) => {}
            Err(e) => return Err(e.into()),
        }
    } else if !wal.exists() {
        return Ok(Vec::new());
    }
    let stamp = jiff::Timestamp::now().as_second();
    let mut moved = Vec::new();
    for p in files_of(db) {
        if p.exists() {
            let to = sidecar(&p, &format!(".damaged-{stamp}"));
            fs::rename(&p, &to).at("cannot move aside", &p)?;
            moved.push((p, to));
        }
    }
    fsutil::sync_dir(fsutil::parent_dir(db))?;
    Ok(moved)
}

/// The digest a release dir's stamp records, if it does.
fn stamp_sha256(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join(UNPACKED_STAMP)).ok()?;
    let table: toml::Table = text.parse().ok()?;
    let sha = table.get(STAMP_KEY)?.as_str()?;
    berth_core::digest::is_sha256_hex(sha).then(|| sha.to_owned())
}

/// The cached artifact whose manifest is `manifest`, by digest.
fn cached_with_manifest(node: &Node, manifest: &Manifest) -> Option<String> {
    for e in txn::entries(&node.layout.cache_dir()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(sha) = name.strip_suffix(".tar.zst") else {
            continue;
        };
        let Ok(file) = fs::File::open(e.path()) else {
            continue;
        };
        if berth_core::archive::read_manifest(std::io::BufReader::new(file))
            .is_ok_and(|m| m == *manifest)
        {
            return Some(sha.to_owned());
        }
    }
    None
}

type Releases = BTreeMap<String, BTreeMap<(String, u64), Found>>;

/// Reads the snapshot records and the release dirs.
fn scan(node: &Node, report: &mut RebuildReport) -> Result<(Releases, Vec<FoundSnapshot>), Error> {
    let mut releases: Releases = BTreeMap::new();
    let mut snapshots = Vec::new();
    for e in txn::entries(&node.layout.snapshots_dir()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(txn) = name.parse::<i64>() else {
            continue;
        };
        let dir = e.path();
        let record = fs::read_to_string(dir.join(SNAPSHOT_RECORD))
            .ok()
            .and_then(|t| toml::from_str::<SnapshotRecord>(&t).ok());
        let manifest = fs::read_to_string(dir.join("MANIFEST.toml"))
            .ok()
            .and_then(|t| Manifest::parse(&t).ok());
        let (Some(record), Some(manifest)) = (record, manifest) else {
            report.skipped.push((
                dir,
                format!("it has no readable {SNAPSHOT_RECORD} and MANIFEST.toml (made by an older agent, or damaged)"),
            ));
            continue;
        };
        let kind = match SnapshotKind::from_text(&record.kind) {
            Some(k) => k,
            None => {
                report
                    .skipped
                    .push((dir, format!("unknown snapshot kind `{}`", record.kind)));
                continue;
            }
        };
        let release = manifest.release();
        if release.name != record.package
            || release.version != record.version
            || release.build != record.build
        {
            report.skipped.push((
                dir,
                format!("{SNAPSHOT_RECORD} and MANIFEST.toml name different releases"),
            ));
            continue;
        }
        releases
            .entry(release.name.clone())
            .or_default()
            .entry((release.version.clone(), release.build))
            .or_insert(Found {
                manifest,
                sha256: record.artifact_sha256.clone(),
                installed_at: None,
            });
        snapshots.push(FoundSnapshot {
            txn,
            dir,
            release,
            kind,
            sha256: record.artifact_sha256,
            taken_at: record.taken_at,
        });
    }
    snapshots.sort_by_key(|s| s.txn);

    for pkg in txn::entries(&node.layout.state_dir().join("releases")) {
        for e in txn::entries(&pkg.path()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let dir = e.path();
            let Some(manifest) = fs::read_to_string(dir.join("MANIFEST.toml"))
                .ok()
                .and_then(|t| Manifest::parse(&t).ok())
            else {
                report
                    .skipped
                    .push((dir, "it has no readable MANIFEST.toml".into()));
                continue;
            };
            let release = manifest.release();
            if dir
                != node
                    .layout
                    .release_dir(&release.name, &release.version, release.build)
            {
                report.skipped.push((
                    dir,
                    format!("its MANIFEST.toml is of {release}, which belongs elsewhere"),
                ));
                continue;
            }
            let known = releases
                .get(&release.name)
                .and_then(|r| r.get(&(release.version.clone(), release.build)))
                .map(|f| f.sha256.clone());
            let Some(sha256) = stamp_sha256(&dir)
                .or(known)
                .or_else(|| cached_with_manifest(node, &manifest))
            else {
                report.skipped.push((
                    dir,
                    "nothing records the digest of its artifact (no stamp, snapshot or cached copy)"
                        .into(),
                ));
                continue;
            };
            let installed_at = fs::metadata(dir.join(UNPACKED_STAMP))
                .or_else(|_| fs::metadata(&dir))
                .and_then(|m| m.modified())
                .ok();
            releases.entry(release.name.clone()).or_default().insert(
                (release.version.clone(), release.build),
                Found {
                    manifest,
                    sha256,
                    installed_at,
                },
            );
        }
    }
    Ok((releases, snapshots))
}

/// Records what [`scan`] found into the fresh database.
fn fill(
    node: &Node,
    store: &mut Store,
    releases: &Releases,
    snapshots: &[FoundSnapshot],
    report: &mut RebuildReport,
) -> Result<(), Error> {
    // Snapshot dirs are named by transaction number: new ones must not
    // take a number already used.
    let highest = snapshots.iter().map(|s| s.txn).max().unwrap_or(0);
    store.write(|w| w.reserve_transaction_ids(highest))?;
    for (package, found) in releases {
        let txn = store.write(|w| w.begin_transaction(TxnKind::Rebuild, package, None, None))?;
        let mut done = PackageRebuilt {
            package: package.clone(),
            ..PackageRebuilt::default()
        };
        // Oldest first, so the newest has the highest row id.
        let mut order: Vec<(&(String, u64), &Found)> = found.iter().collect();
        order.sort_by_key(|(_, f)| f.installed_at);
        let mut rows = BTreeMap::new();
        let target = found
            .values()
            .next()
            .map(|f| node.layout.path(&f.manifest.install.target));
        let link = target.as_deref().and_then(txn::target_of);
        let mut current = None;
        for (key, f) in order {
            let release = f.manifest.release();
            let dir = node
                .layout
                .release_dir(package, &release.version, release.build);
            let is_current = link.as_deref() == Some(unpack::tree_dir(&dir).as_path());
            let text = f.manifest.to_toml();
            let row = store.write(|w| {
                w.upsert_release(&NewRelease {
                    release: &release,
                    sha256: &f.sha256,
                    manifest: &text,
                    dir: &dir,
                    data_epoch: f.manifest.rollback.data_epoch,
                    state: if is_current {
                        ReleaseState::Healthy
                    } else {
                        ReleaseState::Superseded
                    },
                })
            })?;
            if is_current {
                current = Some((row, release.clone()));
            }
            rows.insert(key.clone(), row);
            done.releases.push(release);
        }
        if let Some((row, release)) = current {
            store.write(|w| w.set_current_release(row))?;
            done.current = Some(release);
        }
        for s in snapshots.iter().filter(|s| s.release.name == *package) {
            let Some(row) = rows.get(&(s.release.version.clone(), s.release.build)) else {
                continue;
            };
            let new = NewSnapshot {
                release: *row,
                txn,
                created_at: Some(s.taken_at),
                kind: s.kind,
                dir: &s.dir,
                artifact_sha256: (s.kind == SnapshotKind::ArtifactRef).then_some(&s.sha256),
                bytes: txn::dir_bytes(&s.dir),
                has_backup: txn::non_empty(&s.dir.join("backup")),
                has_dumps: txn::non_empty(&s.dir.join("dumps")),
            };
            store.write(|w| w.record_snapshot(&new))?;
            done.snapshots += 1;
        }
        let message = format!(
            "state database rebuilt from the disk: {} release(s), {} snapshot(s); the history before it was lost",
            done.releases.len(),
            done.snapshots
        );
        store.write(|w| {
            w.record_event(package, Some(txn), EventLevel::Warn, &message)?;
            w.finish_transaction(txn, TxnResult::Committed, None)
        })?;
        report.packages.push(done);
    }
    if let Ok(text) = fs::read_to_string(node.layout.state_dir().join(SEQUENCES_FILE)) {
        match toml::from_str::<SequencesFile>(&text) {
            Ok(file) => {
                store.write(|w| {
                    for a in &file.accepted {
                        w.accept_channel_sequence(&a.channel, &a.package, a.sequence)?;
                    }
                    Ok(())
                })?;
                report.sequences = file.accepted.len();
            }
            Err(e) => report.skipped.push((
                node.layout.state_dir().join(SEQUENCES_FILE),
                format!("it does not parse: {e}"),
            )),
        }
    }
    Ok(())
}
