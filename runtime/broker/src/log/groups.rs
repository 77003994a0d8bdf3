//! Consumer group offsets of one topic: `topics/NAME/groups/GROUP.offsets`, a sequence of
//! 16-byte commit records `u32 partition | u64 offset | u32 crc32` (little-endian, the crc over
//! the first 12 bytes).
//!
//! Contract:
//! - A group's latest commit per partition is kept in memory; opening replays the file and
//!   stops at a torn or corrupt tail, which is cut off (with a warning).
//! - A commit appends one record, durable under the topic's [`FsyncPolicy`] like an append
//!   (`Always`: fsynced before `commit` returns; `Interval`: by the flusher; `Never`: not).
//! - A crash can keep a commit but lose the records under it (the two are fsynced
//!   independently): the topic's partitions are opened with every group's highest commit as
//!   the floor of their next offset ([`Groups::floors`]), so the offsets below a commit are
//!   never handed out again and the commit stays valid. Should a commit still be beyond its
//!   partition's next offset, it is lowered to it, with a warning, and the lowered offset is
//!   committed like any other (and fsynced unless `Never`), so no commit is ever beyond the end.
//! - Past [`COMPACT_BYTES`] the file is rewritten with one record per partition (temp file,
//!   fsync, rename, fsync of the directory), so it never loses the latest offsets.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::flusher::{FlushItem, Flusher};
use super::util::{fsync_dir, io_err, lock};
use super::validate_name;
use crate::{FsyncPolicy, GroupInfo, Result};

const RECORD: usize = 16;
/// A group file is compacted once it grows past this.
pub(crate) const COMPACT_BYTES: u64 = 1 << 20;
const EXT: &str = ".offsets";

/// The groups of one topic.
pub(crate) struct Groups {
    dir: PathBuf,
    partitions: u32,
    fsync: FsyncPolicy,
    map: Mutex<BTreeMap<String, Arc<Group>>>,
}

pub(crate) struct Group {
    name: String,
    path: PathBuf,
    fsync: FsyncPolicy,
    state: Mutex<GroupState>,
    dirty: AtomicBool,
}

struct GroupState {
    file: File,
    len: u64,
    /// Bytes fsynced.
    synced: u64,
    offsets: Vec<Option<u64>>,
}

fn encode(partition: u32, offset: u64) -> [u8; RECORD] {
    let mut rec = [0u8; RECORD];
    rec[..4].copy_from_slice(&partition.to_le_bytes());
    rec[4..12].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&rec[..12]);
    rec[12..].copy_from_slice(&crc.to_le_bytes());
    rec
}

/// The latest offsets in `bytes` and the length of its valid prefix.
fn replay(bytes: &[u8], partitions: u32) -> (Vec<Option<u64>>, usize) {
    let mut offsets = vec![None; partitions as usize];
    let mut valid = 0;
    for rec in bytes.chunks_exact(RECORD) {
        let crc = u32::from_le_bytes([rec[12], rec[13], rec[14], rec[15]]);
        if crc32fast::hash(&rec[..12]) != crc {
            break;
        }
        let partition = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&rec[4..12]);
        if let Some(slot) = offsets.get_mut(partition as usize) {
            *slot = Some(u64::from_le_bytes(offset));
        }
        valid += RECORD;
    }
    (offsets, valid)
}

impl Groups {
    /// Loads every group of the topic whose groups directory is `dir`.
    pub(crate) fn open(dir: PathBuf, partitions: u32, fsync: FsyncPolicy) -> Result<Groups> {
        let mut map = BTreeMap::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => Some(entries),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("listing", &dir)(e)),
        };
        for entry in entries.into_iter().flatten() {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let path = entry.path();
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if file_name.ends_with(".tmp") {
                // A compaction cut short; the file it was replacing is still whole.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(name) = file_name.strip_suffix(EXT) else { continue };
            if validate_name("group", name).is_err() {
                continue;
            }
            let group = Group::load(name.to_string(), path, partitions, fsync)?;
            map.insert(name.to_string(), Arc::new(group));
        }
        Ok(Groups { dir, partitions, fsync, map: Mutex::new(map) })
    }

    /// `group`'s committed offsets (all None for a group that never committed).
    pub(crate) fn committed(&self, group: &str) -> Vec<Option<u64>> {
        let group = lock(&self.map).get(group).cloned();
        match group {
            Some(group) => lock(&group.state).offsets.clone(),
            None => vec![None; self.partitions as usize],
        }
    }

    /// Every group, sorted by name.
    pub(crate) fn list(&self) -> Vec<GroupInfo> {
        let groups: Vec<Arc<Group>> = lock(&self.map).values().cloned().collect();
        groups
            .iter()
            .map(|g| GroupInfo { group: g.name.clone(), offsets: lock(&g.state).offsets.clone() })
            .collect()
    }

    /// Stores `group`'s offset of `partition` (the caller checked both).
    pub(crate) fn commit(&self, group: &str, partition: u32, offset: u64, flusher: &Flusher) -> Result<()> {
        let group = self.get_or_create(group)?;
        group.commit(partition, offset)?;
        if let FsyncPolicy::Interval { ms } = self.fsync {
            if !group.dirty.swap(true, Ordering::AcqRel) {
                flusher.schedule(FlushItem::Group(group.clone()), Duration::from_millis(ms));
            }
        }
        Ok(())
    }

    fn get_or_create(&self, name: &str) -> Result<Arc<Group>> {
        let mut map = lock(&self.map);
        if let Some(group) = map.get(name) {
            return Ok(group.clone());
        }
        std::fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        let path = self.dir.join(format!("{name}{EXT}"));
        let group = Group::load(name.to_string(), path, self.partitions, self.fsync)?;
        if self.fsync != FsyncPolicy::Never {
            fsync_dir(&self.dir)?;
        }
        let group = Arc::new(group);
        map.insert(name.to_string(), group.clone());
        Ok(group)
    }

    /// The highest offset any group committed, per partition (0 for none).
    pub(crate) fn floors(&self) -> Vec<u64> {
        let mut floors = vec![0; self.partitions as usize];
        for group in lock(&self.map).values() {
            for (floor, offset) in floors.iter_mut().zip(&lock(&group.state).offsets) {
                *floor = (*floor).max(offset.unwrap_or(0));
            }
        }
        floors
    }

    /// Lowers every committed offset beyond its partition's end (`ends`, the next offsets to be
    /// handed out) to that end, durably unless `Never`.
    pub(crate) fn clamp_to(&self, topic: &str, ends: &[u64]) -> Result<()> {
        let groups: Vec<Arc<Group>> = lock(&self.map).values().cloned().collect();
        groups.iter().try_for_each(|g| g.clamp_to(topic, ends))
    }

    /// Fsyncs every group file.
    pub(crate) fn sync(&self) -> Result<()> {
        let groups: Vec<Arc<Group>> = lock(&self.map).values().cloned().collect();
        groups.iter().try_for_each(|g| g.sync())
    }
}

impl Group {
    /// Opens (creating it if needed) a group file and replays it.
    fn load(name: String, path: PathBuf, partitions: u32, fsync: FsyncPolicy) -> Result<Group> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(io_err("reading", &path))?;
        let (offsets, valid) = replay(&bytes, partitions);
        if valid < bytes.len() {
            tracing::warn!(
                file = %path.display(),
                position = valid,
                "cutting off a torn or corrupt tail of {} bytes",
                bytes.len() - valid
            );
            file.set_len(valid as u64).map_err(io_err("truncating", &path))?;
            file.sync_all().map_err(io_err("syncing", &path))?;
        }
        let len = valid as u64;
        Ok(Group {
            name,
            path,
            fsync,
            state: Mutex::new(GroupState { file, len, synced: len, offsets }),
            dirty: AtomicBool::new(false),
        })
    }

    fn commit(&self, partition: u32, offset: u64) -> Result<()> {
        let mut state = lock(&self.state);
        self.commit_locked(&mut state, partition, offset)?;
        if self.fsync == FsyncPolicy::Always {
            Self::sync_locked(&mut state, &self.path)?;
        }
        Ok(())
    }

    /// Appends a commit record (compacting the file past [`COMPACT_BYTES`]), without fsync.
    fn commit_locked(&self, state: &mut GroupState, partition: u32, offset: u64) -> Result<()> {
        let rec = encode(partition, offset);
        state.file.write_all_at(&rec, state.len).map_err(io_err("writing", &self.path))?;
        state.len += RECORD as u64;
        if let Some(slot) = state.offsets.get_mut(partition as usize) {
            *slot = Some(offset);
        }
        if state.len > COMPACT_BYTES {
            self.compact(state)?;
        }
        Ok(())
    }

    /// See [`Groups::clamp_to`].
    fn clamp_to(&self, topic: &str, ends: &[u64]) -> Result<()> {
        let mut state = lock(&self.state);
        let beyond: Vec<(u32, u64, u64)> = (0u32..)
            .zip(state.offsets.iter().zip(ends))
            .filter_map(|(p, (offset, &end))| offset.filter(|&o| o > end).map(|o| (p, o, end)))
            .collect();
        for &(partition, offset, end) in &beyond {
            tracing::warn!(
                file = %self.path.display(),
                "group `{}` committed offset {offset} of `{topic}`/{partition}, beyond its end {end} \
                 after recovery (records were lost in a crash); lowering it to {end}",
                self.name
            );
            self.commit_locked(&mut state, partition, end)?;
        }
        if !beyond.is_empty() && self.fsync != FsyncPolicy::Never {
            Self::sync_locked(&mut state, &self.path)?;
        }
        Ok(())
    }

    /// Rewrites the file with one record per committed partition.
    fn compact(&self, state: &mut GroupState) -> Result<()> {
        let mut bytes = Vec::with_capacity(state.offsets.len() * RECORD);
        for (partition, offset) in state.offsets.iter().enumerate() {
            if let Some(offset) = offset {
                bytes.extend_from_slice(&encode(partition as u32, *offset));
            }
        }
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        file.write_all_at(&bytes, 0).map_err(io_err("writing", &tmp))?;
        let sync = self.fsync != FsyncPolicy::Never;
        if sync {
            file.sync_all().map_err(io_err("syncing", &tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io_err("renaming into place", &self.path))?;
        if sync {
            if let Some(dir) = self.path.parent() {
                fsync_dir(dir)?;
            }
        }
        state.file = file;
        state.len = bytes.len() as u64;
        state.synced = if sync { state.len } else { 0 };
        Ok(())
    }

    fn sync_locked(state: &mut GroupState, path: &Path) -> Result<()> {
        if state.synced != state.len {
            state.file.sync_data().map_err(io_err("syncing", path))?;
            state.synced = state.len;
        }
        Ok(())
    }

    pub(crate) fn sync(&self) -> Result<()> {
        Self::sync_locked(&mut lock(&self.state), &self.path)
    }

    /// The flusher's turn: clears the dirty mark, then fsyncs.
    pub(crate) fn flush_dirty(&self) -> Result<()> {
        self.dirty.store(false, Ordering::Release);
        self.sync()
    }
}
