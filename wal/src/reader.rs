//! Reading: one reader per named cursor (enforced with `flock`). It follows every lane up
//! to the lane's durable end (its watermark), hands out records zero-copy from the segment
//! maps, merges lanes by enqueue time while keeping each lane in order, and persists
//! acknowledgements as atomic checkpoints. Segments are deleted only after the checkpoint
//! that releases them is durable, and never the newest segment of a lane.

mod checkpointer;
mod follower;
mod foreign;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cursor::{Checkpoint, CheckpointFile, LanePosition};
use crate::error::{Error, Event, Result};
use crate::format::{
    self, decode_frame, valid_cursor_name, FileName, Frame, Watermark, SEAL_LEN, SEGMENT_HEADER_LEN,
};
use crate::fs::{join, LockGuard, OpenMode};
use crate::lane::{self, LaneFiles};
use crate::options::Options;
use crate::segment::{self, ScanContext};
use crate::types::{LaneId, Position, Record, RecordId, SegmentId, Seq};
use checkpointer::Checkpointer;
use follower::LaneFollower;
use foreign::Reported;

/// How often a busy reader looks for new lanes, checked every `BUSY_REFRESH_CALLS` reads.
const LANE_DISCOVERY_BUSY_EVERY: Duration = Duration::from_millis(100);
const BUSY_REFRESH_CALLS: u64 = 1024;
/// How often an idle reader looks for new lanes.
const LANE_DISCOVERY_EVERY: Duration = Duration::from_millis(10);
/// How often an idle lane is checked for having lost its writer (to recover its tail).
const OWNER_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long opening a cursor waits out a momentary holder (an `inspect` probe).
const CURSOR_LOCK_PATIENCE: Duration = Duration::from_millis(100);
/// Longest sleep between polls while waiting for a record.
const POLL_SLEEP_MAX: Duration = Duration::from_millis(2);

/// Reads a queue directory through one named cursor.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    opts: Options,
    name: String,
    checkpoint: Checkpoint,
    lanes: BTreeMap<LaneId, LaneFollower>,
    events: Vec<Event>,
    /// Foreign files (named like queue files, not regular) already reported.
    foreign: Reported,
    dirty: bool,
    /// Calls to `next`, to pace the busy-reader refresh.
    calls: u64,
    last_discovery: Instant,
    /// When this reader first saw each segment (monotonic), for retention when a segment's
    /// creation stamp (the writer's wall clock) is not believable.
    seen: BTreeMap<(LaneId, SegmentId), Instant>,
    /// `None` for a read-only browser, which never writes, recovers or acknowledges.
    checkpointer: Option<Checkpointer>,
    _lock: Option<Box<dyn LockGuard>>,
}

impl Reader {
    /// Opens `dir` through cursor `name`, recovering lanes whose writer is gone. Fails with
    /// `CursorLocked` if another reader holds the cursor.
    pub fn open(dir: impl AsRef<Path>, name: &str, opts: &Options) -> Result<Self> {
        Self::open_inner(dir.as_ref(), name, opts, false)
    }

    /// Opens `dir` read-only at the position of cursor `name` (which need not exist):
    /// records can be read but not acknowledged, nothing is written, no lane is recovered,
    /// and the cursor's reader may be running. For `inspect`-style listings.
    pub fn browse(dir: impl AsRef<Path>, name: &str, opts: &Options) -> Result<Self> {
        Self::open_inner(dir.as_ref(), name, opts, true)
    }

    fn open_inner(dir: &Path, name: &str, opts: &Options, read_only: bool) -> Result<Self> {
        opts.validate()?;
        if !valid_cursor_name(name) {
            return Err(Error::InvalidCursorName(name.to_owned()));
        }
        let dir = dir.to_path_buf();
        let storage = opts.storage.as_ref();
        if read_only {
            let checkpoint = crate::cursor::peek(storage, &dir, name).unwrap_or_default();
            let mut reader = Self {
                dir,
                opts: opts.clone(),
                name: name.to_owned(),
                checkpoint,
                lanes: BTreeMap::new(),
                events: Vec::new(),
                foreign: Reported::default(),
                dirty: false,
                calls: 0,
                last_discovery: Instant::now(),
                seen: BTreeMap::new(),
                checkpointer: None,
                _lock: None,
            };
            reader.discover_lanes()?;
            return Ok(reader);
        }
        storage
            .create_dir_all(&dir)
            .map_err(|e| Error::io("create dir", &dir, e))?;
        let lock_path = join(&dir, &FileName::CursorLock(name.to_owned()));
        let lock = lock_cursor(storage, &lock_path)?.ok_or_else(|| Error::CursorLocked {
            name: name.to_owned(),
            path: dir.clone(),
        })?;
        let (checkpoint_file, checkpoint, damage) = CheckpointFile::open(storage, &dir, name)?;
        let mut events = Vec::new();
        if let Some(corruption) = damage {
            tracing::error!(%corruption, "checkpoint unreadable; reading every lane from its oldest segment");
            events.push(Event::Corruption {
                corruption,
                resumed_at: Position {
                    segment: SegmentId(0),
                    offset: 0,
                },
                records_lost: Some(0),
            });
        }
        let checkpointer = Checkpointer::spawn(
            checkpoint_file,
            opts.storage.clone(),
            dir.clone(),
            checkpoint.generation,
        )?;
        let mut reader = Self {
            dir,
            opts: opts.clone(),
            name: name.to_owned(),
            checkpoint,
            lanes: BTreeMap::new(),
            events,
            foreign: Reported::default(),
            dirty: false,
            calls: 0,
            last_discovery: Instant::now(),
            seen: BTreeMap::new(),
            checkpointer: Some(checkpointer),
            _lock: Some(lock),
        };
        reader.discover_lanes()?;
        Ok(reader)
    }

    /// The files of `lane` in this reader's queue directory.
    fn files(&self, lane: LaneId) -> LaneFiles<'_> {
        LaneFiles::new(self.opts.storage.as_ref(), &self.dir, lane)
    }

    /// The cursor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes what reading and recovery found since the last call (torn tails cut off,
    /// corruption quarantined, cursors moved back, gaps, expired segments).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The next durable record, or `None` if every lane is caught up. Lanes are merged by
    /// enqueue time; within a lane, records come in append order.
    #[expect(
        clippy::should_implement_trait,
        reason = "fallible and non-blocking; an Iterator would end at the first caught-up moment"
    )]
    pub fn next(&mut self) -> Result<Option<Record>> {
        // A busy reader must still find lanes of writers that started meanwhile, or their
        // records would wait until every other lane is drained. Checked every so many
        // calls to keep the clock off the hot path.
        self.calls = self.calls.wrapping_add(1);
        if self.calls.is_multiple_of(BUSY_REFRESH_CALLS)
            && self.last_discovery.elapsed() >= LANE_DISCOVERY_BUSY_EVERY
        {
            self.refresh(true)?;
        }
        if let Some(r) = self.merge()? {
            return Ok(Some(r));
        }
        if self.refresh(false)? {
            return self.merge();
        }
        Ok(None)
    }

    /// The oldest next record across lanes (by enqueue time), taken from its lane.
    fn merge(&mut self) -> Result<Option<Record>> {
        let mut best: Option<(u64, LaneId)> = None;
        let storage = self.opts.storage.as_ref();
        for lr in self.lanes.values_mut() {
            let files = LaneFiles::new(storage, &self.dir, lr.lane);
            if let Some(r) = lr.peek(files, &mut self.events)? {
                if best.is_none_or(|(t, _)| r.time_ns < t) {
                    best = Some((r.time_ns, lr.lane));
                }
            }
            self.dirty |= std::mem::take(&mut lr.acked_moved);
        }
        let Some((_, lane)) = best else {
            return Ok(None);
        };
        let Some(lr) = self.lanes.get_mut(&lane) else {
            return Ok(None);
        };
        Ok(lr.take())
    }

    /// Like [`Reader::next`], but waits up to `timeout` for a record to become durable,
    /// polling with a sleep that grows from 50 µs to 2 ms.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Record>> {
        let deadline = Instant::now() + timeout;
        let mut sleep = Duration::from_micros(50);
        loop {
            if let Some(r) = self.next()? {
                return Ok(Some(r));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(sleep.min(deadline - now));
            sleep = (sleep * 2).min(POLL_SLEEP_MAX);
        }
    }

    /// Acknowledges `id` and every record delivered before it in its lane. Takes effect on
    /// disk at the next [`Reader::checkpoint`].
    pub fn ack(&mut self, id: RecordId) -> Result<()> {
        if self.checkpointer.is_none() {
            return Err(Error::ReadOnly);
        }
        let lr = self.lanes.get_mut(&id.lane).ok_or(Error::NotDelivered {
            lane: id.lane,
            seq: id.seq.0,
        })?;
        if id.seq < lr.acked.next_seq {
            return Ok(());
        }
        let Some(i) = lr.delivered.iter().position(|(s, _)| *s == id.seq) else {
            return Err(Error::NotDelivered {
                lane: id.lane,
                seq: id.seq.0,
            });
        };
        let mut after = lr.acked;
        for _ in 0..=i {
            if let Some((_, p)) = lr.delivered.pop_front() {
                after = p;
            }
        }
        lr.acked = after;
        self.dirty = true;
        Ok(())
    }

    /// Makes all acknowledgements durable. Returns once the checkpoint is durable; the
    /// segments it releases (every record acknowledged) are then deleted by a background
    /// thread, which [`Reader::wait_for_deletions`] waits for. Once a checkpoint write or a
    /// deletion has failed, this and every later checkpoint call returns that failure
    /// until the reader is reopened. [`Error::CheckpointDeferred`] is not such a failure:
    /// the cursor's first checkpoint found no space (a full disk) and is tried again at
    /// the next call.
    pub fn checkpoint(&mut self) -> Result<()> {
        // With nothing new to save, still wait for the last one handed over: it may have
        // failed in the background, and then this call must not claim durability.
        let generation = match self.submit_checkpoint()? {
            Some(g) => g,
            None => self.checkpoint.generation,
        };
        if let Some(c) = &self.checkpointer {
            let waited = c.wait_durable(generation);
            if matches!(waited, Err(Error::CheckpointDeferred { .. })) {
                // Not written for want of space: the next call hands the same positions
                // over again, so that a checkpoint is retried even with no new acks.
                self.dirty = true;
            }
            waited?;
        }
        Ok(())
    }

    /// Checkpoints like [`Reader::checkpoint`], then waits until the segments released by
    /// it are deleted and the deletions durable: their space is back. For tools that report
    /// disk usage and for tests; a consumer need not wait for this.
    pub fn wait_for_deletions(&mut self) -> Result<()> {
        self.checkpoint()?;
        if let Some(c) = &self.checkpointer {
            c.wait_released(self.checkpoint.generation)?;
        }
        Ok(())
    }

    /// Like [`Reader::checkpoint`], but returns at once: a background thread writes and
    /// syncs the checkpoint, and another then deletes the segments it releases. A crash
    /// before it is durable redelivers what it covered (at-least-once, as for any
    /// acknowledgement made after the last durable checkpoint). A failure of an earlier
    /// checkpoint or deletion is returned here.
    pub fn checkpoint_in_background(&mut self) -> Result<()> {
        self.submit_checkpoint().map(|_| ())
    }

    /// Hands the current positions to the checkpointer; the generation, or `None` when
    /// nothing changed since the last checkpoint.
    fn submit_checkpoint(&mut self) -> Result<Option<u64>> {
        let Some(c) = &self.checkpointer else {
            return Err(Error::ReadOnly);
        };
        for lr in self.lanes.values_mut() {
            self.dirty |= std::mem::take(&mut lr.acked_moved);
        }
        if !self.dirty {
            // Nothing to hand over, but a failure since must still be reported.
            c.failure()?;
            return Ok(None);
        }
        let next = Checkpoint {
            generation: self.checkpoint.generation + 1,
            lanes: self.lanes.values().map(|lr| (lr.lane, lr.acked)).collect(),
        };
        c.submit(next.clone())?;
        let generation = next.generation;
        self.checkpoint = next;
        self.dirty = false;
        Ok(Some(generation))
    }

    /// Deletes sealed segments whose records are all older than `max_age` (retention),
    /// moving the cursor past records in them that were never acknowledged; they are
    /// reported as `Event::Expired`. Returns the number of records expired.
    ///
    /// A segment's records are all older than the creation of the lane's next segment.
    /// That creation time is the next segment's header stamp (the writer's wall clock)
    /// only when the stamp is believable (see [`stamp_is_believable`]); otherwise it is
    /// taken as when this reader first saw the next segment (a monotonic clock, so a
    /// segment stamped in 1970 by a box without a clock expires nothing early and one
    /// stamped in the future still expires). Either way the age is never less than how
    /// long this reader has seen the next segment exist.
    pub fn expire_older_than(&mut self, max_age: Duration) -> Result<u64> {
        if self.checkpointer.is_none() {
            return Err(Error::ReadOnly);
        }
        let now_wall = crate::clock::now_ns();
        let now_mono = Instant::now();
        let cutoff = now_wall.saturating_sub(u64::try_from(max_age.as_nanos()).unwrap_or(u64::MAX));
        let storage = self.opts.storage.as_ref();
        let all = lane::list(storage, &self.dir)?;
        self.seen
            .retain(|(lane, seg), _| all.get(lane).is_some_and(|s| s.contains(seg)));
        for (lane, segs) in &all {
            for seg in segs {
                self.seen.entry((*lane, *seg)).or_insert(now_mono);
            }
        }
        let mut expired_total = 0;
        for (lane, segs) in &all {
            let Some(lr) = self.lanes.get_mut(lane) else {
                continue;
            };
            let mut jump: Option<(SegmentId, Seq, u64)> = None;
            for pair in segs.windows(2) {
                let [_, newer] = pair else { continue };
                // The deleter may have removed it since the listing: it was consumed.
                let files = LaneFiles::new(storage, &self.dir, *lane);
                let Some((_, _, header)) = files.open_segment_if_present(*newer)? else {
                    continue;
                };
                let seen_for = self
                    .seen
                    .get(&(*lane, *newer))
                    .map_or(Duration::ZERO, |t| now_mono.saturating_duration_since(*t));
                match header {
                    // Every record of the older segment was written before the newer existed.
                    Ok(h)
                        if seen_for > max_age
                            || stamp_is_believable(h.created_ns, now_wall)
                                && h.created_ns < cutoff =>
                    {
                        jump = Some((*newer, h.first_seq, jump.map_or(0, |j| j.2) + 1))
                    }
                    _ => break,
                }
            }
            let Some((seg, first_seq, segments)) = jump else {
                continue;
            };
            if lr.acked.position.segment >= seg {
                continue;
            }
            let records = first_seq.0.saturating_sub(lr.acked.next_seq.0);
            let to = LanePosition {
                position: Position {
                    segment: seg,
                    offset: SEGMENT_HEADER_LEN as u64,
                },
                next_seq: first_seq,
            };
            lr.jump(to);
            tracing::warn!(
                lane = lane.0,
                records,
                segments,
                "retention expired unconsumed records"
            );
            self.events.push(Event::Expired {
                lane: *lane,
                segments,
                records,
            });
            expired_total += records;
            self.dirty = true;
        }
        // Retention is for space: return once it is back.
        self.wait_for_deletions()?;
        Ok(expired_total)
    }

    /// Pending records per lane for this cursor (durable, not yet acknowledged), from the
    /// sequence numbers; the watermark is re-read.
    pub fn pending(&mut self) -> BTreeMap<LaneId, u64> {
        let storage = self.opts.storage.as_ref();
        self.lanes
            .values_mut()
            .map(|lr| {
                let files = LaneFiles::new(storage, &self.dir, lr.lane);
                lr.watermark = files.read_watermark().or(lr.watermark);
                let end = lr.watermark.map_or(lr.acked.next_seq, |w| w.next_seq);
                (lr.lane, end.0.saturating_sub(lr.acked.next_seq.0))
            })
            .collect()
    }

    /// Finds new lanes (when due) and recovers lanes whose writer is gone so their last
    /// records become readable. `force_discovery` runs discovery regardless of the idle
    /// cadence. Returns true when a lane was found or recovered.
    fn refresh(&mut self, force_discovery: bool) -> Result<bool> {
        let lanes_before = self.lanes.len();
        if force_discovery || self.last_discovery.elapsed() >= LANE_DISCOVERY_EVERY {
            self.discover_lanes()?;
        }
        let mut changed = self.lanes.len() > lanes_before;
        let storage = self.opts.storage.as_ref();
        for lr in self.lanes.values_mut() {
            if lr.last_owner_check.elapsed() < OWNER_CHECK_EVERY || self.checkpointer.is_none() {
                continue;
            }
            lr.last_owner_check = Instant::now();
            let before = lr.watermark;
            let files = LaneFiles::new(storage, &self.dir, lr.lane);
            let recovered =
                files.recover_if_abandoned(self.opts.record_bytes_max, &mut self.events);
            skip_foreign(recovered, &mut self.foreign, &mut self.events)?;
            lr.watermark = files.read_watermark();
            changed |= lr.watermark != before;
        }
        Ok(changed)
    }

    fn discover_lanes(&mut self) -> Result<()> {
        self.last_discovery = Instant::now();
        let storage = self.opts.storage.clone();
        let storage = storage.as_ref();
        let listing = lane::list_all(storage, &self.dir)?;
        for f in &listing.foreign {
            self.foreign.report(&mut self.events, &f.path, f.kind);
        }
        for (lane, segs) in listing.segments {
            if self.lanes.contains_key(&lane) {
                continue;
            }
            let Some(&first) = segs.first() else { continue };
            let files = LaneFiles::new(storage, &self.dir, lane);
            let first = if self.checkpointer.is_some() {
                let recovered =
                    files.recover_if_abandoned(self.opts.record_bytes_max, &mut self.events);
                skip_foreign(recovered, &mut self.foreign, &mut self.events)?;
                // Recovery may have removed a segment whose creation never completed.
                let Some(&first) = files.segments()?.first() else {
                    continue;
                };
                first
            } else {
                first
            };
            let watermark = files.read_watermark();
            let start = match self.checkpoint.lanes.get(&lane) {
                Some(p) => *p,
                None => {
                    let (_, _, h) = files.open_segment(first, OpenMode::Read)?;
                    LanePosition {
                        position: Position {
                            segment: first,
                            offset: SEGMENT_HEADER_LEN as u64,
                        },
                        next_seq: h.map_or(Seq(0), |h| h.first_seq),
                    }
                }
            };
            let start = self.check_start(lane, start, first, watermark);
            let follower = LaneFollower::new(lane, start, watermark, self.opts.record_bytes_max);
            self.lanes.insert(lane, follower);
        }
        Ok(())
    }

    /// A checkpointed position past the recovered end is reported and moved back to the
    /// end; one before the oldest segment (deleted by hand) moves forward to it.
    ///
    /// "Past the end" is past the lane's watermark, or, once the lane has moved on to a
    /// newer segment, past the end of the (older, sealed) segment the cursor is in: where
    /// the cursor points nothing was ever written. The cursor then resumes at the seal of
    /// that segment, so that records written since (in later segments) are read.
    fn check_start(
        &mut self,
        lane: LaneId,
        p: LanePosition,
        first: SegmentId,
        wm: Option<Watermark>,
    ) -> LanePosition {
        if let Some(w) = wm {
            let wm_end = Position {
                segment: w.segment,
                offset: w.offset,
            };
            let in_older = p.position.segment >= first && p.position.segment < w.segment;
            if p.position > wm_end || (in_older && self.nothing_at(lane, p.position)) {
                let (end, resume) = self.segment_end(lane, p.position.segment, &w);
                tracing::error!(lane = lane.0, cursor = %p.position, end = %end, "cursor points past the recovered end of the lane");
                self.events.push(Event::CursorPastEnd {
                    lane,
                    cursor: p.position,
                    end,
                });
                self.dirty = true;
                return resume;
            }
        }
        if p.position.segment < first {
            self.dirty = true;
            let first_seq = self
                .files(lane)
                .open_segment(first, OpenMode::Read)
                .ok()
                .and_then(|(_, _, h)| h.ok())
                .map_or(p.next_seq, |h| h.first_seq);
            if first_seq > p.next_seq {
                self.events.push(Event::Gap {
                    lane,
                    expected: p.next_seq,
                    found: first_seq,
                });
            }
            return LanePosition {
                position: Position {
                    segment: first,
                    offset: SEGMENT_HEADER_LEN as u64,
                },
                next_seq: first_seq,
            };
        }
        p
    }

    /// True when nothing was ever written at `at` (zeros, or past the end of the file).
    /// Damaged bytes are not "nothing": reading reports and steps over them.
    fn nothing_at(&self, lane: LaneId, at: Position) -> bool {
        let Ok((file, _, _)) = self.files(lane).open_segment(at.segment, OpenMode::Read) else {
            return false;
        };
        let Ok(map) = file.map() else { return false };
        matches!(
            decode_frame(
                &map,
                at.offset,
                lane,
                at.segment,
                self.opts.record_bytes_max
            ),
            Frame::Empty | Frame::Bad(format::BadRecord::Truncated)
        )
    }

    /// The recovered end of `seg` (the watermark's segment when `seg` is not older), and
    /// where a cursor past it resumes: at the segment's seal if it has one, so that reading
    /// goes on with the next segment.
    fn segment_end(&self, lane: LaneId, seg: SegmentId, w: &Watermark) -> (Position, LanePosition) {
        let files = self.files(lane);
        let at = |segment, offset, next_seq| LanePosition {
            position: Position { segment, offset },
            next_seq,
        };
        if seg >= w.segment {
            let end = Position {
                segment: w.segment,
                offset: w.offset,
            };
            if files.sealed_at(w) {
                return (end, at(w.segment, w.offset - SEAL_LEN, w.next_seq));
            }
            return (end, at(w.segment, w.offset, w.next_seq));
        }
        let scanned = files
            .open_segment(seg, OpenMode::Read)
            .ok()
            .and_then(|(file, _, h)| {
                let map = file.map().ok()?;
                let cx = ScanContext {
                    lane,
                    segment: seg,
                    len_max: self.opts.record_bytes_max,
                    durable_hint: 0,
                    first_seq: h.map_or(Seq(0), |h| h.first_seq),
                    lookahead: true,
                };
                Some(segment::scan(&map, SEGMENT_HEADER_LEN as u64, &cx))
            });
        match scanned {
            Some(s) => {
                let end = Position {
                    segment: seg,
                    offset: s.end,
                };
                match s.seal {
                    Some(seal) => (end, at(seg, s.end - SEAL_LEN, seal.seq)),
                    None => (end, at(seg, s.end, s.next_seq)),
                }
            }
            // Gone meanwhile: fall back to the lane's end.
            None => (
                Position {
                    segment: w.segment,
                    offset: w.offset,
                },
                at(w.segment, w.offset, w.next_seq),
            ),
        }
    }
}

/// Takes the cursor's lock, retrying for up to `CURSOR_LOCK_PATIENCE`: `inspect` (and the
/// `status` command) probe a cursor by taking its lock for an instant, which must not make
/// a reader that starts at that moment fail. A reader that holds it stays `None`.
fn lock_cursor(
    storage: &dyn crate::fs::Storage,
    path: &Path,
) -> Result<Option<Box<dyn LockGuard>>> {
    let deadline = Instant::now() + CURSOR_LOCK_PATIENCE;
    loop {
        match storage.try_lock(path) {
            Ok(Some(guard)) => return Ok(Some(guard)),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => return Ok(None),
            Err(e) => return Err(Error::io("flock", path, e)),
        }
    }
}

/// A lane whose recovery met a foreign file (its lock or watermark is a symlink, a FIFO, a
/// directory...) is left alone: the file is reported once and the other lanes are served.
/// The lane is tried again at the next owner check, so moving the file away heals it.
fn skip_foreign(
    result: Result<()>,
    reported: &mut Reported,
    events: &mut Vec<Event>,
) -> Result<()> {
    match result {
        Err(e) => match e.not_regular_file() {
            Some((path, kind)) => {
                reported.report(events, path, kind);
                Ok(())
            }
            None => Err(e),
        },
        Ok(()) => Ok(()),
    }
}

/// 2025-01-01T00:00:00Z in unix nanoseconds: a segment stamped earlier was created by a
/// writer whose clock was not set (an edge box booted without a real-time clock).
pub(crate) const CLOCK_FLOOR_NS: u64 = 1_735_689_600_000_000_000;

/// How far a stamp may be ahead of the reader's clock and still be believed (5 minutes).
pub(crate) const FUTURE_SKEW_MAX_NS: u64 = 5 * 60 * 1_000_000_000;

/// Whether a writer's wall-clock stamp `stamp_ns` is believable at reader time `now_ns`:
/// on or after 2025-01-01 and at most 5 minutes ahead. The same rule the worker applies
/// to escalations' enqueue stamps (`docs/SEMANTICS.md`, retention).
pub(crate) fn stamp_is_believable(stamp_ns: u64, now_ns: u64) -> bool {
    (CLOCK_FLOOR_NS..=now_ns.saturating_add(FUTURE_SKEW_MAX_NS)).contains(&stamp_ns)
}
