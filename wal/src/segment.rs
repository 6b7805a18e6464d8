//! The segment scanner: walks a segment's frames and tells a torn tail (the last write
//! batch, never acknowledged) from corruption (damage inside durable data). Creating,
//! opening and listing segment files is the lane's (`lane/`).

use crate::error::CorruptionKind;
use crate::format::{
    decode_frame, BadRecord, Frame, RecordHeader, RecordKind, UncheckedHeader, ALIGN,
    RECORD_HEADER_LEN,
};
use crate::types::{LaneId, SegmentId, Seq};

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
    let mut off = from.div_ceil(ALIGN) * ALIGN;
    let last = (data.len() as u64).checked_sub(RECORD_HEADER_LEN as u64)?;
    while off <= last {
        let h = UncheckedHeader::at(data, off);
        let plausible = h
            .kind_byte()
            .is_some_and(|k| k == RecordKind::Data as u8 || k == RecordKind::Seal as u8)
            && h.lane() == Some(cx.lane)
            && h.segment() == Some(cx.segment);
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
