//! One partition of a topic: the directory `topics/NAME/P/` of segments, the last of which is
//! active (appended to), the others sealed.
//!
//! Contract:
//! - An offset is never handed out twice, even across a crash that damaged the active
//!   segment: an append gets the active segment's next offset as its first offset, and the
//!   high watermark (the offset after the last record) moves past the records only once they
//!   are wholly written, so a reader never sees part of an append.
//! - Offsets are dense except for gaps recovery leaves: when it cuts a torn or corrupt tail off
//!   the active segment, offsets up to what the cut bytes could have held (one per
//!   [`FRAME_HEADER_LEN`] bytes, the smallest frame) may have been handed out (and consumed,
//!   and committed past), so the next append starts a new segment above them; likewise above
//!   every group's committed offset (a crash can keep a commit but lose the records under it,
//!   the two being fsynced independently). The new segment's name keeps that floor on disk.
//!   A read from an offset in a gap returns the records after it; a read beyond the high
//!   watermark but not beyond the next offset to be handed out is at the end (empty), and a
//!   group may commit up to that next offset. One append takes the partition's lock once, encodes into one
//!   reused buffer and writes it with one positional write.
//! - Offsets stay below [`MAX_OFFSET`]: an append that would give a record that offset is
//!   refused, and opening refuses a segment file whose name puts its base there or beyond.
//! - Readers take the lock only to snapshot a [`ReadView`]; the disk read happens without it.
//!   A read below `log_start` is [`BrokerError::OffsetRemoved`], beyond the high watermark
//!   [`BrokerError::OffsetBeyondEnd`], at it an empty result.
//! - Durability follows the topic's [`FsyncPolicy`]: `Always` fsyncs before the append
//!   returns, `Interval` marks the partition dirty for the [`Flusher`], `Never` never fsyncs
//!   (then the durable end is the high watermark). A rolled segment is fsynced (unless `Never`)
//!   before the next one is created, which is in the state as soon as its file exists (so the
//!   state always matches the directory) and whose name is fsynced (the directory) before
//!   anything is appended to it. `synced` only ever moves up, to an end whose bytes were
//!   all written before the fsync that covers them began.
//! - A failed fsync is never papered over (the kernel may have dropped the pages it could not
//!   write, and a later fsync would succeed without them): fsyncs of a partition run one at a
//!   time under its sync lock, and the first failure marks the partition failed for the rest of
//!   the process. From then on `synced` never moves, [`Partition::durable`], `wait_durable`,
//!   `sync` and every append return that failure (an I/O error naming the file). Reopening the
//!   log (after a restart) recovers the partition from what is on disk.
//! - Opening recovers: sealed segments are loaded, the active one is checked frame by frame and
//!   cut at the first torn or corrupt frame (then sealed, and a new active segment starts
//!   above the gap); a missing or empty directory is an empty partition.
//! - A sealed segment keeps no file handle of its own (see `open_files.rs`): the process holds
//!   one per partition (its active segment) plus a bounded number for reads.
//! - Retention deletes the oldest sealed segments (never the active one) while the partition is
//!   over `retention_bytes` or the segment's newest record is older than `retention_secs`;
//!   `log_start` becomes the first remaining segment's base.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use super::flusher::{FlushItem, Flusher};
use super::segment::{self, parse_file_name, Segment};
use super::util::{io_err, lock, now_ms};
use super::{MAX_APPEND_BYTES, MAX_OFFSET};
use crate::record::{encode_into, frame_len, FRAME_HEADER_LEN, MAX_FRAME_LEN};
use crate::{BrokerError, Fetched, FsyncPolicy, NewRecord, PartitionInfo, Result, TopicConfig};

/// An encode buffer bigger than this is not kept between appends.
const KEEP_BUFFER: usize = 16 << 20;

pub(crate) struct Partition {
    topic: Arc<str>,
    id: u32,
    dir: PathBuf,
    config: Arc<TopicConfig>,
    state: Mutex<State>,
    /// The offset after the last record (the next append's first offset, unless recovery left
    /// a gap there); readable without the lock.
    hw: AtomicU64,
    /// Every offset below this was fsynced. Moves only under `sync_lock`, never once `failed`
    /// is set.
    synced: AtomicU64,
    /// Held across every fsync and the move of `synced` (or the setting of `failed`) after it.
    sync_lock: Mutex<()>,
    /// The first failed fsync (set under `sync_lock`): what was written may be lost, so the
    /// partition is durable no further and takes no more appends in this process.
    failed: OnceLock<SyncFailure>,
    /// Waiting for the flusher (`Interval`).
    dirty: AtomicBool,
    appended: Notify,
    synced_changed: Notify,
    #[cfg(test)]
    faults: Faults,
}

/// A failed fsync, kept to be reported again ([`BrokerError`] is not `Clone`).
struct SyncFailure {
    context: String,
    kind: std::io::ErrorKind,
    message: String,
}

impl SyncFailure {
    fn error(&self) -> BrokerError {
        BrokerError::io(self.context.clone(), std::io::Error::new(self.kind, self.message.clone()))
    }
}

/// Failures tests inject into the next fsync of a segment file or of the directory.
#[cfg(test)]
#[derive(Default)]
struct Faults {
    file: AtomicBool,
    dir: AtomicBool,
}

/// What the locked part of an append did.
struct Appended {
    first: u64,
    /// The offset after the last record.
    end: u64,
    /// The file to fsync under `Always`, and its path.
    file: Option<(Arc<File>, Arc<Path>)>,
}

struct State {
    /// Sorted by base; the last one is active. Empty until the first append. A segment's
    /// `next_offset` may be below the next one's base: a gap.
    segments: Vec<Segment>,
    log_start: u64,
    buf: Vec<u8>,
}

impl Partition {
    /// Opens (recovering) partition `id` in `dir`; no append gets an offset below `floor`
    /// (the highest offset a group committed).
    pub(crate) fn open(
        topic: Arc<str>,
        id: u32,
        dir: PathBuf,
        config: Arc<TopicConfig>,
        floor: u64,
    ) -> Result<Partition> {
        let mut bases = Vec::new();
        let mut indexes = Vec::new();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(io_err("listing", &dir))?;
                    let name = entry.file_name();
                    match name.to_str().and_then(parse_file_name) {
                        Some((base, "log")) => {
                            segment::check_base(&entry.path(), base)?;
                            bases.push(base);
                        }
                        Some((base, _)) => indexes.push(base),
                        None => tracing::debug!(file = %entry.path().display(), "ignoring stray file"),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("listing", &dir)(e)),
        }
        bases.sort_unstable();
        for base in indexes {
            if bases.binary_search(&base).is_err() {
                // Left by a retention pass cut short.
                let path = dir.join(segment::file_name(base, "index"));
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), "could not delete orphan index: {e}");
                }
            }
        }
        let mut segments = Vec::with_capacity(bases.len());
        let mut floor = floor;
        for (i, &base) in bases.iter().enumerate() {
            segments.push(match bases.get(i + 1) {
                Some(&next) => Segment::load_sealed(&dir, base, next)?,
                None => {
                    let (segment, cut) = Segment::recover(&dir, base)?;
                    floor = floor.max(floor_after_cut(segment.next_offset, cut));
                    segment
                }
            });
        }
        if config.fsync != FsyncPolicy::Never {
            // What survived a crash in the page cache becomes durable now.
            if let Some(file) = segments.last().and_then(Segment::file) {
                let path = segments.last().map_or(dir.as_path(), |s| s.log_path());
                file.sync_data().map_err(io_err("syncing", path))?;
            }
        }
        let next = segments.last().map_or(0, |s| s.next_offset);
        if floor > next {
            start_above_gap(&mut segments, &dir, &config, &topic, id, floor)?;
        }
        let hw = readable_end(&segments);
        let log_start = segments.first().map_or(0, |s| s.base);
        Ok(Partition {
            topic,
            id,
            dir,
            config,
            state: Mutex::new(State { segments, log_start, buf: Vec::new() }),
            hw: AtomicU64::new(hw),
            synced: AtomicU64::new(hw),
            sync_lock: Mutex::new(()),
            failed: OnceLock::new(),
            dirty: AtomicBool::new(false),
            appended: Notify::new(),
            synced_changed: Notify::new(),
            #[cfg(test)]
            faults: Faults::default(),
        })
    }

    pub(crate) fn high_watermark(&self) -> u64 {
        self.hw.load(Ordering::Acquire)
    }

    /// The offset the next append gets: the high watermark, or above it after a gap recovery
    /// left. A group may commit up to it.
    pub(crate) fn next_offset(&self) -> u64 {
        let state = lock(&self.state);
        next_offset(&state.segments, self.high_watermark())
    }

    /// Every offset below this is durable under the topic's policy; the failure instead once an
    /// fsync failed.
    pub(crate) fn durable(&self) -> Result<u64> {
        self.check_failed()?;
        Ok(self.durable_end())
    }

    /// The end of what is durable, even after a failed fsync (then it stays where it was).
    fn durable_end(&self) -> u64 {
        match self.config.fsync {
            FsyncPolicy::Never => self.high_watermark(),
            _ => self.synced.load(Ordering::Acquire),
        }
    }

    /// The failure, if an fsync of this partition failed.
    fn check_failed(&self) -> Result<()> {
        match self.failed.get() {
            Some(failure) => Err(failure.error()),
            None => Ok(()),
        }
    }

    /// Appends `records`; returns the first one's offset.
    pub(crate) fn append(self: &Arc<Self>, records: &[NewRecord], flusher: &Flusher) -> Result<u64> {
        if records.is_empty() {
            self.check_failed()?;
            return Ok(self.high_watermark());
        }
        let mut total = 0usize;
        for r in records {
            let len = frame_len(r.key.as_deref(), &r.value);
            if len > MAX_FRAME_LEN {
                return Err(BrokerError::InvalidRequest(format!(
                    "a record of {len} bytes is over the limit of {MAX_FRAME_LEN}"
                )));
            }
            total += len;
        }
        if total > MAX_APPEND_BYTES {
            return Err(BrokerError::InvalidRequest(format!(
                "an append of {total} bytes is over the limit of {MAX_APPEND_BYTES}"
            )));
        }
        let now = now_ms();
        let mut removed = Vec::new();
        let result = self.append_locked(records, total, now, &mut removed);
        for segment in &removed {
            segment.delete_files();
        }
        let Appended { first, end, file } = result?;
        self.appended.notify_waiters();
        match self.config.fsync {
            FsyncPolicy::Always => {
                if let Some((file, path)) = file {
                    self.fsync(&path, Some(end), false, || file.sync_data())?;
                }
            }
            FsyncPolicy::Interval { ms } => {
                if !self.dirty.swap(true, Ordering::AcqRel) {
                    flusher.schedule(FlushItem::Partition(self.clone()), Duration::from_millis(ms));
                }
            }
            FsyncPolicy::Never => {}
        }
        Ok(first)
    }

    /// The locked part of an append.
    fn append_locked(
        &self,
        records: &[NewRecord],
        total: usize,
        now: i64,
        removed: &mut Vec<Segment>,
    ) -> Result<Appended> {
        let mut guard = lock(&self.state);
        self.check_failed()?;
        let state = &mut *guard;
        let first = next_offset(&state.segments, self.hw.load(Ordering::Acquire));
        let count = records.len() as u64;
        if first + count > MAX_OFFSET {
            return Err(BrokerError::InvalidRequest(format!(
                "an append of {count} records at offset {first} would take `{}`/{} past the last \
                 offset there may be, {}",
                self.topic,
                self.id,
                MAX_OFFSET - 1
            )));
        }
        let roll = match state.segments.last() {
            None => true,
            Some(s) => s.size > 0 && s.size + total as u64 > self.config.segment_bytes,
        };
        if roll {
            self.roll(state, first, now, removed)?;
        }
        let State { segments, buf, .. } = state;
        let Some(segment) = segments.last_mut() else {
            return Err(BrokerError::io(
                format!("appending to {}", self.dir.display()),
                std::io::Error::other("no active segment"),
            ));
        };
        buf.clear();
        let mark = segment.mark();
        let mut max_ts = i64::MIN;
        for (offset, r) in (first..).zip(records) {
            let ts = r.timestamp.unwrap_or(now);
            segment.index_frame(offset, segment.size + buf.len() as u64);
            encode_into(buf, offset, ts, r.key.as_deref(), &r.value);
            max_ts = max_ts.max(ts);
        }
        let written = segment.write(buf, count, max_ts, mark);
        if buf.capacity() > KEEP_BUFFER {
            *buf = Vec::new();
        }
        written?;
        let end = first + count;
        self.hw.store(end, Ordering::Release);
        let file = match self.config.fsync {
            FsyncPolicy::Always => segment.file().map(|f| (f, segment.shared_log_path())),
            _ => None,
        };
        Ok(Appended { first, end, file })
    }

    /// Seals the active segment (fsynced unless `Never`), starts a new one at `base`, applies
    /// retention (the caller deletes the `removed` segments' files after unlocking).
    fn roll(&self, state: &mut State, base: u64, now: i64, removed: &mut Vec<Segment>) -> Result<()> {
        let sync = self.config.fsync != FsyncPolicy::Never;
        match state.segments.last_mut() {
            Some(active) => {
                if sync {
                    if let Some(file) = active.file() {
                        self.fsync(active.log_path(), Some(active.next_offset), false, || file.sync_data())?;
                    }
                }
                active.seal(sync)?;
            }
            None => std::fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?,
        }
        // Opened first, so that failing to open it leaves nothing behind.
        let dir = if sync {
            Some(File::open(&self.dir).map_err(io_err("opening directory", &self.dir))?)
        } else {
            None
        };
        // In the state as soon as it is on disk: whatever fails next, the two agree.
        state.segments.push(Segment::create(&self.dir, base)?);
        let sealed = state.segments.len().checked_sub(2);
        if let Some(sealed) = sealed.and_then(|i| state.segments.get_mut(i)) {
            sealed.release_file();
        }
        if let Some(dir) = dir {
            // Until its name is durable, nothing fsynced into the new segment is: a failure
            // fails the partition like any failed fsync.
            self.fsync(&self.dir, None, true, || dir.sync_all())?;
        }
        removed.extend(self.expire(state, now));
        Ok(())
    }

    /// Takes the segments retention removes out of `state`.
    fn expire(&self, state: &mut State, now: i64) -> Vec<Segment> {
        let (max_bytes, max_secs) = (self.config.retention_bytes, self.config.retention_secs);
        if max_bytes.is_none() && max_secs.is_none() {
            return Vec::new();
        }
        let oldest_kept = max_secs
            .map(|secs| now.saturating_sub(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)));
        let mut total: u64 = state.segments.iter().map(|s| s.size).sum();
        let mut n = 0;
        while n + 1 < state.segments.len() {
            let s = &state.segments[n];
            let too_big = max_bytes.is_some_and(|max| total > max);
            let too_old = oldest_kept.is_some_and(|t| s.max_timestamp < t);
            if !(too_big || too_old) {
                break;
            }
            total -= s.size;
            n += 1;
        }
        let removed: Vec<Segment> = state.segments.drain(..n).collect();
        if let Some(first) = state.segments.first() {
            state.log_start = state.log_start.max(first.base);
            // Only a gap can put the start above the end: the end moves up to the start.
            self.hw.fetch_max(state.log_start, Ordering::AcqRel);
        }
        for s in &removed {
            tracing::info!(
                topic = %self.topic,
                partition = self.id,
                "retention removes segment {} (offsets {}..{})",
                s.log_path().display(),
                s.base,
                s.next_offset
            );
        }
        removed
    }

    /// Applies retention now.
    pub(crate) fn apply_retention(&self, now: i64) {
        let removed = self.expire(&mut lock(&self.state), now);
        for segment in &removed {
            segment.delete_files();
        }
    }

    /// Whole records from `offset` on, about `max_bytes` of them (at least one if any).
    pub(crate) fn read(&self, offset: u64, max_bytes: usize) -> Result<Fetched> {
        let (view, from, high_watermark, log_start) = {
            let state = lock(&self.state);
            let hw = self.hw.load(Ordering::Acquire);
            let log_start = state.log_start;
            if offset < log_start {
                return Err(BrokerError::OffsetRemoved {
                    topic: self.topic.to_string(),
                    partition: self.id,
                    offset,
                    log_start,
                });
            }
            if offset >= hw {
                // Up to the next offset to be handed out (above a gap recovery left) is the end.
                if offset > next_offset(&state.segments, hw) {
                    return Err(self.beyond_end(offset, hw));
                }
                return Ok(Fetched { records: Vec::new(), high_watermark: hw, log_start });
            }
            let i = state.segments.partition_point(|s| s.base <= offset);
            let Some(mut i) = i.checked_sub(1) else {
                return Err(self.no_segment(offset));
            };
            // In a gap: the records after it.
            while state.segments.get(i).is_some_and(|s| offset >= s.next_offset)
                && i + 1 < state.segments.len()
            {
                i += 1;
            }
            let segment = state.segments.get(i).ok_or_else(|| self.no_segment(offset))?;
            let from = offset.max(segment.base);
            if from >= segment.next_offset {
                return Ok(Fetched { records: Vec::new(), high_watermark: hw, log_start });
            }
            (segment.view(from)?, from, hw, log_start)
        };
        let records = segment::read(&view, from, max_bytes)?;
        Ok(Fetched { records, high_watermark, log_start })
    }

    fn no_segment(&self, offset: u64) -> BrokerError {
        BrokerError::Corrupt {
            file: self.dir.clone(),
            position: 0,
            why: format!("no segment holds offset {offset}"),
        }
    }

    pub(crate) fn beyond_end(&self, offset: u64, high_watermark: u64) -> BrokerError {
        BrokerError::OffsetBeyondEnd {
            topic: self.topic.to_string(),
            partition: self.id,
            offset,
            high_watermark,
        }
    }

    /// `read`, but at the end of the partition first waits up to `wait` for an append.
    pub(crate) async fn fetch(&self, offset: u64, max_bytes: usize, wait: Duration) -> Result<Fetched> {
        // (A wait of a year or more is as good as forever.)
        let deadline = tokio::time::Instant::now() + wait.min(Duration::from_secs(365 * 86_400));
        loop {
            let mut appended = pin!(self.appended.notified());
            appended.as_mut().enable();
            let fetched = self.read(offset, max_bytes)?;
            if !fetched.records.is_empty() {
                return Ok(fetched);
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return Ok(fetched);
            }
        }
    }

    /// Fsyncs what was written so far (a no-op if nothing is new).
    pub(crate) fn sync(&self) -> Result<()> {
        let (file, path, end) = {
            let state = lock(&self.state);
            let end = self.hw.load(Ordering::Acquire);
            match state.segments.last() {
                Some(s) => match s.file() {
                    Some(file) => (file, s.shared_log_path(), end),
                    None => return self.check_failed(),
                },
                None => return self.check_failed(),
            }
        };
        self.fsync(&path, Some(end), false, || file.sync_data())
    }

    /// Runs `op`, the fsync of `path` (a `directory` or a segment file), under the sync lock —
    /// unless an fsync of this partition failed before (then that failure), or `end` is given
    /// and already synced. On success `synced` moves up to `end`; on failure the partition is
    /// failed for good.
    fn fsync(
        &self,
        path: &Path,
        end: Option<u64>,
        directory: bool,
        op: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<()> {
        let _sync = lock(&self.sync_lock);
        self.check_failed()?;
        if end.is_some_and(|end| self.synced.load(Ordering::Acquire) >= end) {
            return Ok(());
        }
        let result = match self.injected_failure(directory) {
            Some(e) => Err(e),
            None => op(),
        };
        if let Err(e) = result {
            return Err(self.fail(path, e));
        }
        if let Some(end) = end {
            self.synced.fetch_max(end, Ordering::AcqRel);
            self.synced_changed.notify_waiters();
        }
        Ok(())
    }

    /// Marks the partition failed by the fsync of `path` (the caller holds the sync lock).
    fn fail(&self, path: &Path, e: std::io::Error) -> BrokerError {
        let durable = self.durable_end();
        let failure = SyncFailure {
            context: format!(
                "syncing {} failed, so `{}`/{} is durable only below offset {durable} and takes no \
                 appends until the log is reopened",
                path.display(),
                self.topic,
                self.id
            ),
            kind: e.kind(),
            message: e.to_string(),
        };
        if self.failed.set(failure).is_ok() {
            tracing::error!(topic = %self.topic, partition = self.id, file = %path.display(), "fsync failed: {e}");
        }
        self.synced_changed.notify_waiters();
        match self.failed.get() {
            Some(failure) => failure.error(),
            None => io_err("syncing", path)(e),
        }
    }

    #[cfg(test)]
    fn injected_failure(&self, directory: bool) -> Option<std::io::Error> {
        let fault = if directory { &self.faults.dir } else { &self.faults.file };
        fault.swap(false, Ordering::AcqRel).then(|| std::io::Error::other("injected fsync failure"))
    }

    #[cfg(not(test))]
    #[inline]
    fn injected_failure(&self, _directory: bool) -> Option<std::io::Error> {
        None
    }

    /// Makes the next fsync of a segment file (or of the directory) of this partition fail.
    #[cfg(test)]
    pub(crate) fn fail_next_fsync(&self, directory: bool) {
        let fault = if directory { &self.faults.dir } else { &self.faults.file };
        fault.store(true, Ordering::Release);
    }

    /// The flusher's turn: clears the dirty mark, then fsyncs.
    pub(crate) fn flush_dirty(&self) -> Result<()> {
        self.dirty.store(false, Ordering::Release);
        self.sync()
    }

    /// Waits until every offset below `end` is durable (fails once an fsync failed).
    pub(crate) async fn wait_durable(&self, end: u64) -> Result<()> {
        let hw = self.high_watermark();
        if end > hw {
            return Err(self.beyond_end(end, hw));
        }
        loop {
            let mut changed = pin!(self.synced_changed.notified());
            changed.as_mut().enable();
            if self.durable()? >= end {
                return Ok(());
            }
            changed.await;
        }
    }

    pub(crate) fn info(&self) -> PartitionInfo {
        let state = lock(&self.state);
        PartitionInfo {
            partition: self.id,
            log_start: state.log_start,
            high_watermark: self.high_watermark(),
            durable: self.durable_end(),
            size_bytes: state.segments.iter().map(|s| s.size).sum(),
            segments: state.segments.len() as u32,
        }
    }
}

/// The offset an append gets next: the active segment's next offset (above the high watermark
/// `hw` after a gap), or `hw` before the first segment.
fn next_offset(segments: &[Segment], hw: u64) -> u64 {
    segments.last().map_or(hw, |s| s.next_offset.max(hw))
}

/// The offset after the last record: the end of the newest segment holding any, else the
/// first segment's base (0 for none).
fn readable_end(segments: &[Segment]) -> u64 {
    segments
        .iter()
        .rev()
        .find(|s| s.next_offset > s.base)
        .or(segments.first())
        .map_or(0, |s| s.next_offset.max(s.base))
}

/// The lowest offset no record cut off a segment (`cut` bytes after offset `end`) can have
/// had: each frame takes at least [`FRAME_HEADER_LEN`] bytes.
fn floor_after_cut(end: u64, cut: u64) -> u64 {
    let most = cut.div_ceil(FRAME_HEADER_LEN as u64);
    end.saturating_add(most).min(MAX_OFFSET - 1)
}

/// Seals the active segment (if any) and starts a new, empty one at `floor`, durably (unless
/// the topic never fsyncs): the new segment's name is what keeps the floor across restarts.
fn start_above_gap(
    segments: &mut Vec<Segment>,
    dir: &Path,
    config: &TopicConfig,
    topic: &str,
    id: u32,
    floor: u64,
) -> Result<()> {
    let sync = config.fsync != FsyncPolicy::Never;
    let from = segments.last().map_or(0, |s| s.next_offset);
    tracing::warn!(
        topic,
        partition = id,
        "offsets {from}..{floor} may have been handed out before a crash lost or cut them: the next \
         append gets offset {floor}, and readers skip the gap"
    );
    match segments.last_mut() {
        Some(active) => {
            if sync {
                if let Some(file) = active.file() {
                    file.sync_data().map_err(io_err("syncing", active.log_path()))?;
                }
            }
            active.seal(sync)?;
            active.release_file();
        }
        None => std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?,
    }
    segments.push(Segment::create(dir, floor)?);
    if sync {
        super::util::fsync_dir(dir)?;
    }
    Ok(())
}
