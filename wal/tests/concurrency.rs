//! Group commit and the reader's background checkpointer under many thread schedules,
//! with the `shuttle` model checker.
//!
//! Run: `cargo test -p escalation-queue-wal --features shuttle --test concurrency`
//! (`WAL_SHUTTLE_ITERATIONS=N` scales the schedules; default 2000). Without the feature
//! this file is empty: the wal's mutexes, condvars and threads are `std`'s and cannot be
//! scheduled.
//!
//! The story: several threads append through one writer while a sync fails. Whatever
//! the interleaving, no appender may be told `Ok` for a record that is not durable (it
//! would be lost by a power loss right after), every appender must wake up (a lost
//! wake-up hangs a producer forever; shuttle reports it as a deadlock), and after the
//! failure every later append fails until the writer is reopened.
#![cfg(feature = "shuttle")]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use escalation_queue_wal::{
    CrashMode, Error, Event, Fault, LaneId, Options, Reader, Repeat, SegmentId, SimDisk, SimErrno,
    SimOp, Writer,
};

mod support;
use support::{opts, segment_files};

fn iterations() -> usize {
    std::env::var("WAL_SHUTTLE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Three appenders, two records each; the `fail_at`-th sync fails (0: none). Checks the
/// outcomes against what a power loss right afterwards keeps.
fn appenders_with_a_failing_sync(fail_at: u64) {
    let sim = SimDisk::new(1);
    let o = opts(&sim);
    let w = Writer::open("/q", &o).expect("open");
    // The lane's first segment exists before the appenders start, so the failing sync is
    // a batch's (a new segment's header sync that fails removes the file instead).
    w.append(b"first").expect("first append");
    if fail_at > 0 {
        sim.inject(Fault::SyncFailsOnce(fail_at));
    }
    let results = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..3u8)
        .map(|t| {
            let (w, results) = (w.clone(), results.clone());
            shuttle::thread::spawn(move || {
                for i in 0..2u8 {
                    let payload = vec![t * 10 + i + 1; 100 + usize::from(t)];
                    // Err(true): Poisoned; Err(false): any other error.
                    let r = w.append(&payload);
                    let r = r
                        .map(|_| ())
                        .map_err(|e| matches!(e, Error::Poisoned { .. }));
                    results.lock().unwrap().push((payload, r));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("an appender panicked");
    }
    let results = std::mem::take(&mut *results.lock().unwrap());
    // Once a sync failed, nothing is acknowledged any more: the appender whose batch
    // failed, every appender waiting on it and every later one gets `Poisoned`.
    let synced_all = results.iter().all(|(_, r)| r.is_ok());
    if fail_at > 0 && !synced_all {
        assert!(
            results.iter().all(|(_, r)| *r != Err(false)),
            "a failure other than Poisoned: {results:?}"
        );
        let later = w.append(b"after the failure");
        assert!(
            matches!(later, Err(Error::Poisoned { .. })),
            "the writer was not poisoned: {later:?}"
        );
    }
    // With 3 appenders x 2 records the failing sync is always reached.
    assert!(
        fail_at == 0 || fail_at > 4 || !synced_all,
        "the fault never fired"
    );
    drop(w);
    // What is durable now is what a power loss keeps.
    let d = sim.fork(2);
    d.crash(CrashMode::LoseUnsynced);
    let mut r = Reader::open("/q", "c", &opts(&d)).expect("reader");
    let mut durable = Vec::new();
    while let Some(rec) = r.next().expect("next") {
        durable.push(rec.payload.to_vec());
    }
    for (payload, result) in &results {
        if result.is_ok() {
            assert!(
                durable.contains(payload),
                "acknowledged but not durable: {:?} (results {results:?})",
                &payload[..1]
            );
        }
    }
}

#[test]
fn group_commit_never_acknowledges_a_record_that_is_not_durable() {
    shuttle::check_random(|| appenders_with_a_failing_sync(0), iterations());
}

#[test]
fn a_failing_sync_wakes_every_waiter_and_acknowledges_nothing_after_it() {
    for fail_at in 1..=3 {
        shuttle::check_random(
            move || appenders_with_a_failing_sync(fail_at),
            iterations() / 2,
        );
    }
}

#[test]
fn group_commit_under_pct_scheduling() {
    shuttle::check_pct(|| appenders_with_a_failing_sync(2), iterations(), 3);
}

// ---------------------------------------------------------------------------------------
// The reader and its background checkpointer.
//
// The story: a reader acknowledges records while a writer appends them and rolls
// segments; it hands checkpoints to its background threads (one writes checkpoints, one
// deletes the segments they release), sometimes waiting for them (`checkpoint`), sometimes
// not (`checkpoint_in_background`), sometimes for the deletions too (`wait_for_deletions`,
// after which every released segment must be gone), and finally drops, which must write
// the request still pending. Another thread takes power-loss snapshots of the disk at
// points the scheduler picks. Whatever the interleaving: a `checkpoint` that returned `Ok`
// survives every snapshot taken after it (the cursor never moves back past it), the cursor
// never moves past an acknowledgement not yet made, no acknowledged append is lost, no
// record after the cursor is missing and recovery reports nothing but torn tails (a
// segment deleted before the checkpoint releasing it is durable shows as a gap), a failed
// checkpoint write or directory sync is reported by that call or a later one and by every
// call after it, and no call waits forever (shuttle reports a lost wake-up as a deadlock).
//
// Snapshots fall between the threads' synchronization points; crashes inside a
// checkpoint write (between its `pwrite` and its `fdatasync`) are explored exhaustively,
// single-threaded, by `crash_states.rs`.

/// Records in the workload: three 64 KiB segments of 3,000-byte records, so checkpoints
/// release (and the checkpointer deletes) segments while the writer rolls to new ones.
const RECORDS: usize = 48;
/// Payload size: 21 records fill a segment.
const RECORD_LEN: usize = 3000;
/// Snapshots per schedule.
const SNAPSHOTS: usize = 4;
/// Crash modes each snapshot is recovered under.
const SNAPSHOT_MODES: [CrashMode; 3] = [
    CrashMode::LoseUnsynced,
    CrashMode::LoseDirEntries,
    CrashMode::KeepRandomSectors,
];

fn record(i: usize) -> Vec<u8> {
    let mut p = vec![(i % 251) as u8; RECORD_LEN];
    p[..4].copy_from_slice(&u32::try_from(i).expect("small").to_le_bytes());
    p
}

fn index_of(payload: &[u8]) -> usize {
    let head: [u8; 4] = payload[..4].try_into().expect("4 bytes");
    let i = u32::from_le_bytes(head) as usize;
    assert_eq!(
        payload,
        record(i).as_slice(),
        "record {i} delivered damaged"
    );
    i
}

/// What the threads have made true so far; each counter is raised only after the fact.
#[derive(Default)]
struct Progress {
    /// Appends that returned `Ok` (records `0..appended` are acknowledged to the writer).
    appended: AtomicUsize,
    /// Records acknowledged to the reader (`0..acked`).
    acked: AtomicUsize,
    /// Records covered by the newest `checkpoint()` that returned `Ok`.
    confirmed: AtomicUsize,
}

/// A power-loss snapshot with the bounds it must satisfy after recovery.
struct Snapshot {
    disk: SimDisk,
    /// Read before the snapshot: the recovered cursor is at least here...
    confirmed: usize,
    /// ...and the recovered records reach at least here.
    appended: usize,
    /// Read after the snapshot: the recovered cursor is at most here.
    acked: usize,
}

/// Which failure, if any, the checkpointer meets.
#[derive(Clone, Copy, Debug)]
enum CheckpointFault {
    None,
    /// The `n`-th checkpoint `fdatasync` fails (EIO).
    Sync(u64),
    /// The first directory sync after segment deletions fails (EIO).
    SyncDir,
}

/// Records the reader sees after `disk` loses power under `mode` and recovers, as indices.
/// A power loss may tear the unsynced tail, nothing else: a missing segment (`Gap`) or
/// damage reported after it means something was deleted or overwritten too early.
fn recover(disk: &SimDisk, mode: CrashMode, seed: u64) -> Vec<usize> {
    let d = disk.fork(seed);
    d.crash(mode);
    let mut r = Reader::open("/q", "c", &checkpointer_opts(&d)).expect("reopen after crash");
    let mut got = Vec::new();
    while let Some(rec) = r.next().expect("next after crash") {
        got.push(index_of(&rec.payload));
    }
    for e in r.take_events() {
        assert!(
            matches!(e, Event::TornTail { .. }),
            "{mode:?}: unexpected event after recovery: {e:?} (recovered {got:?})"
        );
    }
    got
}

fn checkpointer_opts(sim: &SimDisk) -> Options {
    opts(sim).queue_bytes_max(1 << 20)
}

/// Checks one snapshot: the recovered records are a gap-free run starting at the cursor,
/// which lies between the confirmed checkpoint and the acknowledgements made.
fn check_snapshot(s: &Snapshot, seed: u64) {
    for mode in SNAPSHOT_MODES {
        let got = recover(&s.disk, mode, seed);
        let start = got.first().copied().unwrap_or(s.appended.max(s.confirmed));
        let context = format!(
            "{mode:?}: recovered {:?}..={:?} ({} records); confirmed {}, acked {}, appended {}",
            got.first(),
            got.last(),
            got.len(),
            s.confirmed,
            s.acked,
            s.appended
        );
        assert!(
            start >= s.confirmed,
            "cursor moved back past a confirmed checkpoint: {context}"
        );
        if !got.is_empty() {
            assert!(
                start <= s.acked,
                "cursor moved past an acknowledgement not yet made: {context}"
            );
        }
        for (k, i) in got.iter().enumerate() {
            assert_eq!(*i, start + k, "a hole or a reordering: {context}");
        }
        let end = start + got.len();
        assert!(
            end >= s.appended,
            "an acknowledged append was lost: {context}"
        );
    }
}

fn reader_racing_its_checkpointer(fault: CheckpointFault, iteration: u64) {
    let sim = SimDisk::new(iteration);
    let o = checkpointer_opts(&sim);
    let progress = Arc::new(Progress::default());
    let w = Writer::open("/q", &o).expect("open writer");
    // With a fault the writer finishes first, so the armed sync counts only the
    // checkpointer's; without one it races the reader.
    let first_batch = match fault {
        CheckpointFault::None => 1,
        _ => RECORDS,
    };
    for i in 0..first_batch {
        w.append(&record(i)).expect("append");
        progress.appended.store(i + 1, SeqCst);
    }
    let writer = {
        let progress = progress.clone();
        shuttle::thread::spawn(move || {
            for i in first_batch..RECORDS {
                w.append(&record(i)).expect("append");
                progress.appended.store(i + 1, SeqCst);
            }
        })
    };
    let mut reader = Reader::open("/q", "c", &o).expect("open reader");
    match fault {
        CheckpointFault::None => {}
        CheckpointFault::Sync(n) => sim.inject(Fault::Fail {
            op: SimOp::Sync,
            nth: n,
            errno: SimErrno::Eio,
            repeat: Repeat::Once,
        }),
        CheckpointFault::SyncDir => sim.inject(Fault::Fail {
            op: SimOp::SyncDir,
            nth: 1,
            errno: SimErrno::Eio,
            repeat: Repeat::Once,
        }),
    }
    let snapshots = {
        let (sim, progress) = (sim.clone(), progress.clone());
        shuttle::thread::spawn(move || {
            (0..SNAPSHOTS)
                .map(|_| {
                    shuttle::thread::yield_now();
                    let confirmed = progress.confirmed.load(SeqCst);
                    let appended = progress.appended.load(SeqCst);
                    let disk = sim.fork(0);
                    let acked = progress.acked.load(SeqCst);
                    Snapshot {
                        disk,
                        confirmed,
                        appended,
                        acked,
                    }
                })
                .collect::<Vec<_>>()
        })
    };

    // The reader: acknowledge every record; every 4th, hand a checkpoint over, in the
    // background or waiting for it, and now and then wait again with nothing new.
    let mut acked = 0;
    let mut failed = None;
    let mut spins = 0;
    while acked < RECORDS {
        let Some(rec) = reader.next().expect("next") else {
            spins += 1;
            assert!(
                spins < 100_000,
                "the reader starved: {acked} of {RECORDS} acknowledged"
            );
            shuttle::thread::yield_now();
            continue;
        };
        assert_eq!(index_of(&rec.payload), acked, "delivered out of order");
        let acked_segment = rec.id.position.segment;
        reader.ack(rec.id).expect("ack");
        acked += 1;
        progress.acked.store(acked, SeqCst);
        if acked % 4 != 0 {
            continue;
        }
        let background = acked % 12 == 0;
        let result = match acked % 24 {
            0 | 12 => reader.checkpoint_in_background(),
            4 | 16 => reader.checkpoint(),
            8 => reader.checkpoint().and_then(|()| reader.checkpoint()),
            _ => reader.wait_for_deletions().inspect(|()| {
                // Every segment before the one holding the newest acknowledged record
                // is released by the checkpoint just made durable: it must be gone, and
                // stay gone through a power loss (the directory was synced).
                let left = segments_before(&sim, acked_segment);
                assert!(
                    left.is_empty(),
                    "released segments left after the wait: {left:?}"
                );
                let after_power_loss = sim.fork(0);
                after_power_loss.crash(CrashMode::LoseDirEntries);
                let back = segments_before(&after_power_loss, acked_segment);
                assert!(
                    back.is_empty(),
                    "deleted segments back after a power loss: {back:?}"
                );
            }),
        };
        match (result, failed) {
            (Ok(()), None) => {
                if !background {
                    progress.confirmed.store(acked, SeqCst);
                }
            }
            (Ok(()), Some(at)) => {
                panic!("checkpoint at {acked} succeeded after one failed at {at}")
            }
            (Err(e), _) => {
                assert!(
                    matches!(fault, CheckpointFault::Sync(_) | CheckpointFault::SyncDir),
                    "checkpoint failed without a fault: {e}"
                );
                assert!(matches!(e, Error::Io { .. }), "not an I/O error: {e:?}");
                failed = failed.or(Some(acked));
            }
        }
    }
    if !matches!(fault, CheckpointFault::None) {
        // A failure is sticky: once one call reported it, every later one does, even with
        // nothing new to save (a deletion may fail after its checkpoint was durable).
        if failed.is_some() || reader.wait_for_deletions().is_err() {
            assert!(reader.checkpoint().is_err(), "checkpoint() after a failure");
            assert!(
                reader.checkpoint_in_background().is_err(),
                "checkpoint_in_background() after a failure"
            );
            failed = failed.or(Some(RECORDS));
        }
    }
    // Without a fault, the last checkpoint (at RECORDS, a multiple of 12) went to the
    // background and may still be pending: dropping the reader must write it.
    drop(reader);
    writer.join().expect("the writer panicked");
    let snapshots = snapshots.join().expect("the snapshot thread panicked");

    match fault {
        CheckpointFault::None => {}
        CheckpointFault::Sync(_) => assert!(
            failed.is_some(),
            "the failed checkpoint sync was never reported"
        ),
        // Deletions (and so the directory sync) begin once the first segment is released.
        CheckpointFault::SyncDir => assert!(
            failed.is_some(),
            "the failed directory sync was never reported"
        ),
    }
    for (k, s) in snapshots.iter().enumerate() {
        check_snapshot(s, iteration * 8 + k as u64);
    }
    // After the drop every acknowledgement is durable, unless checkpointing failed.
    let end = Snapshot {
        disk: sim.fork(0),
        confirmed: if failed.is_none() {
            RECORDS
        } else {
            progress.confirmed.load(SeqCst)
        },
        appended: RECORDS,
        acked: RECORDS,
    };
    check_snapshot(&end, iteration * 8 + 7);
}

/// Segment files of lane 0 older than `seg` that exist now.
fn segments_before(sim: &SimDisk, seg: SegmentId) -> Vec<PathBuf> {
    segment_files(sim)
        .into_iter()
        .filter(|(lane, s, _)| *lane == LaneId(0) && *s < seg)
        .map(|(_, _, path)| path)
        .collect()
}

/// A different disk seed for each schedule, so torn sectors vary too.
fn next_iteration() -> u64 {
    static ITERATION: AtomicUsize = AtomicUsize::new(0);
    ITERATION.fetch_add(1, SeqCst) as u64
}

#[test]
fn checkpoints_survive_every_schedule_and_segments_go_only_when_released() {
    shuttle::check_random(
        || reader_racing_its_checkpointer(CheckpointFault::None, next_iteration()),
        iterations() / 4,
    );
}

#[test]
fn a_failed_checkpoint_sync_is_reported_and_never_claimed_durable() {
    for n in 1..=3 {
        shuttle::check_random(
            move || reader_racing_its_checkpointer(CheckpointFault::Sync(n), next_iteration()),
            iterations() / 8,
        );
    }
}

#[test]
fn a_failed_directory_sync_after_deletions_is_reported() {
    shuttle::check_random(
        || reader_racing_its_checkpointer(CheckpointFault::SyncDir, next_iteration()),
        iterations() / 8,
    );
}

#[test]
fn checkpointer_under_pct_scheduling() {
    shuttle::check_pct(
        || reader_racing_its_checkpointer(CheckpointFault::None, next_iteration()),
        iterations() / 4,
        3,
    );
}
