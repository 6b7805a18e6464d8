//! Lane tail recovery: run by whoever holds a lane's lock (a writer claiming the lane, or
//! the reader finding a lane with no writer). It makes what the OS holds durable, finds
//! the valid end of the tail segment, and publishes the lane's watermark. A clean tail
//! (no torn write, no damage, nothing valid after its end) stays open, so the next writer
//! continues in it; any other tail is sealed at its valid end (this is how a torn tail is
//! cut off). Only the tail segment is scanned, from the watermark on, so recovery time does
//! not grow with the number of sealed segments.
//!
//! The steps, in order: drop tail segments whose creation never completed
//! ([`Recovery::never_held_records`]), make the tail durable and choose where its scan
//! starts ([`Recovery::scan_start`]), stop at a seal the watermark ends on, scan and report
//! damage, then either keep the tail open ([`Recovery::continuable`]) or seal it
//! ([`Recovery::seal`]), and publish the watermark.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::seal::{write_seal, SealAt};
use super::{list_all, LaneFiles, OpenedSegment, WatermarkFile};
use crate::error::{Corruption, CorruptionKind, Error, Event, Result};
use crate::format::{
    BadSegmentHeader, FileName, SegmentHeader, Watermark, ALIGN, RECORD_HEADER_LEN, SEAL_LEN,
    SEGMENT_HEADER_LEN,
};
use crate::fs::{OpenMode, StorageFile};
use crate::segment::{self, Scan, ScanContext};
use crate::types::{Position, SegmentId, Seq};

/// Where a recovered lane continues.
#[derive(Debug, Clone)]
pub(crate) struct LaneEnd {
    /// Id the lane's next segment takes; `None` when the newest id is `u64::MAX` (a roll
    /// is refused rather than wrapping to an id that may exist).
    pub next_segment: Option<SegmentId>,
    /// Sequence number the lane's next record takes.
    pub next_seq: Seq,
    /// Time of the newest record (0 if unknown).
    pub last_time_ns: u64,
    /// The unsealed, clean tail segment appends continue in (`None`: the next append
    /// starts segment `next_segment`).
    pub open_tail: Option<OpenTail>,
}

/// A lane's tail segment that appends may continue: everything in it up to `end` is
/// durable and valid, and nothing valid lies after `end`.
#[derive(Debug, Clone)]
pub(crate) struct OpenTail {
    pub segment: SegmentId,
    pub file: Arc<dyn StorageFile>,
    /// Where the next record goes: just past the last valid one.
    pub end: u64,
    /// The most bytes the file may grow to (from its header).
    pub capacity: u64,
    /// The file's length now: bytes already allocated.
    pub allocated: u64,
}

/// True when the lane (whose lock the caller holds) needs no recovery: its watermark names
/// the newest segment `newest` and either ends in a seal, or was written in this boot (so
/// it is exact) and nothing was written after it. A reader checks this every second for
/// each lane without a writer, so it must stay cheap: two small reads, no sync.
pub(super) fn is_settled(files: &LaneFiles<'_>, newest: Option<SegmentId>) -> bool {
    let Some((wm, boot)) = files.read_watermark_and_boot() else {
        return false;
    };
    if Some(wm.segment) != newest {
        return false;
    }
    if files.sealed_at(&wm) {
        return true;
    }
    if boot.is_unknown() || boot != files.storage.boot_id() {
        return false;
    }
    let Ok(file) = files
        .storage
        .open(&files.segment_path(wm.segment), OpenMode::Read)
    else {
        return false;
    };
    let mut after = [0u8; RECORD_HEADER_LEN];
    match file.read_exact_at(&mut after, wm.offset) {
        Ok(()) => after.iter().all(|&b| b == 0),
        Err(e) => {
            e.kind() == std::io::ErrorKind::UnexpectedEof
                && file.size().is_ok_and(|len| len <= wm.offset)
        }
    }
}

/// Recovers the tail of the lane, whose lock the caller holds. Appends what it found to
/// `events` and returns where the lane continues.
pub(super) fn recover_lane(
    files: &LaneFiles<'_>,
    len_max: u32,
    events: &mut Vec<Event>,
) -> Result<LaneEnd> {
    let stamped = files.read_watermark_and_boot();
    let mut rec = Recovery {
        files: *files,
        len_max,
        hint: stamped.map(|(w, _)| w),
        exact: stamped
            .is_some_and(|(_, boot)| !boot.is_unknown() && boot == files.storage.boot_id()),
        events,
    };
    let mut listing = list_all(files.storage, files.dir)?;
    // A foreign entry named like a segment (a symlink, a FIFO, a directory) is skipped as
    // if absent, but its id is taken: the lane's next segment goes after it, so that no
    // writer ever tries to create a file where it stands.
    let foreign_max = listing.foreign_segment_max(files.lane);
    let mut segs = listing.segments.remove(&files.lane).unwrap_or_default();
    while let Some(&id) = segs.last() {
        let tail = Tail::new(id, files.open_segment(id, OpenMode::ReadWrite)?);
        if rec.never_held_records(&tail)? {
            rec.remove_incomplete(&tail)?;
            segs.pop();
            continue;
        }
        let mut end = rec.recover_tail(&tail)?;
        if let Some(f) = foreign_max.filter(|f| *f > id) {
            // A clean tail is still continued; its roll seals it and skips the id.
            end.next_segment = f.checked_next();
        }
        return Ok(end);
    }
    Ok(rec.end_without_segments(foreign_max))
}

/// What recovery knows about the lane before it looks at the tail.
struct Recovery<'a, 'e> {
    files: LaneFiles<'a>,
    len_max: u32,
    /// The lane's watermark, if readable: everything before it was durable.
    hint: Option<Watermark>,
    /// The watermark was written in this boot, so it is exact: the OS kept everything
    /// written before it (only a process died), so nothing acknowledged lies past damage
    /// after it.
    exact: bool,
    events: &'e mut Vec<Event>,
}

/// The tail segment being recovered.
struct Tail {
    id: SegmentId,
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    header: std::result::Result<SegmentHeader, BadSegmentHeader>,
}

impl Tail {
    fn new(id: SegmentId, (file, path, header): OpenedSegment) -> Self {
        Self {
            id,
            file,
            path,
            header,
        }
    }
}

/// Where the tail's scan starts and what it may assume.
struct Start {
    from: u64,
    first_seq: Seq,
    durable_hint: u64,
    lookahead: bool,
}

/// The tail, made durable and scanned.
struct Scanned {
    data: Bytes,
    /// Where the scan started.
    from: u64,
    cx: ScanContext,
    scan: Scan,
    /// Where the tail stops being trustworthy: a torn write, or valid bytes left after
    /// the end that new records must not be appended in front of.
    torn_at: Option<u64>,
}

impl Recovery<'_, '_> {
    /// True for a tail whose header never became durable (zeroed or short) and that holds
    /// no record: it was created, never written. A zeroed header in front of valid frames
    /// is damage instead, recovered like any other.
    fn never_held_records(&self, tail: &Tail) -> Result<bool> {
        Ok(matches!(
            tail.header,
            Err(BadSegmentHeader::Zeroed | BadSegmentHeader::Short)
        ) && !self
            .files
            .holds_records(tail.file.as_ref(), &tail.path, tail.id, self.len_max)?)
    }

    fn remove_incomplete(&mut self, tail: &Tail) -> Result<()> {
        let (storage, dir) = (self.files.storage, self.files.dir);
        storage
            .remove_file(&tail.path)
            .map_err(|e| Error::io("remove", &tail.path, e))?;
        // IMPORTANT: make the removal durable before anything depends on it.
        storage
            .sync_dir(dir)
            .map_err(|e| Error::sync_failed("fsync dir", dir, e))?;
        self.events.push(Event::IncompleteSegmentRemoved {
            lane: self.files.lane,
            segment: tail.id,
        });
        Ok(())
    }

    /// No segment at all: the lane continues after whatever the watermark remembers, and
    /// after any foreign entry named like one of its segments.
    fn end_without_segments(&self, foreign_max: Option<SegmentId>) -> LaneEnd {
        let (next_segment, next_seq) = match self.hint {
            Some(w) => (w.segment.checked_next(), w.next_seq),
            None => (Some(SegmentId(1)), Seq(0)),
        };
        let mut end = LaneEnd {
            next_segment,
            next_seq,
            last_time_ns: 0,
            open_tail: None,
        };
        if let Some(f) = foreign_max.filter(|f| end.next_segment.is_some_and(|n| *f >= n)) {
            end.next_segment = f.checked_next();
        }
        end
    }

    fn recover_tail(&mut self, tail: &Tail) -> Result<LaneEnd> {
        // Whatever the OS holds of this segment (a killed writer's last batch) becomes
        // durable before we judge it, so what we keep cannot vanish in a later power loss.
        tail.file
            .sync_data()
            .map_err(|e| Error::sync_failed("fdatasync", &tail.path, e))?;
        let data = tail
            .file
            .map()
            .map_err(|e| Error::io("map", &tail.path, e))?;
        let start = self.scan_start(tail, &data);
        if let Some(end) = self.sealed_at_watermark(tail) {
            return Ok(end);
        }
        let scanned = self.scan(tail, data, &start);
        let open_tail = self.continuable(tail, &scanned);
        let end = match (&scanned.scan.seal, &open_tail) {
            (Some(_), _) | (None, Some(_)) => scanned.scan.end,
            (None, None) => self.seal(tail, &scanned)?,
        };
        let wm = Watermark {
            segment: tail.id,
            offset: end,
            next_seq: scanned.scan.next_seq,
        };
        WatermarkFile::open(&self.files)?.publish(self.files.storage, &wm)?;
        Ok(LaneEnd {
            next_segment: tail.id.checked_next(),
            next_seq: scanned.scan.next_seq,
            last_time_ns: scanned.scan.last_time_ns,
            open_tail,
        })
    }

    /// Where to scan from: the watermark when it lies in this segment and within the file
    /// (looking past damage after it only when it may be stale), else the header. A bad
    /// header is reported; the scan then takes its first sequence number from the first
    /// valid frame.
    fn scan_start(&mut self, tail: &Tail, data: &[u8]) -> Start {
        let header_start = SEGMENT_HEADER_LEN as u64;
        let hint_here = self
            .hint
            .filter(|w| w.segment == tail.id && w.offset >= header_start);
        // Everything before the watermark was durable; damage there is corruption even
        // when the scan has to start at the header because the file no longer reaches it.
        let durable_hint = hint_here.map_or(header_start, |w| w.offset);
        let from_header = |first_seq| Start {
            from: header_start,
            first_seq,
            durable_hint,
            lookahead: true,
        };
        match (hint_here, &tail.header) {
            (Some(w), _) if w.offset <= data.len() as u64 => Start {
                from: w.offset,
                first_seq: w.next_seq,
                durable_hint: w.offset,
                lookahead: !self.exact,
            },
            (_, Ok(h)) => from_header(h.first_seq),
            (_, Err(_)) => {
                self.events.push(Event::Corruption {
                    corruption: self.corruption(tail, 0, CorruptionKind::BadHeader),
                    resumed_at: Position {
                        segment: tail.id,
                        offset: header_start,
                    },
                    records_lost: None,
                });
                let cx = self.scan_cx(tail.id, 0, Seq(0), true);
                let first = segment::find_next_valid(data, header_start, &cx);
                from_header(first.map_or(Seq(0), |(_, h)| h.seq))
            }
        }
    }

    /// The lane was sealed cleanly where its watermark ends: nothing to scan or publish.
    fn sealed_at_watermark(&self, tail: &Tail) -> Option<LaneEnd> {
        let least = SEGMENT_HEADER_LEN as u64 + SEAL_LEN;
        let w = self
            .hint
            .filter(|w| w.segment == tail.id && w.offset >= least)?;
        self.files.sealed_at(&w).then(|| LaneEnd {
            next_segment: tail.id.checked_next(),
            next_seq: w.next_seq,
            last_time_ns: 0,
            open_tail: None,
        })
    }

    /// Scans the tail from `start` and reports the damage found in it.
    fn scan(&mut self, tail: &Tail, data: Bytes, start: &Start) -> Scanned {
        let cx = self.scan_cx(
            tail.id,
            start.durable_hint,
            start.first_seq,
            start.lookahead,
        );
        let scan = segment::scan(&data, start.from, &cx);
        for d in &scan.damage {
            self.events.push(Event::Corruption {
                corruption: self.corruption(tail, d.offset, d.kind),
                resumed_at: Position {
                    segment: tail.id,
                    offset: d.resumed_at.unwrap_or(scan.end),
                },
                records_lost: d.records_lost,
            });
        }
        let leftovers = scan.seal.is_none()
            && scan.torn_at.is_none()
            && !nothing_valid_after(&data, scan.end, &cx);
        let torn_at = scan.torn_at.or(leftovers.then_some(scan.end));
        Scanned {
            data,
            from: start.from,
            cx,
            scan,
            torn_at,
        }
    }

    /// The tail as the next writer continues it, when that is safe: unsealed, nothing torn
    /// or damaged, room left for a seal, the whole segment agreeing with the scan, and no
    /// cursor past its end. A damaged segment is not written to again.
    fn continuable(&self, tail: &Tail, s: &Scanned) -> Option<OpenTail> {
        let h = tail.header.as_ref().ok()?;
        let end_here = Position {
            segment: tail.id,
            offset: s.scan.end,
        };
        let clean = s.scan.seal.is_none()
            && s.torn_at.is_none()
            && s.scan.damage.is_empty()
            && s.scan.end + SEAL_LEN <= h.size_bytes;
        (clean
            && whole_segment_agrees(&s.data, s.from, &s.scan, &s.cx, h)
            && !self.cursor_beyond(end_here))
        .then(|| OpenTail {
            segment: tail.id,
            file: tail.file.clone(),
            end: s.scan.end,
            capacity: h.size_bytes,
            allocated: s.data.len() as u64,
        })
    }

    /// Seals the tail at its valid end (cutting off a torn tail there); returns the offset
    /// after the seal.
    fn seal(&mut self, tail: &Tail, s: &Scanned) -> Result<u64> {
        let lane = self.files.lane;
        if let Some(at) = s.torn_at {
            tracing::info!(%lane, segment = tail.id.0, offset = at, "cutting off torn tail left by a crash");
            self.events.push(Event::TornTail {
                lane,
                at: Position {
                    segment: tail.id,
                    offset: at,
                },
            });
        }
        let capacity = tail.header.as_ref().map_or(0, |h| h.size_bytes);
        write_seal(
            tail.file.as_ref(),
            &tail.path,
            &SealAt {
                lane,
                segment: tail.id,
                at: s.scan.end,
                next_seq: s.scan.next_seq,
                last_time_ns: s.scan.last_time_ns,
            },
            // A file cut short (by hand) may be extended up to its capacity to hold the
            // seal, rather than leaving the lane unrecoverable.
            capacity.max(s.data.len() as u64),
        )
    }

    /// True when a cursor's checkpoint has this lane past `end`: records it consumed were
    /// lost (a disk that dropped durable data, a restored backup). New records must then
    /// not go where those were: the tail is sealed and the lane goes on in a new segment,
    /// so the reader reports the cursor past the end and delivers what comes next instead
    /// of skipping it or reading from the middle of a new record.
    fn cursor_beyond(&self, end: Position) -> bool {
        let (storage, dir) = (self.files.storage, self.files.dir);
        let Ok(names) = storage.list_dir(dir) else {
            // Unknown: sealing is always safe.
            return true;
        };
        names
            .iter()
            .filter_map(|n| match FileName::parse(n) {
                Some(FileName::Checkpoint(name)) => crate::cursor::peek(storage, dir, &name),
                _ => None,
            })
            .filter_map(|c| c.lanes.get(&self.files.lane).copied())
            .any(|p| (p.position.segment, p.position.offset) > (end.segment, end.offset))
    }

    fn corruption(&self, tail: &Tail, offset: u64, kind: CorruptionKind) -> Corruption {
        Corruption {
            path: tail.path.clone(),
            lane: Some(self.files.lane),
            segment: Some(tail.id),
            offset,
            kind,
        }
    }

    fn scan_cx(
        &self,
        segment: SegmentId,
        durable_hint: u64,
        first_seq: Seq,
        lookahead: bool,
    ) -> ScanContext {
        ScanContext {
            lane: self.files.lane,
            segment,
            len_max: self.len_max,
            durable_hint,
            first_seq,
            lookahead,
        }
    }
}

/// True when the whole segment, scanned from its header, ends where the scan from `from`
/// (the watermark) ended, with the same next sequence number and nothing damaged on the
/// way. New records may only follow records whose sequence numbers they continue: were
/// the watermark wrong (a damaged or crafted file), a reader would take them for stale
/// copies of older ones. The scan is over the tail segment only, once per open.
fn whole_segment_agrees(
    data: &[u8],
    from: u64,
    scan: &Scan,
    cx: &ScanContext,
    header: &SegmentHeader,
) -> bool {
    let header_start = SEGMENT_HEADER_LEN as u64;
    if from == header_start && cx.first_seq == header.first_seq {
        return true;
    }
    let whole = segment::scan(
        data,
        header_start,
        &ScanContext {
            first_seq: header.first_seq,
            ..*cx
        },
    );
    whole.end == scan.end
        && whole.next_seq == scan.next_seq
        && whole.seal.is_none()
        && whole.torn_at.is_none()
        && whole.damage.is_empty()
}

/// True when no valid frame of the segment lies after `end`. The scan already searched
/// the rest of the file when it looked ahead; with an exact watermark it did not, and a
/// frame found here (bytes an earlier write left behind) must not be appended in front
/// of, so the tail is sealed instead.
fn nothing_valid_after(data: &[u8], end: u64, cx: &ScanContext) -> bool {
    cx.lookahead || segment::find_next_valid(data, end + ALIGN, cx).is_none()
}
