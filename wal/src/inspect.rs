//! Offline checks and listings for operators: `verify` reads every record of a queue
//! directory and reports damage; `inspect` describes lanes, segments and cursors.

use std::collections::BTreeMap;
use std::path::Path;

use crate::cursor::{self, LanePosition};
use crate::error::{Corruption, CorruptionKind, Result};
use crate::format::{decode_frame, FileName, Frame, SEGMENT_HEADER_LEN};
use crate::fs::{join, OpenMode, Storage};
use crate::options::Options;
use crate::recovery;
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
}

impl VerifyReport {
    /// True when nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty() && self.checkpoints.iter().all(|(_, ok)| *ok)
    }
}

/// Checks the checksum of every record, segment header and checkpoint in `dir`. Read-only.
pub fn verify(dir: impl AsRef<Path>, opts: &Options) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let storage = opts.storage.as_ref();
    let mut report = VerifyReport::default();
    for (lane, segs) in segment::list(storage, dir)? {
        let wm = recovery::read_watermark(storage, dir, lane);
        let tail = segs.last().copied();
        for seg in segs {
            verify_segment(
                storage,
                dir,
                lane,
                seg,
                Some(seg) == tail,
                wm,
                opts,
                &mut report,
            )?;
        }
    }
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
        report.checkpoints.push((name, ok));
    }
    Ok(report)
}

#[expect(
    clippy::too_many_arguments,
    reason = "walks one segment with its lane's context"
)]
fn verify_segment(
    storage: &dyn Storage,
    dir: &Path,
    lane: LaneId,
    seg: SegmentId,
    is_tail: bool,
    wm: Option<crate::format::Watermark>,
    opts: &Options,
    report: &mut VerifyReport,
) -> Result<()> {
    // A segment consumed and deleted by a running reader since the listing is no damage.
    let Some((file, path, header)) = segment::open_if_present(storage, dir, lane, seg)? else {
        return Ok(());
    };
    report.segments += 1;
    let first_seq = match header {
        Ok(h) => h.first_seq,
        Err(_) => {
            report.damage.push(Corruption {
                path: path.clone(),
                lane: Some(lane),
                segment: Some(seg),
                offset: 0,
                kind: CorruptionKind::BadHeader,
            });
            Seq(0)
        }
    };
    let data = file
        .map()
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
        first_seq,
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
    if let Some(at) = scan.torn_at {
        report.torn_tails.push((
            lane,
            Position {
                segment: seg,
                offset: at,
            },
        ));
    }
    Ok(())
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
            _ => match segment::find_next_valid(data, off + 8, cx) {
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
    /// The durable end as last published (position and next sequence number).
    pub durable_end: Option<(Position, Seq)>,
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
}

/// Describes lanes, segments and cursors of `dir` without changing anything.
pub fn inspect(dir: impl AsRef<Path>, opts: &Options) -> Result<Inspection> {
    let dir = dir.as_ref();
    let storage = opts.storage.as_ref();
    let mut out = Inspection::default();
    let all = segment::list(storage, dir)?;
    for (lane, segs) in &all {
        let mut info = LaneInfo {
            lane: *lane,
            writer_active: is_locked(storage, &join(dir, &FileName::LaneLock(*lane))),
            segments: Vec::new(),
            durable_end: recovery::read_watermark(storage, dir, *lane).map(|w| {
                (
                    Position {
                        segment: w.segment,
                        offset: w.offset,
                    },
                    w.next_seq,
                )
            }),
        };
        for seg in segs {
            let Some((file, _, header)) = segment::open_if_present(storage, dir, *lane, *seg)?
            else {
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
                record_time(storage, dir, lane.lane, position.position, opts)
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

/// Enqueue time of the record at `p` (following a seal into the next segment).
fn record_time(
    storage: &dyn Storage,
    dir: &Path,
    lane: LaneId,
    p: Position,
    opts: &Options,
) -> Option<u64> {
    let mut seg = p.segment;
    let mut off = p.offset;
    for _ in 0..2 {
        let (file, _, _) = segment::open(storage, dir, lane, seg, OpenMode::Read).ok()?;
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
