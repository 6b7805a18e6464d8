//! Crash-state exploration: every crash point of small workloads, every loss pattern at
//! each, then recovery (itself crashed, up to three times in a row), checked against an
//! oracle.
//!
//! The story: an edge device can lose power between any two storage calls the queue makes.
//! Whatever the instant and whatever the disk then keeps of unsynced data, the
//! queue must come back with every record whose `append` returned `Ok` (unless a durable
//! checkpoint consumed it), no corrupt or invented record, no hole and no reordering in a
//! lane, a cursor that neither goes back behind a checkpoint that returned `Ok` nor skips
//! anything, and no false corruption alarm. A crash during that recovery must not change
//! any of this.
//!
//! How: [`SimDisk::stop_after`] freezes the disk right after its n-th state-changing call
//! (write, sync, allocate, directory sync, remove, create), for n = 1, 2, ... up to the end
//! of the workload; calls between two state-changing ones cannot change what a crash leaves,
//! so these are all the crash points. At each, the frozen disk is forked once per loss
//! pattern ([`CrashMode`]: lose unsynced, random sectors with 3 seeds, keep all, torn last
//! write with 2 seeds, zeroed tail, lost directory entries) and recovered: writers reopen
//! their lanes, a reader opens the cursor and drains. Recovery itself is crashed at each of
//! its own state-changing calls for a sample of states (depth 2), and once more inside that
//! (depth 3).
//!
//! Workloads: `sequential` (one writer, a second writer that joins and is abandoned,
//! reader draining, acknowledging and checkpointing every few appends, three 64 KiB segments
//! so lanes roll and consumed segments are deleted) and `threads` (three threads sharing
//! one writer, so group commit forms multi-record batches, while the reader consumes and
//! checkpoints; interleavings differ between runs, so every crash index is a fresh,
//! real crash state).
//!
//! Figures are printed (`-- --nocapture`). Sizes: `WAL_CRASH_APPENDS` (default 30),
//! `WAL_CRASH_NEST_EVERY` (explore crashes during recovery for every k-th state,
//! default 7), `WAL_CRASH_THREAD_APPENDS` (per thread, default 8). Soak:
//! `WAL_CRASH_APPENDS=80 WAL_CRASH_NEST_EVERY=1 WAL_CRASH_THREAD_APPENDS=30 cargo test
//! --release -p escalation-queue-wal --test crash_states -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use escalation_queue_wal::{
    verify, CrashMode, Event, LaneId, Options, Reader, Record, RecordId, SimDisk, SimOp, Writer,
};

mod support;
// Segments of 64 KiB allocated in 8 KiB steps: growing a segment (an `fallocate` between
// batches) is among the crash points.
use support::opts;

const DIR: &str = "/queue";
const CURSOR: &str = "worker";

fn env(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// Payloads: self-describing and self-checking, so a corrupt or invented record is caught.
// ---------------------------------------------------------------------------------------

/// Who appended a payload: writer thread and its counter.
type Tag = (u8, u32);

fn payload(tag: Tag, size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(size);
    p.push(tag.0);
    p.extend_from_slice(&tag.1.to_le_bytes());
    let mut x = u64::from(tag.1) << 8 | u64::from(tag.0) | 1;
    while p.len() + 4 < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(x as u8);
    }
    let crc = crc32c::crc32c(&p);
    p.extend_from_slice(&crc.to_le_bytes());
    p
}

fn decode(p: &[u8]) -> Option<Tag> {
    let (body, crc) = p.split_at(p.len().checked_sub(4)?);
    if body.len() < 5 || crc32c::crc32c(body).to_le_bytes() != crc {
        return None;
    }
    Some((body[0], u32::from_le_bytes(body[1..5].try_into().ok()?)))
}

fn size_of(tag: Tag) -> usize {
    2200 + (tag.1 as usize * 397 + tag.0 as usize * 151) % 1500
}

// ---------------------------------------------------------------------------------------
// The oracle's book: what the workload was told.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Book {
    /// Every payload an append was attempted with.
    attempted: BTreeSet<Tag>,
    /// Appends that returned `Ok`: lane → seq → tag.
    acked: BTreeMap<LaneId, BTreeMap<u64, Tag>>,
    /// Per lane, first unconsumed seq of the last checkpoint that returned `Ok`.
    ckpt_ok: BTreeMap<LaneId, u64>,
    /// The same for a checkpoint that was attempted after it and did not return `Ok`: it
    /// may or may not be durable.
    ckpt_doubt: BTreeMap<LaneId, u64>,
    /// Writer handles open at the crash, counted as lanes to reopen.
    writers: usize,
}

type SharedBook = Arc<Mutex<Book>>;

fn book_lock(b: &SharedBook) -> std::sync::MutexGuard<'_, Book> {
    b.lock().unwrap_or_else(|p| p.into_inner())
}

/// A reader session of the workload: delivers, acknowledges, checkpoints.
struct Consumer {
    reader: Reader,
    /// Per lane: delivered but not acknowledged.
    delivered: BTreeMap<LaneId, Vec<RecordId>>,
    /// Per lane: first unacknowledged seq.
    acked_upto: BTreeMap<LaneId, u64>,
}

impl Consumer {
    fn open(sim: &SimDisk) -> Option<Self> {
        let reader = Reader::open(DIR, CURSOR, &opts(sim)).ok()?;
        Some(Self {
            reader,
            delivered: BTreeMap::new(),
            acked_upto: BTreeMap::new(),
        })
    }

    /// Drains, acknowledges all but the newest record of each lane, checkpoints. `None`
    /// once the disk has stopped.
    fn consume(&mut self, book: &SharedBook) -> Option<()> {
        while let Some(rec) = self.reader.next().ok()? {
            self.delivered.entry(rec.id.lane).or_default().push(rec.id);
        }
        for (lane, d) in &mut self.delivered {
            if d.len() < 2 {
                continue;
            }
            let upto = d[d.len() - 2];
            self.reader.ack(upto).ok()?;
            d.drain(..d.len() - 1);
            self.acked_upto.insert(*lane, upto.seq.0 + 1);
        }
        let mut next = book_lock(book).ckpt_ok.clone();
        next.extend(self.acked_upto.iter().map(|(l, s)| (*l, *s)));
        book_lock(book).ckpt_doubt = next.clone();
        self.reader.checkpoint().ok()?;
        let mut b = book_lock(book);
        b.ckpt_ok = next;
        b.ckpt_doubt.clear();
        Some(())
    }
}

/// Appends `tag` through `w`, booking the outcome. `false` on failure.
fn append(w: &Writer, tag: Tag, book: &SharedBook) -> bool {
    append_with(w, tag, book, false)
}

/// [`append`]; `split`: through `append_parts`, the payload in three parts.
fn append_with(w: &Writer, tag: Tag, book: &SharedBook, split: bool) -> bool {
    book_lock(book).attempted.insert(tag);
    let p = payload(tag, size_of(tag));
    let appended = if split {
        let (head, rest) = p.split_at(100);
        let (middle, tail) = rest.split_at(rest.len() - 50);
        w.append_parts(&[head, middle, tail])
    } else {
        w.append(&p)
    };
    match appended {
        Ok(id) => {
            book_lock(book)
                .acked
                .entry(id.lane)
                .or_default()
                .insert(id.seq.0, tag);
            true
        }
        Err(_) => false,
    }
}

/// One writer appending, a second joining and then abandoning its lane, and a reader
/// consuming and checkpointing every few appends. Stops at the first failure (the disk
/// stopped).
fn sequential(sim: &SimDisk, book: &SharedBook, appends: u32) {
    let o = opts(sim);
    let Ok(w0) = Writer::open(DIR, &o) else {
        return;
    };
    book_lock(book).writers = 1;
    // The reader opens once the lane exists (a reader discovers new lanes on a timer,
    // which would make the workload depend on timing), and reopens when a second lane
    // appears.
    if !append(&w0, (0, 0), book) {
        return;
    }
    let Some(mut c) = Consumer::open(sim) else {
        return;
    };
    let mut w1: Option<Writer> = None;
    for i in 1..appends {
        if !append(&w0, (0, i), book) {
            return;
        }
        if i == appends / 2 {
            match Writer::open(DIR, &o) {
                Ok(w) => w1 = Some(w),
                Err(_) => return,
            }
            book_lock(book).writers = 2;
        }
        if let Some(w) = &w1 {
            if !append(w, (1, i), book) {
                return;
            }
            if i == appends / 2 {
                drop(c);
                let Some(reopened) = Consumer::open(sim) else {
                    return;
                };
                c = reopened;
            }
            if i == appends * 3 / 4 {
                // Abandoned without closing, as by a killed process: the reader must
                // recover the lane.
                w1 = None;
            }
        }
        if i % 5 == 4 && c.consume(book).is_none() {
            return;
        }
    }
    let _ = c.consume(book);
}

/// Short-lived writers, as when every escalation is enqueued by a process of its own: each
/// session opens the lane (recovering its tail and continuing in it), appends one to three
/// records and goes away, closed or abandoned in turn; the reader consumes and checkpoints
/// after every other session. The lane grows its segment step by step and rolls once.
fn reopening(sim: &SimDisk, book: &SharedBook, appends: u32) {
    let o = opts(sim);
    book_lock(book).writers = 1;
    let mut consumer: Option<Consumer> = None;
    let mut i = 0;
    let mut session = 0u32;
    while i < appends {
        let Ok(w) = Writer::open(DIR, &o) else { return };
        for _ in 0..=session % 3 {
            if i < appends && !append(&w, (0, i), book) {
                return;
            }
            i += 1;
        }
        if session.is_multiple_of(2) {
            if w.close().is_err() {
                return;
            }
        } else {
            drop(w);
        }
        let c = match consumer.as_mut() {
            Some(c) => c,
            None => match Consumer::open(sim) {
                Some(c) => consumer.insert(c),
                None => return,
            },
        };
        if session % 2 == 1 && c.consume(book).is_none() {
            return;
        }
        session += 1;
    }
    if let Some(c) = consumer.as_mut() {
        let _ = c.consume(book);
    }
}

/// Three threads appending through one writer (group commit) while the reader consumes.
fn threads(sim: &SimDisk, book: &SharedBook, per_thread: u32) {
    threads_with(sim, book, per_thread, opts(sim), false);
}

/// [`threads`] with writer options `o`; `split`: appends through `append_parts`.
fn threads_with(sim: &SimDisk, book: &SharedBook, per_thread: u32, o: Options, split: bool) {
    let Ok(w) = Writer::open(DIR, &o) else { return };
    book_lock(book).writers = 1;
    if !append(&w, (9, 0), book) {
        return;
    }
    let Some(mut c) = Consumer::open(sim) else {
        return;
    };
    let handles: Vec<_> = (0..3u8)
        .map(|t| {
            let (w, book) = (w.clone(), book.clone());
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    if !append_with(&w, (t, i), &book, split) {
                        return;
                    }
                }
            })
        })
        .collect();
    // After a failed consume the reader is not used again: a retried checkpoint would
    // return `Ok` without writing (see `sim_faults.rs`,
    // `a_checkpoint_retried_after_a_failure_does_not_claim_durability`).
    let mut healthy = true;
    while healthy && handles.iter().any(|h| !h.is_finished()) {
        healthy = c.consume(book).is_some();
        std::thread::yield_now();
    }
    for h in handles {
        let _ = h.join();
    }
    if healthy {
        let _ = c.consume(book);
    }
}

// ---------------------------------------------------------------------------------------
// Recovery and the checks.
// ---------------------------------------------------------------------------------------

/// What one recovery delivered.
struct Recovered {
    records: Vec<Record>,
    events: Vec<Event>,
    writers: Vec<Writer>,
    reader: Reader,
}

/// Reopens the writers' lanes and the cursor and drains. `None` when the disk stopped.
fn recover(sim: &SimDisk, writers: usize) -> Option<Recovered> {
    let o = opts(sim);
    let mut events = Vec::new();
    let mut ws = Vec::new();
    for _ in 0..writers {
        let w = Writer::open(DIR, &o).ok()?;
        events.extend(w.recovery_events().iter().cloned());
        ws.push(w);
    }
    let mut reader = Reader::open(DIR, CURSOR, &o).ok()?;
    let mut records = Vec::new();
    while let Some(r) = reader.next().ok()? {
        records.push(r);
    }
    events.extend(reader.take_events());
    Some(Recovered {
        records,
        events,
        writers: ws,
        reader,
    })
}

#[derive(Debug, Default)]
struct Figures {
    crash_points: u64,
    states: u64,
    nested_states: u64,
    deepest: u32,
    checks: u64,
    records_checked: u64,
    violations: Vec<String>,
}

impl Figures {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok && self.violations.len() < 50 {
            self.violations.push(what());
        }
    }
}

/// Checks one recovered state against the book.
fn check(book: &Book, rec: &Recovered, f: &mut Figures, at: &str) {
    for e in &rec.events {
        let ok = matches!(
            e,
            Event::TornTail { .. } | Event::IncompleteSegmentRemoved { .. }
        );
        f.check(ok, || {
            format!("{at}: unexpected event after a crash (false alarm): {e:?}")
        });
    }
    let mut lanes: BTreeMap<LaneId, Vec<(u64, Option<Tag>)>> = BTreeMap::new();
    for r in &rec.records {
        let tag = decode(&r.payload);
        f.records_checked += 1;
        f.check(
            tag.is_some_and(|t| book.attempted.contains(&t) && r.payload.len() == size_of(t)),
            || format!("{at}: corrupt or invented record delivered: {} ", r.id),
        );
        lanes.entry(r.id.lane).or_default().push((r.id.seq.0, tag));
    }
    let all_lanes: BTreeSet<LaneId> = lanes.keys().chain(book.acked.keys()).copied().collect();
    for lane in all_lanes {
        let got = lanes.get(&lane).map(Vec::as_slice).unwrap_or(&[]);
        let acked = book.acked.get(&lane);
        let ok_ckpt = book.ckpt_ok.get(&lane).copied().unwrap_or(0);
        let upper = book
            .ckpt_doubt
            .get(&lane)
            .copied()
            .unwrap_or(ok_ckpt)
            .max(ok_ckpt);
        // Identity: an acknowledged seq carries the payload it was acknowledged for.
        for (seq, tag) in got {
            if let Some(want) = acked.and_then(|a| a.get(seq)) {
                f.check(Some(*want) == *tag, || {
                    format!("{at}: {lane} seq {seq} holds {tag:?}, acknowledged as {want:?}")
                });
            }
        }
        // No hole, no reordering, no duplicate: consecutive sequence numbers.
        for pair in got.windows(2) {
            f.check(pair[1].0 == pair[0].0 + 1, || {
                format!(
                    "{at}: {lane} delivered seq {} after {}",
                    pair[1].0, pair[0].0
                )
            });
        }
        // Per writer thread, counters increase (FIFO).
        let mut last: HashMap<u8, u32> = HashMap::new();
        for (_, tag) in got {
            if let Some((t, n)) = tag {
                let prev = last.insert(*t, *n);
                f.check(prev.is_none_or(|p| p < *n), || {
                    format!("{at}: {lane} thread {t} counter {n} after {prev:?}")
                });
            }
        }
        // The cursor did not go back behind a durable checkpoint.
        if let Some((first, _)) = got.first() {
            f.check(*first >= ok_ckpt, || {
                format!("{at}: {lane} redelivered seq {first}, checkpoint said {ok_ckpt}")
            });
        }
        // Nothing acknowledged and not consumed is lost (nor skipped by the cursor).
        let delivered: BTreeSet<u64> = got.iter().map(|(s, _)| *s).collect();
        for (seq, tag) in acked.into_iter().flatten() {
            if *seq >= upper {
                f.check(delivered.contains(seq), || {
                    format!(
                        "{at}: {lane} seq {seq} {tag:?} acknowledged, not consumed \
                         (checkpoint {ok_ckpt}..={upper}), never delivered: got {:?}",
                        got.iter().map(|g| g.0).collect::<Vec<_>>()
                    )
                });
            }
        }
    }
}

/// Recovers `sim` fully, checks it, then checks the queue keeps flowing: new appends are
/// delivered after everything else, and `verify` finds no damage.
fn final_check(sim: &SimDisk, book: &Book, f: &mut Figures, at: &str) {
    let Some(mut rec) = recover(sim, book.writers.max(1)) else {
        f.check(false, || format!("{at}: recovery failed on a healthy disk"));
        return;
    };
    check(book, &rec, f, at);
    // Consume what was recovered, so a reader opened below sees only what comes next
    // (opening it also finds lanes created after the first reader opened).
    let mut newest: BTreeMap<LaneId, RecordId> = BTreeMap::new();
    for r in &rec.records {
        newest.insert(r.id.lane, r.id);
    }
    for id in newest.values() {
        let acked = rec.reader.ack(*id);
        f.check(acked.is_ok(), || {
            format!("{at}: ack after recovery: {acked:?}")
        });
    }
    let done = rec.reader.checkpoint();
    f.check(done.is_ok(), || {
        format!("{at}: checkpoint after recovery: {done:?}")
    });
    let mut after = BTreeMap::new();
    for (i, w) in rec.writers.iter().enumerate() {
        let tag = (200 + i as u8, 0);
        match w.append(&payload(tag, size_of(tag))) {
            Ok(id) => {
                after.insert(id.lane, tag);
            }
            Err(e) => f.check(false, || format!("{at}: append after recovery failed: {e}")),
        }
    }
    drop(rec.reader);
    let mut reader = match Reader::open(DIR, CURSOR, &opts(sim)) {
        Ok(r) => r,
        Err(e) => {
            f.check(false, || format!("{at}: reader reopen after recovery: {e}"));
            return;
        }
    };
    while let Ok(Some(r)) = reader.next() {
        let want = after.remove(&r.id.lane);
        f.check(want.is_some() && decode(&r.payload) == want, || {
            format!(
                "{at}: after recovery, {} delivered instead of the new record",
                r.id
            )
        });
    }
    f.check(after.is_empty(), || {
        format!("{at}: new appends not delivered: {after:?}")
    });
    let events = reader.take_events();
    f.check(events.is_empty(), || format!("{at}: events: {events:?}"));
    drop(reader);
    drop(rec.writers);
    let report = verify(DIR, &opts(sim));
    f.check(report.as_ref().is_ok_and(|r| r.damage.is_empty()), || {
        format!("{at}: verify: {report:?}")
    });
}

/// Loss patterns: (mode, seed).
fn patterns() -> Vec<(CrashMode, u64)> {
    vec![
        (CrashMode::LoseUnsynced, 1),
        (CrashMode::KeepRandomSectors, 11),
        (CrashMode::KeepRandomSectors, 12),
        (CrashMode::KeepRandomSectors, 13),
        (CrashMode::KeepAll, 1),
        (CrashMode::TornLastWrite, 21),
        (CrashMode::TornLastWrite, 22),
        (CrashMode::ZeroedTail, 1),
        (CrashMode::LoseDirEntries, 1),
    ]
}

/// Checks the crashed disk `d`, first crashing its recovery at each of its calls when
/// `depth` allows (deeper levels explore a sample).
fn explore_recovery(d: &SimDisk, book: &Book, f: &mut Figures, depth: u32, nest: bool, at: &str) {
    if nest && depth < 3 {
        let probe = d.fork(7);
        let before = probe.mutations();
        drop(recover(&probe, book.writers.max(1)));
        let calls = probe.mutations() - before;
        let pats = patterns();
        for k in 1..=calls {
            // Depth 2: every call of the recovery; depth 3: one in four.
            if depth == 2 && (k + u64::from(depth)) % 4 != 0 {
                continue;
            }
            let (mode, seed) = pats[((k as usize) + depth as usize * 3) % pats.len()];
            let r = d.fork(seed ^ k);
            r.stop_after(Some(k));
            drop(recover(&r, book.writers.max(1)));
            r.crash(mode);
            f.nested_states += 1;
            f.deepest = f.deepest.max(depth + 1);
            let at = format!("{at} / recovery call {k} {mode:?}");
            explore_recovery(&r, book, f, depth + 1, true, &at);
        }
    }
    final_check(d, book, f, at);
}

type Workload<'a> = &'a dyn Fn(&SimDisk, &SharedBook);

fn explore(name: &str, workload: Workload<'_>, nest_every: u64) -> Figures {
    let mut f = Figures::default();
    let reference = SimDisk::new(1);
    workload(&reference, &Arc::new(Mutex::new(Book::default())));
    let total = reference.mutations();
    println!(
        "{name}: reference run: {total} state-changing calls ({} writes, {} syncs, {} \
         allocations, {} directory syncs, {} removals)",
        reference.calls(SimOp::Write),
        reference.calls(SimOp::Sync),
        reference.calls(SimOp::Allocate),
        reference.calls(SimOp::SyncDir),
        reference.calls(SimOp::Remove),
    );
    let pats = patterns();
    let mut state = 0u64;
    for n in 1..=total + 1 {
        f.crash_points += 1;
        let sim = SimDisk::new(1);
        sim.stop_after(Some(n));
        let book = Arc::new(Mutex::new(Book::default()));
        workload(&sim, &book);
        let book = book_lock(&book).clone();
        for (mode, seed) in &pats {
            state += 1;
            f.states += 1;
            let d = sim.fork(*seed);
            d.crash(*mode);
            let at = format!("{name}: crash after call {n} {mode:?} seed {seed}");
            explore_recovery(&d, &book, &mut f, 1, state.is_multiple_of(nest_every), &at);
        }
    }
    println!(
        "{name}: {} crash points x {} loss patterns = {} states, {} more states crashing \
         recovery (up to {} crashes in a row), {} records and {} checks, {} violations",
        f.crash_points,
        pats.len(),
        f.states,
        f.nested_states,
        f.deepest,
        f.records_checked,
        f.checks,
        f.violations.len()
    );
    f
}

fn assert_clean(f: &Figures) {
    assert!(
        f.violations.is_empty(),
        "{} violations:\n{}",
        f.violations.len(),
        f.violations.join("\n")
    );
}

#[test]
fn sequential_workload_survives_a_crash_at_every_call_with_every_loss_pattern() {
    let appends = env("WAL_CRASH_APPENDS", 30) as u32;
    let nest = env("WAL_CRASH_NEST_EVERY", 10).max(1);
    let f = explore(
        "sequential",
        &|sim, book| sequential(sim, book, appends),
        nest,
    );
    assert_clean(&f);
}

/// Story: every escalation enqueued by its own short-lived process. Each open
/// recovers the lane's tail and continues in it instead of starting a new segment, and the
/// segment grows in steps; a crash anywhere in open + recover + continue + grow + append,
/// under every loss pattern, must keep every acknowledged record and invent none.
#[test]
fn short_lived_writers_continuing_the_tail_survive_a_crash_at_every_call() {
    let appends = env("WAL_CRASH_APPENDS", 30) as u32;
    let nest = env("WAL_CRASH_NEST_EVERY", 10).max(1);
    let f = explore(
        "reopening",
        &|sim, book| reopening(sim, book, appends),
        nest,
    );
    assert_clean(&f);
}

#[test]
fn group_commit_from_three_threads_survives_a_crash_at_every_call() {
    let per_thread = env("WAL_CRASH_THREAD_APPENDS", 8) as u32;
    let nest = env("WAL_CRASH_NEST_EVERY", 10).max(1) * 3;
    let f = explore("threads", &|sim, book| threads(sim, book, per_thread), nest);
    assert_clean(&f);
}

/// Story: a large image is written from the caller's memory instead of being copied into
/// the batch buffer (probe F27, enqueue RSS 3x the image). With a 6 KiB batch buffer, the
/// records of 2.2-3.7 KiB above half of it are written that way, after the pending batch
/// and in the same sync, while the smaller ones share the buffer; three threads append in
/// three parts each. A crash at every call, under every loss pattern, must keep every
/// acknowledged record and invent none, exactly as for copied records.
#[test]
fn large_frames_written_from_the_callers_parts_survive_a_crash_at_every_call() {
    let per_thread = env("WAL_CRASH_THREAD_APPENDS", 8) as u32;
    let nest = env("WAL_CRASH_NEST_EVERY", 10).max(1) * 3;
    let f = explore(
        "threads-direct",
        &|sim, book| threads_with(sim, book, per_thread, opts(sim).batch_bytes_max(6144), true),
        nest,
    );
    assert_clean(&f);
}
