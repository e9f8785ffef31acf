//! One writer per node: every command that changes the node holds an
//! exclusive `flock` on `/var/lib/berth/lock` and writes into it who holds
//! it (pid, operation, since), so a second command can say what it waits
//! for. The kernel drops the lock when its process dies, however it dies,
//! so a lock left by a dead process is simply taken over; the stale holder
//! line is overwritten. The file is opened close-on-exec: hooks the agent
//! runs (even ones that leave daemons behind) never hold it.
//!
//! A holder's line is empty for a moment after it takes the lock and
//! before it lets go (it clears the line first): a command refused in
//! that moment looks again, for up to [`HOLDER_GRACE`] (1 s), so that it
//! can name the holder (or take the lock, if it was being let go).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_core::fsutil::{self, IoResultExt, PathError};
use serde::{Deserialize, Serialize};

/// How long a refused command keeps looking for the holder's line when
/// it finds none (see the module's doc).
pub const HOLDER_GRACE: Duration = Duration::from_secs(1);

/// Who holds the node lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub operation: String,
    pub since: jiff::Timestamp,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ({}) since {}",
            self.pid,
            self.operation,
            self.since.strftime("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another berth operation holds the node lock `{}`: {}", path.display(), holder.as_ref().map_or_else(|| "its holder did not say who it is".to_owned(), Holder::to_string))]
    Busy {
        path: PathBuf,
        holder: Option<Holder>,
    },
    #[error(transparent)]
    Io(#[from] PathError),
}

/// The node lock, held until dropped.
#[derive(Debug)]
pub struct NodeLock {
    file: File,
    path: PathBuf,
}

impl NodeLock {
    /// Takes the lock at `path` for `operation` (e.g. "install webapp").
    /// When another process holds it, waits up to `wait` (none: fail at
    /// once) and then fails with [`LockError::Busy`] naming the holder.
    pub fn acquire(path: &Path, operation: &str, wait: Duration) -> Result<NodeLock, LockError> {
        if let Some(dir) = path.parent() {
            fsutil::create_dir_all_synced(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at("cannot open the node lock", path)?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(TryLockError::WouldBlock) => {
                    let holder = read_holder(&mut file);
                    if holder.is_none() && Instant::now() < deadline + HOLDER_GRACE {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    return Err(LockError::Busy {
                        path: path.to_owned(),
                        holder,
                    });
                }
                Err(TryLockError::Error(e)) => {
                    return Err(PathError::new("cannot lock", path, e).into());
                }
            }
        }
        let holder = Holder {
            pid: std::process::id(),
            operation: operation.to_owned(),
            since: jiff::Timestamp::now(),
        };
        let line = serde_json::to_string(&holder).expect("a holder serializes") + "\n";
        // One write: a reader sees the line whole or not at all.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(line.as_bytes()))
            .at("cannot write the node lock", path)?;
        Ok(NodeLock {
            file,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        // Clear the holder line before the kernel drops the lock with the
        // file, so nobody reads a finished operation as the holder.
        let _ = self.file.set_len(0);
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_told_who_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("var/lib/berth/lock");
        let held = NodeLock::acquire(&path, "install webapp", Duration::ZERO).unwrap();
        // flock conflicts between two open files even in one process.
        let err = NodeLock::acquire(&path, "rollback webapp", Duration::ZERO).unwrap_err();
        let LockError::Busy {
            holder: Some(h), ..
        } = &err
        else {
            panic!("expected busy with a holder, got {err}");
        };
        assert_eq!(h.pid, std::process::id());
        assert_eq!(h.operation, "install webapp");
        assert!(err.to_string().contains("(install webapp) since"), "{err}");
        drop(held);
        NodeLock::acquire(&path, "rollback webapp", Duration::ZERO).unwrap();
    }

    #[test]
    fn a_holder_that_has_not_written_its_line_yet_is_waited_for_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        // A holder between taking the lock and writing its line.
        let held = File::create(&path).unwrap();
        held.try_lock().unwrap();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                let line = "{\"pid\":42,\"operation\":\"gc\",\"since\":\"2026-01-01T00:00:00Z\"}\n";
                std::fs::write(path, line).unwrap();
            })
        };
        let err = NodeLock::acquire(&path, "install webapp", Duration::ZERO).unwrap_err();
        writer.join().unwrap();
        let LockError::Busy {
            holder: Some(h), ..
        } = &err
        else {
            panic!("expected busy with a holder, got {err}");
        };
        assert_eq!((h.pid, h.operation.as_str()), (42, "gc"));
    }

    #[test]
    fn a_holder_that_never_says_who_it_is_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = File::create(&path).unwrap();
        held.try_lock().unwrap();
        let err = NodeLock::acquire(&path, "install webapp", Duration::ZERO).unwrap_err();
        assert!(matches!(err, LockError::Busy { holder: None, .. }), "{err}");
        assert!(err.to_string().contains("did not say who it is"), "{err}");
    }

    #[test]
    fn waiting_gives_up_after_the_time_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let _held = NodeLock::acquire(&path, "install webapp", Duration::ZERO).unwrap();
        let start = Instant::now();
        let err = NodeLock::acquire(&path, "gc", Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, LockError::Busy { .. }));
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn waiting_gets_the_lock_when_the_holder_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = NodeLock::acquire(&path, "install webapp", Duration::ZERO).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        NodeLock::acquire(&path, "gc", Duration::from_secs(10)).unwrap();
        releaser.join().unwrap();
    }

    #[test]
    fn a_lock_left_by_a_killed_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        std::fs::write(
            &path,
            "{\"pid\":1,\"operation\":\"install webapp\",\"since\":\"2026-01-01T00:00:00Z\"}\n",
        )
        .unwrap();
        // util-linux flock(1) holds an flock on the same file, as another
        // agent would, until it is killed (`-o`: its command does not
        // inherit the lock).
        let mut child = std::process::Command::new("flock")
            .arg("-o")
            .arg(&path)
            .args(["sleep", "30"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("flock(1) from util-linux runs");
        let start = Instant::now();
        while NodeLock::acquire(&path, "probe", Duration::ZERO).is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "flock(1) never took the lock"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let lock = NodeLock::acquire(&path, "install webapp", Duration::from_secs(5)).unwrap();
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert!(
            text.contains(&format!("\"pid\":{}", std::process::id())),
            "{text}"
        );
    }
}
