//! Following one lane for the reader: follows the lane's segments up to its durable end (the watermark),
//! decodes frames from a bounded window of the segment's map, steps over damage, and
//! remembers what was delivered but not yet acknowledged.
//!
//! Windows keep memory bounded: a reader maps at most `WINDOW_BYTES` (2 MiB) of a segment
//! per lane at a time (more only to hold one larger record), so the pages it touches, which
//! count toward the process's resident memory, stay bounded however large segments and
//! backlogs are.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::cursor::LanePosition;
use crate::error::{Corruption, CorruptionKind, Error, Event, Result};
use crate::format::{
    self, decode_frame, frame_len, BadRecord, Frame, RecordKind, UncheckedHeader, Watermark,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::fs::OpenMode;
use crate::lane::LaneFiles;
use crate::segment::{self, ScanContext};
use crate::types::{LaneId, Position, Record, RecordId, SegmentId};

/// Bytes of a segment mapped at a time (rounded to pages; larger for a larger record).
/// Every page read through a window stays resident until the window is dropped, so this
/// bounds the reader's file-backed memory per lane.
const WINDOW_BYTES: u64 = 2 << 20;
/// Map offsets are multiples of this (the page size on every supported platform).
const PAGE: u64 = 4096;

/// A mapped range of a segment.
#[derive(Debug, Clone)]
struct Window {
    segment: SegmentId,
    /// File offset of `bytes[0]`.
    start: u64,
    bytes: Bytes,
    /// Length of the whole file when mapped.
    file_len: u64,
    /// The durable end this window was mapped for (`None`: a complete, older segment). A
    /// non-live map is a snapshot that shows nothing written after it was taken.
    covered: Option<u64>,
}

impl Window {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

/// Where a decoded frame's window lies in its file (offsets in a `Frame` are relative to
/// `start`).
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    file_len: u64,
}

#[derive(Debug)]
pub(super) struct LaneFollower {
    pub lane: LaneId,
    /// Largest payload accepted (`Options::record_bytes_max`).
    len_max: u32,
    /// Next record not yet acknowledged.
    pub acked: LanePosition,
    /// Next record not yet delivered.
    pub read: LanePosition,
    /// Set when reading moved `acked` by itself (over a seal or quarantined bytes), so the
    /// reader knows a checkpoint has something to save.
    pub acked_moved: bool,
    /// Delivered, unacknowledged: (seq, position after the record).
    pub delivered: VecDeque<(crate::types::Seq, LanePosition)>,
    pub watermark: Option<Watermark>,
    /// The last data frame accepted in this lane. A valid frame of the same segment with a
    /// sequence number at or below it is a misdirected or stale read of an older record,
    /// never a new one: it is quarantined, not delivered again.
    last_read: Option<(SegmentId, crate::types::Seq)>,
    window: Option<Window>,
    pub peeked: Option<Record>,
    pub last_owner_check: Instant,
    /// A watermark found naming a segment after every segment of the lane (crafted, or
    /// left by files deleted by hand). Reported once; until the watermark changes (a
    /// writer's next append or recovery publishes a new one) the lane waits where it is
    /// instead of quarantining what lies past the real end, in a loop.
    distrusted: Option<Watermark>,
    /// The read position's segment is a foreign file and no later segment exists: the
    /// lane waits (without logging again) until one does.
    stalled_on: Option<SegmentId>,
    /// The last foreign segment reported by this lane.
    foreign_reported: Option<SegmentId>,
}

impl LaneFollower {
    pub fn new(
        lane: LaneId,
        start: LanePosition,
        watermark: Option<Watermark>,
        len_max: u32,
    ) -> Self {
        Self {
            lane,
            len_max,
            acked: start,
            read: start,
            acked_moved: false,
            delivered: VecDeque::new(),
            watermark,
            last_read: None,
            window: None,
            peeked: None,
            last_owner_check: Instant::now(),
            distrusted: None,
            stalled_on: None,
            foreign_reported: None,
        }
    }

    /// Forgets what was read ahead and resumes at `to` (retention moved the cursor).
    pub fn jump(&mut self, to: LanePosition) {
        self.acked = to;
        if self.read < to {
            self.read = to;
            self.peeked = None;
            self.window = None;
        }
        self.delivered.retain(|(s, _)| *s >= to.next_seq);
    }

    /// Hands out the peeked record and remembers it as delivered.
    pub fn take(&mut self) -> Option<Record> {
        let r = self.peeked.take()?;
        let after = LanePosition {
            position: Position {
                segment: r.id.position.segment,
                offset: r.id.position.offset + frame_len(r.payload.len() as u32),
            },
            next_seq: r.id.seq.next(),
        };
        self.delivered.push_back((r.id.seq, after));
        Some(r)
    }

    fn caught_up(&self, w: &Watermark) -> bool {
        self.read.position
            >= Position {
                segment: w.segment,
                offset: w.offset,
            }
    }

    fn refresh_watermark(&mut self, files: LaneFiles<'_>) {
        let fresh = files.read_watermark();
        self.watermark = fresh.or(self.watermark);
    }

    /// Decodes (once) the lane's next durable record.
    pub fn peek(
        &mut self,
        files: LaneFiles<'_>,
        events: &mut Vec<Event>,
    ) -> Result<Option<&Record>> {
        if self.peeked.is_some() {
            return Ok(self.peeked.as_ref());
        }
        let mut refreshed = false;
        loop {
            let wm = match self.watermark {
                Some(w) if self.distrusted == Some(w) => {
                    if refreshed {
                        return Ok(None);
                    }
                    self.refresh_watermark(files);
                    refreshed = true;
                    continue;
                }
                Some(w) if !self.caught_up(&w) => w,
                _ if refreshed => return Ok(None),
                _ => {
                    self.refresh_watermark(files);
                    refreshed = true;
                    continue;
                }
            };
            let seg = self.read.position.segment;
            let limit_in_seg = (seg == wm.segment).then_some(wm.offset);
            let off = self.read.position.offset;
            let Some((frame, w)) = self.frame_at(files, seg, off, limit_in_seg, events)? else {
                if self.stalled_on == Some(self.read.position.segment) {
                    return Ok(None);
                }
                continue;
            };
            self.stalled_on = None;
            let limit = limit_in_seg.unwrap_or(w.file_len);
            match frame {
                Frame::Record {
                    header,
                    payload_start,
                    next,
                } if w.start + next <= limit && !self.is_replay(seg, &header) => {
                    let next = w.start + next;
                    if header.kind == RecordKind::Seal {
                        // Nothing after the seal is readable before the watermark moves to a
                        // later segment; until then do not list the directory each poll (an
                        // idle lane rests at its seal).
                        if wm.segment <= seg {
                            if refreshed {
                                return Ok(None);
                            }
                            self.refresh_watermark(files);
                            refreshed = true;
                            continue;
                        }
                        if !self.next_segment(files)? {
                            // The watermark names a later segment, and there is none.
                            self.distrust(wm, files, events);
                            return Ok(None);
                        }
                        continue;
                    }
                    if header.seq != self.read.next_seq {
                        events.push(Event::Gap {
                            lane: self.lane,
                            expected: self.read.next_seq,
                            found: header.seq,
                        });
                    }
                    let Some(window) = &self.window else {
                        continue;
                    };
                    let payload = window
                        .bytes
                        .slice(payload_start..payload_start + header.len as usize);
                    let id = RecordId {
                        lane: self.lane,
                        seq: header.seq,
                        position: self.read.position,
                    };
                    self.read = LanePosition {
                        position: Position {
                            segment: seg,
                            offset: next,
                        },
                        next_seq: header.seq.next(),
                    };
                    self.last_read = Some((seg, header.seq));
                    self.peeked = Some(Record {
                        id,
                        time_ns: header.time_ns,
                        payload,
                    });
                    return Ok(self.peeked.as_ref());
                }
                // Past the real end of the lane's last segment, under a watermark that
                // names a segment that does not exist: nothing here is durable data.
                _ if wm.segment > seg && !self.later_segment_exists(files, seg)? => {
                    self.distrust(wm, files, events);
                    return Ok(None);
                }
                Frame::Record { .. } if w.start + frame_end(&frame) <= limit => {
                    let misplaced = Frame::Bad(BadRecord::Misplaced);
                    self.quarantine(off, limit, misplaced, files, events)?;
                }
                bad => self.quarantine(off, limit, bad, files, events)?,
            }
        }
    }

    /// True when the lane has a (regular) segment after `seg`.
    fn later_segment_exists(&self, files: LaneFiles<'_>, seg: SegmentId) -> Result<bool> {
        Ok(files.segments()?.iter().any(|id| *id > seg))
    }

    /// Stops trusting `wm`, which names a segment after every segment the lane has:
    /// reported once (ERROR log and a corruption event), then ignored until it changes.
    fn distrust(&mut self, wm: Watermark, files: LaneFiles<'_>, events: &mut Vec<Event>) {
        if self.distrusted == Some(wm) {
            return;
        }
        self.distrusted = Some(wm);
        let corruption = Corruption {
            path: files.watermark_path(),
            lane: Some(self.lane),
            segment: Some(wm.segment),
            offset: 0,
            kind: CorruptionKind::StaleWatermark,
        };
        tracing::error!(%corruption, read = %self.read.position, "lane watermark is stale; the lane waits at its real end until a new watermark is published");
        events.push(Event::Corruption {
            corruption,
            resumed_at: self.read.position,
            records_lost: None,
        });
    }

    /// Decodes the frame at `off` of segment `seg`, mapping a window that holds it. `None`
    /// when the segment is gone and reading moved on.
    fn frame_at(
        &mut self,
        files: LaneFiles<'_>,
        seg: SegmentId,
        off: u64,
        durable: Option<u64>,
        events: &mut Vec<Event>,
    ) -> Result<Option<(Frame, Span)>> {
        let header = RECORD_HEADER_LEN as u64;
        if !self.window_for(files, seg, off, header, durable, events)? {
            return Ok(None);
        }
        let (frame, span) = self.decode_in_window(off, seg, self.len_max);
        // A frame cut by the end of the file is truncated only if the file has not grown
        // since it was mapped: what is durable now may lie past that end.
        let grown = durable.is_some_and(|d| d > span.file_len);
        if frame != Frame::Bad(BadRecord::Truncated) || (span.end >= span.file_len && !grown) {
            return Ok(Some((frame, span)));
        }
        // The frame runs past the window: map one that holds it. Its length field is not
        // verified yet, but a length over the limit decodes as `BadLength`, not
        // `Truncated`, so here it is at most `record_bytes_max`.
        let need = frame_len(self.len_field(off).min(self.len_max));
        if !self.window_for(files, seg, off, need, durable, events)? {
            return Ok(None);
        }
        Ok(Some(self.decode_in_window(off, seg, self.len_max)))
    }

    /// True for a valid data frame that repeats (or precedes) one already accepted from
    /// this segment: the disk returned an older record where a newer one belongs.
    fn is_replay(&self, seg: SegmentId, header: &crate::format::RecordHeader) -> bool {
        header.kind == RecordKind::Data
            && self
                .last_read
                .is_some_and(|(s, q)| s == seg && header.seq <= q)
    }

    /// The (unverified) length field of the frame header at file offset `off`.
    fn len_field(&self, off: u64) -> u32 {
        self.window
            .as_ref()
            .and_then(|w| UncheckedHeader::at(&w.bytes, off - w.start).payload_len())
            .unwrap_or(0)
    }

    /// Decodes the frame at file offset `off` from the current window.
    fn decode_in_window(&self, off: u64, seg: SegmentId, len_max: u32) -> (Frame, Span) {
        match &self.window {
            Some(w) => (
                decode_frame(&w.bytes, off - w.start, self.lane, seg, len_max),
                Span {
                    start: w.start,
                    end: w.end(),
                    file_len: w.file_len,
                },
            ),
            None => (
                Frame::Bad(BadRecord::Truncated),
                Span {
                    start: off,
                    end: off,
                    file_len: off,
                },
            ),
        }
    }

    /// Makes the current window one of `seg` holding `[off, off + need)` (clipped to the
    /// file), keeping the current one when it does and is fresh enough. False when the
    /// segment is gone and reading moved on.
    fn window_for(
        &mut self,
        files: LaneFiles<'_>,
        seg: SegmentId,
        off: u64,
        need: u64,
        durable: Option<u64>,
        events: &mut Vec<Event>,
    ) -> Result<bool> {
        if let Some(w) = &self.window {
            // A window that reaches the end of the file as it was when mapped holds
            // everything after `off` only if nothing durable lies past that end: segments
            // are allocated in steps while they are being read.
            let grown = durable.is_some_and(|d| d > w.file_len);
            let holds = w.segment == seg
                && w.start <= off
                && (off + need <= w.end() || (w.end() >= w.file_len && !grown));
            let fresh = files.storage().maps_are_live()
                || match (w.covered, durable) {
                    (None, _) => true,
                    (Some(c), Some(d)) => c >= d,
                    (Some(_), None) => false,
                };
            if holds && fresh {
                return Ok(true);
            }
        }
        let path = files.segment_path(seg);
        let file = match files.storage().open(&path, OpenMode::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.skip_missing(files, seg, events, e)?;
                return Ok(false);
            }
            Err(e) if crate::fs::not_regular_kind(&e).is_some() => {
                // Swapped for a foreign file (or a cursor left in one): never read it,
                // report it once and go on with the next segment, as for a missing one.
                if let Some(kind) = crate::fs::not_regular_kind(&e) {
                    if self.foreign_reported != Some(seg) {
                        self.foreign_reported = Some(seg);
                        events.push(super::foreign::event(&path, kind));
                    }
                }
                self.skip_missing(files, seg, events, e)?;
                return Ok(false);
            }
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let start = off / PAGE * PAGE;
        let len = (off - start + need).max(WINDOW_BYTES).div_ceil(PAGE) * PAGE;
        let file_len = file.size().map_err(|e| Error::io("stat", &path, e))?;
        let bytes = file
            .map_range(start, len)
            .map_err(|e| Error::io("map", &path, e))?;
        self.window = Some(Window {
            segment: seg,
            start,
            bytes,
            file_len,
            covered: durable,
        });
        Ok(true)
    }

    /// The segment being read was deleted under us (by hand, or by another tool): move to
    /// the next segment that exists and report the sequence gap.
    fn skip_missing(
        &mut self,
        files: LaneFiles<'_>,
        seg: SegmentId,
        events: &mut Vec<Event>,
        cause: std::io::Error,
    ) -> Result<()> {
        let segs = files.segments()?;
        let Some(&next) = segs.iter().find(|s| **s > seg) else {
            if crate::fs::not_regular_kind(&cause).is_some() {
                // Reported already; wait for a later segment.
                self.stalled_on = Some(seg);
                return Ok(());
            }
            return Err(Error::io("open", files.segment_path(seg), cause));
        };
        self.stalled_on = None;
        let (_, _, h) = files.open_segment(next, OpenMode::Read)?;
        let first_seq = h.map_or(self.read.next_seq, |h| h.first_seq);
        events.push(Event::Gap {
            lane: self.lane,
            expected: self.read.next_seq,
            found: first_seq,
        });
        self.read = LanePosition {
            position: Position {
                segment: next,
                offset: SEGMENT_HEADER_LEN as u64,
            },
            next_seq: first_seq,
        };
        self.window = None;
        Ok(())
    }

    /// After a seal at the read position: moves to the next segment if it exists.
    fn next_segment(&mut self, files: LaneFiles<'_>) -> Result<bool> {
        let seg = self.read.position.segment;
        let segs = files.segments()?;
        let Some(&next) = segs.iter().find(|s| **s > seg) else {
            return Ok(false);
        };
        let to = LanePosition {
            position: Position {
                segment: next,
                offset: SEGMENT_HEADER_LEN as u64,
            },
            next_seq: self.read.next_seq,
        };
        if self.acked == self.read {
            self.acked = to;
            self.acked_moved = true;
        }
        self.read = to;
        self.window = None;
        Ok(true)
    }

    /// Steps over damaged durable bytes at `off`: reports them and resumes at the next
    /// valid frame (or the end of what is durable). Damage is rare, so this maps the whole
    /// segment to search it.
    fn quarantine(
        &mut self,
        off: u64,
        limit: u64,
        bad: Frame,
        files: LaneFiles<'_>,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let seg = self.read.position.segment;
        let path = files.segment_path(seg);
        let whole = files
            .storage()
            .open(&path, OpenMode::Read)
            .and_then(|f| f.map())
            .map_err(|e| Error::io("map", &path, e))?;
        let cx = ScanContext {
            lane: self.lane,
            segment: seg,
            len_max: self.len_max,
            durable_hint: limit,
            first_seq: self.read.next_seq,
            lookahead: true,
        };
        let within =
            whole.slice(..usize::try_from(limit).map_or(whole.len(), |l| l.min(whole.len())));
        let mut next = segment::find_next_valid(&within, off + format::ALIGN, &cx);
        while let Some((at, h)) = next {
            if !self.is_replay(seg, &h) {
                break;
            }
            next = segment::find_next_valid(&within, at + format::ALIGN, &cx);
        }
        let kind = match bad {
            Frame::Bad(b) => segment::bad_record_kind(b),
            Frame::Empty => CorruptionKind::Zeroed,
            Frame::Record { .. } => CorruptionKind::Truncated,
        };
        let (resume, records_lost, next_seq) = match next {
            Some((at, h)) => (at, h.seq.0.checked_sub(self.read.next_seq.0), h.seq),
            None => (limit, None, self.read.next_seq),
        };
        let corruption = Corruption {
            path,
            lane: Some(self.lane),
            segment: Some(seg),
            offset: off,
            kind,
        };
        tracing::error!(%corruption, resume, "quarantined damaged records; reading continues after them");
        events.push(Event::Corruption {
            corruption,
            resumed_at: Position {
                segment: seg,
                offset: resume,
            },
            records_lost,
        });
        let to = LanePosition {
            position: Position {
                segment: seg,
                offset: resume,
            },
            next_seq,
        };
        if self.acked == self.read && self.delivered.is_empty() {
            self.acked = to;
            self.acked_moved = true;
        }
        self.read = to;
        self.window = None;
        if next.is_none() && Some(seg) != self.watermark.map(|w| w.segment) {
            // The rest of a sealed segment is unreadable: continue with the next one.
            self.next_segment(files)?;
        }
        Ok(())
    }
}

/// Offset (relative to its window) where a decoded record frame ends.
fn frame_end(frame: &Frame) -> u64 {
    match frame {
        Frame::Record { next, .. } => *next,
        _ => 0,
    }
}
