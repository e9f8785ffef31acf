//! Opening the database: create it whole or not at all, refuse anything
//! damaged or too new before writing a byte to it, then set the pragmas and
//! migrate.
//!
//! A missing file is built under a temporary name in the same directory and
//! hard-linked into place (which, unlike a rename, fails when the name is
//! taken, so two agents creating it at once both end up with the same one).
//! The database at the real path is therefore always complete, and an empty
//! or short file there is damage, never "a new database".

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;
use super::schema::{self, LATEST};

/// How long a command waits for another's write to finish. Writes are short
/// (no hook runs inside one); this only absorbs contention, e.g. `agent
/// status` reading during an install.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The first bytes of every SQLite database file, in a 100-byte header.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";
const HEADER_LEN: usize = 100;

pub(super) fn open(path: &Path) -> Result<Connection, StoreError> {
    let exists = path.try_exists().map_err(|source| StoreError::Io {
        action: "look for",
        path: path.to_owned(),
        source,
    })?;
    if !exists {
        refuse_stray_wal(path)?;
        create(path)?;
    }
    open_existing(path)
}

/// A `-wal` file without its database holds the last commits of a database
/// that was deleted or moved without it. SQLite would replay those into a
/// new database of the same name, so none is created next to it.
fn refuse_stray_wal(path: &Path) -> Result<(), StoreError> {
    let wal = sidecar(path, "-wal");
    let found = wal.try_exists().map_err(|source| StoreError::Io {
        action: "look for",
        path: wal.clone(),
        source,
    })?;
    if found {
        return Err(StoreError::StrayWal {
            path: path.to_owned(),
            wal,
        });
    }
    Ok(())
}

fn open_existing(path: &Path) -> Result<Connection, StoreError> {
    check_header(path)?;
    // Without CREATE: if the file vanished since the check, fail rather
    // than quietly make an empty one.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(StoreError::sql(path))?;
    quick_check(&conn, path)?;
    let found = schema::user_version(&conn, path)?;
    if found > LATEST {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            known: LATEST,
        });
    }
    configure(&conn, path)?;
    schema::migrate(&mut conn, path)?;
    Ok(conn)
}

/// Refuses a file that is not a SQLite database before SQLite opens it, so
/// nothing can be written over it.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let io_error = |source| StoreError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    };
    let mut header = Vec::with_capacity(HEADER_LEN);
    File::open(path)
        .map_err(io_error)?
        .take(HEADER_LEN as u64)
        .read_to_end(&mut header)
        .map_err(io_error)?;
    let reason = if header.len() < HEADER_LEN {
        format!(
            "it is {} bytes long, shorter than a SQLite header",
            header.len()
        )
    } else if !header.starts_with(MAGIC) {
        "it does not begin with the SQLite header".to_owned()
    } else {
        return Ok(());
    };
    Err(StoreError::NotADatabase {
        path: path.to_owned(),
        reason,
    })
}

/// `quick_check` reads every page and checks its structure, skipping only
/// the index-to-table comparison of `integrity_check`; on a database the
/// size of a node's journal it takes milliseconds.
fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check(5)")
        .map_err(StoreError::sql(path))?;
    let problems: Vec<String> = stmt
        .query_map([], |row| row.get(0))
        .and_then(Iterator::collect)
        .map_err(StoreError::sql(path))?;
    if problems == ["ok"] {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        path: path.to_owned(),
        detail: problems.join("; "),
    })
}

/// WAL so readers never block the writer; `synchronous=FULL` so that a
/// transaction that returned from commit survives a power cut (in WAL mode
/// NORMAL may lose the last commits); foreign keys so no row points at
/// nothing. The journal mode is stored in the file; the others hold per
/// connection and are set on every open.
fn configure(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .map_err(StoreError::sql(path))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NoWal {
            path: path.to_owned(),
            mode,
        });
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .and_then(|()| conn.pragma_update(None, "foreign_keys", "ON"))
        .map_err(StoreError::sql(path))
}

fn create(path: &Path) -> Result<(), StoreError> {
    let temp = temp_path(path);
    let result = build(&temp, path).and_then(|()| link_into_place(&temp, path));
    for leftover in files_of(&temp) {
        // The temporary name is ours alone and is either linked already or
        // abandoned; a leftover only wastes a few KiB, so a failure to
        // remove it must not hide the real outcome.
        let _ = fs::remove_file(leftover);
    }
    result
}

/// A complete, empty database at `temp`, synced to disk. Errors name `path`,
/// the file the caller asked for.
fn build(temp: &Path, path: &Path) -> Result<(), StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(temp, flags).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    configure(&conn, path)?;
    schema::migrate(&mut conn, path)?;
    // Closing the last connection checkpoints the WAL into the file and
    // removes it, so the one file holds everything.
    conn.close()
        .map_err(|(_, source)| StoreError::sql(path)(source))?;
    File::open(temp)
        .and_then(|file| file.sync_all())
        .map_err(|source| StoreError::Io {
            action: "sync",
            path: temp.to_owned(),
            source,
        })
}

fn link_into_place(temp: &Path, path: &Path) -> Result<(), StoreError> {
    match fs::hard_link(temp, path) {
        Ok(()) => sync_dir(path),
        // Another process created it first; theirs is as good as ours.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Io {
            action: "create",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Makes the new directory entry durable, not only the file's contents.
fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| StoreError::Io {
            action: "sync the directory of",
            path: path.to_owned(),
            source,
        })
}

/// `.state.db.new-<pid>-<n>` next to `state.db`: unique per process and
/// call, and on the same file system, as a hard link needs.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy();
    path.with_file_name(format!(".{name}.new-{}-{n}", std::process::id()))
}

/// The database at `path` and its `-wal` and `-shm` files.
pub(crate) fn files_of(path: &Path) -> [PathBuf; 3] {
    [
        path.to_owned(),
        sidecar(path, "-wal"),
        sidecar(path, "-shm"),
    ]
}

/// `path` with `suffix` appended to its file name.
pub(crate) fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
