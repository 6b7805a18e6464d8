//! Segment files: creation (preallocated, header synced, directory synced), listing, and
//! the scanner that walks a segment's frames and tells a torn tail from corruption.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{
    self, decode_frame, BadRecord, BadSegmentHeader, FileName, Frame, RecordHeader, RecordKind,
    SegmentHeader, ALIGN, SEGMENT_HEADER_LEN,
};
use crate::fs::{FileKind, OpenMode, Storage, StorageFile};
use crate::types::{now_ns, LaneId, SegmentId, Seq};

/// A newly created segment file.
#[derive(Debug, Clone)]
pub(crate) struct SegmentFile {
    pub file: Arc<dyn StorageFile>,
}

/// How much of a new segment to allocate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allocation {
    /// The most bytes the segment may grow to (written into its header).
    pub capacity: u64,
    /// Bytes allocated now; later steps are allocated as records arrive.
    pub first: u64,
}

/// Creates segment `id` of `lane`: allocate its first step, write and sync the header,
/// sync the dir. On failure nothing is left behind (a half-made file is removed).
pub(crate) fn create(
    storage: &dyn Storage,
    dir: &Path,
    lane: LaneId,
    id: SegmentId,
    first_seq: Seq,
    allocation: Allocation,
) -> Result<SegmentFile> {
    let path = dir.join(FileName::Segment(lane, id).render());
    let file = match storage.open(&path, OpenMode::CreateNew) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            remove_if_never_used(storage, dir, lane, id, &path)?;
            storage
                .open(&path, OpenMode::CreateNew)
                .map_err(|e| Error::io("create", &path, e))?
        }
        Err(e) => return Err(Error::io("create", &path, e)),
    };
    let header = SegmentHeader {
        lane,
        segment: id,
        first_seq,
        created_ns: now_ns(),
        size_bytes: allocation.capacity,
    };
    let size_bytes = allocation.first;
    let made = file
        .allocate(size_bytes)
        .map_err(|e| (e, "fallocate"))
        .and_then(|()| {
            file.write_all_at(&header.encode(), 0)
                .map_err(|e| (e, "write header"))
        })
        .and_then(|()| file.sync_data().map_err(|e| (e, "fdatasync")));
    if let Err((e, op)) = made {
        let _ = storage.remove_file(&path);
        let _ = storage.sync_dir(dir);
        if e.raw_os_error() == Some(28) {
            return Err(Error::NoSpace {
                path: dir.to_path_buf(),
                available_bytes: storage.available_bytes(dir).unwrap_or(0),
                needed_bytes: size_bytes,
            });
        }
        return Err(Error::io(op, &path, e));
    }
    // IMPORTANT: the new directory entry must be durable before any record in it is
    // acknowledged, or a power loss could drop the whole file.
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync dir", dir, e))?;
    Ok(SegmentFile { file })
}

/// A file already named like the segment a writer is about to create. It may be left by an
/// earlier failed creation of ours (no valid header, no record: removed), or it may hold
/// records (a stray copy, or a lane whose ids were reused): then nothing is removed and the
/// creation fails, because deleting it could delete acknowledged records.
fn remove_if_never_used(
    storage: &dyn Storage,
    dir: &Path,
    lane: LaneId,
    id: SegmentId,
    path: &Path,
) -> Result<()> {
    let (file, _, header) = open(storage, dir, lane, id, OpenMode::Read)?;
    let data = file.map().map_err(|e| Error::io("map", path, e))?;
    let cx = ScanContext {
        lane,
        segment: id,
        len_max: u32::MAX,
        durable_hint: 0,
        first_seq: Seq(0),
        lookahead: true,
    };
    let holds_records = find_next_valid(&data, SEGMENT_HEADER_LEN as u64, &cx).is_some();
    if header.is_ok() || holds_records {
        return Err(Error::io(
            "create",
            path,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a segment with this id already exists and holds data; refusing to overwrite it",
            ),
        ));
    }
    storage
        .remove_file(path)
        .map_err(|e| Error::io("remove", path, e))
}

/// Maps a failed `fallocate` of `needed_bytes` more to the error an appender sees: no
/// space is `NoSpace` (retryable), anything else an I/O error.
pub(crate) fn allocation_error(
    storage: &dyn Storage,
    dir: &Path,
    path: &Path,
    e: std::io::Error,
    needed_bytes: u64,
) -> Error {
    if e.raw_os_error() == Some(28) {
        return Error::NoSpace {
            path: dir.to_path_buf(),
            available_bytes: storage.available_bytes(dir).unwrap_or(0),
            needed_bytes,
        };
    }
    Error::io("fallocate", path, e)
}

/// Bytes every segment file in `dir` occupies (their lengths: what was allocated), the
/// figure `queue_bytes_max` limits. Files deleted while being counted count as 0.
pub(crate) fn disk_bytes(storage: &dyn Storage, dir: &Path) -> Result<u64> {
    let mut total = 0u64;
    for (lane, segs) in list(storage, dir)? {
        for id in segs {
            let path = dir.join(FileName::Segment(lane, id).render());
            let size = match storage.open(&path, OpenMode::Read) {
                Ok(f) => f.size().map_err(|e| Error::io("stat", &path, e))?,
                // Gone, or swapped for a foreign file since the listing: holds nothing.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        || crate::fs::not_regular_kind(&e).is_some() =>
                {
                    0
                }
                Err(e) => return Err(Error::io("open", &path, e)),
            };
            total = total.saturating_add(size);
        }
    }
    Ok(total)
}

/// An opened segment: its file, its path, and its header or why the header is bad.
pub(crate) type OpenedSegment = (
    Arc<dyn StorageFile>,
    PathBuf,
    std::result::Result<SegmentHeader, BadSegmentHeader>,
);

/// Opens an existing segment and reads its header. A header that fails verification is
/// returned as the error half, with the file still usable: frames carry their own
/// identity, so a damaged header does not hide the records behind it.
pub(crate) fn open(
    storage: &dyn Storage,
    dir: &Path,
    lane: LaneId,
    id: SegmentId,
    mode: OpenMode,
) -> Result<OpenedSegment> {
    let path = dir.join(FileName::Segment(lane, id).render());
    let file = storage
        .open(&path, mode)
        .map_err(|e| Error::io("open", &path, e))?;
    read_header(file, path, lane, id)
}

/// Like [`open`], but `None` when the file is gone: a reader deleted it after it was
/// listed (for tools that walk a live queue).
pub(crate) fn open_if_present(
    storage: &dyn Storage,
    dir: &Path,
    lane: LaneId,
    id: SegmentId,
) -> Result<Option<OpenedSegment>> {
    let path = dir.join(FileName::Segment(lane, id).render());
    match storage.open(&path, OpenMode::Read) {
        Ok(file) => read_header(file, path, lane, id).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("open", &path, e)),
    }
}

fn read_header(
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    lane: LaneId,
    id: SegmentId,
) -> Result<OpenedSegment> {
    let mut buf = [0u8; SEGMENT_HEADER_LEN];
    let header = match file.read_exact_at(&mut buf, 0) {
        Ok(()) => match SegmentHeader::decode(&buf) {
            Ok(h) if h.lane != lane || h.segment != id => Err(BadSegmentHeader::Foreign),
            other => other,
        },
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(BadSegmentHeader::Short),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    Ok((file, path, header))
}

/// Every segment in `dir` that is a regular file, grouped by lane and sorted by id.
/// Entries named like a segment that are something else (symlinks, FIFOs, directories)
/// are left out, as if absent: see [`list_all`].
pub(crate) fn list(storage: &dyn Storage, dir: &Path) -> Result<BTreeMap<LaneId, Vec<SegmentId>>> {
    Ok(list_all(storage, dir)?.segments)
}

/// A file named like one of the queue's files that is not a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Foreign {
    pub path: PathBuf,
    pub name: FileName,
    pub kind: FileKind,
}

/// What [`list_all`] found in a queue directory.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Regular segment files, by lane, sorted by id.
    pub segments: BTreeMap<LaneId, Vec<SegmentId>>,
    /// Entries named like queue files (segments, watermarks, checkpoints, locks) that are
    /// not regular files. Never opened; reported, and no segment takes their ids.
    pub foreign: Vec<Foreign>,
}

impl Listing {
    /// The largest segment id a foreign entry of `lane` is named with.
    pub fn foreign_segment_max(&self, lane: LaneId) -> Option<SegmentId> {
        self.foreign
            .iter()
            .filter_map(|f| match f.name {
                FileName::Segment(l, s) if l == lane => Some(s),
                _ => None,
            })
            .max()
    }
}

/// Lists `dir`: regular segments, and foreign entries named like queue files.
pub(crate) fn list_all(storage: &dyn Storage, dir: &Path) -> Result<Listing> {
    let names = storage
        .list_dir_kinds(dir)
        .map_err(|e| Error::io("list", dir, e))?;
    let mut listing = Listing::default();
    for (text, kind) in names {
        let Some(name) = FileName::parse(&text) else {
            continue;
        };
        match (&name, kind) {
            (FileName::Segment(lane, seg), FileKind::Regular) => {
                listing.segments.entry(*lane).or_default().push(*seg)
            }
            (_, FileKind::Regular) => {}
            (_, kind) => listing.foreign.push(Foreign {
                path: dir.join(&text),
                name,
                kind,
            }),
        }
    }
    for segs in listing.segments.values_mut() {
        segs.sort_unstable();
    }
    listing.foreign.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}

/// Damage found inside a segment and stepped over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub offset: u64,
    pub kind: CorruptionKind,
    /// Where the next valid frame starts (`None`: nothing valid follows).
    pub resumed_at: Option<u64>,
    /// Records skipped, from the sequence numbers on either side.
    pub records_lost: Option<u64>,
}

/// The result of walking a segment's frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Offset just past the last valid frame: where a seal or the next record belongs.
    pub end: u64,
    /// The seal, when the segment has one.
    pub seal: Option<RecordHeader>,
    /// Sequence number after the last valid record.
    pub next_seq: Seq,
    /// Time of the newest valid record (0 if none).
    pub last_time_ns: u64,
    /// Valid data records seen.
    pub records: u64,
    /// Mid-log damage stepped over.
    pub damage: Vec<Damage>,
    /// Where a torn tail starts, if the segment ends in one.
    pub torn_at: Option<u64>,
}

/// What the scanner needs to know about the segment it walks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanContext {
    pub lane: LaneId,
    pub segment: SegmentId,
    pub len_max: u32,
    /// Everything before this offset is known durable (from a valid watermark), so damage
    /// before it is corruption, never a torn tail.
    pub durable_hint: u64,
    /// Sequence number the first record scanned should carry.
    pub first_seq: Seq,
    /// Whether to search past damage for a later batch. Off only when the durable hint is
    /// known exact (a watermark from the current boot): then nothing after it was ever
    /// acknowledged, and any damage after it is a torn tail.
    pub lookahead: bool,
}

/// Walks frames from `from` to the seal, the clean end, or a torn tail.
///
/// Damage is corruption (reported, stepped over) when it is provably inside durable data:
/// before the durable hint, or followed by a valid frame of a *later* write batch (a batch
/// is written only after every earlier batch was synced). Otherwise it is the torn tail of
/// the last batch, which was never acknowledged.
pub(crate) fn scan(data: &[u8], from: u64, cx: &ScanContext) -> Scan {
    let mut s = Scan {
        end: from,
        seal: None,
        next_seq: cx.first_seq,
        last_time_ns: 0,
        records: 0,
        damage: Vec::new(),
        torn_at: None,
    };
    let mut off = from;
    // The last data record accepted: a valid frame at or below it is a stale or misdirected
    // copy of an older record, which must not move the lane's sequence backwards.
    let mut last: Option<Seq> = None;
    let replay = |h: &RecordHeader, last: Option<Seq>| {
        h.kind == RecordKind::Data && last.is_some_and(|l| h.seq <= l)
    };
    loop {
        let bad = match decode_frame(data, off, cx.lane, cx.segment, cx.len_max) {
            Frame::Record { header, .. } if replay(&header, last) => Some(BadRecord::Misplaced),
            Frame::Record { header, next, .. } => {
                match header.kind {
                    RecordKind::Seal => {
                        s.seal = Some(header);
                        s.end = next;
                        return s;
                    }
                    RecordKind::Data => {
                        last = Some(header.seq);
                        s.records += 1;
                        s.next_seq = header.seq.next();
                        s.last_time_ns = header.time_ns;
                    }
                }
                off = next;
                s.end = off;
                continue;
            }
            Frame::Empty => None,
            Frame::Bad(b) => Some(b),
        };
        let mut ahead = if cx.lookahead {
            find_next_valid(data, off + ALIGN, cx)
        } else {
            None
        };
        while let Some((at, h)) = ahead.filter(|(_, h)| replay(h, last)) {
            let _ = h;
            ahead = find_next_valid(data, at + ALIGN, cx);
        }
        let proven_durable = off < cx.durable_hint
            || ahead.is_some_and(|(at, _)| later_batch_follows(data, off, at, cx));
        match ahead {
            Some((at, h)) if proven_durable => {
                s.damage.push(Damage {
                    offset: off,
                    kind: corruption_kind(bad),
                    resumed_at: Some(at),
                    records_lost: h.seq.0.checked_sub(s.next_seq.0),
                });
                off = at;
            }
            _ if off < cx.durable_hint => {
                s.damage.push(Damage {
                    offset: off,
                    kind: corruption_kind(bad),
                    resumed_at: None,
                    records_lost: None,
                });
                s.end = off;
                return s;
            }
            _ => {
                if bad.is_some() || ahead.is_some() {
                    s.torn_at = Some(off);
                }
                s.end = off;
                return s;
            }
        }
    }
}

/// True when a valid frame at or after `at` belongs to a write batch that began after
/// `damaged`: that batch was written only after the damaged one was synced.
fn later_batch_follows(data: &[u8], damaged: u64, at: u64, cx: &ScanContext) -> bool {
    let mut off = at;
    loop {
        match decode_frame(data, off, cx.lane, cx.segment, cx.len_max) {
            Frame::Record { header, next, .. } => {
                if u64::from(header.batch_start) > damaged {
                    return true;
                }
                if header.kind == RecordKind::Seal {
                    return false;
                }
                off = next;
            }
            Frame::Empty | Frame::Bad(_) => match find_next_valid(data, off + ALIGN, cx) {
                Some((next, _)) => off = next,
                None => return false,
            },
        }
    }
}

fn corruption_kind(bad: Option<BadRecord>) -> CorruptionKind {
    match bad {
        None => CorruptionKind::Zeroed,
        Some(BadRecord::Truncated) => CorruptionKind::Truncated,
        Some(BadRecord::BadLength { len }) => CorruptionKind::BadLength { len },
        Some(BadRecord::BadKind) => CorruptionKind::BadKind,
        Some(BadRecord::Checksum { expected, actual }) => {
            CorruptionKind::Checksum { expected, actual }
        }
        Some(BadRecord::Misplaced) => CorruptionKind::Misplaced,
    }
}

pub(crate) fn bad_record_kind(bad: BadRecord) -> CorruptionKind {
    corruption_kind(Some(bad))
}

/// The first valid frame of this lane and segment at or after `from` (8-byte steps).
/// Cheap filters on kind, lane and segment run before any checksum.
pub(crate) fn find_next_valid(
    data: &[u8],
    from: u64,
    cx: &ScanContext,
) -> Option<(u64, RecordHeader)> {
    let lane = cx.lane.0.to_le_bytes();
    let seg = cx.segment.0.to_le_bytes();
    let mut off = from.div_ceil(ALIGN) * ALIGN;
    let last = (data.len() as u64).checked_sub(format::RECORD_HEADER_LEN as u64)?;
    while off <= last {
        let o = off as usize;
        let plausible = data.get(o + 8).is_some_and(|&k| k == 1 || k == 2)
            && data.get(o + 10..o + 12) == Some(&lane[..])
            && data.get(o + 16..o + 24) == Some(&seg[..]);
        if plausible {
            if let Frame::Record { header, .. } =
                decode_frame(data, off, cx.lane, cx.segment, cx.len_max)
            {
                return Some((off, header));
            }
        }
        off += ALIGN;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::encode_record;

    const LANE: LaneId = LaneId(1);
    const SEG: SegmentId = SegmentId(4);

    fn cx(durable_hint: u64) -> ScanContext {
        ScanContext {
            lane: LANE,
            segment: SEG,
            len_max: 1 << 20,
            durable_hint,
            first_seq: Seq(0),
            lookahead: true,
        }
    }

    /// Three batches of two 16-byte records each, then zeros: 64 + 6 * 56 = 400 bytes.
    fn three_batches() -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        let mut seq = 0;
        for _ in 0..3 {
            let batch_start = buf.len() as u32;
            for _ in 0..2 {
                let h = RecordHeader {
                    len: 16,
                    kind: RecordKind::Data,
                    lane: LANE,
                    batch_start,
                    segment: SEG,
                    seq: Seq(seq),
                    time_ns: seq,
                };
                encode_record(&mut buf, &h, &[seq as u8; 16]);
                seq += 1;
            }
        }
        buf.resize(1024, 0);
        buf
    }

    /// Story: a file already carries the name of the segment a writer creates (a stray
    /// copy, ids reused). If this fails, creation deletes it and the records in it.
    #[test]
    fn create_never_removes_an_existing_segment_that_holds_data() {
        use crate::fs::Storage;
        let disk = crate::sim::SimDisk::new(1);
        let dir = Path::new("/q");
        let alloc = Allocation {
            capacity: 64 << 10,
            first: 8 << 10,
        };
        create(&disk, dir, LANE, SEG, Seq(0), alloc).expect("first creation");
        let path = dir.join(FileName::Segment(LANE, SEG).render());
        let before = disk.read_file(&path).expect("file");
        let err = create(&disk, dir, LANE, SEG, Seq(0), alloc).expect_err("refused");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(disk.read_file(&path), Some(before));
        // A file left by a failed creation (no header, no record) is replaced.
        disk.write_file(&path, &[0u8; 100]);
        create(&disk, dir, LANE, SEG, Seq(0), alloc).expect("replaces an empty leftover");
        assert!(disk.list_dir(dir).expect("list").len() == 1);
    }

    #[test]
    fn clean_end_is_neither_torn_nor_corrupt() {
        let s = scan(&three_batches(), 64, &cx(0));
        assert_eq!((s.end, s.records, s.next_seq), (400, 6, Seq(6)));
        assert!(s.damage.is_empty() && s.torn_at.is_none() && s.seal.is_none());
    }

    #[test]
    fn damage_in_the_last_batch_is_a_torn_tail() {
        // A crash while the last batch (records 4, 5 at 288..400) was being written: record 4
        // is torn, record 5 made it. Neither was acknowledged, so both are cut off.
        let mut d = three_batches();
        d[300] ^= 0xff;
        let s = scan(&d, 64, &cx(0));
        assert_eq!((s.end, s.torn_at, s.records), (288, Some(288), 4));
        assert!(s.damage.is_empty());
    }

    #[test]
    fn damage_followed_by_a_later_batch_is_corruption() {
        // Record 2 (first of batch 2) is damaged, but batch 3 is on disk, so batch 2 was
        // synced and acknowledged: this is corruption, reported and stepped over.
        let mut d = three_batches();
        d[64 + 2 * 56 + 45] ^= 1;
        let s = scan(&d, 64, &cx(0));
        assert_eq!(s.records, 5);
        assert_eq!(s.end, 400);
        assert_eq!(s.damage.len(), 1);
        assert_eq!(s.damage[0].offset, 176);
        assert_eq!(s.damage[0].resumed_at, Some(232));
        assert_eq!(s.damage[0].records_lost, Some(1));
    }

    #[test]
    fn damage_before_the_durable_hint_is_corruption_even_at_the_end() {
        let mut d = three_batches();
        d[350] ^= 1;
        let s = scan(&d, 64, &cx(400));
        assert_eq!(s.torn_at, None);
        assert_eq!(s.damage.len(), 1);
    }

    #[test]
    fn a_stale_copy_of_an_older_record_does_not_move_the_sequence_backwards() {
        // A misdirected write (or read) put record 0's intact frame where record 4 belongs.
        // Taking it as a record would make recovery continue the lane at sequence 1 and
        // reuse sequence numbers already delivered.
        let mut d = three_batches();
        let copy = d[64..120].to_vec();
        d[288..344].copy_from_slice(&copy);
        let s = scan(&d, 64, &cx(0));
        assert_eq!(s.records, 4);
        assert_eq!(s.next_seq, Seq(4));
        assert_eq!(s.torn_at, Some(288));
    }

    #[test]
    fn zeroed_durable_bytes_are_corruption() {
        let mut d = three_batches();
        d[176..232].fill(0);
        let s = scan(&d, 64, &cx(0));
        assert_eq!(s.damage.len(), 1);
        assert_eq!(s.damage[0].kind, CorruptionKind::Zeroed);
        assert_eq!(s.records, 5);
    }
}
