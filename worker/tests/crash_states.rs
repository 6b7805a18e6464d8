//! Crash-state exploration of the worker's own logs, `dedupe.log` ([`DedupeSet`]) and
//! `attempts.log` ([`AttemptJournal`]), on the simulated disk behind the wal's storage seam.
//!
//! The story: the worker can lose power (or be killed) between any two storage calls it
//! makes on these files. Whatever the instant and whatever the disk then keeps of unsynced
//! data and directory entries, the next worker must open both files (never a crash loop),
//! remember every id whose `persist` returned `Ok` (among the most recent ones the bounded
//! set keeps), invent no id, report a run marker that was actually written (an unclean run
//! never reported clean), and find every attempt marker whose `mark` returned `Ok` and that
//! the workload had not released. A crash during that recovery must not change any of this.
//!
//! How: [`SimDisk::stop_after`] freezes the disk right after its n-th state-changing call,
//! for n = 1, 2, ... up to the end of a scripted workload (every state-changing call is a
//! crash point; calls in between cannot change what a crash leaves). Each frozen disk is
//! forked once per loss pattern (lose unsynced, random sectors with 3 seeds, keep all, torn
//! last write with 2 seeds, zeroed tail, lost directory entries), reopened and checked;
//! the reopen itself is crashed at each of its own state-changing calls under every loss
//! pattern, and checked again (for every `WORKER_CRASH_NEST_EVERY`-th state, default 2;
//! 1 explores all).
//!
//! The same workloads also run with EIO or ENOSPC injected at every call index of every
//! call kind (once, or from then on), carrying on after each failure as the worker does;
//! then a process crash and a power loss. There a failure must be reported (`Err`) or the
//! degraded mode entered (`is_degraded`, `is_unjournaled`): an id or marker acknowledged
//! with `Ok` outside the degraded mode is never lost.
//!
//! Figures are printed (`-- --nocapture`). Every state's recovery crashed:
//! `WORKER_CRASH_NEST_EVERY=1 cargo test -p escalation-queue-worker --test crash_states --
//! --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use escalation_queue_wal::{CrashMode, Fault, Repeat, SimDisk, SimErrno, SimOp};
use escalation_queue_worker::{
    AttemptJournal, DedupeSet, DuplicateOf, Error, Escalation, ImageSource, InFlight,
    MarkerDurability, PreviousRun,
};

#[path = "support/record_ids.rs"]
mod record_ids;
use record_ids::{id, iq};

const DIR: &str = "/queue";
/// Items the dedupe set keeps: small, so the workload compacts (past twice the set) often.
const ITEMS_MAX: usize = 3;
/// Items inserted in each of the dedupe workload's two runs.
const RUN_ITEMS: [u32; 2] = [12, 8];
/// Slots of a new attempt journal: small, so the workload compacts it.
const SLOTS_MIN: u32 = 4;

/// The loss patterns applied to every frozen disk, with the fork's seed.
const LOSSES: [(CrashMode, u64); 9] = [
    (CrashMode::LoseUnsynced, 1),
    (CrashMode::KeepRandomSectors, 1),
    (CrashMode::KeepRandomSectors, 2),
    (CrashMode::KeepRandomSectors, 3),
    (CrashMode::KeepAll, 1),
    (CrashMode::TornLastWrite, 1),
    (CrashMode::TornLastWrite, 2),
    (CrashMode::ZeroedTail, 1),
    (CrashMode::LoseDirEntries, 1),
];

/// Every call kind a fault can be injected at.
const OPS: [SimOp; 10] = [
    SimOp::Open,
    SimOp::Read,
    SimOp::Write,
    SimOp::Sync,
    SimOp::Allocate,
    SimOp::SyncDir,
    SimOp::Remove,
    SimOp::SetLen,
    SimOp::Rename,
    SimOp::Lookup,
];

/// Counts of what an exploration did, printed at the end.
#[derive(Debug, Default)]
struct Figures {
    crash_points: u64,
    states: u64,
    recovery_states: u64,
    fault_runs: u64,
    restarts: u64,
    checks: u64,
}

/// The oracle of one file's workload (what the workload was told), which runs the workload
/// and checks a recovery, for [`explore_crashes`] and [`explore_faults`].
trait Subject: Default {
    const NAME: &'static str;
    /// The handle on the file.
    type File;
    /// Opens the file on `disk` as the worker opens it (the open a recovery makes, crashed
    /// in turn by the exploration).
    fn open(disk: &SimDisk) -> Result<Self::File, Error>;
    /// Runs the workload on `disk`, telling `self` what each call returned. With
    /// `keep_going` a failed call is reported and the workload carries on; without, the
    /// first failure ends it (the disk was frozen: the crash).
    fn workload(&mut self, disk: &SimDisk, keep_going: bool);
    /// Reopens the file on `disk` (already crashed) and checks it; returns the checks made.
    fn recover(&self, disk: &SimDisk, what: &str) -> u64;
}

// ---------------------------------------------------------------------------------------
// The dedupe log
// ---------------------------------------------------------------------------------------

fn esc(n: u32) -> Escalation {
    let mut e = Escalation::new("det_x", ImageSource::Inline(vec![1_u8].into()));
    e.image_query_id = format!("iq_{n}");
    e.request_id = format!("req_{n}");
    e
}

/// An escalation sharing only the image query id (`by_iq`) or only the request id of item
/// `n`: probes each of its two keys on its own.
fn half(n: u32, by_iq: bool) -> Escalation {
    let mut e = esc(n);
    if by_iq {
        e.request_id = format!("req_other_{n}");
    } else {
        e.image_query_id = format!("iq_other_{n}");
    }
    e
}

/// What the dedupe workload was told, to check a reopened set against.
#[derive(Debug, Default)]
struct DedupeOracle {
    /// Items inserted, in order.
    inserted: Vec<u32>,
    /// Items inserted when a `persist` (or `mark_stopped`) last returned `Ok` outside the
    /// degraded mode: all of those are durable.
    acked: usize,
    /// The last run marker whose call returned `Ok` (`None`: none yet).
    marker: Option<PreviousRun>,
    /// Markers asked for since, whose call failed or is in flight: any may be in the log.
    pending: Vec<PreviousRun>,
    /// Every marker asked for.
    asked: Vec<PreviousRun>,
    /// A "running" marker returned `Ok` in the degraded mode (not written): until a marker
    /// is written again, only an unclean run may be reported.
    unclean_unsaved: bool,
}

impl DedupeOracle {
    fn persisted(&mut self, set: &DedupeSet, ok: bool) {
        if ok && !set.is_degraded() {
            self.acked = self.inserted.len();
        }
    }

    fn asking(&mut self, run: PreviousRun) {
        self.pending.push(run);
        self.asked.push(run);
    }

    fn marked(&mut self, set: &DedupeSet, run: PreviousRun, ok: bool) {
        if ok && !set.is_degraded() {
            self.marker = Some(run);
            self.pending.clear();
            self.unclean_unsaved = false;
        } else if ok {
            // `Ok` in the degraded mode: the marker was not written.
            self.pending.retain(|p| *p != run);
            if matches!(run, PreviousRun::Unclean { .. }) {
                self.unclean_unsaved = true;
            }
        }
    }

    /// Checks a set reopened after a crash; returns how many checks it made.
    fn check(&self, set: &DedupeSet, what: &str) -> u64 {
        let mut checks = 0;
        // The run marker: the last acknowledged one or one asked for since.
        let seen = set.previous_run();
        let mut allowed: Vec<PreviousRun> = self.pending.clone();
        match self.marker {
            Some(run) => allowed.push(run),
            // No marker acknowledged: no log, or a log without a marker (read as unclean).
            None => allowed.extend([
                PreviousRun::First,
                PreviousRun::Unclean { window_records: 65 },
            ]),
        }
        let running_pending = self
            .pending
            .iter()
            .any(|p| matches!(p, PreviousRun::Unclean { .. }));
        if running_pending {
            // A "running" marker that found no room cuts a "stopped" one off the tail (see
            // `DedupeSet::mark_running`), showing the earlier "running" marker (or none).
            allowed.extend(
                self.asked
                    .iter()
                    .filter(|p| matches!(p, PreviousRun::Unclean { .. })),
            );
            allowed.push(PreviousRun::Unclean { window_records: 65 });
        }
        if self.unclean_unsaved {
            // Any earlier "running" marker (or none: read as unclean) will do; never clean.
            allowed.retain(|p| !matches!(p, PreviousRun::Clean { .. }));
            allowed.extend(
                self.asked
                    .iter()
                    .filter(|p| matches!(p, PreviousRun::Unclean { .. })),
            );
            allowed.push(PreviousRun::Unclean { window_records: 65 });
        }
        assert!(
            allowed.contains(&seen),
            "{what}: previous run {seen:?}, allowed {allowed:?}"
        );
        checks += 1;
        // Every key found was inserted; none invented; the acknowledged recent ones kept.
        let recent_from = self.inserted.len().saturating_sub(ITEMS_MAX);
        let mut found_keys = 0;
        for (i, &n) in self.inserted.iter().enumerate() {
            let q = set.contains(&half(n, true)) == Some(DuplicateOf::ImageQueryId);
            let r = set.contains(&half(n, false)) == Some(DuplicateOf::RequestId);
            found_keys += usize::from(q) + usize::from(r);
            if i >= recent_from && i < self.acked {
                assert!(q && r, "{what}: item {n} persisted with Ok is forgotten");
            }
            checks += 1;
        }
        assert_eq!(
            set.len_keys(),
            found_keys,
            "{what}: keys that were never inserted"
        );
        for n in 1000..1010 {
            assert_eq!(set.contains(&esc(n)), None, "{what}: invented item {n}");
        }
        checks += 2;
        checks
    }
}

impl Subject for DedupeOracle {
    const NAME: &'static str = "dedupe.log";
    type File = DedupeSet;

    fn open(disk: &SimDisk) -> Result<DedupeSet, Error> {
        DedupeSet::open_on(
            Arc::new(disk.clone()),
            Path::new(DIR).join(Self::NAME),
            ITEMS_MAX,
        )
    }

    /// The dedupe workload: two worker runs, each marking "running", inserting and persisting
    /// items one by one (compacting past twice the set), then stopping cleanly.
    fn workload(&mut self, disk: &SimDisk, keep_going: bool) {
        let mut next = 0_u32;
        let windows = [65_u32, 7];
        let stops = [
            Some(InFlight {
                lane: 3,
                seq: 77,
                response_possibly_lost: true,
            }),
            None,
        ];
        for run in 0..2 {
            let Ok(mut set) = Self::open(disk) else {
                return;
            };
            let running = PreviousRun::Unclean {
                window_records: windows[run],
            };
            self.asking(running);
            let ok = set.mark_running(windows[run]).is_ok();
            self.marked(&set, running, ok);
            if !ok && !keep_going {
                return;
            }
            for _ in 0..RUN_ITEMS[run] {
                set.insert(&esc(next));
                self.inserted.push(next);
                next += 1;
                let ok = set.persist().is_ok();
                self.persisted(&set, ok);
                if !ok && !keep_going {
                    return;
                }
            }
            let stopped = PreviousRun::Clean {
                in_flight: stops[run],
            };
            self.asking(stopped);
            let ok = set.mark_stopped(stops[run]).is_ok();
            self.persisted(&set, ok);
            self.marked(&set, stopped, ok);
            if !ok && !keep_going {
                return;
            }
        }
    }

    /// Reopens the dedupe log on `disk` (already crashed) and checks it, then checks that it
    /// reopens the same and still records a new id.
    fn recover(&self, disk: &SimDisk, what: &str) -> u64 {
        let set = Self::open(disk)
            .unwrap_or_else(|e| panic!("{what}: the dedupe log does not open: {e}"));
        let mut checks = self.check(&set, what);
        let seen = set.previous_run();
        drop(set);
        let mut set = Self::open(disk)
            .unwrap_or_else(|e| panic!("{what}: the dedupe log does not open again: {e}"));
        // An open that found no log created one without a marker: read as unclean from then on.
        if seen != PreviousRun::First {
            assert_eq!(set.previous_run(), seen, "{what}: reopened differently");
        }
        checks += self.check(&set, &format!("{what}, reopened"));
        set.insert(&esc(2000));
        set.persist()
            .unwrap_or_else(|e| panic!("{what}: persist after recovery: {e}"));
        drop(set);
        let set = Self::open(disk)
            .unwrap_or_else(|e| panic!("{what}: the dedupe log does not open a third time: {e}"));
        assert!(
            set.contains(&esc(2000)).is_some(),
            "{what}: an id persisted after recovery is lost"
        );
        checks + 1
    }
}

// ---------------------------------------------------------------------------------------
// The attempt journal
// ---------------------------------------------------------------------------------------

/// Where a marker stands in the workload's eyes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Inherited from the earlier run, its record not come again.
    Inherited,
    /// `mark` returned `Ok` in this run; not acknowledged.
    Live,
    /// Acknowledged, not yet checkpointed.
    Settled,
}

/// What the attempt workload was told.
#[derive(Debug, Default)]
struct AttemptOracle {
    /// Records `mark` was called for.
    attempted: BTreeSet<(u16, u64)>,
    /// Markers acknowledged durable and not released.
    needed: BTreeMap<(u16, u64), Need>,
}

impl AttemptOracle {
    fn mark(&mut self, journal: &mut AttemptJournal, lane: u16, seq: u64) -> bool {
        self.attempted.insert((lane, seq));
        let ok = journal.mark(id(lane, seq), &iq(lane, seq)).is_ok();
        if ok && !journal.is_unjournaled() {
            self.needed.insert((lane, seq), Need::Live);
        }
        ok
    }

    fn settled(&mut self, journal: &mut AttemptJournal, lane: u16, seq: u64) {
        journal.settled(id(lane, seq));
        if let Some(n) = self.needed.get_mut(&(lane, seq)) {
            if *n == Need::Live {
                *n = Need::Settled;
            }
        }
    }

    fn checkpointed(&mut self, journal: &mut AttemptJournal) {
        journal.checkpointed();
        self.needed.retain(|_, n| *n != Need::Settled);
    }

    fn seen(&mut self, journal: &mut AttemptJournal, lane: u16, seq: u64) {
        journal.seen(id(lane, seq));
        self.needed
            .retain(|&(l, s), n| !(l == lane && s < seq && *n == Need::Inherited));
    }

    fn caught_up(&mut self, journal: &mut AttemptJournal) {
        journal.caught_up();
        self.needed.retain(|_, n| *n != Need::Inherited);
    }

    fn restarted(&mut self) {
        for n in self.needed.values_mut() {
            *n = Need::Inherited;
        }
    }

    /// Checks a journal reopened after a crash; returns the markers it found.
    fn check(&self, journal: &AttemptJournal, what: &str) -> BTreeSet<(u16, u64)> {
        let mut found = BTreeSet::new();
        for lane in 0..3_u16 {
            for seq in 0..40_u64 {
                if journal.may_have_been_sent(id(lane, seq), &iq(lane, seq)) {
                    assert!(
                        self.attempted.contains(&(lane, seq)),
                        "{what}: marker ({lane}, {seq}) invented"
                    );
                    found.insert((lane, seq));
                }
            }
        }
        for key in self.needed.keys() {
            assert!(
                found.contains(key),
                "{what}: marker {key:?} acknowledged with Ok is lost"
            );
        }
        assert_eq!(
            journal.report().inherited,
            found.len(),
            "{what}: markers of records never attempted"
        );
        found
    }
}

impl Subject for AttemptOracle {
    const NAME: &'static str = "attempts.log";
    type File = AttemptJournal;

    fn open(disk: &SimDisk) -> Result<AttemptJournal, Error> {
        AttemptJournal::open_on(
            Arc::new(disk.clone()),
            Path::new(DIR).join(Self::NAME),
            SLOTS_MIN,
            MarkerDurability::Synced,
        )
    }

    /// The attempt workload: a run marking records of two lanes, acknowledging and
    /// checkpointing some (the journal compacts when its slots run out), then a second run
    /// that inherits the markers, adopts one, releases others as the reader passes them, and
    /// marks new records.
    fn workload(&mut self, disk: &SimDisk, keep_going: bool) {
        let Ok(mut j) = Self::open(disk) else {
            return;
        };
        // Run 1: lane 0 is delivered and checkpointed as it goes; lane 1 stays in flight.
        for seq in 0..12_u64 {
            if !self.mark(&mut j, 0, seq) && !keep_going {
                return;
            }
            if seq % 3 == 0 && !self.mark(&mut j, 1, seq / 3) && !keep_going {
                return;
            }
            self.settled(&mut j, 0, seq);
            if seq % 4 == 3 {
                self.checkpointed(&mut j);
            }
        }
        drop(j);
        self.restarted();
        // Run 2: inherits lane 1 (and lane 0's unchecked tail).
        let Ok(mut j) = Self::open(disk) else {
            return;
        };
        self.seen(&mut j, 1, 2);
        if !self.mark(&mut j, 1, 2) && !keep_going {
            return;
        }
        for seq in 12..20_u64 {
            self.seen(&mut j, 0, seq);
            if !self.mark(&mut j, 0, seq) && !keep_going {
                return;
            }
            self.settled(&mut j, 0, seq);
            if seq % 3 == 2 {
                self.checkpointed(&mut j);
            }
        }
        self.caught_up(&mut j);
        for seq in 0..4_u64 {
            if !self.mark(&mut j, 2, seq) && !keep_going {
                return;
            }
        }
    }

    /// Reopens the journal on `disk` (already crashed), checks it, reopens it again (the first
    /// open rewrote it) and checks that the same markers are found and a new one is kept.
    fn recover(&self, disk: &SimDisk, what: &str) -> u64 {
        let j =
            Self::open(disk).unwrap_or_else(|e| panic!("{what}: the journal does not open: {e}"));
        let found = self.check(&j, what);
        drop(j);
        let mut j = Self::open(disk)
            .unwrap_or_else(|e| panic!("{what}: the journal does not open again: {e}"));
        assert_eq!(self.check(&j, what), found, "{what}: reopened differently");
        j.mark(id(2, 39), &iq(2, 39))
            .unwrap_or_else(|e| panic!("{what}: mark after recovery: {e}"));
        drop(j);
        let j = Self::open(disk)
            .unwrap_or_else(|e| panic!("{what}: the journal does not open a third time: {e}"));
        assert!(
            j.may_have_been_sent(id(2, 39), &iq(2, 39)),
            "{what}: a marker written after recovery is lost"
        );
        (found.len() + self.needed.len() + 3) as u64
    }
}

// ---------------------------------------------------------------------------------------
// The exploration, the same for both files
// ---------------------------------------------------------------------------------------

/// A crash right after every state-changing call of the workload (and at its end), under
/// every loss pattern, each recovery crashed again at each of its own state-changing calls.
fn explore_crashes<S: Subject>() -> Figures {
    let total = {
        let disk = SimDisk::new(7);
        S::default().workload(&disk, false);
        // The workload compacts (temp file, sync, rename, directory sync) more than once.
        assert!(disk.calls(SimOp::Rename) >= 3, "{}: compactions", S::NAME);
        disk.mutations()
    };
    assert!(total > 20, "{}: the workload makes {total} calls", S::NAME);
    let nest_every = std::env::var("WORKER_CRASH_NEST_EVERY")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(2)
        .max(1);
    let mut fig = Figures::default();
    for point in 1..=total + 1 {
        let disk = SimDisk::new(7);
        let mut oracle = S::default();
        disk.stop_after((point <= total).then_some(point));
        oracle.workload(&disk, false);
        assert_eq!(
            disk.is_stopped(),
            point <= total,
            "{}: point {point}",
            S::NAME
        );
        fig.crash_points += 1;
        for (mode, seed) in LOSSES {
            let crashed = disk.fork(seed);
            crashed.crash(mode);
            let what = format!(
                "{}: crash after call {point}/{total}, {mode:?} {seed}",
                S::NAME
            );
            // Recovery's own calls, each a crash point of the recovery.
            let recovery_calls = if fig.states % nest_every != 0 {
                0
            } else {
                let probe = crashed.fork(seed);
                let before = probe.mutations();
                let _ = S::open(&probe);
                probe.mutations() - before
            };
            for inner in 1..=recovery_calls {
                for (mode2, seed2) in LOSSES {
                    let again = crashed.fork(seed2 + 10);
                    again.stop_after(Some(inner));
                    let _ = S::open(&again);
                    again.crash(mode2);
                    let what2 = format!("{what}; recovery crashed after call {inner}, {mode2:?}");
                    fig.checks += oracle.recover(&again, &what2);
                    fig.recovery_states += 1;
                }
            }
            fig.checks += oracle.recover(&crashed, &what);
            fig.states += 1;
        }
    }
    fig
}

/// EIO and ENOSPC at every call index of every call kind the workload makes, once and from
/// then on, the workload carrying on after failures; then a process crash and a power loss.
fn explore_faults<S: Subject>() -> Figures {
    let calls: Vec<(SimOp, u64)> = {
        let disk = SimDisk::new(7);
        S::default().workload(&disk, true);
        OPS.iter().map(|&op| (op, disk.calls(op))).collect()
    };
    let mut fig = Figures::default();
    for (op, n) in calls {
        for nth in 1..=n {
            for errno in [SimErrno::Eio, SimErrno::Enospc] {
                for repeat in [Repeat::Once, Repeat::FromThenOn] {
                    let disk = SimDisk::new(7);
                    disk.inject(Fault::Fail {
                        op,
                        nth,
                        errno,
                        repeat,
                    });
                    let mut oracle = S::default();
                    oracle.workload(&disk, true);
                    disk.clear_faults();
                    fig.fault_runs += 1;
                    for mode in [CrashMode::KeepAll, CrashMode::LoseUnsynced] {
                        let crashed = disk.fork(3);
                        crashed.crash(mode);
                        let what = format!(
                            "{}: {errno:?} at {op:?} call {nth} ({repeat:?}), then {mode:?}",
                            S::NAME
                        );
                        fig.checks += oracle.recover(&crashed, &what);
                        fig.restarts += 1;
                    }
                }
            }
        }
    }
    fig
}

#[test]
fn dedupe_log_every_crash_point_keeps_persisted_ids_and_honest_run_markers() {
    let fig = explore_crashes::<DedupeOracle>();
    println!("dedupe.log crash states: {fig:?}");
    assert!(fig.states > 0 && fig.recovery_states > 0);
}

#[test]
fn attempt_journal_every_crash_point_keeps_acknowledged_markers() {
    let fig = explore_crashes::<AttemptOracle>();
    println!("attempts.log crash states: {fig:?}");
    assert!(fig.states > 0 && fig.recovery_states > 0);
}

#[test]
fn dedupe_log_failed_calls_are_reported_or_degrade_never_lose_a_persisted_id() {
    let fig = explore_faults::<DedupeOracle>();
    println!("dedupe.log fault runs: {fig:?}");
    assert!(fig.fault_runs > 0);
}

#[test]
fn attempt_journal_failed_calls_are_reported_or_unjournaled_never_lose_a_marker() {
    let fig = explore_faults::<AttemptOracle>();
    println!("attempts.log fault runs: {fig:?}");
    assert!(fig.fault_runs > 0);
}
