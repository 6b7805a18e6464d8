//! Offline checks and listings for operators: `verify` reads every record of a queue
//! directory and reports damage; `inspect` describes lanes, segments and cursors.
//!
//! Neither trusts what it has not checked: a lane's published durable end (its watermark)
//! is used only when it matches the segment files, and `verify` checks that each lane's
//! records follow on without a gap from segment to segment.

mod extent;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cursor::{self, LanePosition};
use crate::error::{Corruption, CorruptionKind, Result};
use crate::format::{decode_frame, FileName, Frame, Watermark, SEGMENT_HEADER_LEN};
use crate::fs::{join, FileKind, OpenMode, Storage};
use crate::lane::{self, LaneFiles};
use crate::options::Options;
use crate::segment::{self, ScanContext};
use crate::types::{LaneId, Position, SegmentId, Seq};

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: u64,
    /// Valid data records.
    pub records: u64,
    /// Payload bytes in valid records.
    pub payload_bytes: u64,
    /// Damage inside durable data.
    pub damage: Vec<Corruption>,
    /// Lanes whose newest segment ends in a torn (never acknowledged) write; recovery cuts
    /// these off. On a live queue the batch being written can show up here.
    pub torn_tails: Vec<(LaneId, Position)>,
    /// Cursor checkpoints checked, with whether a valid slot was found.
    pub checkpoints: Vec<(String, bool)>,
    /// Records missing between segments, entries that are not segments, checkpoints
    /// missing although records were consumed: the lanes do not add up.
    pub gaps: Vec<Gap>,
    /// Entries named like queue files (segments, watermarks, checkpoints, locks) that are
    /// not regular files: the queue never opens them, so what they stand for is missing.
    pub foreign: Vec<ForeignEntry>,
}

impl VerifyReport {
    /// True when nothing is damaged, every lane adds up and no foreign entry is there.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
            && self.gaps.is_empty()
            && self.foreign.is_empty()
            && self.checkpoints.iter().all(|(_, ok)| *ok)
    }
}

/// An entry named like one of the queue's files that is not a regular file (a FIFO, a
/// directory, a symlink, dangling or not, a socket, a device). The queue never follows,
/// opens or removes it; `verify`, `inspect` and the reader report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignEntry {
    /// The entry.
    pub path: PathBuf,
    /// What it is.
    pub kind: FileKind,
    /// The queue file its name stands for.
    pub name: FileName,
}

impl std::fmt::Display for ForeignEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.name {
            FileName::Segment(lane, seg) => format!("{seg} of {lane}"),
            FileName::Watermark(lane) => format!("the watermark of {lane}"),
            FileName::LaneLock(lane) => format!("the writer lock of {lane}"),
            FileName::Checkpoint(c) => format!("the checkpoint of cursor '{c}'"),
            FileName::CursorLock(c) => format!("the reader lock of cursor '{c}'"),
        };
        write!(
            f,
            "{}: named like {what} but is {}, not a regular file: it cannot be opened as a \
             queue file and is never followed, read or removed (move it out of the queue \
             directory; a segment's records in it are not in the queue)",
            self.path.display(),
            self.kind
        )
    }
}

/// The entries of `dir` named like queue files that are not regular files (see
/// [`ForeignEntry`]), from one directory listing: nothing is opened.
pub fn foreign(dir: impl AsRef<Path>, opts: &Options) -> Result<Vec<ForeignEntry>> {
    let listing = lane::list_all(opts.storage.as_ref(), dir.as_ref())?;
    Ok(foreign_entries(&listing))
}

fn foreign_entries(listing: &lane::Listing) -> Vec<ForeignEntry> {
    listing
        .foreign
        .iter()
        .map(|f| ForeignEntry {
            path: f.path.clone(),
            kind: f.kind,
            name: f.name.clone(),
        })
        .collect()
}

/// A lane that does not add up (see [`VerifyReport::gaps`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The file (or, for a missing file, the place it belongs).
    pub path: PathBuf,
    /// The lane, when the problem belongs to one.
    pub lane: Option<LaneId>,
    /// What is wrong.
    pub kind: GapKind,
}

/// What [`Gap`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapKind {
    /// Sequence numbers `from..to` of the lane are in no segment: between the segment
    /// named by the gap's path and the one before it (a segment file missing mid-lane),
    /// or at the lane's end (its durable end says more records exist than the files hold).
    MissingRecords {
        /// First missing sequence number.
        from: Seq,
        /// One past the last missing one.
        to: Seq,
    },
    /// A segment that is not its lane's newest ends without a seal: it was cut short.
    Unsealed {
        /// Where its valid records end.
        end: u64,
    },
    /// The directory lists a segment name that cannot be opened as a file (a dangling
    /// symlink, or the file vanished without a reader consuming it).
    Unopenable,
    /// Records were consumed (the lane's oldest segment starts at this sequence number,
    /// not 0) but no cursor has a valid checkpoint: a reader starts over from the oldest
    /// segment (a deleted, emptied or destroyed checkpoint file).
    CheckpointMissing {
        /// First sequence number of the lane's oldest segment.
        oldest_seq: Seq,
    },
    /// A cursor's checkpoint is at a sequence number older than the lane's oldest
    /// segment: records between were deleted without being consumed.
    CursorBeforeOldest {
        /// The cursor's next sequence number in the lane.
        cursor_seq: Seq,
        /// First sequence number of the lane's oldest segment.
        oldest_seq: Seq,
    },
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(lane) = self.lane {
            write!(f, " ({lane})")?;
        }
        match self.kind {
            GapKind::MissingRecords { from, to } => write!(
                f,
                ": records seq {}..{} ({} records) are missing (a segment file deleted or moved?)",
                from.0,
                to.0,
                to.0.saturating_sub(from.0)
            ),
            GapKind::Unsealed { end } => write!(
                f,
                ": segment ends at offset {end} without a seal although its lane goes on in a \
                 later segment (cut short: truncated or overwritten)"
            ),
            GapKind::Unopenable => write!(
                f,
                ": listed as a segment but cannot be opened (a dangling symlink?)"
            ),
            GapKind::CheckpointMissing { oldest_seq } => write!(
                f,
                ": records were consumed (the oldest segment starts at seq {}) but no cursor \
                 checkpoint is valid: the reader will deliver again from the oldest segment",
                oldest_seq.0
            ),
            GapKind::CursorBeforeOldest {
                cursor_seq,
                oldest_seq,
            } => write!(
                f,
                ": the cursor checkpoint is at seq {} but the oldest segment starts at seq {}: \
                 records in between were deleted without being consumed",
                cursor_seq.0, oldest_seq.0
            ),
        }
    }
}

/// Checks the checksum of every record, segment header and checkpoint in `dir`, and that
/// each lane's records follow on from segment to segment up to its durable end. Read-only;
/// costs what the data costs (segments are read up to their capacity, holes skipped).
pub fn verify(dir: impl AsRef<Path>, opts: &Options) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let storage = opts.storage.as_ref();
    let mut report = VerifyReport::default();
    let listing = lane::list_all(storage, dir)?;
    report.foreign = foreign_entries(&listing);
    let lanes = listing.segments;
    let mut oldest: BTreeMap<LaneId, Seq> = BTreeMap::new();
    for (lane, segs) in &lanes {
        let files = LaneFiles::new(storage, dir, *lane);
        let walk = verify_lane(files, segs, opts, &mut report)?;
        if let Some(first) = walk {
            oldest.insert(*lane, first);
        }
    }
    let mut any_valid_checkpoint = false;
    for name in cursor_names(storage, dir)? {
        let ok = !cursor::is_damaged(storage, dir, &name);
        if !ok {
            report.damage.push(Corruption {
                path: join(dir, &FileName::Checkpoint(name.clone())),
                lane: None,
                segment: None,
                offset: 0,
                kind: CorruptionKind::BadHeader,
            });
        }
        if let Some(cp) = cursor::peek(storage, dir, &name) {
            any_valid_checkpoint = true;
            for (lane, at) in &cp.lanes {
                match oldest.get(lane) {
                    Some(first) if at.next_seq < *first => report.gaps.push(Gap {
                        path: join(dir, &FileName::Checkpoint(name.clone())),
                        lane: Some(*lane),
                        kind: GapKind::CursorBeforeOldest {
                            cursor_seq: at.next_seq,
                            oldest_seq: *first,
                        },
                    }),
                    _ => {}
                }
            }
        }
        report.checkpoints.push((name, ok));
    }
    if !any_valid_checkpoint {
        for (lane, first) in &oldest {
            if first.0 > 0 {
                report.gaps.push(Gap {
                    path: dir.to_path_buf(),
                    lane: Some(*lane),
                    kind: GapKind::CheckpointMissing { oldest_seq: *first },
                });
            }
        }
    }
    Ok(report)
}

/// Verifies the segments of one lane, oldest first, and that each starts where the one
/// before it ended. Returns the first sequence number of its oldest segment (`None` when
/// that one is unreadable or vanished during the walk).
fn verify_lane(
    files: LaneFiles<'_>,
    segs: &[SegmentId],
    opts: &Options,
    report: &mut VerifyReport,
) -> Result<Option<Seq>> {
    let (storage, dir, lane) = (files.storage(), files.dir(), files.lane());
    let wm = files.read_watermark();
    let tail = segs.last().copied();
    let mut oldest = None;
    // The lane's next sequence number after the segments checked so far (None: unknown,
    // after a damaged header or before the first segment).
    let mut expected: Option<Seq> = None;
    for &seg in segs {
        let walked = verify_segment(files, seg, Some(seg) == tail, wm, opts, report)?;
        let Some(walked) = walked else {
            // Gone since the listing: consumed by a running reader (oldest first), so the
            // sequence starts over; still listed: an entry that is no file.
            let path = join(dir, &FileName::Segment(lane, seg));
            let still_listed = storage
                .list_dir(dir)
                .map_err(|e| crate::error::Error::io("list", dir, e))?
                .iter()
                .any(|n| FileName::parse(n) == Some(FileName::Segment(lane, seg)));
            if still_listed {
                // Its records are missing too: the next segment shows how many.
                report.gaps.push(Gap {
                    path,
                    lane: Some(lane),
                    kind: GapKind::Unopenable,
                });
            } else {
                expected = None;
            }
            continue;
        };
        if let (Some(want), Some(first)) = (expected, walked.first_seq) {
            if first > want {
                report.gaps.push(Gap {
                    path: join(dir, &FileName::Segment(lane, seg)),
                    lane: Some(lane),
                    kind: GapKind::MissingRecords {
                        from: want,
                        to: first,
                    },
                });
            }
        }
        if Some(&seg) == segs.first() {
            // Only the first listed segment tells where the lane starts: when it vanished
            // during the walk, a running reader consumed it (after its checkpoint).
            oldest = walked.first_seq;
        }
        if Some(seg) != tail && !walked.sealed {
            report.gaps.push(Gap {
                path: join(dir, &FileName::Segment(lane, seg)),
                lane: Some(lane),
                kind: GapKind::Unsealed { end: walked.end },
            });
        }
        expected = walked.first_seq.map(|_| walked.next_seq);
    }
    // The published durable end may claim more than the files hold (the newest segment,
    // or its end, missing).
    if let (Some(w), Some(have), Some(t)) = (wm, expected, tail) {
        // A watermark naming a newer segment than the listing showed is a writer that
        // rolled since; it is a gap only when that segment is not there.
        let newer_exists = w.segment > t && files.open_segment_if_present(w.segment)?.is_some();
        if w.next_seq > have && w.segment >= t && !newer_exists {
            report.gaps.push(Gap {
                path: join(dir, &FileName::Segment(lane, w.segment)),
                lane: Some(lane),
                kind: GapKind::MissingRecords {
                    from: have,
                    to: w.next_seq,
                },
            });
        }
    }
    Ok(oldest)
}

/// What walking one segment found, for the lane's continuity check.
struct Walked {
    /// From a valid header.
    first_seq: Option<Seq>,
    next_seq: Seq,
    sealed: bool,
    end: u64,
}

/// Walks segment `seg` of the lane (`is_tail`: its newest), adding what it finds to
/// `report`. `None` when the segment is gone.
fn verify_segment(
    files: LaneFiles<'_>,
    seg: SegmentId,
    is_tail: bool,
    wm: Option<Watermark>,
    opts: &Options,
    report: &mut VerifyReport,
) -> Result<Option<Walked>> {
    let lane = files.lane();
    // A segment consumed and deleted by a running reader since the listing is no damage.
    let Some((file, path, header)) = files.open_segment_if_present(seg)? else {
        return Ok(None);
    };
    report.segments += 1;
    let first_seq = match header {
        Ok(h) => Some(h.first_seq),
        Err(_) => {
            report.damage.push(Corruption {
                path: path.clone(),
                lane: Some(lane),
                segment: Some(seg),
                offset: 0,
                kind: CorruptionKind::BadHeader,
            });
            None
        }
    };
    let data = extent::segment_bytes(file.as_ref(), &path, &header, opts.segment_bytes)
        .map_err(|e| crate::error::Error::io("map", &path, e))?;
    let durable_hint = match wm {
        _ if !is_tail => data.len() as u64,
        Some(w) if w.segment == seg => w.offset,
        _ => SEGMENT_HEADER_LEN as u64,
    };
    let cx = ScanContext {
        lane,
        segment: seg,
        len_max: opts.record_bytes_max,
        durable_hint,
        first_seq: first_seq.unwrap_or(Seq(0)),
        lookahead: true,
    };
    let scan = segment::scan(&data, SEGMENT_HEADER_LEN as u64, &cx);
    report.records += scan.records;
    report.payload_bytes += payload_bytes(&data, &cx, scan.end);
    for d in scan.damage {
        report.damage.push(Corruption {
            path: path.clone(),
            lane: Some(lane),
            segment: Some(seg),
            offset: d.offset,
            kind: d.kind,
        });
    }
    match scan.torn_at {
        // Only the newest segment of a lane can end in a write that was never
        // acknowledged; in an older one everything was durable before the lane went on,
        // so a bad frame there is damage, not a torn tail.
        Some(at) if is_tail => report.torn_tails.push((
            lane,
            Position {
                segment: seg,
                offset: at,
            },
        )),
        Some(at) => report.damage.push(Corruption {
            path: path.clone(),
            lane: Some(lane),
            segment: Some(seg),
            offset: at,
            kind: CorruptionKind::Truncated,
        }),
        None => {}
    }
    Ok(Some(Walked {
        first_seq,
        next_seq: scan.next_seq,
        sealed: scan.seal.is_some(),
        end: scan.end,
    }))
}

fn payload_bytes(data: &[u8], cx: &ScanContext, end: u64) -> u64 {
    let mut off = SEGMENT_HEADER_LEN as u64;
    let mut total = 0;
    while off < end {
        match decode_frame(data, off, cx.lane, cx.segment, cx.len_max) {
            Frame::Record { header, next, .. } => {
                total += u64::from(header.len);
                off = next;
            }
            _ => match segment::find_next_valid(data, off + crate::format::ALIGN, cx) {
                Some((at, _)) => off = at,
                None => break,
            },
        }
    }
    total
}

fn cursor_names(storage: &dyn Storage, dir: &Path) -> Result<Vec<String>> {
    let names = storage
        .list_dir(dir)
        .map_err(|e| crate::error::Error::io("list", dir, e))?;
    let mut out: Vec<String> = names
        .iter()
        .filter_map(|n| match FileName::parse(n) {
            Some(FileName::Checkpoint(c)) => Some(c),
            _ => None,
        })
        .collect();
    out.sort();
    Ok(out)
}

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment id.
    pub id: SegmentId,
    /// First sequence number in it (`None` if the header is damaged).
    pub first_seq: Option<Seq>,
    /// Creation time, unix nanoseconds.
    pub created_ns: Option<u64>,
    /// Size on disk (preallocated).
    pub size_bytes: u64,
}

/// One lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneInfo {
    /// Lane id.
    pub lane: LaneId,
    /// True when a writer holds the lane now.
    pub writer_active: bool,
    /// Segments, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// The durable end (position and next sequence number): the published watermark when
    /// it matches the segment files, else the valid end found by scanning the newest
    /// segment (see `end_source`).
    pub durable_end: Option<(Position, Seq)>,
    /// Where `durable_end` comes from.
    pub end_source: EndSource,
}

/// Where a lane's durable end in an [`Inspection`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EndSource {
    /// The lane's watermark, checked against the segment files (its crc, its segment
    /// exists, the records up to its offset end exactly there with its sequence number).
    Watermark,
    /// The watermark is missing, torn or does not match the files (after a power loss,
    /// or crafted): the end is the valid end of the newest segment, found by scanning it.
    /// A reader or writer recovering the lane publishes a new watermark.
    Scanned,
    /// No segment of the lane could be read.
    #[default]
    Unknown,
}

/// One cursor's standing in one lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorLane {
    /// Checkpointed position.
    pub position: LanePosition,
    /// Durable records not yet acknowledged.
    pub pending: u64,
    /// Enqueue time of the oldest pending record, unix nanoseconds.
    pub oldest_pending_ns: Option<u64>,
}

/// One cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorInfo {
    /// Cursor name.
    pub name: String,
    /// True when a reader holds the cursor now.
    pub reader_active: bool,
    /// Checkpoint generation (0: never checkpointed).
    pub generation: u64,
    /// Per lane.
    pub lanes: BTreeMap<LaneId, CursorLane>,
}

/// A description of a queue directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    /// Lanes with at least one segment.
    pub lanes: Vec<LaneInfo>,
    /// Cursors with a checkpoint file.
    pub cursors: Vec<CursorInfo>,
    /// Bytes the segment files occupy.
    pub segment_bytes: u64,
    /// Entries named like queue files that are not regular files (see [`ForeignEntry`]).
    pub foreign: Vec<ForeignEntry>,
}

/// Describes lanes, segments and cursors of `dir` without changing anything.
pub fn inspect(dir: impl AsRef<Path>, opts: &Options) -> Result<Inspection> {
    let dir = dir.as_ref();
    let storage = opts.storage.as_ref();
    let mut out = Inspection::default();
    let listing = lane::list_all(storage, dir)?;
    out.foreign = foreign_entries(&listing);
    let all = listing.segments;
    for (lane, segs) in &all {
        let files = LaneFiles::new(storage, dir, *lane);
        let (durable_end, end_source) = lane_end(files, segs, opts)?;
        let mut info = LaneInfo {
            lane: *lane,
            writer_active: is_locked(storage, &files.lock_path()),
            segments: Vec::new(),
            durable_end,
            end_source,
        };
        for seg in segs {
            let Some((file, _, header)) = files.open_segment_if_present(*seg)? else {
                continue;
            };
            let size_bytes = file.size().unwrap_or(0);
            out.segment_bytes += size_bytes;
            let h = header.ok();
            info.segments.push(SegmentInfo {
                id: *seg,
                first_seq: h.map(|h| h.first_seq),
                created_ns: h.map(|h| h.created_ns),
                size_bytes,
            });
        }
        out.lanes.push(info);
    }
    for name in cursor_names(storage, dir)? {
        let cp = cursor::peek(storage, dir, &name).unwrap_or_default();
        let mut ci = CursorInfo {
            reader_active: is_locked(storage, &join(dir, &FileName::CursorLock(name.clone()))),
            name,
            generation: cp.generation,
            lanes: BTreeMap::new(),
        };
        for lane in &out.lanes {
            let position = cp
                .lanes
                .get(&lane.lane)
                .copied()
                .unwrap_or_else(|| LanePosition {
                    position: Position {
                        segment: lane.segments.first().map_or(SegmentId(1), |s| s.id),
                        offset: SEGMENT_HEADER_LEN as u64,
                    },
                    next_seq: lane
                        .segments
                        .first()
                        .and_then(|s| s.first_seq)
                        .unwrap_or(Seq(0)),
                });
            let pending = lane
                .durable_end
                .map_or(0, |(_, end)| end.0.saturating_sub(position.next_seq.0));
            let oldest_pending_ns = if pending > 0 {
                record_time(
                    LaneFiles::new(storage, dir, lane.lane),
                    position.position,
                    opts,
                )
            } else {
                None
            };
            ci.lanes.insert(
                lane.lane,
                CursorLane {
                    position,
                    pending,
                    oldest_pending_ns,
                },
            );
        }
        out.cursors.push(ci);
    }
    Ok(out)
}

/// A lane's durable end, verified (see [`EndSource`]): never a watermark the segment files
/// contradict, so `pending` is neither 0 for a lane holding records nor absurd.
fn lane_end(
    files: LaneFiles<'_>,
    segs: &[SegmentId],
    opts: &Options,
) -> Result<(Option<(Position, Seq)>, EndSource)> {
    let place = |segment, offset, next| Some((Position { segment, offset }, next));
    if let Some(w) = files.read_watermark() {
        if segs.contains(&w.segment) {
            let checked = scan_end(files, w.segment, Some(w.offset), opts)?;
            if checked == Some((w.offset, w.next_seq)) {
                return Ok((place(w.segment, w.offset, w.next_seq), EndSource::Watermark));
            }
        }
    }
    for &seg in segs.iter().rev() {
        if let Some((end, next)) = scan_end(files, seg, None, opts)? {
            return Ok((place(seg, end, next), EndSource::Scanned));
        }
    }
    Ok((None, EndSource::Unknown))
}

/// The valid end of segment `seg` and the sequence number after its last record, scanning
/// its frames up to `upto` (a claimed end) or to its end. `None` when the segment is gone,
/// its header is damaged (no first sequence number), or `upto` lies outside its data.
fn scan_end(
    files: LaneFiles<'_>,
    seg: SegmentId,
    upto: Option<u64>,
    opts: &Options,
) -> Result<Option<(u64, Seq)>> {
    let Some((file, path, header)) = files.open_segment_if_present(seg)? else {
        return Ok(None);
    };
    let Ok(h) = header else { return Ok(None) };
    let data = extent::segment_bytes(file.as_ref(), &path, &header, opts.segment_bytes)
        .map_err(|e| crate::error::Error::io("map", &path, e))?;
    let len = data.len() as u64;
    let data = match upto {
        Some(end) if end < SEGMENT_HEADER_LEN as u64 || end > len => return Ok(None),
        Some(end) => data.slice(..usize::try_from(end).unwrap_or(usize::MAX)),
        None => data,
    };
    let cx = ScanContext {
        lane: files.lane(),
        segment: seg,
        len_max: opts.record_bytes_max,
        durable_hint: upto.unwrap_or(0),
        first_seq: h.first_seq,
        lookahead: true,
    };
    let scan = segment::scan(&data, SEGMENT_HEADER_LEN as u64, &cx);
    Ok(Some((scan.end, scan.next_seq)))
}

/// Enqueue time of the record at `p` (following a seal into the next segment).
fn record_time(files: LaneFiles<'_>, p: Position, opts: &Options) -> Option<u64> {
    let lane = files.lane();
    let mut seg = p.segment;
    let mut off = p.offset;
    for _ in 0..2 {
        let (file, _, _) = files.open_segment(seg, OpenMode::Read).ok()?;
        let data = file.map().ok()?;
        match decode_frame(&data, off, lane, seg, opts.record_bytes_max) {
            Frame::Record { header, .. } if header.kind == crate::format::RecordKind::Data => {
                return Some(header.time_ns)
            }
            Frame::Record { .. } => {
                seg = seg.checked_next()?;
                off = SEGMENT_HEADER_LEN as u64;
            }
            _ => return None,
        }
    }
    None
}

/// True when someone holds the lock at `path` (checked by trying to take it).
fn is_locked(storage: &dyn Storage, path: &Path) -> bool {
    if storage.open(path, OpenMode::Read).is_err()
        && storage
            .list_dir(path.parent().unwrap_or(Path::new(".")))
            .is_ok()
    {
        // No lock file: nobody ever held it (real file system); the simulated disk keeps
        // locks apart from files, so fall through to trying.
        if storage.maps_are_live() {
            return false;
        }
    }
    matches!(storage.try_lock(path), Ok(None))
}
