//! The queue's bounds and bookkeeping on a disk that does not fail: a full queue
//! (`queue_bytes_max`), the lane limit, one reader per cursor, a cursor left past the end of
//! a lane that lost its tail, retention (including segments stamped in 1970 or in the
//! future), abandoned lanes, and a writer restarting in a loop.
//!
//! Failing storage calls (a failed sync or write, a full disk, lying sectors, files removed
//! under a running reader) are in `sim_faults.rs`; the same on the real file system in
//! `real_faults.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use escalation_queue_wal::layout::FileName;
use escalation_queue_wal::{
    verify, CrashMode, Error, Event, LaneId, Reader, SegmentId, SimDisk, Writer,
};

mod support;
use support::{assert_same, big, consume_and_free, drain, opts, p, segment_files};

const DIR: &str = "/queue";

fn segments(sim: &SimDisk) -> usize {
    segment_files(sim).len()
}

/// Story: the reader falls behind and the queue reaches `queue_bytes_max`. If this fails,
/// the disk fills up without bound, or the error is not the clear, retryable `QueueFull`,
/// or appends never resume after the reader catches up, or something acknowledged is lost.
#[test]
fn queue_full_rejects_appends_until_the_reader_frees_segments() {
    let sim = SimDisk::new(5);
    let opts = opts(&sim).queue_bytes_max(3 * (64 << 10));
    let w = Writer::open(DIR, &opts).unwrap();
    let mut appended = Vec::new();
    let err = loop {
        let payload = big("q", appended.len(), 2000);
        match w.append(&payload) {
            Ok(_) => appended.push(payload),
            Err(e) => break e,
        }
        assert!(appended.len() < 1000, "queue_bytes_max was never enforced");
    };
    assert!(matches!(err, Error::QueueFull { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(segments(&sim) <= 3);
    // Still full on retry; nothing was appended by the failed attempts.
    assert!(matches!(
        w.append(b"x").map(|_| ()).or_else(|e| match e {
            Error::QueueFull { .. } => Ok(()),
            e => Err(e),
        }),
        Ok(())
    ));
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    let got = consume_and_free(&mut r);
    let mut want = appended.clone();
    if got.len() == want.len() + 1 {
        want.push(b"x".to_vec());
    }
    assert_same(&got, &want);
    assert!(segments(&sim) < 3, "consumed segments are deleted");
    w.append(&big("q", 9999, 2000))
        .expect("appends resume once segments are freed");
    assert_same(&drain(&mut r), &[big("q", 9999, 2000)]);
    assert!(r.take_events().is_empty());
}

/// Story: more writer processes start than there are lanes. If this fails, two writers
/// share a lane (interleaved, corrupt segments), the error is unclear, or a lane is never
/// freed when its writer exits so the queue runs out of lanes for good.
#[test]
fn lanes_max_bounds_concurrent_writers_and_a_dropped_writer_frees_its_lane() {
    let sim = SimDisk::new(7);
    let opts = opts(&sim).lanes_max(2);
    let a = Writer::open(DIR, &opts).unwrap();
    let b = Writer::open(DIR, &opts).unwrap();
    assert_ne!(a.lane(), b.lane());
    let e = Writer::open(DIR, &opts).unwrap_err();
    assert!(matches!(e, Error::NoFreeLane { lanes_max: 2, .. }), "{e}");
    a.append(b"a1").unwrap();
    b.append(b"b1").unwrap();
    let lane_a = a.lane();
    drop(a);
    let c = Writer::open(DIR, &opts).expect("the dropped writer's lane is free again");
    assert_eq!(c.lane(), lane_a);
    let id = c.append(b"c1").unwrap();
    assert_eq!(id.seq.0, 1, "the new writer continues the lane's sequence");
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    let mut got = drain(&mut r);
    got.sort();
    assert_same(&got, &[b"a1".to_vec(), b"b1".to_vec(), b"c1".to_vec()]);
}

/// Story: a second worker is started on the same cursor. If this fails, two readers
/// acknowledge and delete under each other (double delivery, or segments deleted under an
/// unconsumed cursor).
#[test]
fn a_second_reader_on_the_same_cursor_is_refused() {
    let sim = SimDisk::new(8);
    let opts = opts(&sim);
    let w = Writer::open(DIR, &opts).unwrap();
    w.append(b"one").unwrap();
    let r1 = Reader::open(DIR, "worker", &opts).unwrap();
    let e = Reader::open(DIR, "worker", &opts).unwrap_err();
    assert!(
        matches!(e, Error::CursorLocked { ref name, .. } if name == "worker"),
        "{e}"
    );
    let mut other = Reader::open(DIR, "audit", &opts).expect("another cursor is fine");
    assert_eq!(drain(&mut other).len(), 1);
    drop(r1);
    Reader::open(DIR, "worker", &opts).expect("free again once the first reader is gone");
}

/// Loses the data of segment 1 after its third record: the segment file and the lane's
/// watermark go back to what they were then (as a lying disk or a restore from backup
/// would leave them), while the cursor's checkpoint says all ten records were consumed.
fn lose_the_tail_under_a_checkpoint(sim: &SimDisk) {
    let opts = opts(sim);
    let seg = Path::new(DIR).join(FileName::Segment(LaneId(0), SegmentId(1)).render());
    let wm = Path::new(DIR).join(FileName::Watermark(LaneId(0)).render());
    let w = Writer::open(DIR, &opts).unwrap();
    for i in 0..3 {
        w.append(&p("kept", i)).unwrap();
    }
    let (seg_then, wm_then) = (sim.read_file(&seg).unwrap(), sim.read_file(&wm).unwrap());
    for i in 3..10 {
        w.append(&p("lost", i)).unwrap();
    }
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    assert_eq!(consume_and_free(&mut r).len(), 10);
    drop(r);
    drop(w);
    sim.write_file(&seg, &seg_then);
    sim.write_file(&wm, &wm_then);
}

fn assert_cursor_past_end(events: &[Event]) {
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::CursorPastEnd {
                lane: LaneId(0),
                ..
            }
        )),
        "{events:#?}"
    );
    for e in events {
        assert!(
            matches!(e, Event::CursorPastEnd { .. }),
            "only the cursor problem is to be reported, nothing was corrupted: {e:?}"
        );
    }
}

/// Story: the lane lost data below the cursor's checkpoint, and the reader starts first.
/// If this fails, the problem goes unreported, or records written after the loss are
/// skipped because the cursor still points past them.
///
/// Bug found: the cursor was moved to the lane's end, which was just past the seal that
/// recovery wrote; once the writer went on in a new segment the reader decoded the zeros
/// after the seal and reported a spurious `Corruption`. It now resumes at the seal.
#[test]
fn a_cursor_past_the_recovered_end_is_reported_and_later_appends_are_delivered() {
    let sim = SimDisk::new(9);
    let opts = opts(&sim);
    lose_the_tail_under_a_checkpoint(&sim);
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    assert_cursor_past_end(&r.take_events());
    assert!(drain(&mut r).is_empty());
    let w = Writer::open(DIR, &opts).unwrap();
    for i in 0..3 {
        w.append(&p("later", i)).unwrap();
    }
    let mut got = Vec::new();
    while let Some(rec) = r.next_timeout(Duration::from_millis(500)).unwrap() {
        got.push(rec.payload.to_vec());
    }
    assert_same(&got, &(0..3).map(|i| p("later", i)).collect::<Vec<_>>());
    let events = r.take_events();
    assert!(events.is_empty(), "{events:#?}");
}

/// Story: the same loss, but a writer restarts and appends before the reader does. If
/// this fails, the cursor problem is misreported as corruption (or not at all), or the
/// records written after the loss are skipped.
///
/// Bug found: only a cursor past the lane's watermark was detected; here the watermark is
/// in the new segment, so the reader started inside the old segment past its seal and
/// reported `Corruption` (zeros) and a sequence `Gap` instead of `CursorPastEnd`.
#[test]
fn a_cursor_past_the_end_is_reported_even_when_the_lane_moved_on_before_the_reader_started() {
    let sim = SimDisk::new(10);
    let opts = opts(&sim);
    lose_the_tail_under_a_checkpoint(&sim);
    let w = Writer::open(DIR, &opts).unwrap();
    for i in 0..3 {
        w.append(&p("later", i)).unwrap();
    }
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    let got = drain(&mut r);
    assert_cursor_past_end(&r.take_events());
    assert_same(&got, &(0..3).map(|i| p("later", i)).collect::<Vec<_>>());
}

/// Story: records sit unconsumed past the retention age (a security requirement). If this
/// fails, expired data stays on disk, the operator is not told how much was dropped, or the
/// reader trips over the deleted segments.
#[test]
fn retention_expires_sealed_segments_and_reports_what_was_dropped() {
    let sim = SimDisk::new(11);
    let opts = opts(&sim);
    let w = Writer::open(DIR, &opts).unwrap();
    let mut ids = Vec::new();
    let mut i = 0;
    while ids
        .last()
        .is_none_or(|id: &escalation_queue_wal::RecordId| id.position.segment < SegmentId(3))
    {
        ids.push(w.append(&big("old", i, 3000)).unwrap());
        i += 1;
    }
    let first_in_3 = ids.last().unwrap().seq.0;
    w.append(&big("old", i, 3000)).unwrap();
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    for _ in 0..5 {
        let rec = r.next().unwrap().unwrap();
        r.ack(rec.id).unwrap();
    }
    // Two more delivered but not acknowledged: they expire too.
    r.next().unwrap().unwrap();
    r.next().unwrap().unwrap();
    let segs_before = segments(&sim);
    let expired = r.expire_older_than(Duration::ZERO).unwrap();
    assert_eq!(expired, first_in_3 - 5);
    let events = r.take_events();
    assert_eq!(
        events,
        vec![Event::Expired {
            lane: LaneId(0),
            segments: 2,
            records: first_in_3 - 5
        }]
    );
    assert_eq!(segments(&sim), segs_before - 2);
    let got = drain(&mut r);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], big("old", first_in_3 as usize, 3000));
    assert!(r.take_events().is_empty());
    // The newest segment is never expired.
    assert_eq!(r.expire_older_than(Duration::ZERO).unwrap(), 0);
    assert!(r.take_events().is_empty());
    assert!(verify(DIR, &opts).unwrap().is_clean());
}

/// Story: a writer process exits (or is killed) without closing; its lane is abandoned
/// with an unsealed tail. If this fails, the records it acknowledged before exiting are
/// stranded until some writer happens to reuse the lane.
#[test]
fn an_abandoned_lane_is_recovered_by_the_reader_and_all_its_records_delivered() {
    let sim = SimDisk::new(12);
    let opts = opts(&sim);
    let other = Writer::open(DIR, &opts).unwrap();
    other.append(b"other lane").unwrap();
    let w = Writer::open(DIR, &opts).unwrap();
    assert_eq!(w.lane(), LaneId(1));
    let want: Vec<_> = (0..40).map(|i| big("gone", i, 2000)).collect();
    for x in &want {
        w.append(x).unwrap();
    }
    drop(w);
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    let mut lanes: BTreeMap<LaneId, Vec<Vec<u8>>> = BTreeMap::new();
    while let Some(rec) = r.next().unwrap() {
        lanes
            .entry(rec.id.lane)
            .or_default()
            .push(rec.payload.to_vec());
    }
    assert_eq!(lanes.get(&LaneId(1)), Some(&want));
    assert_eq!(lanes.get(&LaneId(0)), Some(&vec![b"other lane".to_vec()]));
    assert!(r.take_events().is_empty());
    // A killed process (the OS kept everything) is the same story.
    let w = Writer::open(DIR, &opts).unwrap();
    assert_eq!(w.lane(), LaneId(1));
    w.append(b"before the kill").unwrap();
    drop(r);
    drop(w);
    drop(other);
    sim.crash(CrashMode::KeepAll);
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    let got = drain(&mut r);
    assert_eq!(got.last().map(Vec::as_slice), Some(&b"before the kill"[..]));
    assert!(r.take_events().is_empty());
}

/// Story: a writer process crash-loops (or restarts often) without appending. If this
/// fails, every restart leaves a preallocated, empty segment behind, past
/// `queue_bytes_max` and `free_disk_bytes_min` (which are checked only when a segment is
/// rolled): the disk of the edge device fills up with empty files, and the queue then
/// rejects real escalations as full while a reader with nothing to acknowledge never
/// frees them.
///
/// Bug found: exactly that (20 restarts left 21 segments on a 3-segment queue). A writer
/// now creates its first segment at its first append, through the bounded roll path.
#[test]
fn a_writer_restarting_in_a_loop_does_not_grow_the_queue_past_its_bounds() {
    let sim = SimDisk::new(13);
    let opts = opts(&sim).queue_bytes_max(3 * (64 << 10));
    let w = Writer::open(DIR, &opts).unwrap();
    w.append(b"first").unwrap();
    drop(w);
    for restart in 0..20 {
        let w = Writer::open(DIR, &opts)
            .unwrap_or_else(|e| panic!("restart {restart}: writer does not open: {e}"));
        drop(w);
    }
    assert!(segments(&sim) <= 3, "{} segment files", segments(&sim));
    // The queue still takes what its bounds allow: more than one segment's worth.
    let w = Writer::open(DIR, &opts).unwrap();
    let mut appended = 0;
    while w.append(&big("fill", appended, 3000)).is_ok() {
        appended += 1;
        assert!(appended < 1000);
    }
    assert!(appended > 21, "only {appended} records fit");
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    assert_eq!(drain(&mut r).len(), appended + 1);
    assert!(r.take_events().is_empty());
}

/// Three segments of lane 0 holding `big("stamp", ..)` records; returns how many records
/// the first two hold.
fn three_segments(sim: &SimDisk) -> u64 {
    let w = Writer::open(DIR, &opts(sim)).unwrap();
    let mut i = 0;
    let mut before_3 = 0;
    loop {
        let id = w.append(&big("stamp", i, 3000)).unwrap();
        i += 1;
        match id.position.segment.0 {
            3 => return before_3,
            _ => before_3 = id.seq.0 + 1,
        }
    }
}

/// Rewrites segment `seg`'s header (lane 0) with creation stamp `created_ns`.
fn restamp(sim: &SimDisk, seg: u64, created_ns: u64) {
    use escalation_queue_wal::layout::{SegmentHeader, SEGMENT_HEADER_LEN};
    let path = Path::new(DIR).join(FileName::Segment(LaneId(0), SegmentId(seg)).render());
    let mut bytes = sim.read_file(&path).unwrap();
    let mut header = SegmentHeader::decode(&bytes[..SEGMENT_HEADER_LEN]).unwrap();
    header.created_ns = created_ns;
    bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&header.encode());
    sim.write_file(&path, &bytes);
}

/// Story (probe F11 left-over): an edge box boots without a real-time clock, so the
/// writer stamps a new segment with a 1970 time. Retention decided by that stamp: the
/// segment before it looked 56 years old and its unconsumed records were expired at the
/// next sweep, even with a retention age of a day. Now a stamp before 2025 is not
/// believed: the age counts from when the reader first saw the segment, and nothing is
/// dropped until that is past the retention age.
#[test]
fn a_segment_stamped_in_1970_expires_nothing_early() {
    let sim = SimDisk::new(12);
    let in_first_two = three_segments(&sim);
    restamp(&sim, 2, 60_000_000_000);
    restamp(&sim, 3, 120_000_000_000);
    let mut r = Reader::open(DIR, "worker", &opts(&sim)).unwrap();
    assert_eq!(r.expire_older_than(Duration::from_secs(86_400)).unwrap(), 0);
    assert!(r.take_events().is_empty());
    assert_eq!(segments(&sim), 3);
    assert_eq!(drain(&mut r).len() as u64, in_first_two + 1);
}

/// Story (probe F11 left-over): a writer's clock set years ahead stamps a segment in 2100.
/// Retention decided by that stamp never expired the segment before it: the security
/// limit on how long escalations are kept was not held. Now a stamp over 5 minutes ahead
/// of the reader's clock is not believed, and the segment before it expires once the
/// reader has seen the stamped one for longer than the retention age.
#[test]
fn a_segment_stamped_in_the_future_still_expires_its_predecessor() {
    let sim = SimDisk::new(13);
    let in_first_two = three_segments(&sim);
    const YEAR_2100_NS: u64 = 4_102_444_800_000_000_000;
    restamp(&sim, 2, YEAR_2100_NS);
    restamp(&sim, 3, YEAR_2100_NS);
    let mut r = Reader::open(DIR, "worker", &opts(&sim)).unwrap();
    let age = Duration::from_millis(200);
    assert_eq!(r.expire_older_than(age).unwrap(), 0, "just seen");
    std::thread::sleep(age + Duration::from_millis(100));
    let expired = r.expire_older_than(age).unwrap();
    assert_eq!(expired, in_first_two, "segments 1 and 2 expire");
    assert_eq!(segments(&sim), 1);
    let events = r.take_events();
    assert!(
        matches!(events.as_slice(), [Event::Expired { segments: 2, .. }]),
        "{events:?}"
    );
}
