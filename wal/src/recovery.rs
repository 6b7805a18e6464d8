//! Lane tail recovery: run by whoever holds a lane's lock (a writer claiming the lane, or
//! the reader finding a lane with no writer). It makes what the OS holds durable, finds
//! the valid end of the tail segment, and publishes the lane's watermark. A clean tail
//! (no torn write, no damage, nothing valid after its end) stays open, so the next writer
//! continues in it; any other tail is sealed at its valid end (this is how a torn tail is
//! cut off). Only the tail segment is scanned, from the watermark on, so recovery time does
//! not grow with the number of sealed segments.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Corruption, CorruptionKind, Error, Event, Result};
use crate::format::{
    decode_frame, encode_record, BadSegmentHeader, BootId, FileName, Frame, RecordHeader,
    RecordKind, Watermark, ALIGN, RECORD_HEADER_LEN, SEAL_LEN, SEGMENT_HEADER_LEN, WATERMARK_LEN,
};
use crate::fs::{join, OpenMode, Storage, StorageFile};
use crate::segment::{self, ScanContext};
use crate::types::{now_ns, LaneId, Position, SegmentId, Seq};

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

/// Reads a lane's watermark; `None` if missing, torn or unreadable.
pub(crate) fn read_watermark(storage: &dyn Storage, dir: &Path, lane: LaneId) -> Option<Watermark> {
    read_watermark_and_boot(storage, dir, lane).map(|(w, _)| w)
}

/// Reads a lane's watermark and the boot it was written in.
fn read_watermark_and_boot(
    storage: &dyn Storage,
    dir: &Path,
    lane: LaneId,
) -> Option<(Watermark, BootId)> {
    let path = join(dir, &FileName::Watermark(lane));
    let file = storage.open(&path, OpenMode::Read).ok()?;
    let mut buf = [0u8; WATERMARK_LEN];
    file.read_exact_at(&mut buf, 0).ok()?;
    Watermark::decode(&buf)
}

/// Opens (creating if needed) a lane's watermark file.
pub(crate) fn open_watermark(
    storage: &dyn Storage,
    dir: &Path,
    lane: LaneId,
) -> Result<Arc<dyn StorageFile>> {
    let path = join(dir, &FileName::Watermark(lane));
    let file = storage
        .open(&path, OpenMode::Create)
        .map_err(|e| Error::io("open", &path, e))?;
    // IMPORTANT: the entry must survive a power loss like the segments it describes.
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync dir", dir, e))?;
    Ok(file)
}

/// Publishes a watermark, stamped with the current boot. Never synced: it only tells live
/// readers how far data is durable, and it is written after the data's sync returned.
pub(crate) fn publish(
    storage: &dyn Storage,
    file: &dyn StorageFile,
    wm: &Watermark,
    dir: &Path,
) -> Result<()> {
    file.write_all_at(&wm.encode(&storage.boot_id()), 0)
        .map_err(|e| Error::io("write watermark", dir, e))
}

/// True when the frame that ends at the watermark is a seal: the lane was closed cleanly
/// and needs no recovery.
pub(crate) fn sealed_at(storage: &dyn Storage, dir: &Path, lane: LaneId, wm: &Watermark) -> bool {
    let Some(start) = wm.offset.checked_sub(SEAL_LEN) else {
        return false;
    };
    let path = join(dir, &FileName::Segment(lane, wm.segment));
    let Ok(file) = storage.open(&path, OpenMode::Read) else {
        return false;
    };
    let mut buf = [0u8; SEAL_LEN as usize];
    if file.read_exact_at(&mut buf, start).is_err() {
        return false;
    }
    // Decode against a buffer holding just the seal: offset 0, no payload.
    matches!(
        decode_frame(&buf, 0, lane, wm.segment, 0),
        Frame::Record { header, .. } if header.kind == RecordKind::Seal
    )
}

/// True when `lane` (whose lock the caller holds) needs no recovery: its watermark names
/// the newest segment `newest` and either ends in a seal, or was written in this boot (so
/// it is exact) and nothing was written after it. A reader checks this every second for
/// each lane without a writer, so it must stay cheap: two small reads, no sync.
pub(crate) fn is_settled(
    storage: &dyn Storage,
    dir: &Path,
    lane: LaneId,
    newest: Option<SegmentId>,
) -> bool {
    let Some((wm, boot)) = read_watermark_and_boot(storage, dir, lane) else {
        return false;
    };
    if Some(wm.segment) != newest {
        return false;
    }
    if sealed_at(storage, dir, lane, &wm) {
        return true;
    }
    if boot.is_unknown() || boot != storage.boot_id() {
        return false;
    }
    let path = join(dir, &FileName::Segment(lane, wm.segment));
    let Ok(file) = storage.open(&path, OpenMode::Read) else {
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

/// Recovers the tail of `lane`, whose lock the caller holds. Appends what it found to
/// `events` and returns where the lane continues.
pub(crate) fn recover_lane(
    storage: &dyn Storage,
    dir: &Path,
    lane: LaneId,
    len_max: u32,
    events: &mut Vec<Event>,
) -> Result<LaneEnd> {
    let stamped = read_watermark_and_boot(storage, dir, lane);
    let hint = stamped.map(|(w, _)| w);
    // A watermark written in this boot is exact: the OS kept everything written before it
    // (only a process died), so nothing acknowledged lies past damage after it.
    let exact = stamped.is_some_and(|(_, boot)| !boot.is_unknown() && boot == storage.boot_id());
    let mut listing = segment::list_all(storage, dir)?;
    // A foreign entry named like a segment (a symlink, a FIFO, a directory) is skipped as
    // if absent, but its id is taken: the lane's next segment goes after it, so that no
    // writer ever tries to create a file where it stands.
    let foreign_max = listing.foreign_segment_max(lane);
    let mut segs = listing.segments.remove(&lane).unwrap_or_default();
    while let Some(&tail) = segs.last() {
        let (file, path, header) = segment::open(storage, dir, lane, tail, OpenMode::ReadWrite)?;
        match header {
            Err(BadSegmentHeader::Zeroed | BadSegmentHeader::Short)
                if !holds_records(file.as_ref(), &path, lane, tail, len_max)? =>
            {
                // Created, but the header never became durable: it never held a record.
                // (A zeroed header in front of valid frames is damage, recovered below.)
                storage
                    .remove_file(&path)
                    .map_err(|e| Error::io("remove", &path, e))?;
                // IMPORTANT: make the removal durable before anything depends on it.
                storage
                    .sync_dir(dir)
                    .map_err(|e| Error::io("fsync dir", dir, e))?;
                events.push(Event::IncompleteSegmentRemoved {
                    lane,
                    segment: tail,
                });
                segs.pop();
            }
            header => {
                let mut end = recover_segment(
                    exact, storage, dir, lane, tail, &file, header, hint, len_max, events,
                )?;
                if let Some(f) = foreign_max.filter(|f| *f > tail) {
                    // A clean tail is still continued; its roll seals it and skips the id.
                    end.next_segment = f.checked_next();
                }
                return Ok(end);
            }
        }
    }
    // No segment at all: continue after whatever the watermark remembers.
    let mut end = match hint {
        Some(w) => LaneEnd {
            next_segment: w.segment.checked_next(),
            next_seq: w.next_seq,
            last_time_ns: 0,
            open_tail: None,
        },
        None => LaneEnd {
            next_segment: Some(SegmentId(1)),
            next_seq: Seq(0),
            last_time_ns: 0,
            open_tail: None,
        },
    };
    if let Some(f) = foreign_max.filter(|f| end.next_segment.is_some_and(|n| *f >= n)) {
        end.next_segment = f.checked_next();
    }
    Ok(end)
}

/// True when a segment holds at least one valid frame of its lane after the header.
fn holds_records(
    file: &dyn StorageFile,
    path: &Path,
    lane: LaneId,
    segment: SegmentId,
    len_max: u32,
) -> Result<bool> {
    let data = file.map().map_err(|e| Error::io("map", path, e))?;
    let cx = scan_cx(lane, segment, len_max, 0, Seq(0), true);
    Ok(segment::find_next_valid(&data, SEGMENT_HEADER_LEN as u64, &cx).is_some())
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the context is the lane's"
)]
fn recover_segment(
    exact: bool,
    storage: &dyn Storage,
    dir: &Path,
    lane: LaneId,
    tail: SegmentId,
    file: &Arc<dyn StorageFile>,
    header: std::result::Result<crate::format::SegmentHeader, BadSegmentHeader>,
    hint: Option<Watermark>,
    len_max: u32,
    events: &mut Vec<Event>,
) -> Result<LaneEnd> {
    let path = join(dir, &FileName::Segment(lane, tail));
    // Whatever the OS holds of this segment (a killed writer's last batch) becomes durable
    // before we judge it, so what we keep cannot vanish in a later power loss.
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &path, e))?;
    let data = file.map().map_err(|e| Error::io("map", &path, e))?;
    let header_start = SEGMENT_HEADER_LEN as u64;
    let hint_here = hint.filter(|w| w.segment == tail && w.offset >= header_start);
    // Everything before the watermark was durable; damage there is corruption even when
    // the scan has to start at the header because the file no longer reaches the mark.
    let durable_end = hint_here.map_or(header_start, |w| w.offset);
    let mut lookahead = true;
    let (from, first_seq, durable_hint) = match (hint_here, &header) {
        (Some(w), _) if w.offset <= data.len() as u64 => {
            lookahead = !exact;
            (w.offset, w.next_seq, w.offset)
        }
        (_, Ok(h)) => (header_start, h.first_seq, durable_end),
        (_, Err(_)) => {
            events.push(Event::Corruption {
                corruption: Corruption {
                    path: path.clone(),
                    lane: Some(lane),
                    segment: Some(tail),
                    offset: 0,
                    kind: CorruptionKind::BadHeader,
                },
                resumed_at: Position {
                    segment: tail,
                    offset: header_start,
                },
                records_lost: None,
            });
            let cx = scan_cx(lane, tail, len_max, 0, Seq(0), true);
            let first = segment::find_next_valid(&data, header_start, &cx);
            (
                header_start,
                first.map_or(Seq(0), |(_, h)| h.seq),
                durable_end,
            )
        }
    };
    if let Some(w) = hint.filter(|w| w.segment == tail && w.offset >= header_start + SEAL_LEN) {
        if sealed_at(storage, dir, lane, &w) {
            return Ok(LaneEnd {
                next_segment: tail.checked_next(),
                next_seq: w.next_seq,
                last_time_ns: 0,
                open_tail: None,
            });
        }
    }
    let cx = scan_cx(lane, tail, len_max, durable_hint, first_seq, lookahead);
    let scan = segment::scan(&data, from, &cx);
    for d in &scan.damage {
        events.push(Event::Corruption {
            corruption: Corruption {
                path: path.clone(),
                lane: Some(lane),
                segment: Some(tail),
                offset: d.offset,
                kind: d.kind,
            },
            resumed_at: Position {
                segment: tail,
                offset: d.resumed_at.unwrap_or(scan.end),
            },
            records_lost: d.records_lost,
        });
    }
    // A clean tail stays open for the next writer. Anything else is sealed: a torn tail
    // is cut off there, and a damaged segment is not written to again.
    let unsealed = scan.seal.is_none();
    let leftovers =
        unsealed && scan.torn_at.is_none() && !nothing_valid_after(&data, scan.end, &cx, lookahead);
    let torn_at = scan.torn_at.or(leftovers.then_some(scan.end));
    let capacity = header.as_ref().map_or(0, |h| h.size_bytes);
    let end_here = Position {
        segment: tail,
        offset: scan.end,
    };
    let open_tail = match &header {
        Ok(h)
            if unsealed
                && torn_at.is_none()
                && scan.damage.is_empty()
                && scan.end + SEAL_LEN <= h.size_bytes
                && whole_segment_agrees(&data, from, &scan, &cx, h)
                && !cursor_beyond(storage, dir, lane, end_here) =>
        {
            Some(OpenTail {
                segment: tail,
                file: file.clone(),
                end: scan.end,
                capacity: h.size_bytes,
                allocated: data.len() as u64,
            })
        }
        _ => None,
    };
    let end = match (unsealed, &open_tail) {
        (false, _) | (true, Some(_)) => scan.end,
        (true, None) => {
            if let Some(at) = torn_at {
                tracing::info!(%lane, segment = tail.0, offset = at, "cutting off torn tail left by a crash");
                events.push(Event::TornTail {
                    lane,
                    at: Position {
                        segment: tail,
                        offset: at,
                    },
                });
            }
            write_seal(
                file.as_ref(),
                &path,
                &SealAt {
                    lane,
                    segment: tail,
                    at: scan.end,
                    next_seq: scan.next_seq,
                    last_time_ns: scan.last_time_ns,
                },
                // A file cut short (by hand) may be extended up to its capacity to hold
                // the seal, rather than leaving the lane unrecoverable.
                capacity.max(data.len() as u64),
            )?
        }
    };
    let wm = Watermark {
        segment: tail,
        offset: end,
        next_seq: scan.next_seq,
    };
    let wm_file = open_watermark(storage, dir, lane)?;
    publish(storage, wm_file.as_ref(), &wm, dir)?;
    Ok(LaneEnd {
        next_segment: tail.checked_next(),
        next_seq: scan.next_seq,
        last_time_ns: scan.last_time_ns,
        open_tail,
    })
}

/// True when the whole segment, scanned from its header, ends where the scan from `from`
/// (the watermark) ended, with the same next sequence number and nothing damaged on the
/// way. New records may only follow records whose sequence numbers they continue: were
/// the watermark wrong (a damaged or crafted file), a reader would take them for stale
/// copies of older ones. The scan is over the tail segment only, once per open.
fn whole_segment_agrees(
    data: &[u8],
    from: u64,
    scan: &segment::Scan,
    cx: &ScanContext,
    header: &crate::format::SegmentHeader,
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

/// True when a cursor's checkpoint has this lane past `end`: records it consumed were
/// lost (a disk that dropped durable data, a restored backup). New records must then not
/// go where those were: the tail is sealed and the lane goes on in a new segment, so the
/// reader reports the cursor past the end and delivers what comes next instead of
/// skipping it or reading from the middle of a new record.
fn cursor_beyond(storage: &dyn Storage, dir: &Path, lane: LaneId, end: Position) -> bool {
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
        .filter_map(|c| c.lanes.get(&lane).copied())
        .any(|p| (p.position.segment, p.position.offset) > (end.segment, end.offset))
}

/// True when no valid frame of the segment lies after `end`. The scan already searched
/// the rest of the file when it looked ahead; with an exact watermark it did not, and a
/// frame found here (bytes an earlier write left behind) must not be appended in front
/// of, so the tail is sealed instead.
fn nothing_valid_after(data: &[u8], end: u64, cx: &ScanContext, looked_ahead: bool) -> bool {
    looked_ahead || segment::find_next_valid(data, end + ALIGN, cx).is_none()
}

fn scan_cx(
    lane: LaneId,
    segment: SegmentId,
    len_max: u32,
    durable_hint: u64,
    first_seq: Seq,
    lookahead: bool,
) -> ScanContext {
    ScanContext {
        lane,
        segment,
        len_max,
        durable_hint,
        first_seq,
        lookahead,
    }
}

/// Where a seal goes and what it carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SealAt {
    pub lane: LaneId,
    pub segment: SegmentId,
    /// Offset of the seal: just past the segment's last valid record.
    pub at: u64,
    /// The lane's next unused sequence number.
    pub next_seq: Seq,
    /// Time of the newest record (0: unknown, the seal takes the current time).
    pub last_time_ns: u64,
}

/// Writes and syncs a seal; returns the offset after it. `file_len` is how far the file
/// may extend (the seal must fit within it).
pub(crate) fn write_seal(
    file: &dyn StorageFile,
    path: &Path,
    seal: &SealAt,
    file_len: u64,
) -> Result<u64> {
    let &SealAt {
        lane,
        segment,
        at,
        next_seq,
        last_time_ns,
    } = seal;
    if at + SEAL_LEN > file_len {
        return Err(Error::Corrupt(Corruption {
            path: path.to_path_buf(),
            lane: Some(lane),
            segment: Some(segment),
            offset: at,
            kind: CorruptionKind::Truncated,
        }));
    }
    let seal = RecordHeader {
        len: 0,
        kind: RecordKind::Seal,
        lane,
        batch_start: u32::try_from(at).unwrap_or(u32::MAX),
        segment,
        seq: next_seq,
        time_ns: if last_time_ns == 0 {
            now_ns()
        } else {
            last_time_ns
        },
    };
    let mut buf = Vec::with_capacity(SEAL_LEN as usize);
    encode_record(&mut buf, &seal, &[]);
    file.write_all_at(&buf, at)
        .map_err(|e| Error::io("write seal", path, e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", path, e))?;
    Ok(at + SEAL_LEN)
}
