//! Fuzz target bodies for the wal's decoders. Each checks properties, not just "no panic".
//! Shared with `wal/tests/fuzz_smoke.rs` (included there by path), so it uses only the wal.

use std::path::Path;
use std::sync::Arc;

use escalation_queue_wal::layout::{
    self, decode_checkpoint, encode_record, frame_len, BootId, FileName, Frame, RecordKind,
    ScanInput, SegmentHeader, UncheckedHeader, Watermark, ALIGN, RECORD_HEADER_LEN,
};
use escalation_queue_wal::{LaneId, OpenMode, Options, Reader, SegmentId, Seq, SimDisk, Storage};

/// Reads a little-endian u64 from the first bytes of `data` (zero-padded).
fn u64_of(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

/// `decode_frame` at any offset of any bytes: never panics, and a frame it accepts lies
/// within the bytes and re-encodes to exactly the bytes it was decoded from.
pub fn decode_frame(data: &[u8]) {
    if data.len() < 10 {
        return;
    }
    let (head, seg) = data.split_at(10);
    let offset = u64::from(u16::from_le_bytes([head[0], head[1]])) % (seg.len() as u64 + 16);
    let lane = LaneId(u16::from_le_bytes([head[2], head[3]]) % 64);
    let segment = SegmentId(u64::from(head[4]));
    let len_max = u32::from_le_bytes([head[5], head[6], head[7], 0]).max(1);
    for (lane, segment) in [
        (lane, segment),
        (frame_lane(seg, offset), frame_seg(seg, offset)),
    ] {
        check_frame(seg, offset, lane, segment, len_max);
    }
}

/// The lane stamped in the frame at `offset`, so the identity check passes and the
/// decoder goes deeper.
fn frame_lane(seg: &[u8], offset: u64) -> LaneId {
    UncheckedHeader::at(seg, offset).lane().unwrap_or(LaneId(0))
}

/// The segment stamped in the frame at `offset`.
fn frame_seg(seg: &[u8], offset: u64) -> SegmentId {
    UncheckedHeader::at(seg, offset)
        .segment()
        .unwrap_or(SegmentId(0))
}

fn check_frame(seg: &[u8], offset: u64, lane: LaneId, segment: SegmentId, len_max: u32) {
    if let Frame::Record {
        header,
        payload_start,
        next,
    } = layout::decode_frame(seg, offset, lane, segment, len_max)
    {
        let start = offset as usize;
        let end = payload_start + header.len as usize;
        assert!(end <= seg.len(), "payload past the end");
        assert_eq!(payload_start, start + RECORD_HEADER_LEN);
        assert_eq!(next, offset + frame_len(header.len));
        assert!(header.len <= len_max || header.kind == RecordKind::Seal);
        assert_eq!((header.lane, header.segment), (lane, segment));
        let mut again = Vec::new();
        encode_record(&mut again, &header, &seg[payload_start..end]);
        assert_eq!(
            &again[..end - start],
            &seg[start..end],
            "re-encoding differs"
        );
    }
}

/// The recovery scanner over any bytes: never panics, and its result is consistent.
pub fn scan_segment(data: &[u8]) {
    if data.len() < 12 {
        return;
    }
    let (head, seg) = data.split_at(12);
    let from = (u64::from(u16::from_le_bytes([head[0], head[1]])) % (seg.len() as u64 + 8)) / ALIGN
        * ALIGN;
    let input = ScanInput {
        lane: frame_lane(seg, from),
        segment: frame_seg(seg, from),
        len_max: u32::from(u16::from_le_bytes([head[2], head[3]])).max(1),
        durable_hint: u64::from(u16::from_le_bytes([head[4], head[5]])),
        first_seq: Seq(u64::from(head[6])),
        lookahead: head[7] & 1 == 1,
    };
    let s = layout::scan_segment(seg, from, &input);
    // A last frame's zero padding may lie past the end of the bytes (a file cut inside it).
    let padded_len = (seg.len() as u64).div_ceil(ALIGN) * ALIGN;
    assert!(s.end >= from && s.end <= padded_len.max(from), "{s:?}");
    assert!(s.records <= seg.len() as u64 / (RECORD_HEADER_LEN as u64 + 8) + 1);
    let mut last = from;
    for (at, resumed) in &s.damage {
        assert!(*at >= last, "damage out of order: {s:?}");
        if let Some(r) = resumed {
            assert!(r > at, "{s:?}");
            last = *r;
        }
    }
    if let Some(t) = s.torn_at {
        assert!(t >= from && t == s.end, "{s:?}");
    }
    assert_eq!(
        layout::scan_segment(seg, from, &input),
        s,
        "the scan is not deterministic"
    );
}

/// The checkpoint loader over any bytes: never panics, never yields more lanes than
/// allowed, and is deterministic. (A slot may be valid with fewer input bytes than its
/// header: the file is zero-padded to two slots, and libFuzzer solves the crc.)
pub fn checkpoint(data: &[u8]) {
    let cp = decode_checkpoint(data);
    if let Some(cp) = &cp {
        assert!(cp.lanes.len() <= 64);
    }
    assert_eq!(decode_checkpoint(data), cp, "not deterministic");
}

/// Full recovery and reading over a lane whose segment holds the fuzz bytes (after an
/// optional valid header) and whose watermark may point anywhere: opening a reader and a
/// writer never panics or hangs, every record delivered is a valid frame of that lane, in
/// increasing sequence order, and the queue keeps flowing (a new append is delivered).
pub fn recover_segment(data: &[u8]) {
    if data.len() < 16 {
        return;
    }
    let (head, body) = data.split_at(16);
    let dir = Path::new("/fuzz");
    let sim = SimDisk::new(u64_of(head));
    let lane = LaneId(0);
    let segment = SegmentId(1);
    let seg_path = dir.join(FileName::Segment(lane, segment).render());
    let mut file = Vec::with_capacity(64 << 10);
    if head[8] & 1 == 1 {
        let h = SegmentHeader {
            lane,
            segment,
            first_seq: Seq(u64::from(head[9])),
            created_ns: 1,
            size_bytes: 64 << 10,
        };
        file.extend_from_slice(&h.encode());
    }
    file.extend_from_slice(body);
    if head[8] & 2 == 2 {
        file.resize((64 << 10).max(file.len()), 0);
    }
    let files: [(&Path, Vec<u8>); 1] = [(&seg_path, file)];
    for (path, bytes) in &files {
        sim.open(path, OpenMode::Create).expect("create");
        sim.write_file(path, bytes);
    }
    if head[8] & 4 == 4 {
        let wm = Watermark {
            segment,
            offset: u64::from(u16::from_le_bytes([head[10], head[11]])) / ALIGN * ALIGN,
            next_seq: Seq(u64::from(head[12])),
        };
        let boot = if head[8] & 8 == 8 {
            sim.boot_id()
        } else {
            BootId([7; 16])
        };
        let wm_path = dir.join(FileName::Watermark(lane).render());
        sim.open(&wm_path, OpenMode::Create).expect("create");
        sim.write_file(&wm_path, &wm.encode(&boot));
    }
    sim.sync_dir(dir).expect("sync dir");
    let opts = Options::default()
        .storage(Arc::new(sim.clone()))
        .segment_bytes(64 << 10)
        .record_bytes_max(4096)
        .free_disk_bytes_min(0);
    let Ok(mut r) = Reader::open(dir, "c", &opts) else {
        return;
    };
    let mut last_seq = None;
    for _ in 0..10_000 {
        let Ok(Some(rec)) = r.next() else { break };
        assert_eq!(rec.id.lane, lane);
        assert!(
            last_seq.is_none_or(|s| rec.id.seq > s),
            "order: {:?} then {}",
            last_seq,
            rec.id
        );
        last_seq = Some(rec.id.seq);
        let bytes =
            sim.read_file(&dir.join(FileName::Segment(lane, rec.id.position.segment).render()));
        let bytes = bytes.expect("the segment of a delivered record exists");
        let frame = layout::decode_frame(
            &bytes,
            rec.id.position.offset,
            lane,
            rec.id.position.segment,
            4096,
        );
        let Frame::Record {
            header,
            payload_start,
            ..
        } = frame
        else {
            panic!("delivered a record that is not a valid frame: {}", rec.id);
        };
        assert_eq!(header.seq, rec.id.seq);
        assert_eq!(
            &bytes[payload_start..payload_start + header.len as usize],
            &rec.payload[..]
        );
    }
    drop(r);
    let Ok(w) = escalation_queue_wal::Writer::open(dir, &opts) else {
        return;
    };
    if w.append(b"after").is_ok() {
        let mut r = Reader::open(dir, "c", &opts).expect("reader reopens");
        let mut found = false;
        for _ in 0..10_000 {
            let Ok(Some(rec)) = r.next() else { break };
            found |= &rec.payload[..] == b"after";
        }
        assert!(found, "an append after recovery was not delivered");
    }
}
