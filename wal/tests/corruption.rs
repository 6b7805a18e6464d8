//! Damaged files: single bit flips everywhere in a segment, truncation, zeroed and
//! garbage tails, a damaged record in the middle, damaged segment headers and damaged
//! checkpoint slots. Whatever the damage, a reader must never hand out a corrupt record,
//! never panic, report what it stepped over (lane, segment, offset, crc), keep serving
//! every intact record, and `verify` must point at the damage.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use escalation_queue_wal::layout::{
    frame_len, FileName, CHECKPOINT_SLOT_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use escalation_queue_wal::{
    verify, Corruption, CorruptionKind, Event, LaneId, OpenMode, Options, Reader, RecordId,
    SegmentId, SimDisk, Storage, VerifyReport, Writer,
};

mod support;
use support::assert_same;

/// Asserts that `verify` reported damage matching `at`.
#[track_caller]
fn assert_verify_reports(report: &VerifyReport, at: impl Fn(&Corruption) -> bool) {
    assert!(report.damage.iter().any(at), "{report:#?}");
}

/// Asserts that the reader reported a `Corruption` event matching `at`.
#[track_caller]
fn assert_reader_reports(events: &[Event], at: impl Fn(&Corruption) -> bool) {
    let found = events
        .iter()
        .any(|e| matches!(e, Event::Corruption { corruption, .. } if at(corruption)));
    assert!(found, "{events:#?}");
}

const DIR: &str = "/queue";

fn sim_opts(sim: &SimDisk) -> Options {
    Options::default()
        .storage(Arc::new(sim.clone()))
        .segment_bytes(64 << 10)
        .record_bytes_max(4096)
        .free_disk_bytes_min(0)
}

fn real_opts() -> Options {
    Options::default()
        .segment_bytes(64 << 10)
        .record_bytes_max(4096)
        .free_disk_bytes_min(0)
}

fn payload(i: usize, size: usize) -> Vec<u8> {
    (0..size)
        .map(|j| (i as u8).wrapping_mul(97).wrapping_add(j as u8) | 1)
        .collect()
}

fn seg_path(dir: &Path, lane: u16, seg: u64) -> PathBuf {
    dir.join(FileName::Segment(LaneId(lane), SegmentId(seg)).render())
}

/// Drains a reader, returning the payloads in delivery order.
fn drain(r: &mut Reader) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(rec) = r.next().expect("reader next must not fail on damage") {
        out.push(rec.payload.to_vec());
    }
    out
}

/// Every file of a simulated disk, to rebuild fresh copies from.
fn snapshot(sim: &SimDisk) -> Vec<(PathBuf, Vec<u8>)> {
    sim.paths()
        .into_iter()
        .filter_map(|p| sim.read_file(&p).map(|b| (p, b)))
        .collect()
}

/// A fresh simulated disk holding `files`, all durable.
fn restore(files: &[(PathBuf, Vec<u8>)], seed: u64) -> SimDisk {
    let sim = SimDisk::new(seed);
    for (path, bytes) in files {
        sim.open(path, OpenMode::Create).expect("create");
        sim.write_file(path, bytes);
    }
    sim.sync_dir(Path::new(DIR)).expect("sync dir");
    sim
}

fn events_summary(events: &[Event]) -> String {
    format!("{events:#?}")
}

/// Where damage can be in the flipped segment, from the layout of what was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    SegmentHeader,
    /// Header or payload of data record `i`: checksummed.
    Record(usize),
    /// Zero padding after record `i`'s payload: covered by no checksum, never read back.
    Padding(usize),
    /// The seal (sealed variant).
    Seal,
    /// The 40 bytes where the next record would start in an unsealed segment: looks like a
    /// torn write.
    NextSlot,
    /// Further into the preallocated zeros: never read.
    Beyond,
}

struct Layout {
    /// (offset, payload length) per record.
    records: Vec<(u64, usize)>,
    /// Offset of the seal, if any.
    seal: Option<u64>,
    /// End of everything written.
    end: u64,
}

impl Layout {
    fn region(&self, byte: u64) -> Region {
        if byte < SEGMENT_HEADER_LEN as u64 {
            return Region::SegmentHeader;
        }
        for (i, &(off, len)) in self.records.iter().enumerate() {
            let covered = off + (RECORD_HEADER_LEN + len) as u64;
            let frame_end = off + frame_len(len as u32);
            if (off..covered).contains(&byte) {
                return Region::Record(i);
            }
            if (covered..frame_end).contains(&byte) {
                return Region::Padding(i);
            }
        }
        if let Some(s) = self.seal {
            if (s..s + RECORD_HEADER_LEN as u64).contains(&byte) {
                return Region::Seal;
            }
        }
        // After a seal nothing is read; before one, the next slot looks like a torn write.
        if self.seal.is_none() && (self.end..self.end + RECORD_HEADER_LEN as u64).contains(&byte) {
            return Region::NextSlot;
        }
        Region::Beyond
    }
}

/// Asserts that `verify` reports damage or a torn tail at `offset` of segment 1.
fn assert_verify_points_at(report: &VerifyReport, offset: u64, what: &str) {
    let at_damage = report
        .damage
        .iter()
        .any(|d| d.segment == Some(SegmentId(1)) && d.offset == offset);
    let at_torn = report
        .torn_tails
        .iter()
        .any(|(_, p)| p.segment == SegmentId(1) && p.offset == offset);
    assert!(
        at_damage || at_torn,
        "{what}: verify does not point at offset {offset}: {report:#?}"
    );
}

fn bit_flip_story(sealed: bool) {
    let sizes = [5usize, 60, 200];
    let sim = SimDisk::new(7);
    let opts = sim_opts(&sim);
    let w = Writer::open(DIR, &opts).unwrap();
    let mut records = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let id = w.append(&payload(i, size)).unwrap();
        records.push((id.position.offset, size));
    }
    drop(w);
    let last = records.last().copied().unwrap();
    let data_end = last.0 + frame_len(last.1 as u32);
    let (seal, end) = if sealed {
        // The writer died while writing a fourth frame: only its first 40 bytes reached
        // the file, torn. A reader finds the abandoned lane and seals its tail there (a
        // clean tail would stay open for the next writer).
        let seg = seg_path(Path::new(DIR), 0, 1);
        let mut bytes = sim.read_file(&seg).unwrap();
        bytes[data_end as usize..][..RECORD_HEADER_LEN].fill(0xab);
        sim.write_file(&seg, &bytes);
        let mut r = Reader::open(DIR, "worker", &opts).unwrap();
        assert_eq!(drain(&mut r).len(), sizes.len());
        let events = r.take_events();
        assert!(
            matches!(&events[..], [Event::TornTail { at, .. }] if at.offset == data_end),
            "{events:?}"
        );
        (Some(data_end), data_end + RECORD_HEADER_LEN as u64)
    } else {
        (None, data_end)
    };
    let layout = Layout { records, seal, end };
    let files = snapshot(&sim);
    let seg = seg_path(Path::new(DIR), 0, 1);
    let original = files.iter().find(|(p, _)| *p == seg).unwrap().1.clone();
    let expected: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| payload(i, s))
        .collect();

    // Every bit of what was written and of the 128 bytes after it, plus a fixed sample of
    // the preallocated zeros further on (never read; flipping all 512 Ki bits would only
    // repeat the `Beyond` case).
    let dense = (layout.end + 128) * 8;
    let sample = (0..64u64).map(|k| dense + k * ((original.len() as u64 * 8 - dense) / 64));
    for bit in (0..dense).chain(sample) {
        let byte = bit / 8;
        let region = layout.region(byte);
        let what = format!("sealed={sealed} bit {bit} (byte {byte}, {region:?})");
        let mut damaged = files.clone();
        for (p, b) in &mut damaged {
            if *p == seg {
                b[byte as usize] ^= 1 << (bit % 8);
            }
        }
        let disk = restore(&damaged, bit);
        let opts = sim_opts(&disk);

        let report = verify(DIR, &opts).unwrap_or_else(|e| panic!("{what}: verify: {e}"));
        match region {
            Region::SegmentHeader => assert_verify_points_at(&report, 0, &what),
            Region::Record(i) => assert_verify_points_at(&report, layout.records[i].0, &what),
            Region::Seal => assert_verify_points_at(&report, layout.seal.unwrap(), &what),
            Region::NextSlot => assert_verify_points_at(&report, layout.end, &what),
            Region::Padding(_) | Region::Beyond => assert!(
                report.damage.is_empty() && report.torn_tails.is_empty(),
                "{what}: bytes nobody reads back are not damage: {report:#?}"
            ),
        }

        let mut r = Reader::open(DIR, "worker", &opts)
            .unwrap_or_else(|e| panic!("{what}: reader must open a damaged queue: {e}"));
        let got = drain(&mut r);
        let events = r.take_events();
        let ev = events_summary(&events);
        match region {
            Region::Record(i) => {
                let mut want = expected.clone();
                want.remove(i);
                assert!(
                    got == want,
                    "{what}: expected every record but {i}, got {} records; {ev}",
                    got.len()
                );
                let off = layout.records[i].0;
                let reported = events.iter().any(|e| {
                    matches!(e, Event::Corruption { corruption: c, .. }
                        if c.offset == off
                            && c.lane == Some(LaneId(0))
                            && c.segment == Some(SegmentId(1))
                            && c.path == seg)
                });
                assert!(reported, "{what}: damage not reported at {off}: {ev}");
            }
            _ => {
                assert!(
                    got == expected,
                    "{what}: every record must be delivered; {ev}"
                );
                for e in &events {
                    let allowed = match e {
                        Event::TornTail { .. } => region == Region::NextSlot,
                        Event::Corruption { .. } => region == Region::Seal,
                        _ => false,
                    };
                    assert!(allowed, "{what}: unexpected event {e:?}");
                }
            }
        }
        drop(r);
        if bit % 9 != 0 {
            continue;
        }
        // Still usable (checked for one bit of nearly every byte, to keep the test quick):
        // a writer appends after the damage and the reader gets it.
        let w = Writer::open(DIR, &opts).unwrap_or_else(|e| panic!("{what}: writer: {e}"));
        w.append(b"after the damage").unwrap();
        drop(w);
        let mut r = Reader::open(DIR, "worker", &opts).unwrap();
        let again = drain(&mut r);
        assert_eq!(
            again.last().map(Vec::as_slice),
            Some(&b"after the damage"[..]),
            "{what}"
        );
    }
}

/// Story: a bit rots anywhere in a segment of an abandoned lane (writer gone, tail not
/// sealed). If this fails, a reader hands a corrupt escalation to the cloud, panics, loses
/// intact records around the damage, or hides the damage from operators.
#[test]
fn every_single_bit_flip_in_an_unsealed_segment_is_caught_and_stepped_over() {
    bit_flip_story(false);
}

/// Story: the same for a segment whose tail was sealed by recovery (the seal itself can
/// rot too).
#[test]
fn every_single_bit_flip_in_a_sealed_segment_is_caught_and_stepped_over() {
    bit_flip_story(true);
}

/// Writes `n` records of `size` bytes in their own batches on the real file system and
/// drops the writer without closing. Returns their ids.
fn real_queue(dir: &Path, n: usize, size: usize) -> Vec<RecordId> {
    let w = Writer::open(dir, &real_opts()).unwrap();
    let ids = (0..n)
        .map(|i| w.append(&payload(i, size)).unwrap())
        .collect();
    drop(w);
    ids
}

fn expected(range: std::ops::Range<usize>, size: usize) -> Vec<Vec<u8>> {
    range.map(|i| payload(i, size)).collect()
}

/// Story: someone (a backup tool, a full disk repair) truncates a closed queue's segment
/// in the middle of a record. If this fails, the queue cannot be opened at all (every
/// restart fails: a crash loop) or the intact records before the cut are lost.
///
/// Bug found: recovery trusted the watermark past the end of the shortened file, found a
/// "torn tail" there and failed to write a seal beyond the file's end, so every
/// `Reader::open` and `Writer::open` returned `Corrupt`. Now recovery scans from the
/// header when the watermark is past the file's end (damage before the watermark is
/// reported as corruption) and may extend the file up to its preallocated size to seal it.
#[test]
fn a_segment_truncated_mid_record_on_a_closed_queue_keeps_serving_what_precedes_it() {
    // Cut inside the record header (too short for a seal), inside the payload, and just
    // before the record's last byte.
    for into in [20, 50, 139] {
        truncated_mid_record(into);
    }
}

fn truncated_mid_record(into: u64) {
    let dir = tempfile::tempdir().unwrap();
    let ids = real_queue(dir.path(), 6, 100);
    let seg = seg_path(dir.path(), 0, 1);
    let cut = ids[3].position.offset + into;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let report = verify(dir.path(), &real_opts()).unwrap();
    assert_verify_reports(&report, |d| d.offset == ids[3].position.offset);

    let mut r = Reader::open(dir.path(), "worker", &real_opts())
        .expect("a truncated segment must not stop the reader from opening");
    assert_same(&drain(&mut r), &expected(0..3, 100));
    assert_reader_reports(&r.take_events(), |c| {
        c.offset == ids[3].position.offset && c.kind == CorruptionKind::Truncated
    });
    drop(r);
    let w = Writer::open(dir.path(), &real_opts()).expect("writer opens after truncation");
    w.append(b"later").unwrap();
    let mut r = Reader::open(dir.path(), "worker", &real_opts()).unwrap();
    let mut want = expected(0..3, 100);
    want.push(b"later".to_vec());
    assert_same(&drain(&mut r), &want);
}

/// Story: the same cut, but into a sealed segment that is not the lane's last. If this
/// fails, the reader stops at the damaged segment and never reaches newer records.
#[test]
fn a_sealed_segment_truncated_mid_record_is_reported_and_later_segments_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let ids = real_queue(dir.path(), 6, 100);
    // A second writer session continues segment 1 until it is full: the roll seals it and
    // the lane goes on in segment 2.
    let w = Writer::open(dir.path(), &real_opts()).unwrap();
    let filler = payload(9, 4000);
    while w.append(&filler).unwrap().position.segment == SegmentId(1) {}
    w.append(b"in segment 2").unwrap();
    drop(w);
    let seg = seg_path(dir.path(), 0, 1);
    let cut = ids[4].position.offset + 20;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let report = verify(dir.path(), &real_opts()).unwrap();
    let damaged =
        |c: &Corruption| c.segment == Some(SegmentId(1)) && c.offset == ids[4].position.offset;
    assert_verify_reports(&report, damaged);
    let mut r = Reader::open(dir.path(), "worker", &real_opts()).unwrap();
    let mut want = expected(0..4, 100);
    // The first filler went to segment 2 with the record after it.
    want.push(filler.clone());
    want.push(b"in segment 2".to_vec());
    assert_same(&drain(&mut r), &want);
    assert_reader_reports(&r.take_events(), damaged);
}

/// Story: the last records of a lane read back as zeros (a lost write-back on a lying
/// disk). If this fails, the zeros are silently treated as "never written": acknowledged
/// records vanish with no report, or the reader stops.
#[test]
fn a_zeroed_tail_inside_durable_data_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let ids = real_queue(dir.path(), 6, 100);
    let seg = seg_path(dir.path(), 0, 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    let from = ids[4].position.offset as usize;
    let to = (ids[5].position.offset + frame_len(100)) as usize;
    bytes[from..to].fill(0);
    std::fs::write(&seg, &bytes).unwrap();

    let zeroed = |c: &Corruption| c.offset == from as u64 && c.kind == CorruptionKind::Zeroed;
    assert_verify_reports(&verify(dir.path(), &real_opts()).unwrap(), zeroed);
    let mut r = Reader::open(dir.path(), "worker", &real_opts()).unwrap();
    assert_same(&drain(&mut r), &expected(0..4, 100));
    assert_reader_reports(&r.take_events(), zeroed);
}

/// Story: garbage lands after the last record (inside the preallocated zeros, and past
/// the end of the file). If this fails, junk is delivered as records, intact records are
/// lost, or the queue refuses to open.
#[test]
fn garbage_past_the_end_of_data_is_cut_off_and_everything_before_it_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let ids = real_queue(dir.path(), 4, 100);
    let seg = seg_path(dir.path(), 0, 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = (ids[3].position.offset + frame_len(100)) as usize;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in &mut bytes[end..end + 300] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let file_len = bytes.len();
    bytes.extend(std::iter::repeat_n(0xa5, 4096));
    std::fs::write(&seg, &bytes).unwrap();

    let report = verify(dir.path(), &real_opts()).unwrap();
    assert!(report.damage.is_empty(), "{report:#?}");
    assert_eq!(report.records, 4);
    let mut r = Reader::open(dir.path(), "worker", &real_opts()).unwrap();
    assert_same(&drain(&mut r), &expected(0..4, 100));
    for e in r.take_events() {
        assert!(matches!(e, Event::TornTail { .. }), "{e:?}");
    }
    drop(r);
    let w = Writer::open(dir.path(), &real_opts()).unwrap();
    w.append(b"later").unwrap();
    let mut r = Reader::open(dir.path(), "worker", &real_opts()).unwrap();
    let mut want = expected(0..4, 100);
    want.push(b"later".to_vec());
    assert_same(&drain(&mut r), &want);
    assert!(std::fs::metadata(&seg).unwrap().len() >= file_len as u64);
}

/// Story: one record in the middle of a lane rots, with later batches (and a later
/// segment) behind it. If this fails, the reader stops at the damage (later escalations
/// never reach the cloud), delivers the damaged bytes, or reports the damage without the
/// lane/segment/offset/crc an operator needs.
#[test]
fn a_damaged_record_in_the_middle_is_reported_with_its_crc_and_later_records_still_flow() {
    let sim = SimDisk::new(3);
    let opts = sim_opts(&sim);
    let w = Writer::open(DIR, &opts).unwrap();
    let ids: Vec<RecordId> = (0..10)
        .map(|i| w.append(&payload(i, 300)).unwrap())
        .collect();
    drop(w);
    let w = Writer::open(DIR, &opts).unwrap();
    w.append(b"next session").unwrap();
    let seg = seg_path(Path::new(DIR), 0, 1);
    let mut bytes = sim.read_file(&seg).unwrap();
    let off = ids[4].position.offset;
    let stored_crc = u32::from_le_bytes(bytes[off as usize..off as usize + 4].try_into().unwrap());
    bytes[off as usize + RECORD_HEADER_LEN + 17] ^= 0x10;
    sim.write_file(&seg, &bytes);

    let report = verify(DIR, &opts).unwrap();
    assert_eq!(report.damage.len(), 1, "{report:#?}");
    let d = &report.damage[0];
    assert_eq!(
        (d.lane, d.segment, d.offset),
        (Some(LaneId(0)), Some(SegmentId(1)), off)
    );

    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    let mut want: Vec<Vec<u8>> = (0..10)
        .filter(|&i| i != 4)
        .map(|i| payload(i, 300))
        .collect();
    want.push(b"next session".to_vec());
    assert_same(&drain(&mut r), &want);
    let events = r.take_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let Event::Corruption {
        corruption,
        resumed_at,
        records_lost,
    } = &events[0]
    else {
        panic!("{events:#?}");
    };
    assert_eq!(corruption.lane, Some(LaneId(0)));
    assert_eq!(corruption.segment, Some(SegmentId(1)));
    assert_eq!(corruption.offset, off);
    assert_eq!(corruption.path, seg);
    match corruption.kind {
        CorruptionKind::Checksum { expected, actual } => {
            assert_eq!(expected, stored_crc);
            assert_ne!(actual, expected);
        }
        other => panic!("expected a crc mismatch, got {other:?}"),
    }
    assert_eq!(resumed_at.offset, ids[5].position.offset);
    assert_eq!(*records_lost, Some(1));
    // The damage stays reported (not silently acknowledged away) until it is consumed.
    drop(r);
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    assert_eq!(drain(&mut r).len(), 10);
    assert_eq!(r.take_events().len(), 1);
}

/// Story: the header of the lane's last segment is zeroed on the medium while the records
/// behind it are intact. If this fails, recovery mistakes the segment for one whose
/// creation never completed and deletes it, silently destroying acknowledged records.
///
/// Bug found: exactly that (and the reader's open then failed with NotFound). Recovery now
/// removes a zero-header segment only if no valid frame follows the header.
#[test]
fn a_zeroed_header_on_a_segment_with_records_does_not_get_the_segment_deleted() {
    let sim = SimDisk::new(4);
    let opts = sim_opts(&sim);
    let w = Writer::open(DIR, &opts).unwrap();
    for i in 0..5 {
        w.append(&payload(i, 200)).unwrap();
    }
    drop(w);
    let seg = seg_path(Path::new(DIR), 0, 1);
    let mut bytes = sim.read_file(&seg).unwrap();
    bytes[..SEGMENT_HEADER_LEN].fill(0);
    sim.write_file(&seg, &bytes);

    let report = verify(DIR, &opts).unwrap();
    assert_verify_reports(&report, |d| d.offset == 0);
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    assert_same(&drain(&mut r), &expected(0..5, 200));
    assert!(sim.read_file(&seg).is_some(), "the segment was deleted");
    let events = r.take_events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::IncompleteSegmentRemoved { .. })),
        "{events:#?}"
    );
}

/// Story: a damaged header on a sealed, older segment. If this fails, the records in it
/// (whose frames carry their own identity) are lost or the reader stops there.
#[test]
fn a_damaged_header_on_an_older_segment_still_lets_its_records_through() {
    let sim = SimDisk::new(5);
    let opts = sim_opts(&sim);
    let w = Writer::open(DIR, &opts).unwrap();
    for i in 0..3 {
        w.append(&payload(i, 200)).unwrap();
    }
    drop(w);
    let w = Writer::open(DIR, &opts).unwrap();
    w.append(&payload(3, 200)).unwrap();
    drop(w);
    let seg = seg_path(Path::new(DIR), 0, 1);
    let mut bytes = sim.read_file(&seg).unwrap();
    bytes[20] ^= 0x04;
    sim.write_file(&seg, &bytes);
    let report = verify(DIR, &opts).unwrap();
    assert_verify_reports(&report, |d| {
        d.segment == Some(SegmentId(1)) && d.offset == 0 && d.kind == CorruptionKind::BadHeader
    });
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    assert_same(&drain(&mut r), &expected(0..4, 200));
}

/// Builds a queue with 10 records and two checkpoints: generation 1 after 3 records
/// (slot 1), generation 2 after 6 (slot 0). Returns the checkpoint file's path.
fn two_checkpoints(sim: &SimDisk) -> PathBuf {
    let opts = sim_opts(sim);
    let w = Writer::open(DIR, &opts).unwrap();
    for i in 0..10 {
        w.append(&payload(i, 100)).unwrap();
    }
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    for _ in 0..6 {
        let rec = r.next().unwrap().unwrap();
        if rec.id.seq.0 == 2 || rec.id.seq.0 == 5 {
            r.ack(rec.id).unwrap();
            r.checkpoint().unwrap();
        }
    }
    Path::new(DIR).join(FileName::Checkpoint("worker".into()).render())
}

fn damage_slot(sim: &SimDisk, path: &Path, slot: usize) {
    let mut bytes = sim.read_file(path).unwrap();
    bytes[slot * CHECKPOINT_SLOT_LEN + 9] ^= 0x80;
    sim.write_file(path, &bytes);
}

/// Story: the newest checkpoint slot is damaged (or torn by a crash mid-write). If this
/// fails, the reader skips records (loss) or refuses to start; it must fall back to the
/// older slot: some records are delivered twice, none is lost.
#[test]
fn a_damaged_newest_checkpoint_slot_falls_back_to_the_older_one() {
    let sim = SimDisk::new(6);
    let path = two_checkpoints(&sim);
    damage_slot(&sim, &path, 0);
    let opts = sim_opts(&sim);
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    assert_same(&drain(&mut r), &expected(3..10, 100));
    assert!(r.take_events().is_empty());
}

/// Story: the older slot rots. If this fails, a healthy newest checkpoint is ignored and
/// the worker re-sends escalations it already delivered.
#[test]
fn a_damaged_older_checkpoint_slot_does_not_matter() {
    let sim = SimDisk::new(8);
    let path = two_checkpoints(&sim);
    damage_slot(&sim, &path, 1);
    let opts = sim_opts(&sim);
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    assert_same(&drain(&mut r), &expected(6..10, 100));
}

/// Story: both checkpoint slots are destroyed. If this fails, the reader refuses to start
/// (the queue is stuck) or starts at the end (everything pending is lost). It must report
/// the damage and read from the oldest segment: duplicates, but no loss; `verify` names
/// the checkpoint file.
#[test]
fn both_checkpoint_slots_damaged_is_reported_and_reading_restarts_from_the_oldest_segment() {
    let sim = SimDisk::new(9);
    let path = two_checkpoints(&sim);
    damage_slot(&sim, &path, 0);
    damage_slot(&sim, &path, 1);
    let opts = sim_opts(&sim);
    let report = verify(DIR, &opts).unwrap();
    assert_verify_reports(&report, |d| d.path == path);
    assert_eq!(report.checkpoints, vec![("worker".to_string(), false)]);
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    assert_reader_reports(&r.take_events(), |c| c.path == path);
    assert_same(&drain(&mut r), &expected(0..10, 100));
    // Acknowledging and checkpointing again repairs the cursor.
    drop(r);
    let mut r2 = Reader::open(DIR, "worker", &opts).unwrap();
    let mut last = None;
    while let Some(rec) = r2.next().unwrap() {
        last = Some(rec.id);
    }
    r2.ack(last.unwrap()).unwrap();
    r2.checkpoint().unwrap();
    drop(r2);
    assert!(verify(DIR, &opts).unwrap().checkpoints[0].1);
    let mut r3 = Reader::open(DIR, "worker", &opts).unwrap();
    assert!(r3.next().unwrap().is_none());
}

/// Story: a crash interrupted the creation of a lane's first segment (the file exists,
/// its header never became durable) while another lane holds records. If this fails, the
/// reader's first start after the crash errors out instead of removing the empty file and
/// serving the other lane.
///
/// Bug found: the reader listed the lane's segments before recovering the lane, then
/// opened the removed segment: `Reader::open` failed with NotFound.
#[test]
fn an_incomplete_first_segment_of_a_lane_is_removed_and_the_reader_opens() {
    let sim = SimDisk::new(10);
    let opts = sim_opts(&sim);
    let w = Writer::open(DIR, &opts).unwrap();
    w.append(b"lane 0 record").unwrap();
    // Lane 1's first segment: created and preallocated, header not yet written.
    let seg = seg_path(Path::new(DIR), 1, 1);
    let f = sim.open(&seg, OpenMode::CreateNew).unwrap();
    f.allocate(64 << 10).unwrap();
    f.sync_data().unwrap();
    sim.sync_dir(Path::new(DIR)).unwrap();

    let mut r = Reader::open(DIR, "worker", &opts).expect("reader opens");
    assert_same(&drain(&mut r), &[b"lane 0 record".to_vec()]);
    let events = r.take_events();
    assert_eq!(
        events,
        vec![Event::IncompleteSegmentRemoved {
            lane: LaneId(1),
            segment: SegmentId(1)
        }]
    );
    assert!(sim.read_file(&seg).is_none());
}
