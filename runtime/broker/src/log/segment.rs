//! One segment of a partition: `<base offset, 20 digits>.log` holds the frames (see
//! [`record`](crate::record)) of consecutive offsets from `base` on; `.index` beside it
//! is its sparse offset index, a sequence of `(u32 offset - base, u32 byte position)` pairs
//! (little-endian), one for the first frame at or after every [`INDEX_INTERVAL`] bytes.
//!
//! Contract:
//! - A segment is append-only. Its `size` counts only whole frames that were written
//!   completely; readers get a [`ReadView`] (file handle, start position, valid length) and
//!   read through it without any lock, never past that length.
//! - The index is kept in memory and appended to the `.index` file (in batches, and the rest
//!   when the segment is sealed; no file handle is kept for it); it only
//!   speeds up reads (a missing or insane index file is rebuilt by scanning the segment), so
//!   every read still checks each frame's checksum and offset and reports
//!   [`BrokerError::Corrupt`] (file and byte) for anything wrong.
//! - [`Segment::recover`] (the active segment after a crash) keeps the longest prefix of whole,
//!   valid, consecutive frames and cuts the file there; [`Segment::load_sealed`] never changes a
//!   sealed segment's log file.
//! - Only the active segment keeps its own file handle; a sealed one is opened through the
//!   process's bounded cache of open files (`open_files.rs`), so a reader may find it closed
//!   and reopened since its last read; dropping a sealed segment (its log closed, or
//!   retention) drops its cache entry.
//! - Offsets are consecutive within a segment, but the next segment may start above this
//!   one's end: recovery leaves such a gap after cutting a corrupt tail (see `partition.rs`).
//!   A sealed segment's end is therefore what its frames say (found by scanning from its last
//!   index entry), not the next segment's base — unless a frame before that end is bad: then
//!   its end is the next base, so that reads reaching the damage report it.
//! - A sealed segment's newest timestamp (for retention by age) is tracked while it is written
//!   and stored as the file's mtime when it is sealed; a segment loaded from disk takes its
//!   mtime.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use super::open_files;
use super::util::{io_err, system_time_ms};
use super::MAX_OFFSET;
use crate::record::{check_frame, FrameCheck, FRAME_HEADER_LEN};
use crate::{BrokerError, Record, Result};

/// Bytes of log between two index entries (at least).
pub(crate) const INDEX_INTERVAL: u64 = 4096;
/// An active segment's new index entries are written out this many at a time (and when it is
/// sealed).
const INDEX_WRITE_BATCH: usize = 64;
const INDEX_ENTRY: usize = 8;
/// How much a scan reads at a time.
const SCAN_CHUNK: usize = 1 << 20;
/// What a read adds to `max_bytes` for the records it skips after the index entry it starts at.
const SKIP_SLACK: usize = 2 * INDEX_INTERVAL as usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    rel: u32,
    pos: u32,
}

/// `<base, 20 digits>.<ext>`.
pub(crate) fn file_name(base: u64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

/// The base offset and extension of a segment file's name, if it is one.
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) || !(ext == "log" || ext == "index") {
        return None;
    }
    // 20 digits fail to parse only if beyond u64::MAX: that is as far beyond MAX_OFFSET.
    let base: u64 = stem.parse().unwrap_or(u64::MAX);
    Some((base, ext))
}

/// Refuses a segment file (at `path`) whose base offset is not below [`MAX_OFFSET`].
pub(crate) fn check_base(path: &Path, base: u64) -> Result<()> {
    if base < MAX_OFFSET {
        return Ok(());
    }
    Err(BrokerError::Corrupt {
        file: path.to_path_buf(),
        position: 0,
        why: format!("the segment's base offset in its name is not below the limit of {MAX_OFFSET} (2^48)"),
    })
}

pub(crate) struct Segment {
    pub(crate) base: u64,
    log_path: Arc<Path>,
    index_path: PathBuf,
    /// Open for the active segment; a sealed one is opened through `open_files`.
    file: Option<Arc<File>>,
    index: Vec<IndexEntry>,
    /// Entries of `index` already in the index file.
    index_written: usize,
    last_indexed: u64,
    /// Bytes of whole frames.
    pub(crate) size: u64,
    /// The offset after the last record.
    pub(crate) next_offset: u64,
    /// Newest record timestamp (i64::MIN: none).
    pub(crate) max_timestamp: i64,
}

/// Where an append started, to undo its index entries if the write fails.
pub(crate) struct Mark {
    index_len: usize,
    last_indexed: u64,
}

/// What a reader needs to read a segment without its partition's lock.
pub(crate) struct ReadView {
    file: Arc<File>,
    path: Arc<Path>,
    /// A frame boundary at or before the wanted offset, and that frame's offset.
    pos: u64,
    offset: u64,
    /// Bytes of whole frames when the view was taken.
    valid_len: u64,
    /// The offset after the last record in those bytes.
    end_offset: u64,
}

struct Scan {
    valid_len: u64,
    next_offset: u64,
    max_timestamp: i64,
    index: Vec<IndexEntry>,
    /// Where and why the scan stopped before the end of the file.
    problem: Option<(u64, String)>,
}

impl Segment {
    /// A new, empty, active segment.
    pub(crate) fn create(dir: &Path, base: u64) -> Result<Segment> {
        let log_path: Arc<Path> = dir.join(file_name(base, "log")).into();
        let index_path = dir.join(file_name(base, "index"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&log_path)
            .map_err(io_err("creating segment", &log_path))?;
        if let Err(e) = open_index(&index_path, true) {
            // Leave nothing behind that would make the next attempt fail.
            if let Err(e) = std::fs::remove_file(&log_path) {
                tracing::warn!(file = %log_path.display(), "could not delete a segment left half-created: {e}");
            }
            return Err(e);
        }
        Ok(Segment {
            base,
            log_path,
            index_path,
            file: Some(Arc::new(file)),
            index: Vec::new(),
            index_written: 0,
            last_indexed: 0,
            size: 0,
            next_offset: base,
            max_timestamp: i64::MIN,
        })
    }

    /// The active segment after a restart: every frame is checked; the file is cut at the first
    /// torn or corrupt one and its index rebuilt. Also returns how many bytes were cut off.
    pub(crate) fn recover(dir: &Path, base: u64) -> Result<(Segment, u64)> {
        let log_path: Arc<Path> = dir.join(file_name(base, "log")).into();
        let index_path = dir.join(file_name(base, "index"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(io_err("opening segment", &log_path))?;
        let len = file.metadata().map_err(io_err("reading metadata of", &log_path))?.len();
        let scan = scan(&file, &log_path, base, ScanStart::at_base(base), len)?;
        let cut = len - scan.valid_len;
        if let Some((position, why)) = &scan.problem {
            tracing::warn!(
                file = %log_path.display(),
                position,
                "cutting off a torn or corrupt tail of {cut} bytes: {why}",
            );
            file.set_len(scan.valid_len).map_err(io_err("truncating", &log_path))?;
            file.sync_all().map_err(io_err("syncing", &log_path))?;
        }
        open_index(&index_path, true)?;
        let mut segment = Segment {
            base,
            log_path,
            index_path,
            file: Some(Arc::new(file)),
            last_indexed: scan.index.last().map_or(0, |e| u64::from(e.pos)),
            index: scan.index,
            index_written: 0,
            size: scan.valid_len,
            next_offset: scan.next_offset,
            max_timestamp: scan.max_timestamp,
        };
        segment.write_index(false)?;
        Ok((segment, cut))
    }

    /// A sealed segment (`next_base` is the next segment's base): its index file if sane, else
    /// an index rebuilt by scanning. The log file is left as it is.
    pub(crate) fn load_sealed(dir: &Path, base: u64, next_base: u64) -> Result<Segment> {
        let log_path: Arc<Path> = dir.join(file_name(base, "log")).into();
        let index_path = dir.join(file_name(base, "index"));
        let meta = std::fs::metadata(&log_path).map_err(io_err("reading metadata of", &log_path))?;
        let size = meta.len();
        let max_timestamp = meta.modified().map_or(i64::MIN, system_time_ms);
        let records = next_base.saturating_sub(base);
        let f = File::open(&log_path).map_err(io_err("opening segment", &log_path))?;
        let index = match std::fs::read(&index_path) {
            Ok(bytes) => parse_index(&bytes, size, records),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("reading index", &index_path)(e)),
        };
        // A sane index must also be complete: from its last entry, the frames run to the end of
        // the file, end at `next_base` and need no further entry.
        let index = match index {
            Some(index) => {
                let start = match index.last() {
                    Some(e) => ScanStart {
                        pos: u64::from(e.pos),
                        offset: base + u64::from(e.rel),
                        last_indexed: u64::from(e.pos),
                    },
                    None => ScanStart::at_base(base),
                };
                let tail = scan(&f, &log_path, base, start, size)?;
                let complete =
                    tail.problem.is_none() && tail.index.is_empty() && tail.next_offset <= next_base;
                complete.then_some((index, tail.next_offset))
            }
            None => None,
        };
        let (index, end) = match index {
            Some(found) => found,
            None => {
                let scan = scan(&f, &log_path, base, ScanStart::at_base(base), size)?;
                if let Some((position, why)) = &scan.problem {
                    tracing::warn!(
                        file = %log_path.display(),
                        position,
                        "sealed segment has a bad record; reads reaching it will fail: {why}"
                    );
                } else if scan.next_offset > next_base {
                    tracing::warn!(
                        file = %log_path.display(),
                        "sealed segment ends at offset {} but the next one starts at {next_base}: \
                         reads stop at {next_base}",
                        scan.next_offset
                    );
                }
                let mut bytes = Vec::with_capacity(scan.index.len() * INDEX_ENTRY);
                encode_index(&scan.index, &mut bytes);
                if let Err(e) = std::fs::write(&index_path, &bytes) {
                    tracing::warn!(file = %index_path.display(), "could not rewrite index: {e}");
                }
                // A bad frame: reads must reach it (and say where it is), so the segment runs to
                // the next base. Otherwise its frames say where it ends.
                let end = if scan.problem.is_some() { next_base } else { scan.next_offset.min(next_base) };
                (scan.index, end)
            }
        };
        if end < next_base {
            tracing::info!(
                file = %log_path.display(),
                "offsets {end}..{next_base} are a gap (left by recovery after a cut): reads skip it"
            );
        }
        Ok(Segment {
            base,
            log_path,
            index_path,
            file: None,
            index_written: index.len(),
            last_indexed: index.last().map_or(0, |e| u64::from(e.pos)),
            index,
            size,
            next_offset: end,
            max_timestamp,
        })
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn shared_log_path(&self) -> Arc<Path> {
        self.log_path.clone()
    }

    /// The file handle of the active segment.
    pub(crate) fn file(&self) -> Option<Arc<File>> {
        self.file.clone()
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark { index_len: self.index.len(), last_indexed: self.last_indexed }
    }

    /// Notes a frame about to be written at byte `pos` of this segment.
    #[inline]
    pub(crate) fn index_frame(&mut self, offset: u64, pos: u64) {
        if pos >= self.last_indexed + INDEX_INTERVAL {
            let rel = offset.checked_sub(self.base).and_then(|r| u32::try_from(r).ok());
            if let (Some(rel), Ok(pos32)) = (rel, u32::try_from(pos)) {
                self.index.push(IndexEntry { rel, pos: pos32 });
                self.last_indexed = pos;
            }
        }
    }

    /// Writes `frames` (`count` records, newest timestamp `max_timestamp`) at the end with one
    /// positional write, then the new index entries. On failure nothing counts as written.
    pub(crate) fn write(&mut self, frames: &[u8], count: u64, max_timestamp: i64, mark: Mark) -> Result<()> {
        let Some(file) = &self.file else {
            return Err(BrokerError::io(
                format!("appending to {}", self.log_path.display()),
                std::io::Error::other("segment is not open for writing"),
            ));
        };
        if let Err(e) = file.write_all_at(frames, self.size) {
            self.index.truncate(mark.index_len);
            self.index_written = self.index_written.min(mark.index_len);
            self.last_indexed = mark.last_indexed;
            // Best effort: drop whatever part of the write landed.
            let _ = file.set_len(self.size);
            return Err(io_err("appending to", &self.log_path)(e));
        }
        self.size += frames.len() as u64;
        self.next_offset += count;
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
        if self.index.len() - self.index_written >= INDEX_WRITE_BATCH {
            // Best effort: the index of an active segment is rebuilt on recovery anyway.
            if let Err(e) = self.write_index(false) {
                tracing::warn!("{e}");
            }
        }
        Ok(())
    }

    /// Appends the index entries not yet in the index file (then fsyncs it if `sync`).
    fn write_index(&mut self, sync: bool) -> Result<()> {
        if self.index_written >= self.index.len() && !sync {
            return Ok(());
        }
        let index_file = open_index(&self.index_path, false)?;
        let mut bytes = Vec::with_capacity((self.index.len() - self.index_written) * INDEX_ENTRY);
        encode_index(&self.index[self.index_written..], &mut bytes);
        index_file
            .write_all_at(&bytes, (self.index_written * INDEX_ENTRY) as u64)
            .map_err(io_err("writing index", &self.index_path))?;
        self.index_written = self.index.len();
        if sync {
            index_file.sync_data().map_err(io_err("syncing", &self.index_path))?;
        }
        Ok(())
    }

    /// Makes this segment sealed: index written out (and fsynced if `sync`), its newest
    /// timestamp stored as the log file's mtime. The caller fsyncs the log file itself first
    /// (the partition keeps track of its fsyncs).
    pub(crate) fn seal(&mut self, sync: bool) -> Result<()> {
        if let Some(file) = &self.file {
            let mtime = u64::try_from(self.max_timestamp)
                .ok()
                .filter(|&ms| ms > 0)
                .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)));
            if let Some(mtime) = mtime {
                if let Err(e) = file.set_modified(mtime) {
                    tracing::debug!(file = %self.log_path.display(), "could not set mtime: {e}");
                }
            }
        }
        // Also when sealed before (by a roll that failed later): it may have taken appends since.
        self.write_index(sync)
    }

    /// Closes the file handle of a sealed segment (its reads go through the cache of open
    /// files from now on).
    pub(crate) fn release_file(&mut self) {
        self.file = None;
    }

    /// A view for reading from `offset` (which this segment holds) on.
    pub(crate) fn view(&self, offset: u64) -> Result<ReadView> {
        let file = match &self.file {
            Some(file) => file.clone(),
            None => open_files::get(&self.log_path).map_err(io_err("opening", &self.log_path))?,
        };
        let rel = offset.saturating_sub(self.base);
        let i = self.index.partition_point(|e| u64::from(e.rel) <= rel);
        let (pos, start) = match i.checked_sub(1).map(|i| self.index[i]) {
            Some(e) => (u64::from(e.pos), self.base + u64::from(e.rel)),
            None => (0, self.base),
        };
        Ok(ReadView {
            file,
            path: self.log_path.clone(),
            pos,
            offset: start,
            valid_len: self.size,
            end_offset: self.next_offset,
        })
    }

    /// Removes both files (best effort, logged).
    pub(crate) fn delete_files(&self) {
        open_files::forget(&self.log_path);
        for path in [&*self.log_path, self.index_path.as_path()] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(file = %path.display(), "could not delete segment file: {e}"),
            }
        }
    }
}

impl Drop for Segment {
    /// A sealed segment's file leaves the cache with it: a later segment of the same name (the
    /// directory removed and made again while the process runs) is never read through the old
    /// file.
    fn drop(&mut self) {
        if self.file.is_none() {
            open_files::forget(&self.log_path);
        }
    }
}

fn open_index(path: &Path, truncate: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
        .map_err(io_err("opening index", path))
}

fn encode_index(entries: &[IndexEntry], out: &mut Vec<u8>) {
    for e in entries {
        out.extend_from_slice(&e.rel.to_le_bytes());
        out.extend_from_slice(&e.pos.to_le_bytes());
    }
}

/// The entries of an index file, if they are sane for a log of `log_len` bytes holding
/// `records` records: whole entries, both fields strictly increasing and within bounds.
fn parse_index(bytes: &[u8], log_len: u64, records: u64) -> Option<Vec<IndexEntry>> {
    if !bytes.len().is_multiple_of(INDEX_ENTRY) {
        return None;
    }
    let mut index = Vec::with_capacity(bytes.len() / INDEX_ENTRY);
    let mut prev: Option<IndexEntry> = None;
    for chunk in bytes.chunks_exact(INDEX_ENTRY) {
        let rel = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let pos = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        let entry = IndexEntry { rel, pos };
        if u64::from(rel) >= records || u64::from(pos) + FRAME_HEADER_LEN as u64 > log_len {
            return None;
        }
        if prev.is_some_and(|p| p.rel >= rel || p.pos >= pos) || (prev.is_none() && (rel == 0 || pos == 0)) {
            return None;
        }
        prev = Some(entry);
        index.push(entry);
    }
    Some(index)
}

/// Where a scan starts: a frame boundary, the offset of the frame there, and the position of
/// the index entry at or before it.
#[derive(Clone, Copy)]
struct ScanStart {
    pos: u64,
    offset: u64,
    last_indexed: u64,
}

impl ScanStart {
    fn at_base(base: u64) -> ScanStart {
        ScanStart { pos: 0, offset: base, last_indexed: 0 }
    }
}

/// Checks every frame of a segment (base offset `base`) from `start` to byte `len`, building
/// index entries, up to the first frame that is cut short, corrupt or out of sequence.
fn scan(file: &File, path: &Path, base: u64, start: ScanStart, len: u64) -> Result<Scan> {
    let mut result = Scan {
        valid_len: start.pos,
        next_offset: start.offset,
        max_timestamp: i64::MIN,
        index: Vec::new(),
        problem: None,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = start.pos; // file position of buf[0]
    let mut last_indexed = start.last_indexed;
    loop {
        let pos = result.valid_len;
        let at = (pos - buf_start) as usize;
        match check_frame(&buf[at..]) {
            Err(why) => {
                result.problem = Some((pos, why));
                break;
            }
            Ok(FrameCheck::Whole(info)) => {
                if info.offset != result.next_offset {
                    let why = format!("expected offset {}, found {}", result.next_offset, info.offset);
                    result.problem = Some((pos, why));
                    break;
                }
                if info.offset >= MAX_OFFSET {
                    let why = format!("offset {} is not below the limit of {MAX_OFFSET} (2^48)", info.offset);
                    result.problem = Some((pos, why));
                    break;
                }
                if pos >= last_indexed + INDEX_INTERVAL {
                    if let (Ok(rel), Ok(pos32)) = (u32::try_from(info.offset - base), u32::try_from(pos)) {
                        result.index.push(IndexEntry { rel, pos: pos32 });
                        last_indexed = pos;
                    }
                }
                result.max_timestamp = result.max_timestamp.max(info.timestamp);
                result.next_offset += 1;
                result.valid_len += info.len as u64;
            }
            Ok(FrameCheck::Partial(need)) => {
                let have = buf.len() - at;
                let file_end = buf_start + buf.len() as u64;
                if file_end >= len {
                    if have > 0 {
                        let why = format!("frame cut short: {have} bytes at the end of the file");
                        result.problem = Some((pos, why));
                    }
                    break;
                }
                // Keep the partial frame, read on.
                buf.drain(..at);
                buf_start = pos;
                let want = need.unwrap_or(FRAME_HEADER_LEN).max(SCAN_CHUNK) as u64;
                let target = want.min(len - buf_start) as usize;
                let old = buf.len();
                buf.resize(target.max(old), 0);
                let read_from = buf_start + old as u64;
                file.read_exact_at(&mut buf[old..], read_from).map_err(io_err("reading", path))?;
            }
        }
    }
    Ok(result)
}

/// Whole, checked records from `offset` on: about `max_bytes` of them, at least one if the view
/// holds `offset`.
pub(crate) fn read(view: &ReadView, offset: u64, max_bytes: usize) -> Result<Vec<Record>> {
    let want = max_bytes.max(1);
    let corrupt =
        |position: u64, why: String| BrokerError::Corrupt { file: view.path.to_path_buf(), position, why };
    let mut records = Vec::new();
    let mut taken = 0usize;
    let mut pos = view.pos;
    let mut expected = view.offset;
    let mut chunk = want.saturating_add(SKIP_SLACK);
    loop {
        if expected >= view.end_offset || pos >= view.valid_len {
            if records.is_empty() && offset < view.end_offset {
                return Err(corrupt(pos, format!("offset {offset} is missing from the segment")));
            }
            return Ok(records);
        }
        let len = (view.valid_len - pos).min(chunk as u64) as usize;
        let mut buf = vec![0u8; len];
        view.file.read_exact_at(&mut buf, pos).map_err(io_err("reading", &view.path))?;
        let buf = Bytes::from(buf);
        let mut at = 0usize;
        let mut partial = None;
        while expected < view.end_offset {
            match check_frame(&buf[at..]) {
                // The good records before the damage are delivered; a read from the damaged
                // offset reports where it is.
                Err(_) if !records.is_empty() => return Ok(records),
                Err(why) => return Err(corrupt(pos + at as u64, why)),
                Ok(FrameCheck::Partial(need)) => {
                    partial = Some(need);
                    break;
                }
                Ok(FrameCheck::Whole(info)) => {
                    if info.offset != expected {
                        if !records.is_empty() {
                            return Ok(records);
                        }
                        let why = format!("expected offset {expected}, found {}", info.offset);
                        return Err(corrupt(pos + at as u64, why));
                    }
                    if expected >= offset {
                        if !records.is_empty() && taken + info.len > want {
                            return Ok(records);
                        }
                        if records.is_empty() {
                            records.reserve(want.min(buf.len() - at) / info.len + 1);
                        }
                        records.push(info.record(&buf, at));
                        taken += info.len;
                    }
                    at += info.len;
                    expected += 1;
                }
            }
        }
        pos += at as u64;
        if !records.is_empty() {
            return Ok(records);
        }
        if let Some(need) = partial {
            let left = view.valid_len - pos;
            match need {
                Some(n) if n as u64 > left => {
                    let why = format!("frame of {n} bytes runs past the segment's {left} valid bytes");
                    return Err(corrupt(pos, why));
                }
                None if left > 0 && left < 4 => {
                    return Err(corrupt(pos, format!("{left} stray bytes")));
                }
                _ => {}
            }
            chunk = need.unwrap_or(0).max(want.saturating_add(SKIP_SLACK));
        }
    }
}
