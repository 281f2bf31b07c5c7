//! The state_dir lock: `freesky serve` with the SQLite store holds an exclusive
//! advisory lock on `state_dir/freesky.lock` (its pid written inside) for its whole
//! life. The SQLite store's mirror is the whole truth only while one process writes
//! the file: a second server on the same state_dir refuses to start, and a one-shot
//! command (`channels`, `playlist`, `guide`) beside a running server opens the store
//! for display only (`Store::open_display_only`). PostgreSQL needs no such lock:
//! instances sharing a database is its design.
//!
//! The lock is the kernel's (`flock`): it ends with the process, however it ends, so a
//! `kill -9` leaves no stale lock behind (the file stays, unlocked).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::{create_private_dir, StoreError};

/// The lock file's name in `state_dir`.
pub const LOCK_FILE: &str = "freesky.lock";

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    /// Open for the lock's lifetime: closing it releases the lock.
    _file: File,
    pub path: PathBuf,
}

/// The process holding a state_dir's lock, as its lock file names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// `None` when the file names none (written by nothing we know, or being written).
    pub pid: Option<u32>,
    pub path: PathBuf,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}"),
            None => write!(f, "pid unknown, see {}", self.path.display()),
        }
    }
}

fn open(dir: &Path) -> Result<(File, PathBuf), StoreError> {
    create_private_dir(dir).map_err(|e| super::dir_error(dir, e))?;
    let path = dir.join(LOCK_FILE);
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&path).map_err(|e| match e.kind() {
        // The folder is there but not the running user's to write (another owner).
        std::io::ErrorKind::PermissionDenied => super::dir_error(dir, e),
        _ => StoreError::at(&path.display().to_string(), e),
    })?;
    Ok((file, path))
}

/// The pid written in a lock file.
fn pid_in(mut file: &File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl StateLock {
    /// Takes the lock of `dir` (created owner-only when missing) and writes this
    /// process's pid in it; `Err(Holder)` when another process holds it.
    pub fn acquire(dir: &Path) -> Result<Result<StateLock, Holder>, StoreError> {
        let (mut file, path) = open(dir)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Ok(Err(Holder {
                    pid: pid_in(&file),
                    path,
                }))
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::at(&path.display().to_string(), e))
            }
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            // The pid is only for the message another process shows; the lock holds.
            tracing::warn!(file = %path.display(), error = %e, "cannot write the pid in the state_dir lock file");
        }
        Ok(Ok(StateLock { _file: file, path }))
    }

    /// The process holding `dir`'s lock now, if any; takes nothing (a lock found free
    /// is released at once). A missing `dir` has no holder.
    pub fn holder(dir: &Path) -> Result<Option<Holder>, StoreError> {
        if !dir.join(LOCK_FILE).exists() {
            return Ok(None);
        }
        Ok(Self::acquire_quietly(dir)?.err())
    }

    /// `acquire` without writing the pid (the lock is only probed).
    fn acquire_quietly(dir: &Path) -> Result<Result<(), Holder>, StoreError> {
        let (file, path) = open(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(Ok(())),
            Err(TryLockError::WouldBlock) => Ok(Err(Holder {
                pid: pid_in(&file),
                path,
            })),
            Err(TryLockError::Error(e)) => Err(StoreError::at(&path.display().to_string(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_named_by_its_pid_and_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(StateLock::holder(&state).unwrap(), None);
        let held = StateLock::acquire(&state).unwrap().expect("free");
        let holder = StateLock::acquire(&state).unwrap().expect_err("held");
        assert_eq!(holder.pid, Some(std::process::id()));
        assert_eq!(holder.path, state.join(LOCK_FILE));
        assert_eq!(StateLock::holder(&state).unwrap(), Some(holder));
        drop(held);
        assert_eq!(StateLock::holder(&state).unwrap(), None);
        StateLock::acquire(&state).unwrap().expect("free again");
    }
}
