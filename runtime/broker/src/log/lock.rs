//! The data directory's lock: `DIR/LOCK`, held exclusively (an advisory `flock`) for as long as
//! a [`Log`](super::Log) has the directory open.
//!
//! Contract: at most one open log per directory, across processes and within one process (a
//! second open gets [`BrokerError::Locked`]); the lock goes when the holder is dropped or its
//! process dies, so a crash never leaves the directory locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::util::io_err;
use crate::{BrokerError, Result};

pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(BrokerError::Locked { dir: PathBuf::from(dir) }),
            Err(TryLockError::Error(e)) => Err(io_err("locking", &path)(e)),
        }
    }
}
