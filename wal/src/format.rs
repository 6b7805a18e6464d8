//! On-disk layout: segment headers, record frames, lane watermarks and file names.
//!
//! Every integer is little-endian and fixed-width. Offsets are chained constants so the
//! layout can be read top to bottom; `docs/FORMAT.md` describes the same bytes in prose.
//! Nothing read from disk is used for indexing before its length is bounded and its
//! crc32c has passed. Headers are decoded from fixed-size arrays obtained with one length
//! check, and every field lies at a constant offset that is checked at compile time.

use crate::types::{LaneId, SegmentId, Seq};

/// Every record starts on an 8-byte boundary.
pub const ALIGN: u64 = 8;

// ---------------------------------------------------------------------------------------
// Segment header (64 bytes, at offset 0 of every segment file)
//
//   0..8    magic "EQWALSG1"
//   8..12   format version (u32) = 1
//  12..14   lane (u16)
//  14..16   reserved, zero
//  16..24   segment id (u64)
//  24..32   first sequence number stored in this segment (u64)
//  32..40   creation time, unix nanoseconds (u64)
//  40..48   capacity: the most bytes the file may grow to (u64)
//  48..60   reserved, zero
//  60..64   crc32c of bytes 0..60
// ---------------------------------------------------------------------------------------
/// Magic bytes opening every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"EQWALSG1";
/// Version of the segment and record format written by this build. Version 2 segments
/// grow in steps up to their capacity; version 1 segments were preallocated whole. Both
/// read the same (see [`FORMAT_VERSIONS_READ`]).
pub const FORMAT_VERSION: u32 = 2;
/// Segment format versions this build reads.
pub const FORMAT_VERSIONS_READ: std::ops::RangeInclusive<u32> = 1..=FORMAT_VERSION;
const SH_MAGIC: usize = 0;
const SH_VERSION: usize = SH_MAGIC + 8;
const SH_LANE: usize = SH_VERSION + 4;
const SH_RESERVED0: usize = SH_LANE + 2;
const SH_SEGMENT: usize = SH_RESERVED0 + 2;
const SH_FIRST_SEQ: usize = SH_SEGMENT + 8;
const SH_CREATED: usize = SH_FIRST_SEQ + 8;
const SH_SIZE: usize = SH_CREATED + 8;
const SH_RESERVED1: usize = SH_SIZE + 8;
const SH_CRC: usize = SH_RESERVED1 + 12;
/// Length of the segment header; the first record starts here.
pub const SEGMENT_HEADER_LEN: usize = SH_CRC + 4;
const _: () = assert!(SEGMENT_HEADER_LEN == 64);
const _: () = assert!((SEGMENT_HEADER_LEN as u64).is_multiple_of(ALIGN));

/// The decoded, checksum-verified header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Lane that owns the segment.
    pub lane: LaneId,
    /// Segment id, unique and increasing within the lane.
    pub segment: SegmentId,
    /// Sequence number of the first record written to this segment.
    pub first_seq: Seq,
    /// Creation time, unix nanoseconds.
    pub created_ns: u64,
    /// Capacity: the most bytes the file may grow to (version 1 files were preallocated
    /// to it whole; version 2 files are allocated in steps as records arrive).
    pub size_bytes: u64,
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadSegmentHeader {
    /// The file is shorter than a header.
    Short,
    /// All zero: the segment was created but its header never became durable.
    Zeroed,
    /// Magic or version does not match.
    Foreign,
    /// crc32c mismatch.
    Checksum {
        /// crc stored in the header.
        expected: u32,
        /// crc computed over the bytes.
        actual: u32,
    },
}

impl SegmentHeader {
    /// Encodes the header into its 64 bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        put::<SH_MAGIC, _, _>(&mut b, SEGMENT_MAGIC);
        put::<SH_VERSION, _, _>(&mut b, FORMAT_VERSION.to_le_bytes());
        put::<SH_LANE, _, _>(&mut b, self.lane.0.to_le_bytes());
        put::<SH_SEGMENT, _, _>(&mut b, self.segment.0.to_le_bytes());
        put::<SH_FIRST_SEQ, _, _>(&mut b, self.first_seq.0.to_le_bytes());
        put::<SH_CREATED, _, _>(&mut b, self.created_ns.to_le_bytes());
        put::<SH_SIZE, _, _>(&mut b, self.size_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&b[..SH_CRC]);
        put::<SH_CRC, _, _>(&mut b, crc.to_le_bytes());
        b
    }

    /// Decodes and verifies a header from the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, BadSegmentHeader> {
        let b: &[u8; SEGMENT_HEADER_LEN] = bytes.first_chunk().ok_or(BadSegmentHeader::Short)?;
        if b.iter().all(|&x| x == 0) {
            return Err(BadSegmentHeader::Zeroed);
        }
        let expected = u32_at::<SH_CRC, _>(b);
        let actual = crc32c::crc32c(&b[..SH_CRC]);
        if expected != actual {
            return Err(BadSegmentHeader::Checksum { expected, actual });
        }
        if field::<SH_MAGIC, 8, _>(b) != SEGMENT_MAGIC
            || !FORMAT_VERSIONS_READ.contains(&u32_at::<SH_VERSION, _>(b))
        {
            return Err(BadSegmentHeader::Foreign);
        }
        Ok(Self {
            lane: LaneId(u16_at::<SH_LANE, _>(b)),
            segment: SegmentId(u64_at::<SH_SEGMENT, _>(b)),
            first_seq: Seq(u64_at::<SH_FIRST_SEQ, _>(b)),
            created_ns: u64_at::<SH_CREATED, _>(b),
            size_bytes: u64_at::<SH_SIZE, _>(b),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Record frame (40-byte header + payload + zero padding to 8 bytes)
//
//   0..4    crc32c of bytes 4..40 followed by the payload
//   4..8    payload length (u32); 0 only for a seal
//   8       kind: 1 = data, 2 = seal (end of segment)
//   9       flags, zero
//  10..12   lane (u16)
//  12..16   batch start: offset in the segment where this record's write batch began (u32)
//  16..24   segment id (u64)
//  24..32   sequence number within the lane (u64); a seal carries the next unused one
//  32..40   enqueue time, unix nanoseconds (u64); a seal carries the newest record's time
// ---------------------------------------------------------------------------------------
const RH_CRC: usize = 0;
const RH_LEN: usize = RH_CRC + 4;
const RH_KIND: usize = RH_LEN + 4;
const RH_FLAGS: usize = RH_KIND + 1;
const RH_LANE: usize = RH_FLAGS + 1;
const RH_BATCH: usize = RH_LANE + 2;
const RH_SEGMENT: usize = RH_BATCH + 4;
const RH_SEQ: usize = RH_SEGMENT + 8;
const RH_TIME: usize = RH_SEQ + 8;
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = RH_TIME + 8;
const _: () = assert!(RECORD_HEADER_LEN == 40);
const _: () = assert!((RECORD_HEADER_LEN as u64).is_multiple_of(ALIGN));
/// Bytes a seal record occupies; every segment keeps room for one.
pub const SEAL_LEN: u64 = RECORD_HEADER_LEN as u64;

/// What a record frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// An application payload.
    Data = 1,
    /// End of segment: the lane continues in the next segment.
    Seal = 2,
}

/// A record header as written to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload length in bytes.
    pub len: u32,
    /// Data or seal.
    pub kind: RecordKind,
    /// Lane the record belongs to.
    pub lane: LaneId,
    /// Offset where the write batch containing this record began.
    pub batch_start: u32,
    /// Segment the record lives in.
    pub segment: SegmentId,
    /// Sequence number within the lane.
    pub seq: Seq,
    /// Enqueue time, unix nanoseconds.
    pub time_ns: u64,
}

/// Total bytes a record with a payload of `len` bytes occupies, padding included.
pub const fn frame_len(len: u32) -> u64 {
    let raw = RECORD_HEADER_LEN as u64 + len as u64;
    raw.div_ceil(ALIGN) * ALIGN
}

/// Appends the frame for `header` + `payload` to `out` (header, payload, zero padding).
pub fn encode_record(out: &mut Vec<u8>, header: &RecordHeader, payload: &[u8]) {
    encode_record_parts(out, header, &[payload]);
}

/// [`encode_record`] for a payload given as consecutive `parts`.
pub fn encode_record_parts(out: &mut Vec<u8>, header: &RecordHeader, parts: &[&[u8]]) {
    let h = encode_record_header(header, parts);
    let start = out.len();
    out.extend_from_slice(&h);
    for part in parts {
        out.extend_from_slice(part);
    }
    let padded = start + frame_len(header.len) as usize;
    out.resize(padded, 0);
}

/// The header bytes of the frame for `header` and the payload made of `parts` (its
/// checksum covers the payload). The frame is these bytes, the parts, then zero padding
/// up to [`frame_len`].
pub fn encode_record_header(header: &RecordHeader, parts: &[&[u8]]) -> [u8; RECORD_HEADER_LEN] {
    debug_assert_eq!(
        header.len as usize,
        parts.iter().map(|p| p.len()).sum::<usize>()
    );
    debug_assert!(header.kind == RecordKind::Seal || parts.iter().any(|p| !p.is_empty()));
    let mut h = [0u8; RECORD_HEADER_LEN];
    put::<RH_LEN, _, _>(&mut h, header.len.to_le_bytes());
    h[RH_KIND] = header.kind as u8;
    put::<RH_LANE, _, _>(&mut h, header.lane.0.to_le_bytes());
    put::<RH_BATCH, _, _>(&mut h, header.batch_start.to_le_bytes());
    put::<RH_SEGMENT, _, _>(&mut h, header.segment.0.to_le_bytes());
    put::<RH_SEQ, _, _>(&mut h, header.seq.0.to_le_bytes());
    put::<RH_TIME, _, _>(&mut h, header.time_ns.to_le_bytes());
    let crc = parts
        .iter()
        .fold(crc32c::crc32c(&h[RH_LEN..]), |crc, part| {
            crc32c::crc32c_append(crc, part)
        });
    put::<RH_CRC, _, _>(&mut h, crc.to_le_bytes());
    h
}

/// A record header's fields read where they lie, with no check at all: no checksum, no
/// bound on any value. For cheap filters before [`decode_frame`] (the scanner's search
/// for the next valid frame), for sizing the read of a frame not yet decoded, and for
/// tools. Each field is `None` when the bytes end before it.
#[derive(Debug, Clone, Copy)]
pub struct UncheckedHeader<'a> {
    /// The bytes from the frame's start on.
    bytes: &'a [u8],
}

impl<'a> UncheckedHeader<'a> {
    /// The header that would start at `offset` of `seg`.
    pub fn at(seg: &'a [u8], offset: u64) -> Self {
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|o| seg.get(o..))
            .unwrap_or_default();
        Self { bytes }
    }

    fn field<const AT: usize, const N: usize>(&self) -> Option<[u8; N]> {
        self.bytes.get(AT..)?.first_chunk().copied()
    }

    /// The payload length field.
    pub fn payload_len(&self) -> Option<u32> {
        self.field::<RH_LEN, 4>().map(u32::from_le_bytes)
    }

    /// The kind byte (1 data, 2 seal, anything else invalid).
    pub fn kind_byte(&self) -> Option<u8> {
        self.field::<RH_KIND, 1>().map(|[k]| k)
    }

    /// The lane the frame claims.
    pub fn lane(&self) -> Option<LaneId> {
        self.field::<RH_LANE, 2>()
            .map(|b| LaneId(u16::from_le_bytes(b)))
    }

    /// The segment the frame claims.
    pub fn segment(&self) -> Option<SegmentId> {
        self.field::<RH_SEGMENT, 8>()
            .map(|b| SegmentId(u64::from_le_bytes(b)))
    }
}

/// What lies at an offset of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A valid record; its payload is `payload_start..payload_start + header.len`.
    Record {
        /// The verified header.
        header: RecordHeader,
        /// Where the payload starts.
        payload_start: usize,
        /// Where the next frame starts.
        next: u64,
    },
    /// An all-zero header: nothing was ever written here.
    Empty,
    /// Bytes that are not a valid record.
    Bad(BadRecord),
}

/// Why the bytes at an offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRecord {
    /// The frame would extend past the end of the segment.
    Truncated,
    /// Length zero for data, non-zero for a seal, or over the configured maximum.
    BadLength {
        /// The length field as read.
        len: u32,
    },
    /// Unknown kind byte or non-zero flags.
    BadKind,
    /// The checksum does not match.
    Checksum {
        /// crc stored in the header.
        expected: u32,
        /// crc computed over header and payload.
        actual: u32,
    },
    /// A valid frame, but stamped with another lane or segment: a stale or misdirected block.
    Misplaced,
}

/// Decodes the frame at `offset` of a segment's bytes, verifying everything before use.
///
/// `lane` and `segment` are the identity the frame must carry; `len_max` bounds payloads.
pub fn decode_frame(
    seg: &[u8],
    offset: u64,
    lane: LaneId,
    segment: SegmentId,
    len_max: u32,
) -> Frame {
    let Ok(start) = usize::try_from(offset) else {
        return Frame::Bad(BadRecord::Truncated);
    };
    // The one bounds check for the header: every field read below is at a constant offset
    // of this array.
    let Some(h) = seg
        .get(start..)
        .and_then(<[u8]>::first_chunk::<RECORD_HEADER_LEN>)
    else {
        return Frame::Bad(BadRecord::Truncated);
    };
    if h.iter().all(|&b| b == 0) {
        return Frame::Empty;
    }
    let len = u32_at::<RH_LEN, _>(h);
    let kind = match (h[RH_KIND], h[RH_FLAGS]) {
        (1, 0) => RecordKind::Data,
        (2, 0) => RecordKind::Seal,
        _ => return Frame::Bad(BadRecord::BadKind),
    };
    let len_ok = match kind {
        RecordKind::Data => len != 0 && len <= len_max,
        RecordKind::Seal => len == 0,
    };
    if !len_ok {
        return Frame::Bad(BadRecord::BadLength { len });
    }
    let payload_start = start + RECORD_HEADER_LEN;
    // Header fields and payload are contiguous: one checksum pass over both.
    let Some(covered) = payload_start
        .checked_add(len as usize)
        .and_then(|end| seg.get(start + RH_LEN..end))
    else {
        return Frame::Bad(BadRecord::Truncated);
    };
    let expected = u32_at::<RH_CRC, _>(h);
    let actual = crc32c::crc32c(covered);
    if expected != actual {
        return Frame::Bad(BadRecord::Checksum { expected, actual });
    }
    let header = RecordHeader {
        len,
        kind,
        lane: LaneId(u16_at::<RH_LANE, _>(h)),
        batch_start: u32_at::<RH_BATCH, _>(h),
        segment: SegmentId(u64_at::<RH_SEGMENT, _>(h)),
        seq: Seq(u64_at::<RH_SEQ, _>(h)),
        time_ns: u64_at::<RH_TIME, _>(h),
    };
    if header.lane != lane || header.segment != segment {
        return Frame::Bad(BadRecord::Misplaced);
    }
    Frame::Record {
        header,
        payload_start,
        next: offset + frame_len(len),
    }
}

// ---------------------------------------------------------------------------------------
// Lane watermark file `lane-NNN.commit` (48 bytes). A hint published after every sync so
// readers in other processes never read past the durable end. It is never fsynced: after
// a power loss it may be stale (never ahead of durable data) or unreadable, and the lane
// is then recovered by scanning.
//
//   0..4    magic "EQCM"
//   4..8    crc32c of bytes 8..32
//   8..16   segment id (u64)
//  16..24   offset of the durable end within that segment (u64)
//  24..32   next sequence number (u64)
//  32..48   boot id of the machine when written (Linux `/proc/sys/kernel/random/boot_id`)
// ---------------------------------------------------------------------------------------
const WM_MAGIC: [u8; 4] = *b"EQCM";
const WM_MAGIC_AT: usize = 0;
const WM_CRC: usize = WM_MAGIC_AT + 4;
const WM_SEGMENT: usize = WM_CRC + 4;
const WM_OFFSET: usize = WM_SEGMENT + 8;
const WM_NEXT_SEQ: usize = WM_OFFSET + 8;
const WM_BOOT: usize = WM_NEXT_SEQ + 8;
/// Length of a lane watermark file.
pub const WATERMARK_LEN: usize = WM_BOOT + 16;
const _: () = assert!(WATERMARK_LEN == 48);

/// Identifies one boot of the machine. A watermark written in the current boot is exact
/// (the page cache survived whatever crashed); one from an earlier boot may be stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BootId(pub [u8; 16]);

impl BootId {
    /// True when the boot id could not be read (never trusted as "same boot").
    pub fn is_unknown(&self) -> bool {
        self.0 == [0; 16]
    }
}

/// The durable end of a lane: everything before `offset` in `segment`, and every earlier
/// segment of the lane, is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Watermark {
    /// Segment holding the durable end.
    pub segment: SegmentId,
    /// Offset of the durable end in that segment (a frame boundary).
    pub offset: u64,
    /// Sequence number the next record will carry.
    pub next_seq: Seq,
}

impl Watermark {
    /// Encodes the watermark file, stamped with the boot it was written in.
    pub fn encode(&self, boot: &BootId) -> [u8; WATERMARK_LEN] {
        let mut b = [0u8; WATERMARK_LEN];
        put::<WM_MAGIC_AT, _, _>(&mut b, WM_MAGIC);
        put::<WM_SEGMENT, _, _>(&mut b, self.segment.0.to_le_bytes());
        put::<WM_OFFSET, _, _>(&mut b, self.offset.to_le_bytes());
        put::<WM_NEXT_SEQ, _, _>(&mut b, self.next_seq.0.to_le_bytes());
        put::<WM_BOOT, _, _>(&mut b, boot.0);
        let crc = crc32c::crc32c(&b[WM_SEGMENT..]);
        put::<WM_CRC, _, _>(&mut b, crc.to_le_bytes());
        b
    }

    /// Decodes a watermark file and the boot it was written in; `None` when it is absent,
    /// torn or not ours.
    pub fn decode(b: &[u8]) -> Option<(Self, BootId)> {
        let b: &[u8; WATERMARK_LEN] = b.first_chunk()?;
        if field::<WM_MAGIC_AT, 4, _>(b) != WM_MAGIC
            || u32_at::<WM_CRC, _>(b) != crc32c::crc32c(&b[WM_SEGMENT..])
        {
            return None;
        }
        let wm = Self {
            segment: SegmentId(u64_at::<WM_SEGMENT, _>(b)),
            offset: u64_at::<WM_OFFSET, _>(b),
            next_seq: Seq(u64_at::<WM_NEXT_SEQ, _>(b)),
        };
        Some((wm, BootId(field::<WM_BOOT, 16, _>(b))))
    }
}

// ---------------------------------------------------------------------------------------
// File names: built and parsed here and nowhere else.
// ---------------------------------------------------------------------------------------
/// Every file name the wal creates in a queue directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileName {
    /// `lane-NNN-SSSSSSSSSSSSSSSSSSSS.seg`: a segment of a lane.
    Segment(LaneId, SegmentId),
    /// `lane-NNN.lock`: flock held by the writer that owns the lane.
    LaneLock(LaneId),
    /// `lane-NNN.commit`: the lane's durable-end watermark.
    Watermark(LaneId),
    /// `cursor-NAME.ckpt`: a named cursor's checkpoint.
    Checkpoint(String),
    /// `cursor-NAME.lock`: flock held by the reader using the cursor.
    CursorLock(String),
}

impl FileName {
    /// The file name as it appears in the directory.
    pub fn render(&self) -> String {
        match self {
            Self::Segment(l, s) => format!("lane-{:03}-{:020}.seg", l.0, s.0),
            Self::LaneLock(l) => format!("lane-{:03}.lock", l.0),
            Self::Watermark(l) => format!("lane-{:03}.commit", l.0),
            Self::Checkpoint(n) => format!("cursor-{n}.ckpt"),
            Self::CursorLock(n) => format!("cursor-{n}.lock"),
        }
    }

    /// Parses a directory entry; `None` for names the wal does not own.
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(rest) = name.strip_prefix("lane-") {
            let (lane, rest) = rest.split_at_checked(3)?;
            let lane = LaneId(parse_digits(lane)?.try_into().ok()?);
            return match rest {
                ".lock" => Some(Self::LaneLock(lane)),
                ".commit" => Some(Self::Watermark(lane)),
                _ => {
                    let seg = rest.strip_prefix('-')?.strip_suffix(".seg")?;
                    (seg.len() == 20).then_some(())?;
                    Some(Self::Segment(lane, SegmentId(parse_digits(seg)?)))
                }
            };
        }
        let rest = name.strip_prefix("cursor-")?;
        if let Some(n) = rest.strip_suffix(".ckpt") {
            return valid_cursor_name(n).then(|| Self::Checkpoint(n.to_owned()));
        }
        let n = rest.strip_suffix(".lock")?;
        valid_cursor_name(n).then(|| Self::CursorLock(n.to_owned()))
    }
}

/// Cursor names: 1 to 64 characters of `a-z`, `0-9`, `_` and `-`.
pub fn valid_cursor_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Little-endian fields of fixed-size buffers. A field is `N` bytes at a layout constant
// `AT` of a `[u8; L]`, and `AT + N <= L` is checked when the program is compiled: each
// access is a plain load or store, with no run-time bounds check and no panic path.
// ---------------------------------------------------------------------------------------
/// The `N` bytes at offset `AT` of `buf`.
#[inline(always)]
pub(crate) fn field<const AT: usize, const N: usize, const L: usize>(buf: &[u8; L]) -> [u8; N] {
    const { assert!(AT + N <= L, "field extends past the end of its buffer") };
    // Always `Some` (asserted above): the fallback is never taken and compiles away.
    buf.get(AT..)
        .and_then(<[u8]>::first_chunk)
        .copied()
        .unwrap_or([0; N])
}

/// Writes `bytes` at offset `AT` of `buf`.
#[inline(always)]
pub(crate) fn put<const AT: usize, const N: usize, const L: usize>(
    buf: &mut [u8; L],
    bytes: [u8; N],
) {
    const { assert!(AT + N <= L, "field extends past the end of its buffer") };
    // Always `Some` (asserted above).
    if let Some(dst) = buf.get_mut(AT..).and_then(<[u8]>::first_chunk_mut) {
        *dst = bytes;
    }
}

/// The `u16` at offset `AT` of `buf`.
#[inline(always)]
pub(crate) fn u16_at<const AT: usize, const L: usize>(buf: &[u8; L]) -> u16 {
    u16::from_le_bytes(field::<AT, 2, L>(buf))
}

/// The `u32` at offset `AT` of `buf`.
#[inline(always)]
pub(crate) fn u32_at<const AT: usize, const L: usize>(buf: &[u8; L]) -> u32 {
    u32::from_le_bytes(field::<AT, 4, L>(buf))
}

/// The `u64` at offset `AT` of `buf`.
#[inline(always)]
pub(crate) fn u64_at<const AT: usize, const L: usize>(buf: &[u8; L]) -> u64 {
    u64::from_le_bytes(field::<AT, 8, L>(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32) -> RecordHeader {
        RecordHeader {
            len,
            kind: RecordKind::Data,
            lane: LaneId(3),
            batch_start: 64,
            segment: SegmentId(7),
            seq: Seq(42),
            time_ns: 1_700_000_000_000_000_000,
        }
    }

    #[test]
    fn record_round_trips_and_is_padded_to_eight_bytes() {
        let mut buf = vec![0u8; 64];
        encode_record(&mut buf, &header(5), b"hello");
        assert_eq!(buf.len(), 64 + 48);
        let frame = decode_frame(&buf, 64, LaneId(3), SegmentId(7), 1024);
        let Frame::Record {
            header: h,
            payload_start,
            next,
        } = frame
        else {
            panic!("expected a record, got {frame:?}");
        };
        assert_eq!(h, header(5));
        assert_eq!(&buf[payload_start..payload_start + 5], b"hello");
        assert_eq!(next, 112);
    }

    #[test]
    fn lengths_are_checked_before_slicing() {
        // A header claiming 4 GiB of payload in a 200-byte buffer must be rejected by the
        // length bound, never used to slice.
        let mut buf = Vec::new();
        encode_record(&mut buf, &header(8), b"12345678");
        buf[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let f = decode_frame(&buf, 0, LaneId(3), SegmentId(7), 1024);
        assert_eq!(f, Frame::Bad(BadRecord::BadLength { len: u32::MAX }));
        buf[4..8].copy_from_slice(&0u32.to_le_bytes());
        let f = decode_frame(&buf, 0, LaneId(3), SegmentId(7), 1024);
        assert_eq!(f, Frame::Bad(BadRecord::BadLength { len: 0 }));
    }

    /// Story: the scanner's cheap filter and the reader's window sizing read header fields
    /// before the frame is verified. They now read them through `UncheckedHeader`, which
    /// must see exactly the fields `decode_frame` verifies, and nothing past the bytes.
    #[test]
    fn unchecked_header_reads_the_fields_decode_frame_verifies() {
        let mut buf = vec![0u8; 8];
        encode_record(&mut buf, &header(5), b"hello");
        let h = UncheckedHeader::at(&buf, 8);
        assert_eq!(h.payload_len(), Some(5));
        assert_eq!(h.kind_byte(), Some(RecordKind::Data as u8));
        assert_eq!(h.lane(), Some(LaneId(3)));
        assert_eq!(h.segment(), Some(SegmentId(7)));
        // Cut inside the segment field: the fields before it are there, it is not.
        let cut = UncheckedHeader::at(&buf[..8 + RH_SEGMENT + 7], 8);
        assert_eq!((cut.lane(), cut.segment()), (Some(LaneId(3)), None));
        assert_eq!(UncheckedHeader::at(&buf, u64::MAX).payload_len(), None);
    }

    #[test]
    fn a_valid_frame_from_another_segment_is_misplaced() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &header(3), b"abc");
        let f = decode_frame(&buf, 0, LaneId(3), SegmentId(8), 1024);
        assert_eq!(f, Frame::Bad(BadRecord::Misplaced));
    }

    #[test]
    fn segment_header_and_watermark_round_trip() {
        let h = SegmentHeader {
            lane: LaneId(2),
            segment: SegmentId(9),
            first_seq: Seq(100),
            created_ns: 5,
            size_bytes: 1 << 20,
        };
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        let mut bad = h.encode();
        bad[20] ^= 1;
        assert!(matches!(
            SegmentHeader::decode(&bad),
            Err(BadSegmentHeader::Checksum { .. })
        ));
        let w = Watermark {
            segment: SegmentId(9),
            offset: 4096,
            next_seq: Seq(77),
        };
        let boot = BootId([7; 16]);
        assert_eq!(Watermark::decode(&w.encode(&boot)), Some((w, boot)));
        assert_eq!(Watermark::decode(&[0u8; 48]), None);
    }

    #[test]
    fn file_names_round_trip_and_foreign_names_are_ignored() {
        let names = [
            FileName::Segment(LaneId(7), SegmentId(12)),
            FileName::LaneLock(LaneId(0)),
            FileName::Watermark(LaneId(63)),
            FileName::Checkpoint("worker".into()),
            FileName::CursorLock("dead-letter_1".into()),
        ];
        for n in names {
            assert_eq!(FileName::parse(&n.render()), Some(n));
        }
        for junk in [
            "lane-7-1.seg",
            "lane-007-00000000000000000001.seg.tmp",
            "cursor-.ckpt",
            "cursor-UP.ckpt",
            "notes.txt",
        ] {
            assert_eq!(FileName::parse(junk), None, "{junk}");
        }
    }
}
