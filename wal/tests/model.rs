//! Model-based property tests: random sequences of appends from up to three writers,
//! reader next/ack/checkpoint, reopening readers and writers, and simulated power losses
//! (every `CrashMode`, also in the middle of a batch whose sync failed), all checked
//! against a model of what was appended and what the cursor made durable.
//!
//! The story: an edge device loses power at any moment, and after it comes back the
//! queue must still hand the worker every escalation whose `append` returned `Ok`, in
//! order per writer, never one that was not appended, never one the worker had already
//! acknowledged and checkpointed, and it must not cry "corruption" over a disk that
//! merely lost its unsynced tail. If this test fails, users lose escalations or get
//! spurious corruption alarms after a crash.
//!
//! Bugs this found (fixed in `wal/src`):
//! * A reader on storage whose maps are snapshots (`SimDisk`; any `Storage` with
//!   `maps_are_live() == false`) kept reusing a map taken before later appends, decoded
//!   zeros where the new record was, reported `Corruption` and skipped the record for
//!   good (`Reader` `map_segment`).
//! * `verify` reported a cursor that was opened but never checkpointed (its file is all
//!   zeros) as a damaged checkpoint (`cursor::is_damaged`).
//!
//! Also exercised: a checkpoint whose sync fails just before a power loss comes back as
//! the old or the new checkpoint for every lane alike, never a mix.
//!
//! Cases: 48 by default, `WAL_PROPTEST_CASES=N` for more. Deterministic (fixed seed).

use std::collections::{BTreeMap, VecDeque};

use escalation_queue_wal::{
    inspect, verify, CrashMode, Event, Fault, LaneId, Options, Reader, Record, RecordId, SimDisk,
    Writer,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

mod support;
use support::opts;

const DIR: &str = "/queue";
const CURSOR: &str = "worker";
const WRITERS_MAX: usize = 3;

/// The payload of append number `id`: its id's bytes first (as many as fit), then bytes
/// derived from the id, so a payload from the wrong record or a damaged one never matches.
fn payload(id: u64, size: usize) -> Vec<u8> {
    let idb = id.to_le_bytes();
    (0..size)
        .map(|i| match idb.get(i) {
            Some(b) => *b,
            None => (id as u8).wrapping_mul(31).wrapping_add(i as u8) ^ 0x5a,
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        w: usize,
        size: usize,
    },
    /// Several appends in a row, to roll segments.
    Burst {
        w: usize,
        sizes: Vec<usize>,
    },
    Next {
        n: usize,
    },
    /// Acknowledge a prefix of what a lane delivered.
    Ack {
        pick: u32,
    },
    Checkpoint,
    ReopenReader,
    ReopenWriter {
        w: usize,
    },
    /// Drop a writer without closing it: its lane is abandoned (and its tail unsealed).
    DropWriter {
        w: usize,
    },
    Crash {
        mode: CrashMode,
    },
    /// The `k`-th sync of an append fails (batch sync, seal or new segment), then power
    /// is lost before anything else happens.
    /// The sync of a checkpoint fails, then power is lost: the cursor must come back as
    /// the old checkpoint or the new one, for every lane alike (atomic), never a mix.
    FailedCheckpointThenCrash {
        mode: CrashMode,
    },
    FailedSyncThenCrash {
        w: usize,
        size: usize,
        k: u64,
        mode: CrashMode,
    },
}

fn crash_mode() -> impl Strategy<Value = CrashMode> {
    prop_oneof![
        Just(CrashMode::LoseUnsynced),
        Just(CrashMode::KeepRandomSectors),
        Just(CrashMode::KeepAll),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..WRITERS_MAX, 1usize..3000).prop_map(|(w, size)| Op::Append { w, size }),
        3 => (0..WRITERS_MAX, proptest::collection::vec(1usize..3000, 1..40))
            .prop_map(|(w, sizes)| Op::Burst { w, sizes }),
        6 => (1usize..25).prop_map(|n| Op::Next { n }),
        4 => any::<u32>().prop_map(|pick| Op::Ack { pick }),
        3 => Just(Op::Checkpoint),
        1 => Just(Op::ReopenReader),
        1 => (0..WRITERS_MAX).prop_map(|w| Op::ReopenWriter { w }),
        1 => (0..WRITERS_MAX).prop_map(|w| Op::DropWriter { w }),
        1 => crash_mode().prop_map(|mode| Op::Crash { mode }),
        2 => (0..WRITERS_MAX, 1usize..3000, 1u64..=3, crash_mode())
            .prop_map(|(w, size, k, mode)| Op::FailedSyncThenCrash { w, size, k, mode }),
        1 => crash_mode().prop_map(|mode| Op::FailedCheckpointThenCrash { mode }),
    ]
}

/// One appended record as the model knows it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    size: usize,
    /// `append` returned `Ok`. An uncertain record (its append failed) may or may not be
    /// in the queue, but only where it was appended.
    certain: bool,
}

/// A reader session: what the open reader delivered and acknowledged.
struct Session {
    reader: Reader,
    /// Next sequence number each lane must deliver.
    next: BTreeMap<LaneId, u64>,
    /// First unacknowledged sequence number per lane.
    acked: BTreeMap<LaneId, u64>,
    /// Delivered, not acknowledged.
    delivered: BTreeMap<LaneId, VecDeque<RecordId>>,
}

struct Harness {
    sim: SimDisk,
    opts: Options,
    writers: Vec<Option<Writer>>,
    session: Option<Session>,
    /// Per lane: records by sequence number (records known lost are removed).
    lanes: BTreeMap<LaneId, BTreeMap<u64, Entry>>,
    /// The durable checkpoint: first unconsumed sequence number per lane.
    ckpt: BTreeMap<LaneId, u64>,
    next_id: u64,
    /// The last power loss tore sectors: torn tails may be reported until the next one.
    torn_allowed: bool,
}

impl Harness {
    fn new(seed: u64, writers: usize) -> Self {
        let sim = SimDisk::new(seed);
        let opts = opts(&sim);
        let mut h = Self {
            sim,
            opts,
            writers: (0..writers).map(|_| None).collect(),
            session: None,
            lanes: BTreeMap::new(),
            ckpt: BTreeMap::new(),
            next_id: 0,
            torn_allowed: false,
        };
        for w in 0..writers {
            h.open_writer(w);
        }
        h.open_reader();
        h
    }

    fn open_writer(&mut self, w: usize) {
        let writer = Writer::open(DIR, &self.opts).expect("open writer");
        let events = writer.recovery_events().to_vec();
        self.check_events(&events, "writer recovery");
        self.writers[w] = Some(writer);
    }

    fn writer(&mut self, w: usize) -> Writer {
        let w = w % self.writers.len();
        if self.writers[w].is_none() {
            self.open_writer(w);
        }
        self.writers[w].clone().expect("writer is open")
    }

    fn open_reader(&mut self) {
        assert!(self.session.is_none());
        let reader = Reader::open(DIR, CURSOR, &self.opts).expect("open reader");
        self.session = Some(Session {
            reader,
            next: BTreeMap::new(),
            acked: BTreeMap::new(),
            delivered: BTreeMap::new(),
        });
        self.take_reader_events("reader open");
    }

    fn session(&mut self) -> &mut Session {
        self.session.as_mut().expect("reader is open")
    }

    fn check_events(&self, events: &[Event], when: &str) {
        for e in events {
            match e {
                Event::TornTail { .. } if self.torn_allowed => {}
                other => panic!(
                    "{when}: unexpected event on an undamaged disk (torn tails allowed: {}): {other:?}",
                    self.torn_allowed
                ),
            }
        }
    }

    fn take_reader_events(&mut self, when: &str) {
        let events = self.session().reader.take_events();
        self.check_events(&events, when);
    }

    /// The sequence number the next record of `lane` takes, as far as the model knows.
    fn lane_next_seq(&self, lane: LaneId) -> u64 {
        self.lanes
            .get(&lane)
            .and_then(|l| l.keys().next_back())
            .map_or(0, |s| s + 1)
    }

    fn append(&mut self, w: usize, size: usize) {
        let writer = self.writer(w);
        let id = self.next_id;
        self.next_id += 1;
        let rid = writer
            .append(&payload(id, size))
            .expect("append on a healthy disk");
        self.appended(rid.lane, rid.seq.0, id, size);
    }

    fn appended(&mut self, lane: LaneId, seq: u64, id: u64, size: usize) {
        let entries = self.lanes.entry(lane).or_default();
        // An uncertain record before this one is resolved by the sequence number we got.
        if let Some((&t, last)) = entries.iter_mut().next_back() {
            if !last.certain {
                if seq == t {
                    entries.remove(&t);
                } else if seq == t + 1 {
                    last.certain = true;
                } else {
                    panic!("{lane} after uncertain seq {t}: append got seq {seq}");
                }
            }
        }
        let expected = self.lane_next_seq(lane);
        assert_eq!(seq, expected, "{lane}: sequence numbers must be dense");
        self.lanes.entry(lane).or_default().insert(
            seq,
            Entry {
                id,
                size,
                certain: true,
            },
        );
    }

    fn deliver(&mut self, rec: Record) {
        let lane = rec.id.lane;
        let seq = rec.id.seq.0;
        let start = self.ckpt.get(&lane).copied().unwrap_or(0);
        let s = self.session.as_mut().expect("reader is open");
        let expected = s.next.get(&lane).copied().unwrap_or(start);
        assert_eq!(
            seq, expected,
            "{lane}: delivered seq {seq}, expected {expected} (FIFO, nothing skipped, nothing \
             checkpointed delivered again; checkpoint at {start})"
        );
        let entry = self
            .lanes
            .get_mut(&lane)
            .and_then(|l| l.get_mut(&seq))
            .unwrap_or_else(|| panic!("{lane} seq {seq} delivered but never appended"));
        assert!(
            rec.payload[..] == payload(entry.id, entry.size)[..],
            "{lane} seq {seq}: payload is not the one appended (id {})",
            entry.id
        );
        entry.certain = true;
        s.next.insert(lane, seq + 1);
        s.acked.entry(lane).or_insert(start);
        s.delivered.entry(lane).or_default().push_back(rec.id);
    }

    fn next(&mut self, n: usize) {
        for _ in 0..n {
            match self.session().reader.next().expect("reader next") {
                Some(rec) => self.deliver(rec),
                None => break,
            }
        }
        self.take_reader_events("reader next");
    }

    /// Reads to the end and checks that every record appended with `Ok` and not
    /// checkpointed was delivered; uncertain records not delivered are lost.
    fn drain_and_check_nothing_lost(&mut self, when: &str) {
        while let Some(rec) = self.session().reader.next().expect("reader next") {
            self.deliver(rec);
        }
        self.take_reader_events(when);
        let lanes: Vec<LaneId> = self.lanes.keys().copied().collect();
        for lane in lanes {
            let start = self.ckpt.get(&lane).copied().unwrap_or(0);
            let next = self.session().next.get(&lane).copied().unwrap_or(start);
            let entries = self.lanes.get_mut(&lane).expect("lane");
            let undelivered: Vec<(u64, Entry)> =
                entries.range(next..).map(|(s, e)| (*s, *e)).collect();
            for (seq, e) in undelivered {
                assert!(
                    !e.certain,
                    "{when}: {lane} seq {seq} (id {}) was appended with Ok but never delivered \
                     (delivered up to {next}, checkpoint {start})",
                    e.id
                );
                entries.remove(&seq);
            }
        }
    }

    fn ack(&mut self, pick: u32) {
        let s = self.session.as_mut().expect("reader is open");
        let lanes: Vec<LaneId> = s
            .delivered
            .iter()
            .filter(|(_, d)| !d.is_empty())
            .map(|(l, _)| *l)
            .collect();
        if lanes.is_empty() {
            return;
        }
        let lane = lanes[pick as usize % lanes.len()];
        let d = s.delivered.get_mut(&lane).expect("lane");
        let upto = (pick as usize / 7) % d.len();
        let id = d[upto];
        s.reader.ack(id).expect("ack a delivered record");
        d.drain(..=upto);
        s.acked.insert(lane, id.seq.0 + 1);
    }

    fn checkpoint(&mut self) {
        let s = self.session.as_mut().expect("reader is open");
        s.reader.checkpoint().expect("checkpoint");
        for (lane, a) in &s.acked {
            self.ckpt.insert(*lane, *a);
        }
        self.take_reader_events("checkpoint");
    }

    fn reopen_reader(&mut self) {
        self.session = None;
        self.open_reader();
    }

    fn crash(&mut self, mode: CrashMode) {
        self.crash_with_checkpoint_in_doubt(mode, None);
    }

    /// `in_doubt`: a checkpoint was being written (the durable one is the first map of the
    /// pair, the attempted one the second).
    #[allow(clippy::type_complexity)]
    fn crash_with_checkpoint_in_doubt(
        &mut self,
        mode: CrashMode,
        in_doubt: Option<(BTreeMap<LaneId, u64>, BTreeMap<LaneId, u64>)>,
    ) {
        let open: Vec<bool> = self.writers.iter().map(Option::is_some).collect();
        self.session = None;
        for w in &mut self.writers {
            *w = None;
        }
        self.sim.crash(mode);
        if let Some((old, new)) = in_doubt {
            let info = inspect(DIR, &self.opts).expect("inspect");
            let cursor = info.cursors.iter().find(|c| c.name == CURSOR);
            let on_disk = |lane: &LaneId| {
                cursor
                    .and_then(|c| c.lanes.get(lane))
                    .map_or(0, |l| l.position.next_seq.0)
            };
            let matches = |cp: &BTreeMap<LaneId, u64>| {
                self.lanes
                    .keys()
                    .all(|l| on_disk(l) == cp.get(l).copied().unwrap_or(0))
            };
            if matches(&new) {
                self.ckpt = new;
            } else {
                assert!(
                    matches(&old),
                    "the checkpoint is neither the old nor the new one: old {old:?}, \
                     attempted {new:?}, on disk {cursor:?}"
                );
            }
        }
        self.torn_allowed = mode == CrashMode::KeepRandomSectors;
        for (w, was_open) in open.into_iter().enumerate() {
            if was_open {
                self.open_writer(w);
            }
        }
        self.open_reader();
        self.drain_and_check_nothing_lost("after crash");
        self.verify_clean("after crash");
    }

    fn failed_checkpoint_then_crash(&mut self, mode: CrashMode) {
        let old = self.ckpt.clone();
        let mut new = old.clone();
        let s = self.session.as_mut().expect("reader is open");
        for (lane, a) in &s.acked {
            new.insert(*lane, *a);
        }
        self.sim.inject(Fault::SyncFailsOnce(1));
        if s.reader.checkpoint().is_ok() {
            // Nothing to write (no acknowledgement since the last checkpoint).
            let same = new
                .iter()
                .all(|(l, a)| old.get(l).copied().unwrap_or(0) == *a);
            assert!(
                same,
                "checkpoint skipped with acks pending: {old:?} {new:?}"
            );
        }
        self.crash_with_checkpoint_in_doubt(mode, Some((old, new)));
    }

    fn failed_sync_then_crash(&mut self, w: usize, size: usize, k: u64, mode: CrashMode) {
        let writer = self.writer(w);
        let lane = writer.lane();
        let id = self.next_id;
        self.next_id += 1;
        self.sim.inject(Fault::SyncFailsOnce(k));
        match writer.append(&payload(id, size)) {
            Ok(rid) => self.appended(rid.lane, rid.seq.0, id, size),
            Err(_) => {
                let seq = self.lane_next_seq(lane);
                self.lanes.entry(lane).or_default().insert(
                    seq,
                    Entry {
                        id,
                        size,
                        certain: false,
                    },
                );
            }
        }
        drop(writer);
        self.crash(mode);
    }

    fn verify_clean(&self, when: &str) {
        let report = verify(DIR, &self.opts).expect("verify");
        assert!(
            report.damage.is_empty(),
            "{when}: verify reports damage: {report:#?}"
        );
        assert!(
            report.checkpoints.iter().all(|(_, ok)| *ok),
            "{when}: {report:#?}"
        );
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Append { w, size } => self.append(*w, *size),
            Op::Burst { w, sizes } => {
                for size in sizes {
                    self.append(*w, *size);
                }
            }
            Op::Next { n } => self.next(*n),
            Op::Ack { pick } => self.ack(*pick),
            Op::Checkpoint => self.checkpoint(),
            Op::ReopenReader => self.reopen_reader(),
            Op::ReopenWriter { w } => {
                let w = w % self.writers.len();
                self.writers[w] = None;
                self.open_writer(w);
            }
            Op::DropWriter { w } => {
                let w = w % self.writers.len();
                self.writers[w] = None;
            }
            Op::Crash { mode } => self.crash(*mode),
            Op::FailedCheckpointThenCrash { mode } => self.failed_checkpoint_then_crash(*mode),
            Op::FailedSyncThenCrash { w, size, k, mode } => {
                self.failed_sync_then_crash(*w, *size, *k, *mode)
            }
        }
    }

    fn finish(&mut self) {
        self.reopen_reader();
        self.drain_and_check_nothing_lost("at the end");
        self.verify_clean("at the end");
    }
}

fn cases() -> u32 {
    std::env::var("WAL_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

fn config() -> Config {
    Config {
        cases: cases(),
        rng_seed: RngSeed::Fixed(0x5eed_0001),
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_acknowledged_append_survives_crashes_in_order_exactly_as_the_model_says(
        seed in any::<u64>(),
        writers in 1usize..=WRITERS_MAX,
        ops in proptest::collection::vec(op(), 1..90),
    ) {
        let mut h = Harness::new(seed, writers);
        for op in &ops {
            h.run(op);
        }
        h.finish();
    }
}
