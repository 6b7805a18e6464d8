//! Injected I/O failures and lying sectors through the storage seam (the simulated disk).
//!
//! * One failed sync (the writer is poisoned, every waiter fails, a reopen recovers, a power
//!   loss after it keeps what was acknowledged), one failed write (its batch fails, the
//!   writer is not poisoned), writes failing again and again under concurrent appends (no
//!   lost record is acknowledged), and a full disk (`NoSpace` until space comes back).
//! * Every storage call kind (open, write, sync, allocate, directory sync, remove) failing
//!   with EIO or ENOSPC, once or from then on, at every call index a small workload makes:
//!   no append that failed is reported `Ok`, a failed sync poisons the writer, the reader
//!   keeps serving what was durable, and after a restart (process crash, or power loss)
//!   every acknowledged record comes back exactly once, in order, uncorrupted.
//! * Stale and misdirected sector reads: zero corrupt records delivered, the damage is
//!   reported with its location, records after it keep flowing.
//! * Segments deleted or truncated under a running reader, and checkpoint files damaged.
//!
//! Single-bit flips of records, segment headers and checkpoint slots live in
//! `corruption.rs`; power loss at every call in `crash_states.rs`; the queue's bounds on a
//! disk that does not fail in `bounds.rs`; failures of the real file system in
//! `real_faults.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use escalation_queue_wal::layout::{frame_len, BootId, FileName, CHECKPOINT_SLOT_LEN, SECTOR};
use escalation_queue_wal::{
    inspect, verify, CorruptionKind, CrashMode, Error, Event, Fault, LaneId, LockGuard, OpenMode,
    Reader, Repeat, SegmentId, SimDisk, SimErrno, SimOp, Storage, StorageFile, Writer,
};

mod support;
use support::{assert_same, big, consume_and_free, drain, opts, p};

const DIR: &str = "/queue";

fn seg_path(lane: u16, seg: u64) -> PathBuf {
    Path::new(DIR).join(FileName::Segment(LaneId(lane), SegmentId(seg)).render())
}

/// A self-checking payload: counter, filler, crc32c.
fn payload(n: u32, size: usize) -> Vec<u8> {
    let mut p = n.to_le_bytes().to_vec();
    p.extend((0..size.saturating_sub(8)).map(|i| (n as u8).wrapping_mul(31) ^ i as u8));
    let crc = crc32c::crc32c(&p);
    p.extend_from_slice(&crc.to_le_bytes());
    p
}

fn decode(p: &[u8]) -> Option<u32> {
    let (body, crc) = p.split_at(p.len().checked_sub(4)?);
    (body.len() >= 4 && crc32c::crc32c(body).to_le_bytes() == crc)
        .then(|| u32::from_le_bytes([body[0], body[1], body[2], body[3]]))
}

fn size_of(n: u32) -> usize {
    1800 + (n as usize * 613) % 2000
}

// ---------------------------------------------------------------------------------------
// The sweep: every call kind failing at every index.
// ---------------------------------------------------------------------------------------

/// What one faulty run was told.
#[derive(Debug, Default)]
struct Outcome {
    /// Acknowledged appends: seq → counter (one lane).
    acked: BTreeMap<u64, u32>,
    attempted: BTreeSet<u32>,
    problems: Vec<String>,
    /// Appends acknowledged right after an append failed on a sync (a new segment's header
    /// sync fails without poisoning: the file is removed, nothing acknowledged was in it).
    notes: Vec<u32>,
}

const SWEEP_APPENDS: u32 = 45;

/// Appends with a reader consuming and checkpointing every 6 appends; checks the writer
/// and reader contracts while faults fire. `live_check`: the reader must catch up with
/// every acknowledged record without a reopen (not when every later open fails: a
/// reader re-reads the lane's watermark file to see new records).
fn faulty_run(sim: &SimDisk, live_check: bool) -> Outcome {
    let o = opts(sim);
    let mut out = Outcome::default();
    let Ok(w) = Writer::open(DIR, &o) else {
        return out;
    };
    let mut reader: Option<Reader> = None;
    let mut poisoned = false;
    let mut sync_failed = false;
    let mut delivered: Vec<(u64, u32)> = Vec::new();
    for n in 0..SWEEP_APPENDS {
        out.attempted.insert(n);
        let after_sync_failure = std::mem::take(&mut sync_failed);
        match w.append(&payload(n, size_of(n))) {
            Ok(id) => {
                if after_sync_failure {
                    out.notes.push(n);
                }
                if poisoned {
                    out.problems.push(format!(
                        "append {n} acknowledged after the writer was poisoned"
                    ));
                }
                out.acked.insert(id.seq.0, n);
            }
            Err(Error::Poisoned { .. }) => poisoned = true,
            // A failed batch sync poisons at once: the next append must say so.
            Err(e) if e.to_string().contains("fdatasync") => sync_failed = true,
            Err(_) => {}
        }
        if reader.is_none() {
            reader = Reader::open(DIR, "worker", &o).ok();
        }
        if n % 6 == 5 {
            if let Some(r) = &mut reader {
                if consume(r, &mut delivered).is_err() {
                    // A reader whose checkpoint failed stays usable for reading only.
                    reader = None;
                }
            }
        }
    }
    // The reader keeps working after the writer failed: it serves every record that was
    // acknowledged, without a reopen.
    if let Some(r) = &mut reader {
        // A failed call may fail one `next` (it is retried, as a worker would); only a
        // fault that keeps failing the reader's own opens and reads may stop it.
        let (mut errors, mut idle) = (0, 0);
        loop {
            match r.next() {
                Ok(Some(rec)) => {
                    delivered.push((rec.id.seq.0, decode(&rec.payload).unwrap_or(u32::MAX)))
                }
                // A failed open of the watermark hides new records for one poll.
                Ok(None) if idle == 0 => idle += 1,
                Ok(None) => break,
                Err(_) if errors < 3 => errors += 1,
                Err(_) => return out,
            }
        }
        let last_delivered = delivered.last().map(|d| d.0);
        if let (Some(last_acked), true) = (out.acked.keys().next_back(), live_check) {
            if last_delivered.is_some_and(|d| d < *last_acked) {
                out.problems.push(format!(
                    "live reader stopped at seq {last_delivered:?}, acknowledged up to {last_acked}"
                ));
            }
        }
    }
    for (seq, n) in &delivered {
        if out.acked.get(seq).is_some_and(|a| a != n) {
            out.problems.push(format!(
                "live reader: seq {seq} holds {n}, acknowledged as other"
            ));
        }
    }
    out
}

/// Drains, acknowledges all, checkpoints.
fn consume(r: &mut Reader, delivered: &mut Vec<(u64, u32)>) -> Result<(), Error> {
    let mut last = None;
    while let Some(rec) = r.next()? {
        delivered.push((rec.id.seq.0, decode(&rec.payload).unwrap_or(u32::MAX)));
        last = Some(rec.id);
    }
    if let Some(id) = last {
        r.ack(id)?;
    }
    r.checkpoint()
}

/// After the faulty run: restart as `mode` says, reopen, and check every acknowledged
/// record not consumed by a durable checkpoint comes back in order, exactly once.
fn check_restart(sim: &SimDisk, mode: CrashMode, out: &Outcome, at: &str) -> Vec<String> {
    let mut problems: Vec<String> = out.problems.iter().map(|p| format!("{at}: {p}")).collect();
    let d = sim.fork(3);
    d.crash(mode);
    let o = opts(&d);
    let w = match Writer::open(DIR, &o) {
        Ok(w) => w,
        Err(e) => return vec![format!("{at}: writer does not reopen: {e}")],
    };
    let mut r = match Reader::open(DIR, "worker", &o) {
        Ok(r) => r,
        Err(e) => return vec![format!("{at}: reader does not reopen: {e}")],
    };
    let mut got: Vec<(u64, Option<u32>)> = Vec::new();
    while let Ok(Some(rec)) = r.next() {
        got.push((rec.id.seq.0, decode(&rec.payload)));
    }
    for (seq, n) in &got {
        if n.is_none_or(|n| !out.attempted.contains(&n)) {
            problems.push(format!("{at}: corrupt or invented record at seq {seq}"));
        }
        if let Some(a) = out.acked.get(seq) {
            if Some(*a) != *n {
                problems.push(format!("{at}: seq {seq} holds {n:?}, acknowledged as {a}"));
            }
        }
    }
    for pair in got.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            problems.push(format!("{at}: seq {} after {}", pair[1].0, pair[0].0));
        }
    }
    let first = got.first().map_or(u64::MAX, |g| g.0);
    for seq in out.acked.keys() {
        if *seq >= first && !got.iter().any(|g| g.0 == *seq) {
            problems.push(format!("{at}: acknowledged seq {seq} lost"));
        }
    }
    if let Some(last) = out.acked.keys().next_back() {
        if got.last().is_none_or(|g| g.0 < *last) && first != u64::MAX {
            problems.push(format!("{at}: acknowledged up to {last}, got {got:?}"));
        }
    }
    for e in r.take_events() {
        if !matches!(
            e,
            Event::TornTail { .. } | Event::IncompleteSegmentRemoved { .. }
        ) {
            problems.push(format!("{at}: unexpected event {e:?}"));
        }
    }
    match w.append(b"after restart") {
        Ok(_) => {
            let after = r.next_timeout(std::time::Duration::from_millis(50));
            if !matches!(&after, Ok(Some(rec)) if &rec.payload[..] == b"after restart") {
                problems.push(format!(
                    "{at}: appends do not flow after restart: {after:?}"
                ));
            }
        }
        Err(e) => problems.push(format!("{at}: append after restart failed: {e}")),
    }
    problems
}

/// Story: any storage call can fail (EIO from a dying disk, ENOSPC from a full one). If
/// this fails, an append whose record may be lost is acknowledged, a writer keeps going
/// after a failed sync (fsyncgate), the reader stops serving durable records, or the
/// queue does not come back after a restart.
#[test]
fn every_call_kind_failing_at_every_index_loses_nothing_acknowledged() {
    let reference = SimDisk::new(5);
    faulty_run(&reference, true);
    let kinds = [
        SimOp::Open,
        SimOp::Write,
        SimOp::Sync,
        SimOp::Allocate,
        SimOp::SyncDir,
        SimOp::Remove,
    ];
    let (mut runs, mut restarts, mut failed_calls, mut unpoisoned) = (0u64, 0u64, 0u64, 0u64);
    let mut problems = Vec::new();
    for op in kinds {
        let calls = reference.calls(op);
        for errno in [SimErrno::Eio, SimErrno::Enospc] {
            for repeat in [Repeat::Once, Repeat::FromThenOn] {
                for nth in 1..=calls {
                    let sim = SimDisk::new(5);
                    sim.inject(Fault::Fail {
                        op,
                        nth,
                        errno,
                        repeat,
                    });
                    let live = !(op == SimOp::Open && repeat == Repeat::FromThenOn);
                    let out = faulty_run(&sim, live);
                    runs += 1;
                    unpoisoned += u64::from(!out.notes.is_empty());
                    failed_calls += u64::from(sim.calls(op) >= nth);
                    sim.clear_faults();
                    for mode in [CrashMode::KeepAll, CrashMode::LoseUnsynced] {
                        restarts += 1;
                        let at = format!("{op:?} #{nth} {errno:?} {repeat:?}, then {mode:?}");
                        problems.extend(check_restart(&sim, mode, &out, &at));
                    }
                }
            }
        }
    }
    println!(
        "sim faults: {runs} runs ({failed_calls} with the fault fired), {restarts} restarts \
         checked, {} problems; {unpoisoned} runs went on after a failed new-segment sync",
        problems.len()
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems[..problems.len().min(40)].join("\n")
    );
}

/// Story (bug found by `crash_states.rs`): a checkpoint's sync fails; the worker retries
/// `checkpoint()`, which returns `Ok`, so it believes its acknowledgements are durable.
/// After a restart the cursor is back at the previous checkpoint: everything acknowledged
/// since is delivered again, beyond the duplicate bound the worker was promised
/// ("returns only once the checkpoint is durable").
///
/// Cause: `Reader::submit_checkpoint` clears `dirty` when it hands a checkpoint to the
/// checkpointer thread, before it is durable; when that write fails, the next
/// `checkpoint()` sees nothing dirty and returns `Ok(())` without asking the checkpointer,
/// which holds the failure.
#[test]
fn a_checkpoint_retried_after_a_failure_does_not_claim_durability() {
    let sim = SimDisk::new(9);
    let o = opts(&sim);
    let w = Writer::open(DIR, &o).unwrap();
    for n in 0..4 {
        w.append(&payload(n, 100)).unwrap();
    }
    let mut r = Reader::open(DIR, "worker", &o).unwrap();
    let mut last = None;
    while let Some(rec) = r.next().unwrap() {
        last = Some(rec.id);
    }
    r.ack(last.unwrap()).unwrap();
    sim.inject(Fault::SyncFailsOnce(1));
    assert!(r.checkpoint().is_err(), "the checkpoint's sync failed");
    let retried = r.checkpoint();
    drop(r);
    drop(w);
    sim.crash(CrashMode::LoseUnsynced);
    let mut r = Reader::open(DIR, "worker", &opts(&sim)).unwrap();
    let redelivered = std::iter::from_fn(|| r.next().unwrap()).count();
    assert!(
        retried.is_err() || redelivered == 0,
        "checkpoint() returned Ok after a failed checkpoint, yet after a power loss \
         {redelivered} acknowledged records are delivered again"
    );
}

// ---------------------------------------------------------------------------------------
// Lying sectors.
// ---------------------------------------------------------------------------------------

/// 472-byte payloads make 512-byte frames: record `i` sits at 64 + 512 i, in the same
/// place of its sector pair as every other record.
const ALIGNED: usize = 472;

fn aligned_queue(sim: &SimDisk, n: u32) -> Writer {
    let w = Writer::open(DIR, &opts(sim)).unwrap();
    for i in 0..n {
        let id = w.append(&payload(i, ALIGNED)).unwrap();
        assert_eq!(id.position.offset, 64 + 512 * u64::from(i));
    }
    assert_eq!(frame_len(ALIGNED as u32), 512);
    w
}

/// Delivers everything; returns (seq, counter) pairs and the events.
fn read_all(sim: &SimDisk) -> (Vec<(u64, Option<u32>)>, Vec<Event>) {
    let mut r = Reader::open(DIR, "worker", &opts(sim)).unwrap();
    let mut got = Vec::new();
    while let Some(rec) = r.next().expect("reader must not fail on damage") {
        got.push((rec.id.seq.0, decode(&rec.payload)));
    }
    (got, r.take_events())
}

fn corruption_at(events: &[Event], seg: u64) -> Vec<(u64, CorruptionKind)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Corruption { corruption: c, .. } if c.segment == Some(SegmentId(seg)) => {
                Some((c.offset, c.kind))
            }
            _ => None,
        })
        .collect()
}

/// Story: a sector of a segment reads back stale (the disk lost a write it had
/// acknowledged, or a cache returns old data): records 3 and 4 read as zeros. If this
/// fails, the zeros are taken for the end of the lane (records after them silently
/// vanish), or garbage is delivered.
#[test]
fn a_stale_sector_is_reported_and_records_after_it_still_flow() {
    let sim = SimDisk::new(21);
    let w = aligned_queue(&sim, 3);
    // Sectors 3 and 4 hold records 3 (1600..2112) and the start of 4: stale from now on.
    sim.stale_sector(&seg_path(0, 1), 3);
    for i in 3..10 {
        w.append(&payload(i, ALIGNED)).unwrap();
    }
    let (got, events) = read_all(&sim);
    assert!(
        got.iter().all(|(_, n)| n.is_some()),
        "corrupt record delivered"
    );
    let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(seqs, [0, 1, 2, 4, 5, 6, 7, 8, 9], "{events:?}");
    let damage = corruption_at(&events, 1);
    assert_eq!(damage.len(), 1, "{events:?}");
    assert_eq!(damage[0].0, 64 + 3 * 512, "reported at record 3's offset");
}

/// Story: the disk returns another sector's bytes for a read (a misdirected read), and
/// those bytes are an intact, checksummed frame of the same segment: record 0 shows up
/// where record 2 belongs. If this fails, record 0 is delivered a second time, out of
/// order, and record 2 is silently replaced; the worker sends a duplicate escalation and
/// never the lost one, and no corruption is reported.
///
/// Bug found: `LaneReader::peek` (`wal/src/reader/lane.rs`) only pushes `Event::Gap` when a
/// frame's sequence number differs from the expected one, then delivers it and moves its
/// expectation to `seq + 1`. A frame whose sequence number is *lower* than expected cannot
/// be the next record of the lane: it is a stale or misdirected block.
#[test]
fn a_misdirected_read_of_an_older_record_of_the_same_segment_is_not_delivered() {
    let sim = SimDisk::new(22);
    let _w = aligned_queue(&sim, 5);
    let seg = seg_path(0, 1);
    // Record 2 occupies 1088..1600 (sectors 2 and 3); record 0 occupies 64..576 (sectors
    // 0 and 1) at the same place in its sectors. Records 1 and 3 straddle the misdirected
    // sectors and fail their checksums: they must be reported, as must the stray record 0.
    sim.misdirect_sector(&seg, 2, &seg, 0);
    sim.misdirect_sector(&seg, 3, &seg, 1);
    let (got, events) = read_all(&sim);
    let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
    let counters: Vec<Option<u32>> = got.iter().map(|g| g.1).collect();
    assert!(
        seqs.windows(2).all(|p| p[1] > p[0]),
        "a record was delivered twice or out of order: seqs {seqs:?}, counters {counters:?}, \
         events {events:?}"
    );
    assert!(
        !corruption_at(&events, 1).is_empty(),
        "the misdirected block must be reported: {events:?}"
    );
}

/// Story: a read of a segment returns a sector of another segment (another lane's, or an
/// older one of the same lane). If this fails, a record of another lane or segment is
/// delivered in place of this one.
#[test]
fn a_misdirected_read_from_another_segment_is_caught_by_the_frame_identity() {
    let sim = SimDisk::new(23);
    let a = aligned_queue(&sim, 5);
    let b = Writer::open(DIR, &opts(&sim)).unwrap();
    for i in 100..105 {
        b.append(&payload(i, ALIGNED)).unwrap();
    }
    sim.misdirect_sector(&seg_path(0, 1), 2, &seg_path(1, 1), 2);
    sim.misdirect_sector(&seg_path(0, 1), 3, &seg_path(1, 1), 3);
    drop((a, b));
    let (got, events) = read_all(&sim);
    let lane0: Vec<u64> = got
        .iter()
        .filter(|g| g.1.is_some_and(|n| n < 100))
        .map(|g| g.0)
        .collect();
    // Records 1 and 3 straddle the misdirected sectors too: damaged, reported, skipped.
    assert_eq!(got.len(), 7, "{got:?}");
    assert_eq!(lane0, [0, 4]);
    let damage = corruption_at(&events, 1);
    // One report covers records 1..=3: from record 1 (576) to record 4, the next frame
    // of this lane and segment.
    assert_eq!(damage.len(), 1, "{events:?}");
    assert_eq!(damage[0].0, 576, "{events:?}");
}

// ---------------------------------------------------------------------------------------
// Files changed under a running reader, and damaged checkpoints.
// ---------------------------------------------------------------------------------------

/// Fills segments 1..=4 of lane 0 with 3000-byte records; returns the counters per segment.
fn four_segments(sim: &SimDisk) -> (Writer, BTreeMap<u64, Vec<u32>>) {
    let w = Writer::open(DIR, &opts(sim)).unwrap();
    let mut per_seg: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let mut n = 0;
    while per_seg.len() < 4 || per_seg.get(&4).is_some_and(|v| v.len() < 3) {
        let id = w.append(&payload(n, 3000)).unwrap();
        per_seg.entry(id.position.segment.0).or_default().push(n);
        n += 1;
    }
    (w, per_seg)
}

/// Story: while the reader works through segment 1, segment 2 is deleted by hand (an
/// operator freeing space, a cleanup script). If this fails, the reader stops, delivers
/// garbage, or silently skips the deleted records without telling anyone.
#[test]
fn a_segment_deleted_under_a_running_reader_is_reported_as_a_gap_and_reading_goes_on() {
    let sim = SimDisk::new(31);
    let (_w, per_seg) = four_segments(&sim);
    let mut r = Reader::open(DIR, "worker", &opts(&sim)).unwrap();
    let mut got = vec![decode(&r.next().unwrap().unwrap().payload).unwrap()];
    assert!(sim.delete_file(&seg_path(0, 2)));
    while let Some(rec) = r.next().unwrap() {
        got.push(decode(&rec.payload).expect("no corrupt record"));
    }
    let want: Vec<u32> = per_seg
        .iter()
        .filter(|(s, _)| **s != 2)
        .flat_map(|(_, v)| v.clone())
        .collect();
    assert_eq!(got, want);
    let events = r.take_events();
    let first2 = u64::from(per_seg[&2][0]);
    let first3 = u64::from(per_seg[&3][0]);
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Gap { lane: LaneId(0), expected, found }
            if expected.0 == first2 && found.0 == first3)
        ),
        "{events:?}"
    );
}

/// Story: a segment the reader has not reached yet is truncated in the middle of a record
/// (the mmap contract excludes shrinking a *mapped* file; this one is not mapped yet). If
/// this fails, the reader faults (SIGBUS on a real map), delivers a torn record, or stops
/// before the later segments.
#[test]
fn a_segment_truncated_before_the_reader_maps_it_is_reported_and_later_segments_flow() {
    let sim = SimDisk::new(32);
    let (w, per_seg) = four_segments(&sim);
    let mut r = Reader::open(DIR, "worker", &opts(&sim)).unwrap();
    let first = decode(&r.next().unwrap().unwrap().payload).unwrap();
    let path = seg_path(0, 3);
    let bytes = sim.read_file(&path).unwrap();
    // Cut 1000 bytes into segment 3's second record.
    let cut = 64 + frame_len(3000) as usize + 1000;
    sim.write_file(&path, &bytes[..cut]);
    let mut got = vec![first];
    while let Some(rec) = r.next().unwrap() {
        got.push(decode(&rec.payload).expect("no corrupt record"));
    }
    let mut want: Vec<u32> = Vec::new();
    for (s, v) in &per_seg {
        want.extend(if *s == 3 { &v[..1] } else { &v[..] });
    }
    assert_eq!(got, want);
    let damage = corruption_at(&r.take_events(), 3);
    assert_eq!(
        damage,
        [(64 + frame_len(3000), CorruptionKind::Truncated)],
        "reported at the cut record"
    );
    w.append(&payload(9999, 100)).unwrap();
    let rec = r
        .next_timeout(std::time::Duration::from_millis(100))
        .unwrap()
        .unwrap();
    assert_eq!(decode(&rec.payload), Some(9999), "the queue keeps flowing");
}

/// Story: the checkpoint file is truncated to nothing or overwritten with garbage beyond
/// its slots' checksums (a file-system repair, a stray write). If this fails, the reader
/// cannot open (a crash loop), or it silently starts at the lane's end and skips records.
#[test]
fn a_checkpoint_file_cut_to_nothing_or_filled_with_garbage_restarts_from_the_oldest_record() {
    for damage in ["truncated", "garbage", "one slot zeroed"] {
        let sim = SimDisk::new(33);
        let o = opts(&sim);
        let w = Writer::open(DIR, &o).unwrap();
        for n in 0..10 {
            w.append(&payload(n, 200)).unwrap();
        }
        let mut r = Reader::open(DIR, "worker", &o).unwrap();
        for _ in 0..4 {
            let rec = r.next().unwrap().unwrap();
            r.ack(rec.id).unwrap();
            r.checkpoint().unwrap();
        }
        drop(r);
        let path = Path::new(DIR).join(FileName::Checkpoint("worker".into()).render());
        let mut bytes = sim.read_file(&path).unwrap();
        match damage {
            "truncated" => bytes.clear(),
            "garbage" => bytes.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8),
            _ => bytes[..CHECKPOINT_SLOT_LEN].fill(0),
        }
        sim.write_file(&path, &bytes);
        let mut r = Reader::open(DIR, "worker", &o).expect("the reader opens");
        let got: Vec<u32> = std::iter::from_fn(|| r.next().unwrap())
            .map(|rec| decode(&rec.payload).unwrap())
            .collect();
        let events = r.take_events();
        match damage {
            // The other slot holds generation 3 (3 records consumed).
            "one slot zeroed" => assert_eq!(got, (3..10).collect::<Vec<_>>(), "{damage}"),
            _ => assert_eq!(
                got,
                (0..10).collect::<Vec<_>>(),
                "{damage}: nothing skipped"
            ),
        }
        if damage == "garbage" {
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, Event::Corruption { corruption: c, .. }
                    if c.path == path)),
                "{damage}: {events:?}"
            );
        }
    }
}

/// The sector size the simulated disk tears and misreads at is the one the fault model
/// in `docs/RELIABILITY.md` assumes.
#[test]
fn sector_size_is_512() {
    assert_eq!(SECTOR, 512);
}

/// A storage that behaves like `inner`, except that the next directory listing after a
/// victim is set also deletes the victim right after listing it: a running reader
/// releasing a segment between someone's listing and their opening of it.
#[derive(Debug)]
struct DeletesAfterListing {
    inner: SimDisk,
    victim: std::sync::Mutex<Option<PathBuf>>,
}

impl DeletesAfterListing {
    fn new(inner: &SimDisk) -> Arc<Self> {
        Arc::new(Self {
            inner: inner.clone(),
            victim: std::sync::Mutex::new(None),
        })
    }

    /// The next listing deletes `path` after listing it.
    fn arm(&self, path: PathBuf) {
        *self.victim.lock().unwrap() = Some(path);
    }
}

impl Storage for DeletesAfterListing {
    fn open(&self, path: &Path, mode: OpenMode) -> std::io::Result<Arc<dyn StorageFile>> {
        self.inner.open(path, mode)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_file(path)
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        let names = self.inner.list_dir(dir);
        if let Some(victim) = self.victim.lock().unwrap().take() {
            self.inner.delete_file(&victim);
        }
        names
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn try_lock(&self, path: &Path) -> std::io::Result<Option<Box<dyn LockGuard>>> {
        self.inner.try_lock(path)
    }
    fn available_bytes(&self, dir: &Path) -> std::io::Result<u64> {
        self.inner.available_bytes(dir)
    }
    fn maps_are_live(&self) -> bool {
        self.inner.maps_are_live()
    }
    fn boot_id(&self) -> BootId {
        self.inner.boot_id()
    }
}

/// Story: an operator runs `verify` or `inspect` on a live queue while the reader deletes
/// a consumed segment between the tool's directory listing and its opening of that
/// segment. If this fails, the tools abort with "No such file" on a healthy queue, or
/// report the vanished segment as damage.
#[test]
fn verify_and_inspect_step_over_a_segment_deleted_while_they_walk_the_queue() {
    let sim = SimDisk::new(33);
    let (_w, per_seg) = four_segments(&sim);
    let records: u64 = per_seg.values().map(|v| v.len() as u64).sum();
    let storage = DeletesAfterListing::new(&sim);
    let opts = opts(&sim).storage(storage.clone());
    storage.arm(seg_path(0, 1));
    let report = verify(DIR, &opts).expect("verify on a live queue");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.segments, per_seg.len() as u64 - 1);
    assert_eq!(report.records, records - per_seg[&1].len() as u64);
    storage.arm(seg_path(0, 2));
    let seen = inspect(DIR, &opts).expect("inspect on a live queue");
    let segs: Vec<u64> = seen.lanes[0].segments.iter().map(|s| s.id.0).collect();
    assert_eq!(segs, [3, 4]);
}

/// Story: the worker's retention sweep lists the segments while the reader's deleter
/// removes consumed ones. If this fails, retention aborts with "No such file" on a healthy
/// queue, and the error stops the worker.
#[test]
fn retention_steps_over_a_segment_deleted_while_it_looks_at_the_segments() {
    let sim = SimDisk::new(35);
    let (_w, per_seg) = four_segments(&sim);
    let storage = DeletesAfterListing::new(&sim);
    let opts = opts(&sim).storage(storage.clone());
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    storage.arm(seg_path(0, 2));
    let expired = r
        .expire_older_than(std::time::Duration::ZERO)
        .expect("retention on a live queue");
    // Everything before the newest segment is older than zero seconds; the records of the
    // vanished segment 2 are counted among those skipped.
    let before_newest: usize = per_seg.range(..4).map(|(_, v)| v.len()).sum();
    assert_eq!(expired, before_newest as u64);
    let mut got = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        got.push(decode(&rec.payload).expect("no corrupt record"));
    }
    assert_eq!(got, per_seg[&4]);
}

/// Story: deleting consumed segments fails (EIO on the directory sync) after the
/// checkpoint releasing them became durable, and the worker, idle, keeps calling
/// `checkpoint()` with nothing new to save. If this fails, the failure is swallowed: no
/// storage incident is raised, space is never reclaimed, and the worker reports a clean
/// stop.
#[test]
fn a_failed_deletion_is_returned_by_every_later_checkpoint_call_even_with_nothing_new() {
    let sim = SimDisk::new(34);
    let (_w, per_seg) = four_segments(&sim);
    let mut r = Reader::open(DIR, "worker", &opts(&sim)).unwrap();
    // Into segment 3: the checkpoint releases segments 1 and 2.
    for _ in 0..=per_seg[&1].len() + per_seg[&2].len() {
        let rec = r.next().unwrap().unwrap();
        r.ack(rec.id).unwrap();
    }
    sim.inject(Fault::Fail {
        op: SimOp::SyncDir,
        nth: 1,
        errno: SimErrno::Eio,
        repeat: Repeat::Once,
    });
    r.checkpoint_in_background().expect("handed over");
    assert!(r.wait_for_deletions().is_err(), "the deletion failure");
    assert!(r.checkpoint().is_err(), "checkpoint() with nothing new");
    assert!(r.checkpoint_in_background().is_err(), "in the background");
    assert!(r.wait_for_deletions().is_err(), "waiting again");
    // A reopen recovers: the next checkpoint deletes what was released.
    drop(r);
    let mut r = Reader::open(DIR, "worker", &opts(&sim)).unwrap();
    let rec = r.next().unwrap().unwrap();
    r.ack(rec.id).unwrap();
    r.wait_for_deletions().expect("after a reopen");
    assert!(sim.read_file(&seg_path(0, 1)).is_none());
    assert!(sim.read_file(&seg_path(0, 2)).is_none());
}

/// Story (probe F5 left-over): writers filled the disk while no reader had ever run, so
/// the reader's checkpoint file does not exist yet and there is no room for its two
/// slots. Before, `Reader::open` failed with ENOSPC ("create checkpoint") and the one
/// process that frees the disk could not start. Now it opens, delivers everything, and
/// its first checkpoint frees the consumed segments to make room for the checkpoint
/// file; a restart then resumes after the checkpoint (nothing delivered twice).
#[test]
fn a_reader_that_never_ran_starts_on_a_full_disk_and_frees_it() {
    let sim = SimDisk::new(41);
    let (w, per_seg) = four_segments(&sim);
    drop(w);
    sim.set_capacity(Some(sim.used_bytes()));
    let mut r = Reader::open(DIR, "worker", &opts(&sim)).expect("opens on a full disk");
    let mut delivered = Vec::new();
    consume(&mut r, &mut delivered).expect("the first checkpoint makes room for itself");
    r.wait_for_deletions().unwrap();
    let want: Vec<u32> = per_seg.values().flatten().copied().collect();
    assert_eq!(delivered.iter().map(|d| d.1).collect::<Vec<_>>(), want);
    let left: Vec<u64> = support::segment_files(&sim)
        .iter()
        .map(|s| s.1 .0)
        .collect();
    assert_eq!(left, [4], "consumed segments are freed");
    drop(r);
    sim.crash(CrashMode::LoseUnsynced);
    let mut r = Reader::open(DIR, "worker", &opts(&sim)).unwrap();
    assert!(r.next().unwrap().is_none(), "the checkpoint is durable");
    assert!(verify(DIR, &opts(&sim)).unwrap().is_clean());
}

/// Story (probe F5 left-over): as above, but the power fails after the consumed segments
/// were freed and before the first checkpoint was written (its write fails here). If this
/// fails, a record that was not acknowledged is lost, or the queue does not come back:
/// the cursor, having no checkpoint, restarts at the oldest remaining segment.
#[test]
fn a_power_loss_while_the_first_checkpoint_makes_room_loses_nothing_unacknowledged() {
    let sim = SimDisk::new(43);
    let (w, per_seg) = four_segments(&sim);
    drop(w);
    sim.set_capacity(Some(sim.used_bytes()));
    let mut r = Reader::open(DIR, "worker", &opts(&sim)).unwrap();
    // Acknowledge segments 1 and 2 only; the write after making room fails.
    let acked_upto = *per_seg[&2].last().unwrap();
    let mut last = None;
    while let Some(rec) = r.next().unwrap() {
        if decode(&rec.payload) == Some(acked_upto) {
            last = Some(rec.id);
            break;
        }
    }
    r.ack(last.unwrap()).unwrap();
    sim.inject(Fault::WriteFailsOnce(1));
    assert!(r.checkpoint().is_err());
    drop(r);
    sim.crash(CrashMode::LoseUnsynced);
    sim.set_capacity(None);
    let (got, _) = read_all(&sim);
    let got: Vec<u32> = got
        .iter()
        .map(|g| g.1.expect("no corrupt record"))
        .collect();
    let unacked: Vec<u32> = per_seg
        .iter()
        .filter(|(s, _)| **s >= 3)
        .flat_map(|(_, v)| v.clone())
        .collect();
    assert!(got.ends_with(&unacked), "{got:?}");
}

/// Story (probe F5 left-over, found in review): as above, but the reader's first
/// checkpoint lands inside the lane's first segment, so it releases nothing and there is
/// still no room for the checkpoint file. Before, that failure was sticky: every later
/// checkpoint failed too, even after whole segments were consumed, so the worker reopened
/// and redelivered from the start forever and the disk was never freed. Now it is
/// deferred (`Error::CheckpointDeferred`, nothing durable claimed), and a later checkpoint
/// that releases whole segments makes room and is written.
#[test]
fn a_first_checkpoint_that_releases_nothing_on_a_full_disk_is_tried_again() {
    let sim = SimDisk::new(47);
    let (w, per_seg) = four_segments(&sim);
    drop(w);
    sim.set_capacity(Some(sim.used_bytes()));
    let mut r = Reader::open(DIR, "worker", &opts(&sim)).expect("opens on a full disk");
    let first = r.next().unwrap().expect("a record");
    r.ack(first.id).unwrap();
    match r.checkpoint() {
        Err(Error::CheckpointDeferred { .. }) => {}
        other => panic!("the first checkpoint releases nothing: {other:?}"),
    }
    // Asked again with nothing new: still deferred, not a sticky failure.
    assert!(matches!(
        r.checkpoint(),
        Err(Error::CheckpointDeferred { .. })
    ));
    let mut delivered = vec![decode(&first.payload)];
    while let Some(rec) = r.next().unwrap() {
        delivered.push(decode(&rec.payload));
        r.ack(rec.id).unwrap();
    }
    r.checkpoint()
        .expect("a checkpoint releasing whole segments makes room for itself");
    r.wait_for_deletions().unwrap();
    let want: Vec<Option<u32>> = per_seg.values().flatten().map(|n| Some(*n)).collect();
    assert_eq!(delivered, want);
    let left: Vec<u64> = support::segment_files(&sim)
        .iter()
        .map(|s| s.1 .0)
        .collect();
    assert_eq!(left, [4], "consumed segments are freed");
    drop(r);
    sim.crash(CrashMode::LoseUnsynced);
    let mut r = Reader::open(DIR, "worker", &opts(&sim)).unwrap();
    assert!(r.next().unwrap().is_none(), "the checkpoint is durable");
}

// ---------------------------------------------------------------------------------------
// One failed sync or write, a full disk
// ---------------------------------------------------------------------------------------

/// Story: the disk reports EIO on fdatasync while several threads are appending (the
/// kernel may already have dropped the pages: PostgreSQL's fsyncgate). If this fails, an
/// append whose data may be gone is acknowledged, or the writer keeps acknowledging on a
/// disk it can no longer trust, or the queue cannot be reopened afterwards, or the reader
/// stops serving records that were durable before the failure.
#[test]
fn a_failed_sync_poisons_the_writer_fails_every_waiter_and_a_reopen_recovers() {
    let sim = SimDisk::new(1);
    let opts = opts(&sim);
    let w = Writer::open(DIR, &opts).unwrap();
    for i in 0..5 {
        w.append(&p("before", i)).unwrap();
    }
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    assert_eq!(drain(&mut r).len(), 5);

    sim.inject(Fault::SyncFailsOnce(1));
    let threads = 6;
    let barrier = Arc::new(Barrier::new(threads));
    let results: Vec<_> = (0..threads)
        .map(|t| {
            let (w, barrier) = (w.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                w.append(&p("failed", t))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    for (t, res) in results.iter().enumerate() {
        assert!(
            matches!(res, Err(Error::Poisoned { .. })),
            "thread {t}: every append of and after the failed batch must fail: {res:?}"
        );
    }
    for i in 0..3 {
        let e = w.append(&p("after", i)).unwrap_err();
        assert!(matches!(e, Error::Poisoned { .. }), "{e}");
        assert!(!e.is_retryable());
    }
    // Nothing of the failed batch became visible as durable.
    assert!(drain(&mut r).is_empty());
    assert!(r.take_events().is_empty());

    // Reopen: recovery makes what the OS holds durable and judges it; the lane goes on.
    drop(w);
    let w = Writer::open(DIR, &opts).expect("reopen after poisoning");
    assert_eq!(w.lane(), LaneId(0));
    assert!(w.recovery_events().is_empty(), "{:?}", w.recovery_events());
    for i in 0..3 {
        w.append(&p("reopened", i)).expect("appends work again");
    }
    let got = drain(&mut r);
    // The failed appends may or may not be there (their outcome was an error, not a
    // promise); everything acknowledged after the reopen is, in order, after them.
    let failed: BTreeSet<Vec<u8>> = (0..threads).map(|t| p("failed", t)).collect();
    let (maybe, sure): (Vec<_>, Vec<_>) = got.into_iter().partition(|x| failed.contains(x));
    assert_eq!(sure, (0..3).map(|i| p("reopened", i)).collect::<Vec<_>>());
    assert!(maybe.len() <= threads);
    assert!(r.take_events().is_empty());
    assert!(verify(DIR, &opts).unwrap().is_clean());
}

/// Story: power is lost right after a sync failed. If this fails, acknowledged records
/// are lost or the queue does not come back.
#[test]
fn a_power_loss_after_a_failed_sync_keeps_every_acknowledged_record() {
    for mode in [
        CrashMode::LoseUnsynced,
        CrashMode::KeepRandomSectors,
        CrashMode::KeepAll,
    ] {
        let sim = SimDisk::new(2);
        let opts = opts(&sim);
        let w = Writer::open(DIR, &opts).unwrap();
        for i in 0..50 {
            w.append(&big("ok", i, 700)).unwrap();
        }
        sim.inject(Fault::SyncFailsOnce(1));
        assert!(w.append(&big("failed", 0, 3000)).is_err());
        drop(w);
        sim.crash(mode);
        let w = Writer::open(DIR, &opts).unwrap();
        for e in w.recovery_events() {
            assert!(
                matches!(e, Event::TornTail { .. }) && mode == CrashMode::KeepRandomSectors,
                "{mode:?}: {e:?}"
            );
        }
        w.append(b"after").unwrap();
        let mut r = Reader::open(DIR, "worker", &opts).unwrap();
        let mut got = drain(&mut r);
        assert_eq!(got.pop().as_deref(), Some(&b"after"[..]), "{mode:?}");
        if got.len() == 51 {
            assert_eq!(got.pop(), Some(big("failed", 0, 3000)), "{mode:?}");
        }
        assert_eq!(
            got,
            (0..50).map(|i| big("ok", i, 700)).collect::<Vec<_>>(),
            "{mode:?}"
        );
        assert!(r.take_events().is_empty(), "{mode:?}");
        assert!(verify(DIR, &opts).unwrap().is_clean());
    }
}

/// Story: a write (not a sync) fails once. If this fails, the writer is poisoned for a
/// transient error that lost nothing durable (an outage for no reason), or the failed
/// record is reported as written, or later records land on top of garbage.
#[test]
fn a_failed_write_fails_its_batch_without_poisoning_and_later_appends_succeed() {
    let sim = SimDisk::new(3);
    let opts = opts(&sim);
    let w = Writer::open(DIR, &opts).unwrap();
    for i in 0..3 {
        w.append(&p("ok", i)).unwrap();
    }
    sim.inject(Fault::WriteFailsOnce(1));
    let e = w.append(&p("failed", 0)).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    let mut ids = Vec::new();
    for i in 3..6 {
        ids.push(
            w.append(&p("ok", i))
                .expect("not poisoned by a write failure"),
        );
    }
    assert_eq!(
        ids[0].seq.0, 3,
        "the failed record's sequence number is reused"
    );
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    let want: Vec<_> = (0..6).map(|i| p("ok", i)).collect();
    assert_same(&drain(&mut r), &want);
    assert!(r.take_events().is_empty());
    drop(r);
    drop(w);
    sim.crash(CrashMode::LoseUnsynced);
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    assert_same(&drain(&mut r), &want);
    assert!(r.take_events().is_empty());
    assert!(verify(DIR, &opts).unwrap().is_clean());
}

/// Story: many threads append while writes keep failing now and then. If this fails, an
/// appender whose record was thrown away with a failed batch is told `Ok` (its sequence
/// number was reused by a later record that did get written), so an escalation is lost
/// while its sender believes it queued.
///
/// Bug found: exactly that. A waiter checked `acked_seq > my seq` before checking whether
/// a failed write had discarded its batch; once a later record reusing its sequence number
/// was acknowledged, the discarded record was reported `Ok` (1 to 5 lost records in most
/// runs). The outcome depends on thread scheduling, so this test catches the bug in most
/// runs, not all; it can never fail on correct code.
#[test]
fn concurrent_appends_through_repeated_write_failures_never_acknowledge_a_lost_record() {
    let sim = SimDisk::new(4);
    let opts = opts(&sim);
    let threads = 6;
    let per_thread = 300;
    let mut acked: Vec<Vec<u8>> = Vec::new();
    let mut failed: Vec<Vec<u8>> = Vec::new();
    let next_id = Arc::new(AtomicUsize::new(0));
    for round in 0..8u64 {
        let w = Writer::open(DIR, &opts).unwrap();
        let running = Arc::new(AtomicUsize::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (w, running, next_id) = (w.clone(), running.clone(), next_id.clone());
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    for _ in 0..per_thread {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let payload = big("r", id, 40 + (id * 37) % 300);
                        match w.append(&payload) {
                            Ok(_) => out.push((payload, true)),
                            // A failed watermark write poisons; this round is over.
                            Err(Error::Poisoned { .. }) => {
                                out.push((payload, false));
                                break;
                            }
                            Err(_) => out.push((payload, false)),
                        }
                    }
                    running.fetch_sub(1, Ordering::Relaxed);
                    out
                })
            })
            .collect();
        let mut x = round + 1;
        while running.load(Ordering::Relaxed) > 0 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            sim.inject(Fault::WriteFailsOnce(1 + (x >> 61)));
            std::thread::sleep(Duration::from_micros(300));
        }
        for h in handles {
            for (payload, ok) in h.join().unwrap() {
                if ok {
                    acked.push(payload);
                } else {
                    failed.push(payload);
                }
            }
        }
        sim.clear_faults();
        drop(w);
    }
    assert!(!failed.is_empty(), "the test must inject failures");
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    let got = drain(&mut r);
    let got_set: BTreeSet<&Vec<u8>> = got.iter().collect();
    assert_eq!(got_set.len(), got.len(), "a record was delivered twice");
    let missing: Vec<String> = acked
        .iter()
        .filter(|a| !got_set.contains(a))
        .map(|a| String::from_utf8_lossy(&a[..7]).into_owned())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged appends were never delivered ({} failed): {missing:?}",
        missing.len(),
        acked.len(),
        failed.len()
    );
    let known: BTreeSet<&Vec<u8>> = acked.iter().chain(failed.iter()).collect();
    assert!(got.iter().all(|g| known.contains(g)));
}

/// Story: the file system runs out of space. If this fails, the append error is not the
/// clear, retryable `NoSpace`, acknowledged records are lost, or appends do not resume when
/// space comes back (capacity raised, or the reader deleting consumed segments).
///
/// Bug found (in the simulated disk): removed files kept counting against the capacity,
/// so freeing segments never gave space back.
#[test]
fn no_space_rejects_appends_and_they_resume_when_space_returns() {
    let sim = SimDisk::new(6);
    let opts = opts(&sim);
    let w = Writer::open(DIR, &opts).unwrap();
    w.append(b"first").unwrap();
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    assert_eq!(drain(&mut r).len(), 1);
    // Room for what exists now plus two more segments.
    sim.set_capacity(Some(sim.used_bytes() + 2 * (64 << 10) + 1000));
    let mut appended = Vec::new();
    let err = loop {
        let payload = big("s", appended.len(), 2500);
        match w.append(&payload) {
            Ok(_) => appended.push(payload),
            Err(e) => break e,
        }
        assert!(appended.len() < 1000, "capacity was never hit");
    };
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    assert!(err.is_retryable());
    // Nothing acknowledged is lost, even across a power loss.
    assert_same(&drain(&mut r), &appended);
    assert!(matches!(
        w.append(&big("y", 0, 2500)),
        Err(Error::NoSpace { .. })
    ));

    // Space comes back by raising the capacity.
    sim.set_capacity(Some(sim.used_bytes() + 2 * (64 << 10)));
    let raised = big("after raise", 0, 2500);
    w.append(&raised).expect("appends resume with more space");
    appended.push(raised);

    // Fill up again, then free space by consuming: the reader deletes segments.
    let err = loop {
        let payload = big("t", appended.len(), 2500);
        match w.append(&payload) {
            Ok(_) => appended.push(payload),
            Err(e) => break e,
        }
        assert!(appended.len() < 2000, "capacity was never hit");
    };
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    consume_and_free(&mut r);
    let after = big("after freeing", 0, 2500);
    w.append(&after)
        .expect("appends resume once consumed segments are deleted");
    assert_same(&drain(&mut r), std::slice::from_ref(&after));
    drop(r);
    drop(w);
    sim.set_capacity(None);
    sim.crash(CrashMode::LoseUnsynced);
    let mut r = Reader::open(DIR, "worker", &opts).unwrap();
    assert_same(&drain(&mut r), &[after]);
    assert!(r.take_events().is_empty());
}
