//! Lanes continued across writer sessions: a writer that opens a lane goes on in
//! its unsealed tail segment, segments are allocated in steps as records arrive, and the
//! disk a queue uses follows its data, not the number of processes that wrote it.

use std::path::Path;
use std::time::Duration;

use escalation_queue_wal::layout::{FileName, SEAL_LEN, SEGMENT_HEADER_LEN};
use escalation_queue_wal::{
    inspect, verify, Error, Event, LaneId, OpenMode, Options, Reader, SegmentId, SimDisk, Storage,
    Writer,
};

mod support;
use support::{assert_same, segment_files};

const DIR: &str = "/queue";
const STEP: u64 = 8 << 10;

fn opts(sim: &SimDisk) -> Options {
    support::opts(sim).allocation_step_bytes(STEP)
}

fn p(i: usize) -> Vec<u8> {
    format!("record-{i:05}-{}", "x".repeat(i % 50)).into_bytes()
}

fn drain(r: &mut Reader) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(rec) = r.next().expect("reader next") {
        out.push(rec.payload.to_vec());
    }
    out
}

fn file_len(sim: &SimDisk, lane: u16, seg: u64) -> u64 {
    let path = Path::new(DIR).join(FileName::Segment(LaneId(lane), SegmentId(seg)).render());
    sim.read_file(&path).map_or(0, |b| b.len() as u64)
}

/// Story: every escalation is enqueued by a process of its own (a shell loop, a cron job,
/// a service that spawns the CLI). If this fails, each process claims a fresh segment and
/// the queue's disk use grows with the number of processes instead of with its data: 128
/// short-lived writers filled the default 8 GiB limit with a few MB of records.
#[test]
fn a_hundred_one_record_writer_sessions_share_one_segment_allocated_in_steps() {
    let sim = SimDisk::new(1);
    let o = opts(&sim);
    let mut data_end = SEGMENT_HEADER_LEN as u64;
    for i in 0..100 {
        let w = Writer::open(DIR, &o).expect("open");
        let id = w.append(&p(i)).expect("append");
        assert_eq!(id.position.segment, SegmentId(1), "record {i}");
        assert_eq!(
            id.position.offset, data_end,
            "record {i} continues the tail"
        );
        data_end = id.position.offset + frame(p(i).len());
        if i % 2 == 0 {
            w.close().expect("close");
        }
    }
    let files = segment_files(&sim);
    assert_eq!(files.len(), 1, "{files:?}");
    let want_len = (data_end + SEAL_LEN).div_ceil(STEP) * STEP;
    assert_eq!(
        file_len(&sim, 0, 1),
        want_len,
        "allocated in {STEP}-byte steps"
    );
    let report = inspect(DIR, &o).expect("inspect");
    assert_eq!(
        report.segment_bytes, want_len,
        "inspect counts allocated bytes"
    );

    let mut r = Reader::open(DIR, "worker", &o).expect("reader");
    assert_same(&drain(&mut r), &(0..100).map(p).collect::<Vec<_>>());
    assert!(r.take_events().is_empty());
    assert!(verify(DIR, &o).expect("verify").damage.is_empty());
}

fn frame(len: usize) -> u64 {
    escalation_queue_wal::layout::frame_len(len as u32)
}

/// Story: a lane is continued by a writer while a reader follows it live, and the segment
/// grows under the reader's map windows (real file system, real maps). If this fails, the
/// reader takes the end of the file it mapped for a truncated record and quarantines
/// acknowledged records as corruption.
#[test]
fn a_live_reader_follows_a_segment_that_grows_under_its_maps() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options::default()
        .segment_bytes(1 << 20)
        .record_bytes_max(8192)
        .free_disk_bytes_min(0)
        .allocation_step_bytes(16 << 10);
    let first = Writer::open(dir.path(), &o).unwrap();
    first.append(b"first").unwrap();
    let mut r = Reader::open(dir.path(), "worker", &o).unwrap();
    assert_eq!(drain(&mut r), vec![b"first".to_vec()]);
    drop(first);
    let payloads: Vec<Vec<u8>> = (0..600)
        .map(|i| vec![(i % 251) as u8 | 1; 700 + i])
        .collect();
    let writer = {
        let (dir, o, payloads) = (dir.path().to_owned(), o.clone(), payloads.clone());
        std::thread::spawn(move || {
            for chunk in payloads.chunks(50) {
                let w = Writer::open(&dir, &o).unwrap();
                for pl in chunk {
                    w.append(pl).unwrap();
                }
            }
        })
    };
    let mut got = Vec::new();
    while got.len() < payloads.len() {
        match r.next_timeout(Duration::from_secs(10)).unwrap() {
            Some(rec) => got.push(rec.payload.to_vec()),
            None => break,
        }
    }
    writer.join().unwrap();
    assert_same(&got, &payloads);
    let events = r.take_events();
    assert!(events.is_empty(), "{events:#?}");
}

/// Story: the writer died in the middle of a batch, leaving a torn frame after the last
/// acknowledged record. If this fails, the next writer appends in front of (or over) the
/// torn bytes and a later recovery mistakes them for records or for corruption.
#[test]
fn a_torn_tail_is_sealed_and_the_next_writer_starts_a_new_segment() {
    let sim = SimDisk::new(2);
    let o = opts(&sim);
    let w = Writer::open(DIR, &o).unwrap();
    let last = w.append(&p(0)).unwrap();
    drop(w);
    let seg = Path::new(DIR).join(FileName::Segment(LaneId(0), SegmentId(1)).render());
    let mut bytes = sim.read_file(&seg).unwrap();
    let end = (last.position.offset + frame(p(0).len())) as usize;
    bytes[end..end + 24].fill(0x5a);
    sim.write_file(&seg, &bytes);
    let w = Writer::open(DIR, &o).unwrap();
    assert!(
        matches!(w.recovery_events(), [Event::TornTail { at, .. }] if at.offset == end as u64),
        "{:?}",
        w.recovery_events()
    );
    let next = w.append(&p(1)).unwrap();
    assert_eq!(next.position.segment, SegmentId(2));
    drop(w);
    let mut r = Reader::open(DIR, "worker", &o).unwrap();
    assert_same(&drain(&mut r), &[p(0), p(1)]);
    assert!(r.take_events().is_empty());
}

/// Story: a reader finds a lane whose writer exited and recovers its tail. If this fails,
/// the reader seals every abandoned lane (so the next writer starts a new segment after
/// all), or it re-syncs and rewrites each idle lane's watermark every second.
#[test]
fn a_reader_leaves_an_abandoned_clean_tail_open_for_the_next_writer() {
    let sim = SimDisk::new(3);
    let o = opts(&sim);
    let w = Writer::open(DIR, &o).unwrap();
    w.append(&p(0)).unwrap();
    drop(w);
    let mut r = Reader::open(DIR, "worker", &o).unwrap();
    assert_same(&drain(&mut r), &[p(0)]);
    let before = sim.mutations();
    std::thread::sleep(Duration::from_millis(1100));
    assert!(r.next().unwrap().is_none());
    assert!(r.next().unwrap().is_none());
    assert_eq!(
        sim.mutations(),
        before,
        "an idle settled lane costs no writes or syncs"
    );
    let w = Writer::open(DIR, &o).unwrap();
    assert_eq!(w.append(&p(1)).unwrap().position.segment, SegmentId(1));
    drop(w);
    let next = r
        .next_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("record");
    assert_eq!(&next.payload[..], &p(1)[..]);
    assert_eq!(segment_files(&sim).len(), 1);
}

/// Story: a stray or damaged file is named with segment id `u64::MAX` in a lane. If this
/// fails, the next id wraps to 0, the writer "recreates" segment 0 over an existing file,
/// and acknowledged enqueues vanish (adversarial probe F4).
#[test]
fn a_lane_whose_next_segment_id_would_overflow_refuses_to_roll_and_deletes_nothing() {
    let sim = SimDisk::new(4);
    let o = opts(&sim);
    let w = Writer::open(DIR, &o).unwrap();
    w.append(&p(0)).unwrap();
    drop(w);
    let dir = Path::new(DIR);
    let seg1 = dir.join(FileName::Segment(LaneId(0), SegmentId(1)).render());
    let stray = dir.join(FileName::Segment(LaneId(0), SegmentId(u64::MAX)).render());
    let copy = sim.read_file(&seg1).unwrap();
    sim.open(&stray, OpenMode::Create).unwrap();
    sim.write_file(&stray, &copy);
    for _ in 0..3 {
        let w = Writer::open(DIR, &o).expect("the writer opens");
        let err = w
            .append(&p(9))
            .expect_err("the lane cannot take a new segment");
        assert!(
            matches!(
                err,
                Error::SegmentIdsExhausted {
                    newest: u64::MAX,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("18446744073709551615"), "{err}");
    }
    assert_eq!(sim.read_file(&seg1).unwrap(), copy, "segment 1 untouched");
    let zero = dir.join(FileName::Segment(LaneId(0), SegmentId(0)).render());
    assert!(sim.read_file(&zero).is_none(), "no wrapped segment 0");
    let mut r = Reader::open(DIR, "worker", &o).unwrap();
    assert_eq!(drain(&mut r).first(), Some(&p(0)));
}

/// Story: the queue's limit counts what its segment files occupy. If this fails, the
/// limit either counts whole preallocated segments (and a few short-lived writers fill
/// it) or ignores the steps a growing segment takes (and the queue outgrows its limit).
#[test]
fn queue_bytes_max_counts_allocated_bytes_and_stops_at_the_limit() {
    let sim = SimDisk::new(5);
    let limit = 2 * (64 << 10) + 3 * STEP;
    let o = opts(&sim).queue_bytes_max(limit);
    let w = Writer::open(DIR, &o).unwrap();
    let record = vec![7u8; 3000];
    let mut acked = 0;
    let err = loop {
        match w.append(&record) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::QueueFull { .. }), "{err}");
    assert!(err.is_retryable());
    let used: u64 = segment_files(&sim)
        .iter()
        .map(|(_, _, path)| sim.read_file(path).map_or(0, |b| b.len() as u64))
        .sum();
    assert!(used <= limit, "{used} > {limit}");
    assert!(used + STEP > limit, "stopped {} bytes early", limit - used);
    drop(w);
    let mut r = Reader::open(DIR, "worker", &o).unwrap();
    assert_eq!(drain(&mut r).len(), acked);
}
