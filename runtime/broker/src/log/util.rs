//! Small file-system and locking helpers of the storage engine.
//!
//! Contract: every I/O failure becomes a [`BrokerError::Io`] whose context names the file and
//! what was being done; [`write_atomic`] leaves either the old or the new content under the
//! name, never a mix, and both the content and the name are durable when it returns; a
//! poisoned mutex is taken over rather than propagated as a panic.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{BrokerError, Result};

/// Locks `m`, even if a thread panicked while holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An I/O error while `doing` something to `path`.
pub(crate) fn io_err(doing: &str, path: &Path) -> impl FnOnce(std::io::Error) -> BrokerError {
    let context = format!("{doing} {}", path.display());
    move |e| BrokerError::io(context, e)
}

/// Makes the entries of directory `dir` (files created, renamed or removed in it) durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing directory", dir))
}

/// Replaces `path` with `content`: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, content: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io_err("creating", tmp))?;
    file.write_all(content).map_err(io_err("writing", tmp))?;
    file.sync_all().map_err(io_err("syncing", tmp))?;
    drop(file);
    std::fs::rename(tmp, path).map_err(io_err("renaming into place", path))?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn now_ms() -> i64 {
    system_time_ms(SystemTime::now())
}

pub(crate) fn system_time_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
