//! Appending: one writer handle per process claims a lane with `flock`; threads share it,
//! and concurrent appends share one `write` and one `fdatasync` (group commit).
//!
//! Group commit works by watermark: appenders encode their record into a shared pending
//! buffer under a mutex, then either become the leader (no write in flight) or wait on a
//! condvar. The leader takes the whole pending buffer, writes it at the lane's end with one
//! `pwrite`, syncs, publishes the lane's watermark, raises `durable_seq` and wakes everyone.
//! Records that arrived meanwhile form the next batch. A batch is written only after the
//! previous one was synced; recovery relies on that to tell a torn tail from corruption.
//!
//! A record too large to share the batch buffer (a frame over half of `batch_bytes_max`,
//! e.g. a big image) is not copied into it: its appender waits until no write is in
//! flight, becomes the leader and writes the pending batch followed by its own frame
//! (header, the caller's payload parts, padding) with consecutive `pwrite`s, then syncs
//! once. The frame belongs to that batch (same `batch_start`), so group commit, checksums
//! and recovery are unchanged; only the copy of the payload is saved.

use crate::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::clock::now_ns;
use crate::error::{Error, ErrorKind, Event, Result};
use crate::format::{
    encode_record_header, encode_record_parts, frame_len, RecordHeader, RecordKind, Watermark,
    RECORD_HEADER_LEN, SEAL_LEN, SEGMENT_HEADER_LEN,
};
use crate::fs::{LockGuard, StorageFile};
use crate::lane::{
    self, allocation_error, Allocation, ClaimedLane, LaneEnd, LaneFiles, OpenTail, SealAt,
    WatermarkFile,
};
use crate::options::Options;
use crate::types::{Durability, LaneId, Position, RecordId, SegmentId, Seq};

/// Syncs faster than this never make a leader wait for more appenders.
const GATHER_SYNC_MIN: Duration = Duration::from_micros(200);
/// Longest a leader waits for appenders to join its batch.
const GATHER_WAIT_MAX: Duration = Duration::from_micros(500);

/// A handle that appends to one lane of a queue directory. Clone it freely: clones share
/// the lane and its group commit. The lane is released when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Writer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    lane: LaneId,
    dir: PathBuf,
    opts: Options,
    state: Mutex<State>,
    wake: Condvar,
    /// Signalled by appenders while a leader gathers a batch (see `Inner::gather`).
    arrivals: Condvar,
    watermark: WatermarkFile,
    recovery: Vec<Event>,
    _lock: Box<dyn LockGuard>,
}

#[derive(Debug)]
struct Active {
    id: SegmentId,
    file: Arc<dyn StorageFile>,
    /// The most bytes the segment may hold (its header's capacity).
    size: u64,
    /// Bytes allocated so far (the file's length): a batch is written only within them.
    allocated: u64,
}

#[derive(Debug)]
struct State {
    /// The segment appends go to; `None` after a seal until the next one exists.
    active: Option<Active>,
    /// Id of the lane's next segment; `None` when ids are exhausted.
    next_segment: Option<SegmentId>,
    /// Encoded records waiting for the next leader; they will be written at `pending_start`.
    pending: Vec<u8>,
    spare: Vec<u8>,
    pending_start: u64,
    /// Records in `pending`.
    pending_records: u64,
    /// Records of the last batch whose appenders have not appended again since it
    /// completed: the threads a gathering leader waits for.
    returning: u64,
    /// Moving average of `fdatasync` time, in nanoseconds.
    sync_ewma_ns: u64,
    /// A leader is waiting for returning appenders; appenders signal `arrivals`.
    gathering: bool,
    /// Threads blocked on `wake`.
    waiters: u64,
    next_seq: Seq,
    /// Every record with a smaller sequence number is acknowledged.
    acked_seq: Seq,
    /// Written, not yet synced (interval mode): what the flusher must still publish.
    unsynced: Option<Watermark>,
    last_sync: Instant,
    last_time_ns: u64,
    leader: bool,
    /// Bumped when a failed write discards pending records; their appenders get `failure`.
    epoch: u64,
    /// `acked_seq` when the last failed write discarded its batch: records of the epoch
    /// it ended below this were acknowledged, the rest were discarded (and their sequence
    /// numbers are being reused).
    failed_from: Seq,
    failure: Option<WriteFailure>,
    poisoned: Option<Arc<std::io::Error>>,
    closed: bool,
}

/// The write that ended an epoch: the segment file it wrote to and the OS error.
#[derive(Debug)]
struct WriteFailure {
    path: PathBuf,
    cause: Arc<std::io::Error>,
}

/// Why a roll failed: the error, whether the old segment was sealed already (then it
/// is not restored as the active one), and whether the failure poisons the writer.
struct RollFailure {
    error: Error,
    sealed: bool,
    poisons: bool,
}

impl RollFailure {
    /// A failure before anything was written: nothing is poisoned.
    fn unsealed(error: Error) -> Self {
        Self {
            error,
            sealed: false,
            poisons: false,
        }
    }
}

impl Writer {
    /// Opens `dir` for appending (creating it, mode 0700, if needed), claims a free lane and
    /// recovers its tail. Fails with `NoFreeLane` when `lanes_max` writers hold every lane.
    pub fn open(dir: impl AsRef<Path>, opts: &Options) -> Result<Self> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let storage = opts.storage.as_ref();
        storage
            .create_dir_all(&dir)
            .map_err(|e| Error::io("create dir", &dir, e))?;
        let ClaimedLane {
            lane,
            lock,
            end,
            watermark,
            events,
        } = lane::claim(storage, &dir, opts)?;
        for e in &events {
            tracing::info!(?e, "lane recovery");
        }
        let LaneEnd {
            next_segment,
            next_seq,
            last_time_ns,
            open_tail,
        } = end;
        // Appends continue in the lane's clean tail segment. Without one, the next segment
        // is created by the first append (a roll), which checks `queue_bytes_max` and
        // `free_disk_bytes_min` first: a writer that restarts in a loop without appending
        // must not leave a segment behind each time.
        let (active, start) = match open_tail {
            Some(OpenTail {
                segment,
                file,
                end,
                capacity,
                allocated,
            }) => (
                Some(Active {
                    id: segment,
                    file,
                    size: capacity,
                    allocated,
                }),
                end,
            ),
            None => (None, SEGMENT_HEADER_LEN as u64),
        };
        let state = State {
            active,
            next_segment,
            pending: Vec::new(),
            spare: Vec::new(),
            pending_start: start,
            pending_records: 0,
            returning: 0,
            sync_ewma_ns: 0,
            gathering: false,
            waiters: 0,
            next_seq,
            acked_seq: next_seq,
            unsynced: None,
            last_sync: Instant::now(),
            last_time_ns,
            leader: false,
            epoch: 0,
            failed_from: next_seq,
            failure: None,
            poisoned: None,
            closed: false,
        };
        let inner = Arc::new(Inner {
            lane,
            dir,
            opts: opts.clone(),
            state: Mutex::new(state),
            wake: Condvar::new(),
            arrivals: Condvar::new(),
            watermark,
            recovery: events,
            _lock: lock,
        });
        if let Durability::Interval(every) = opts.durability {
            spawn_flusher(Arc::downgrade(&inner), every);
        }
        Ok(Self { inner })
    }

    /// The lane this writer appends to.
    pub fn lane(&self) -> LaneId {
        self.inner.lane
    }

    /// What recovering the lane's tail found when this writer opened.
    pub fn recovery_events(&self) -> &[Event] {
        &self.inner.recovery
    }

    /// Appends one record. With [`Durability::SyncEachAppend`] it returns only once the
    /// record is durable. Errors: `EmptyRecord`, `RecordTooLarge`, `QueueFull` and
    /// `NoSpace` (nothing was appended; retry later), `Poisoned` (reopen), `Io`.
    pub fn append(&self, payload: &[u8]) -> Result<RecordId> {
        self.append_parts(&[payload])
    }

    /// Appends one record whose payload is the concatenation of `parts` (e.g. a record
    /// header, a large image, a trailer), exactly as [`append`](Self::append) would append
    /// the joined bytes. A large record (a frame over half of `batch_bytes_max`) is written
    /// from `parts` themselves instead of being copied into the batch buffer, so appending
    /// it costs no memory beyond the caller's.
    pub fn append_parts(&self, parts: &[&[u8]]) -> Result<RecordId> {
        let max = self.inner.opts.record_bytes_max;
        let total = parts
            .iter()
            .try_fold(0usize, |sum, part| sum.checked_add(part.len()))
            .unwrap_or(usize::MAX);
        let len = match u32::try_from(total) {
            Ok(0) => return Err(Error::EmptyRecord),
            Ok(n) if n <= max => n,
            _ => return Err(Error::RecordTooLarge { len: total, max }),
        };
        let need = frame_len(len);
        let direct = need > (self.inner.opts.batch_bytes_max / 2) as u64;
        let mut st = self.inner.lock();
        st = self.inner.make_room(st, need)?;
        while direct && st.leader {
            // The frame is written by its own appender, as the leader of the next batch.
            st = self.inner.wait(st);
            st = self.inner.make_room(st, need)?;
        }
        let (header, id, epoch) = reserve(&mut st, self.inner.lane, len);
        st.pending_records += 1;
        st.returning = st.returning.saturating_sub(1);
        if direct {
            let frame = DirectFrame {
                header: encode_record_header(&header, parts),
                parts,
                padding: (need - RECORD_HEADER_LEN as u64 - u64::from(len)) as usize,
            };
            st = self.inner.lead(st, Some(&frame));
            return self.inner.commit(st, id, epoch);
        }
        encode_record_parts(&mut st.pending, &header, parts);
        if st.gathering {
            self.inner.arrivals.notify_one();
        }
        self.inner.commit(st, id, epoch)
    }

    /// Makes every acknowledged append durable (a no-op unless durability is `Interval`)
    /// and stops accepting appends from this handle's clones.
    pub fn close(self) -> Result<()> {
        self.inner.flush()?;
        self.inner.lock().closed = true;
        Ok(())
    }
}

/// A large record's frame, written by its appender right after the pending batch.
struct DirectFrame<'a> {
    header: [u8; RECORD_HEADER_LEN],
    parts: &'a [&'a [u8]],
    /// Zero bytes after the payload, up to the frame's length.
    padding: usize,
}

impl DirectFrame<'_> {
    fn len(&self) -> u64 {
        (RECORD_HEADER_LEN + self.padding) as u64
            + self.parts.iter().map(|p| p.len() as u64).sum::<u64>()
    }

    /// Writes the frame at `at` with consecutive `pwrite`s (no copy of the payload).
    fn write_at(&self, file: &dyn StorageFile, mut at: u64) -> std::io::Result<()> {
        file.write_all_at(&self.header, at)?;
        at += RECORD_HEADER_LEN as u64;
        for part in self.parts.iter().filter(|p| !p.is_empty()) {
            file.write_all_at(part, at)?;
            at += part.len() as u64;
        }
        if self.padding > 0 {
            // Explicit zeros: the space may hold bytes of an earlier failed write.
            file.write_all_at(&vec![0u8; self.padding], at)?;
        }
        Ok(())
    }
}

/// Takes the next sequence number and the next position of the pending batch for a record
/// of `len` bytes; returns its header, id and the epoch it joined.
fn reserve(st: &mut State, lane: LaneId, len: u32) -> (RecordHeader, RecordId, u64) {
    let Some(active) = &st.active else {
        unreachable!("make_room guarantees an active segment");
    };
    let seq = st.next_seq;
    st.next_seq = seq.next();
    st.last_time_ns = now_ns().max(st.last_time_ns);
    let offset = st.pending_start + st.pending.len() as u64;
    let header = RecordHeader {
        len,
        kind: RecordKind::Data,
        lane,
        batch_start: st.pending_start as u32,
        segment: active.id,
        seq,
        time_ns: st.last_time_ns,
    };
    let id = RecordId {
        lane,
        seq,
        position: Position {
            segment: active.id,
            offset,
        },
    };
    (header, id, st.epoch)
}

impl Inner {
    /// The files of this writer's lane.
    fn files(&self) -> LaneFiles<'_> {
        LaneFiles::new(self.opts.storage.as_ref(), &self.dir, self.lane)
    }

    /// Publishes the lane's durable end (after the sync that made it durable).
    fn publish(&self, wm: &Watermark) -> Result<()> {
        self.watermark.publish(self.opts.storage.as_ref(), wm)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        st.waiters += 1;
        let mut st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
        st.waiters -= 1;
        st
    }

    /// Wakes every waiter. Skips the futex call when nobody waits (always the case with a
    /// single appending thread, where it would be a syscall per append).
    fn wake_all(&self, st: &State) {
        if st.waiters > 0 {
            self.wake.notify_all();
        }
    }

    fn check_usable(&self, st: &State) -> Result<()> {
        if let Some(cause) = &st.poisoned {
            return Err(Error::Poisoned {
                lane: self.lane,
                cause: cause.clone(),
            });
        }
        if st.closed {
            return Err(Error::Closed { lane: self.lane });
        }
        Ok(())
    }

    /// Waits until a frame of `need` bytes fits into the pending batch of the active
    /// segment, rolling to a new segment when the active one is full.
    fn make_room<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        need: u64,
    ) -> Result<MutexGuard<'a, State>> {
        loop {
            self.check_usable(&st)?;
            let end = st.pending_start + st.pending.len() as u64;
            let batch_full = !st.pending.is_empty()
                && st.pending.len() as u64 + need > self.opts.batch_bytes_max as u64;
            let room = end + need + SEAL_LEN;
            match &st.active {
                Some(a) if room <= a.allocated && !batch_full => return Ok(st),
                Some(_) if batch_full => st = self.wait(st),
                _ if st.leader || !st.pending.is_empty() => st = self.wait(st),
                Some(a) if room <= a.size => st = self.grow(st, room)?,
                _ => st = self.roll(st)?,
            }
        }
    }

    /// Allocates more of the active segment so that `room` bytes fit: the next step
    /// (`allocation_step_bytes`) or more, up to its capacity. Called with no batch pending
    /// and no leader; holds the leader role (not the mutex) while doing I/O. Nothing is
    /// written, so a failure poisons nothing: the append gets `QueueFull`, `NoSpace` or
    /// `Io` and may be retried.
    fn grow<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        room: u64,
    ) -> Result<MutexGuard<'a, State>> {
        let Some(active) = &st.active else {
            unreachable!("grow is called for the active segment");
        };
        let (file, id, from) = (active.file.clone(), active.id, active.allocated);
        let to = self.opts.allocation_target(room, active.size);
        st.leader = true;
        drop(st);
        let result = self.check_space(to.saturating_sub(from)).and_then(|()| {
            let path = self.files().segment_path(id);
            file.allocate(to).map_err(|e| {
                allocation_error(self.opts.storage.as_ref(), &self.dir, &path, e, to - from)
            })
        });
        let mut st = self.lock();
        st.leader = false;
        self.wake_all(&st);
        result?;
        if let Some(a) = st.active.as_mut().filter(|a| a.id == id) {
            a.allocated = a.allocated.max(to);
        }
        Ok(st)
    }

    /// Seals the full segment and creates the next one. Called with no batch pending and
    /// no leader; holds the leader role (not the mutex) while doing I/O.
    fn roll<'a>(&'a self, mut st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
        st.leader = true;
        let old = st.active.take();
        let (end, next_seq, last_time, next_id) = (
            st.pending_start,
            st.next_seq,
            st.last_time_ns,
            st.next_segment,
        );
        drop(st);
        let result = self.roll_io(old.as_ref(), end, next_seq, last_time, next_id);
        let mut st = self.lock();
        st.leader = false;
        self.wake_all(&st);
        match result {
            Ok(active) => {
                st.next_segment = active.id.checked_next();
                st.pending_start = SEGMENT_HEADER_LEN as u64;
                st.active = Some(active);
                // Sealing synced the old segment and the roll published the new segment's
                // watermark: an older unsynced one must not be published after it.
                st.unsynced = None;
                Ok(st)
            }
            Err(failure) => {
                if !failure.sealed {
                    st.active = old;
                }
                if let (true, Error::Io { source, .. }) = (failure.poisons, &failure.error) {
                    let cause = Arc::new(std::io::Error::new(source.kind(), source.to_string()));
                    st.poisoned = Some(cause);
                }
                Err(failure.error)
            }
        }
    }

    /// The I/O of a roll. A failure says whether the old segment was sealed and whether
    /// it poisons the writer (a failed sync does).
    fn roll_io(
        &self,
        old: Option<&Active>,
        end: u64,
        next_seq: Seq,
        last_time: u64,
        next_id: Option<SegmentId>,
    ) -> std::result::Result<Active, RollFailure> {
        let Some(next_id) = next_id else {
            let newest = old.map_or(u64::MAX, |a| a.id.0);
            let err = Error::SegmentIdsExhausted {
                path: self.dir.clone(),
                lane: self.lane,
                newest,
            };
            return Err(RollFailure::unsealed(err));
        };
        let first_step = self.opts.allocation_target(0, self.opts.segment_bytes);
        self.check_space(first_step)
            .map_err(RollFailure::unsealed)?;
        if let Some(a) = old {
            let path = self.files().segment_path(a.id);
            let seal = SealAt {
                lane: self.lane,
                segment: a.id,
                at: end,
                next_seq,
                last_time_ns: last_time,
            };
            let sealed_end =
                lane::write_seal(a.file.as_ref(), &path, &seal, a.allocated).map_err(|error| {
                    RollFailure {
                        error,
                        sealed: false,
                        poisons: true,
                    }
                })?;
            let wm = Watermark {
                segment: a.id,
                offset: sealed_end,
                next_seq,
            };
            self.publish(&wm).map_err(|error| RollFailure {
                error,
                sealed: true,
                poisons: true,
            })?;
        }
        let allocation = Allocation {
            capacity: self.opts.segment_bytes,
            first: first_step,
        };
        let seg = self
            .files()
            .create_segment(next_id, next_seq, allocation)
            .map_err(|error| RollFailure {
                // A failed sync poisons even here, where only an empty new segment is at stake:
                // after a failed fsync nothing the kernel reports can be trusted (the page
                // cache may have dropped the data and cleared the error).
                poisons: error.kind() == ErrorKind::Io { sync: true },
                error,
                sealed: true,
            })?;
        let wm = Watermark {
            segment: next_id,
            offset: SEGMENT_HEADER_LEN as u64,
            next_seq,
        };
        self.publish(&wm).map_err(|error| RollFailure {
            error,
            sealed: true,
            poisons: true,
        })?;
        Ok(Active {
            id: next_id,
            file: seg.file,
            size: self.opts.segment_bytes,
            allocated: first_step,
        })
    }

    /// `QueueFull` / `NoSpace` checks before `extra` bytes of segment are allocated (a new
    /// segment's first step, or a further step of the active one).
    fn check_space(&self, extra: u64) -> Result<()> {
        let storage = self.opts.storage.as_ref();
        let queue_bytes = lane::disk_bytes(storage, &self.dir)?;
        if queue_bytes + extra > self.opts.queue_bytes_max {
            return Err(Error::QueueFull {
                queue_bytes,
                queue_bytes_max: self.opts.queue_bytes_max,
            });
        }
        let needed_bytes = extra + self.opts.free_disk_bytes_min;
        let available_bytes = storage
            .available_bytes(&self.dir)
            .map_err(|e| Error::io("statvfs", &self.dir, e))?;
        if available_bytes < needed_bytes {
            return Err(Error::NoSpace {
                path: self.dir.clone(),
                available_bytes,
                needed_bytes,
            });
        }
        Ok(())
    }

    /// Waits until record `id` (which joined the batch in `epoch`) is acknowledged, leading
    /// the write of a batch whenever no one else is.
    fn commit<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        id: RecordId,
        epoch: u64,
    ) -> Result<RecordId> {
        loop {
            if st.epoch != epoch {
                // A failed write ended our epoch. `acked_seq` cannot tell us whether our
                // record made it: discarded sequence numbers are reused by later records.
                // Unless only that one failure happened since, we cannot know, and an
                // error (the caller may retry: a possible duplicate) is the safe answer.
                if st.epoch == epoch + 1 && id.seq < st.failed_from {
                    return Ok(id);
                }
                return Err(self.failure_error(&st));
            }
            if st.acked_seq > id.seq {
                return Ok(id);
            }
            self.check_usable(&st)?;
            if !st.leader && !st.pending.is_empty() {
                st = self.gather(st);
                st = self.lead(st, None);
            } else {
                st = self.wait(st);
            }
        }
    }

    /// The error for an appender whose batch a failed write discarded: `NoSpace` (the
    /// queue directory, with the space statvfs reports now) when the write found the file
    /// system full, otherwise the write's I/O error naming the segment file.
    fn failure_error(&self, st: &State) -> Error {
        let Some(WriteFailure { path, cause }) = &st.failure else {
            unreachable!("an epoch ends only with a recorded write failure");
        };
        if crate::fs::is_storage_full(cause) {
            return Error::NoSpace {
                path: self.dir.clone(),
                available_bytes: self.opts.storage.available_bytes(&self.dir).unwrap_or(0),
                needed_bytes: 0,
            };
        }
        Error::Io {
            op: "write",
            path: path.clone(),
            source: std::io::Error::new(cause.kind(), cause.to_string()),
            sync: false,
        }
    }

    /// Adaptive commit delay. Without it, appenders released by one batch can only join the
    /// batch after next (the next leader takes the pending buffer at once), which caps
    /// throughput at about half the appenders per sync. When syncs are slow, the leader
    /// waits up to half a sync time for those appenders to come back, so one sync
    /// carries (nearly) all of them. On fast disks (or with one appender) it never waits.
    fn gather<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        if self.opts.durability != Durability::SyncEachAppend
            || st.returning == 0
            || st.sync_ewma_ns < GATHER_SYNC_MIN.as_nanos() as u64
        {
            return st;
        }
        let wait = Duration::from_nanos(st.sync_ewma_ns / 2).min(GATHER_WAIT_MAX);
        let deadline = Instant::now() + wait;
        st.leader = true;
        st.gathering = true;
        while st.returning > 0 && !self.batch_is_full(&st) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            st = self
                .arrivals
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        st.gathering = false;
        st.leader = false;
        st
    }

    fn batch_is_full(&self, st: &State) -> bool {
        st.pending.len() >= self.opts.batch_bytes_max / 2
    }

    /// Writes (and syncs, by durability mode) the whole pending batch as its leader, and
    /// after it `direct`, the leader's own large frame (reserved right after the batch).
    fn lead<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        direct: Option<&DirectFrame<'_>>,
    ) -> MutexGuard<'a, State> {
        st.leader = true;
        let spare = std::mem::take(&mut st.spare);
        let buf = std::mem::replace(&mut st.pending, spare);
        let at = st.pending_start;
        let batch_len = buf.len() as u64 + direct.map_or(0, DirectFrame::len);
        st.pending_start = at + batch_len;
        let batch_records = std::mem::take(&mut st.pending_records);
        let end_seq = st.next_seq;
        let Some(active) = &st.active else {
            unreachable!("a pending batch always has an active segment");
        };
        let (file, seg) = (active.file.clone(), active.id);
        let sync_now = match self.opts.durability {
            Durability::SyncEachAppend => true,
            Durability::Interval(every) => st.last_sync.elapsed() >= every,
            Durability::None => false,
        };
        drop(st);
        let wm = Watermark {
            segment: seg,
            offset: at + batch_len,
            next_seq: end_seq,
        };
        let batch = match buf.is_empty() {
            true => Ok(()),
            false => file.write_all_at(&buf, at),
        };
        let written = batch.and_then(|()| match direct {
            Some(frame) => frame.write_at(file.as_ref(), at + buf.len() as u64),
            None => Ok(()),
        });
        let sync_started = Instant::now();
        let synced = match (&written, sync_now) {
            (Ok(()), true) => file.sync_data().map_err(|e| {
                tracing::error!(lane = self.lane.0, error = %e, "fdatasync failed; poisoning the writer");
                e
            }),
            _ => Ok(()),
        };
        let publish = written.is_ok()
            && synced.is_ok()
            && (sync_now || self.opts.durability == Durability::None);
        let published = if publish { self.publish(&wm) } else { Ok(()) };
        let mut st = self.lock();
        let mut buf = buf;
        buf.clear();
        st.spare = buf;
        st.leader = false;
        match (written, synced, published) {
            (Ok(()), Ok(()), Ok(())) => {
                st.acked_seq = end_seq;
                st.returning = batch_records;
                if sync_now {
                    let took = sync_started.elapsed().as_nanos() as u64;
                    st.sync_ewma_ns = (st.sync_ewma_ns * 7 + took) / 8;
                    st.last_sync = Instant::now();
                    st.unsynced = None;
                } else if self.opts.durability != Durability::None {
                    st.unsynced = Some(wm);
                }
            }
            (Err(e), _, _) => {
                // Nothing of this batch or the ones queued behind it is acknowledged; the
                // lane's end stays where it was and later appends overwrite the attempt.
                tracing::error!(lane = self.lane.0, error = %e, "segment write failed; failing the batch");
                st.failure = Some(WriteFailure {
                    path: self.files().segment_path(seg),
                    cause: Arc::new(e),
                });
                st.failed_from = st.acked_seq;
                st.epoch += 1;
                st.pending.clear();
                st.pending_records = 0;
                st.pending_start = at;
                st.next_seq = st.acked_seq;
            }
            (_, Err(e), _) => st.poisoned = Some(Arc::new(e)),
            (_, _, Err(e)) => st.poisoned = Some(Arc::new(std::io::Error::other(e.to_string()))),
        }
        self.wake_all(&st);
        st
    }

    /// Syncs and publishes anything written but not yet durable (interval mode).
    fn flush(&self) -> Result<()> {
        let mut st = self.lock();
        loop {
            self.check_usable(&st)?;
            if !st.leader && st.pending.is_empty() {
                break;
            }
            st = self.wait(st);
        }
        let Some(wm) = st.unsynced.take() else {
            return Ok(());
        };
        let Some(file) = st.active.as_ref().map(|a| a.file.clone()) else {
            return Ok(());
        };
        st.leader = true;
        drop(st);
        let result = file
            .sync_data()
            .map_err(|e| Error::Poisoned {
                lane: self.lane,
                cause: Arc::new(e),
            })
            .and_then(|()| self.publish(&wm));
        let mut st = self.lock();
        st.leader = false;
        st.last_sync = Instant::now();
        if let Err(Error::Poisoned { cause, .. }) = &result {
            tracing::error!(lane = self.lane.0, error = %cause, "fdatasync failed; poisoning the writer");
            st.poisoned = Some(cause.clone());
        }
        self.wake_all(&st);
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if matches!(self.opts.durability, Durability::Interval(_)) {
            if let Err(e) = self.flush() {
                tracing::error!(lane = self.lane.0, error = %e, "final flush of interval-mode writer failed");
            }
        }
    }
}

/// Interval mode: syncs written data every `every` so readers see it and it becomes durable.
fn spawn_flusher(inner: std::sync::Weak<Inner>, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("wal-flusher".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(inner) = inner.upgrade() else { return };
            if let Err(e) = inner.flush() {
                tracing::error!(error = %e, "interval flush failed");
                return;
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the interval flusher thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fault, Repeat, SimErrno, SimOp};
    use crate::{Reader, SimDisk};

    fn small_opts(sim: &SimDisk) -> Options {
        Options::default()
            .storage(Arc::new(sim.clone()))
            .segment_bytes(1 << 20)
            .allocation_step_bytes(64 << 10)
            .record_bytes_max(64 << 10)
            .free_disk_bytes_min(0)
    }

    /// Story: `close` flushes and stops the handle's clones; an append on a clone
    /// afterwards used to report `Poisoned` "by an earlier sync failure" although no sync
    /// failed. It now gets an honest `Closed` naming the lane.
    #[test]
    fn an_append_after_close_is_refused_as_closed_not_poisoned() {
        let sim = SimDisk::new(1);
        let w = Writer::open("/q", &small_opts(&sim)).expect("open");
        let clone = w.clone();
        w.append(b"kept").expect("append");
        w.close().expect("close");
        let e = clone.append(b"late").expect_err("closed");
        assert!(matches!(e, Error::Closed { .. }), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::Closed);
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("was closed"), "{e}");
    }

    /// Story: a failed segment write discarded a batch, and its appenders were told
    /// about the lane's lock file (a file nobody wrote). The error now names the segment
    /// the write went to, and a full file system (found by the error's kind, not by
    /// errno 28) is `NoSpace`, retryable.
    #[test]
    fn a_failed_batch_write_names_the_segment_and_a_full_disk_is_no_space() {
        let sim = SimDisk::new(2);
        let w = Writer::open("/q", &small_opts(&sim)).expect("open");
        w.append(b"first").expect("append");
        sim.inject(Fault::WriteFailsOnce(1));
        let e = w.append(b"lost").expect_err("write fails");
        match &e {
            Error::Io { op, path, .. } => {
                assert_eq!(*op, "write");
                assert!(
                    path.to_string_lossy().ends_with(".seg"),
                    "{}",
                    path.display()
                );
                assert_ne!(path, &w.inner.files().lock_path());
            }
            other => panic!("not an I/O error: {other:?}"),
        }
        assert_eq!(e.kind(), ErrorKind::Io { sync: false });
        sim.inject(Fault::Fail {
            op: SimOp::Write,
            nth: 1,
            errno: SimErrno::Enospc,
            repeat: Repeat::Once,
        });
        let e = w.append(b"no room").expect_err("disk full");
        assert_eq!(e.kind(), ErrorKind::NoSpace, "{e:?}");
        assert!(e.is_retryable());
        w.append(b"after").expect("the writer is not poisoned");
    }

    /// Story: whether a failed roll poisons the writer was decided by matching the
    /// operation's name ("fdatasync" | "fsync dir"). A failed sync now carries its kind,
    /// `Io { sync: true }`, and that is what poisons.
    #[test]
    fn a_failed_sync_while_creating_a_segment_is_a_sync_kind_and_poisons() {
        let sim = SimDisk::new(3);
        let w = Writer::open("/q", &small_opts(&sim).durability(Durability::None)).expect("open");
        sim.inject(Fault::SyncFailsOnce(1));
        let e = w.append(b"first").expect_err("segment creation fails");
        assert_eq!(e.kind(), ErrorKind::Io { sync: true }, "{e:?}");
        let later = w.append(b"second").expect_err("poisoned");
        assert_eq!(later.kind(), ErrorKind::Poisoned, "{later:?}");
    }

    /// Story: an enqueue held a large image three times over (the caller's bytes, the
    /// batch buffer, its spare). A frame over half the batch buffer is now written from
    /// the caller's parts: the batch buffer never grows to hold it (no copy of the
    /// payload), and the record reads back whole, in order after a small, copied one.
    #[test]
    fn a_large_record_is_written_from_the_callers_parts_without_a_copy() {
        let sim = SimDisk::new(1);
        let opts = Options::default()
            .storage(Arc::new(sim.clone()))
            .segment_bytes(1 << 20)
            .allocation_step_bytes(64 << 10)
            .record_bytes_max(256 << 10)
            .batch_bytes_max(64 << 10)
            .free_disk_bytes_min(0);
        let w = Writer::open("/q", &opts).expect("open");
        let big: Vec<u8> = (0..200_003u32).map(|i| (i % 251) as u8).collect();
        let (head, rest) = big.split_at(10);
        let (middle, tail) = rest.split_at(rest.len() - 7);
        let small = w.append(b"small").expect("small");
        let large = w.append_parts(&[head, middle, tail]).expect("large");
        assert_eq!(large.seq.0, small.seq.0 + 1);
        {
            let st = w.inner.lock();
            assert!(
                st.pending.capacity() < 4096 && st.spare.capacity() < 4096,
                "the batch buffer grew to {} / {} bytes: the payload was copied",
                st.pending.capacity(),
                st.spare.capacity()
            );
        }
        let mut r = Reader::open("/q", "c", &opts).expect("reader");
        let got: Vec<Vec<u8>> = std::iter::from_fn(|| r.next().expect("read"))
            .map(|rec| rec.payload.to_vec())
            .collect();
        assert_eq!(got, [b"small".to_vec(), big]);
    }
}
