//! The real multi-process kill test: 8 writer processes and one reader process share one
//! queue directory while the test `kill -9`s random ones of them and restarts them.
//!
//! Claims checked at the end, from the children's own logs:
//! * every append a writer saw acknowledged (a line in its ack log) was delivered at least
//!   once: 0 acknowledged records lost;
//! * every delivered payload passes its own checksum: 0 corrupt records delivered;
//! * FIFO: within one writer stream (slot, incarnation, thread), which appends to one lane,
//!   first deliveries come in increasing counter order;
//! * duplicates only for records that were in flight at a reader kill: a record is delivered
//!   again only by a later reader incarnation, and only if its earlier delivery came after
//!   that incarnation's last durable checkpoint;
//! * recovery reports nothing but torn tails and incomplete segments (no corruption, gap or
//!   cursor past the end);
//! * after the final drain `verify` finds no damage and the reopened cursor has nothing left.
//!
//! Counted, not asserted: records of one (slot, thread) first delivered after records of a
//! later incarnation of that slot (`cross_incarnation_reorders`). Incarnations may append to
//! different lanes, and lanes are merged by enqueue time only among what the reader sees.
//!
//! How it runs: the test binary re-executes itself (`current_exe()`) with `--exact
//! kill_child_entry` and `EQ_KILL_CHILD=writer|reader|drain`; that entry is a no-op in a normal
//! run. Children stop by themselves when their parent goes away or a deadline passes.
//!
//! Default: 100 kill cycles (`cargo test --test kill -- --nocapture`). Soak:
//! `EQ_KILL_CYCLES=2000 cargo test --release --test kill -- --nocapture`.
//! Other knobs: `EQ_KILL_SEED` (replay a run's random choices, printed in the summary),
//! `EQ_KILL_PACE_US` (most microseconds a writer thread sleeps between appends, default 8000),
//! `EQ_KILL_KEEP=1` (keep the directory; it is always kept when the test fails).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::ops::Deref;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use escalation_queue_wal::{Error, Options, Reader, Writer};

mod process_support;
use process_support::{
    child_main, env_num, open_append, put_line, record_failure, remove_run_dir, run_dir,
    wait_bounded, whole_lines, ChildEnv, Fleet, FleetSpec,
};

const CHILD_ENV: &str = "EQ_KILL_CHILD";
/// The children's variables (`EQ_KILL_DIR`, …) and logs.
const SPEC: FleetSpec = FleetSpec {
    test: "kill test",
    child_test: "kill_child_entry",
    role_env: CHILD_ENV,
    env_prefix: "EQ_KILL",
    failure_logs: &["corrupt.log", "errors.log"],
};
const CURSOR: &str = "kill-test";
const WRITERS: u16 = 8;
const THREADS_MAX: u16 = 4;
/// Counters of a writer incarnation start this far past everything its slot used before.
const GAP: u64 = 1 << 20;
const MAGIC: u32 = 0x4551_4b54;
/// magic u32, slot u16, thread u16, incarnation u32, counter u64, filler length u32.
const HEADER_LEN: usize = 24;
const FILLER_MIN: usize = 16;
const FILLER_MAX: usize = 2048;
const DEFAULT_CYCLES: usize = 100;
const DEFAULT_PACE_US: u64 = 8000;
/// Exit codes of a child that stops by itself.
const EXIT_ERROR: i32 = 2;
const EXIT_CORRUPT: i32 = 3;

fn opts() -> Options {
    Options::default()
        .segment_bytes(256 << 10)
        .record_bytes_max(4096)
        .free_disk_bytes_min(0)
}

// ---------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------

/// Identity of one append: (writer slot, writer incarnation, thread, counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Tag {
    slot: u16,
    inc: u32,
    thread: u16,
    counter: u64,
}

fn encode_payload(buf: &mut Vec<u8>, tag: Tag, rng: &mut fastrand::Rng) {
    let filler = rng.usize(FILLER_MIN..=FILLER_MAX);
    buf.clear();
    buf.extend_from_slice(&MAGIC.to_le_bytes());
    buf.extend_from_slice(&tag.slot.to_le_bytes());
    buf.extend_from_slice(&tag.thread.to_le_bytes());
    buf.extend_from_slice(&tag.inc.to_le_bytes());
    buf.extend_from_slice(&tag.counter.to_le_bytes());
    buf.extend_from_slice(&(filler as u32).to_le_bytes());
    let start = buf.len();
    buf.resize(start + filler, 0);
    rng.fill(&mut buf[start..]);
    let crc = crc32c::crc32c(buf);
    buf.extend_from_slice(&crc.to_le_bytes());
}

fn decode_payload(p: &[u8]) -> Result<Tag, String> {
    if p.len() < HEADER_LEN + FILLER_MIN + 4 {
        return Err(format!("payload of {} bytes is too short", p.len()));
    }
    let (body, crc) = p.split_at(p.len() - 4);
    let stored = u32::from_le_bytes(crc.try_into().unwrap());
    let actual = crc32c::crc32c(body);
    if stored != actual {
        return Err(format!(
            "payload crc mismatch: stored {stored:#010x}, computed {actual:#010x}"
        ));
    }
    let u16_at = |o: usize| u16::from_le_bytes(body[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(body[o..o + 4].try_into().unwrap());
    let magic = u32_at(0);
    let tag = Tag {
        slot: u16_at(4),
        thread: u16_at(6),
        inc: u32_at(8),
        counter: u64::from_le_bytes(body[12..20].try_into().unwrap()),
    };
    let filler = u32_at(20) as usize;
    if magic != MAGIC
        || filler != body.len() - HEADER_LEN
        || tag.slot >= WRITERS
        || tag.thread >= THREADS_MAX
    {
        return Err(format!(
            "payload passes its crc but is malformed: magic {magic:#x}, filler {filler}, {tag:?}"
        ));
    }
    Ok(tag)
}

// ---------------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------------

/// The child processes' entry point: a no-op unless `EQ_KILL_CHILD` is set.
#[test]
fn kill_child_entry() {
    child_main(&SPEC, |role, env| {
        let cx = ChildCx {
            env,
            threads: env.num("THREADS") as u16,
            pace_us: env.num("PACE_US"),
        };
        match role {
            "writer" => writer_child(&cx),
            "reader" => reader_child(&cx, false),
            "drain" => reader_child(&cx, true),
            other => {
                eprintln!("unknown {CHILD_ENV}={other}");
                EXIT_ERROR
            }
        }
    });
}

/// A child's environment ([`ChildEnv`]) and this test's own variables.
struct ChildCx<'a> {
    env: &'a ChildEnv,
    threads: u16,
    pace_us: u64,
}

impl Deref for ChildCx<'_> {
    type Target = ChildEnv;

    fn deref(&self) -> &ChildEnv {
        self.env
    }
}

/// Records why a child stops by itself, for the parent to print.
fn fail_child(cx: &ChildCx, what: &str, code: i32) -> i32 {
    let name = if code == EXIT_CORRUPT {
        "corrupt.log"
    } else {
        "errors.log"
    };
    record_failure(&cx.logs.join(name), what);
    code
}

fn log_events<T: std::fmt::Debug>(file: &File, events: &[T]) {
    for e in events {
        put_line(file, &format!("{e:?}\n"));
    }
}

/// Where a writer slot's counters continue: past every counter and start point any earlier
/// incarnation of the slot logged, plus `GAP` (more than one incarnation ever appends).
fn next_base(logs: &Path, slot: u16) -> u64 {
    let mut top: Option<u64> = None;
    for (_, text) in read_logs(logs, &format!("acks-{slot:02}-")) {
        for line in whole_lines(&text) {
            let f: Vec<&str> = line.split(' ').collect();
            let v = match f.as_slice() {
                ["S", _, base] => base.parse::<u64>().ok(),
                ["A", _, counter, ..] => counter.parse::<u64>().ok(),
                _ => None,
            };
            top = top.max(v);
        }
    }
    top.map_or(0, |t| (t / GAP + 1) * GAP + GAP)
}

fn writer_child(cx: &ChildCx) -> i32 {
    let base = next_base(&cx.logs, cx.slot);
    let name = format!("acks-{:02}-{:05}.log", cx.slot, cx.inc);
    let acks = open_append(&cx.logs.join(name));
    put_line(&acks, &format!("S {} {base}\n", cx.inc));
    acks.sync_data().expect("sync ack log");
    let writer = match Writer::open(&cx.queue, &opts()) {
        Ok(w) => w,
        Err(e) => {
            let what = format!("writer {} inc {}: open: {e}", cx.slot, cx.inc);
            return fail_child(cx, &what, EXIT_ERROR);
        }
    };
    let name = format!("events-w{:02}-{:05}.log", cx.slot, cx.inc);
    let events = open_append(&cx.logs.join(name));
    log_events(&events, writer.recovery_events());
    let acks = std::sync::Arc::new(acks);
    let mut handles = Vec::new();
    for thread in 0..cx.threads {
        let (writer, acks) = (writer.clone(), acks.clone());
        let (slot, inc, pace_us) = (cx.slot, cx.inc, cx.pace_us);
        let mut rng = fastrand::Rng::with_seed(cx.seed ^ (u64::from(thread) << 48));
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            let mut buf = Vec::with_capacity(HEADER_LEN + FILLER_MAX + 4);
            let mut unsynced = 0;
            for counter in base..base + GAP {
                let tag = Tag {
                    slot,
                    inc,
                    thread,
                    counter,
                };
                encode_payload(&mut buf, tag, &mut rng);
                let id = match writer.append(&buf) {
                    Ok(id) => id,
                    Err(e) => return Err(format!("writer {slot} inc {inc} t{thread}: {e}")),
                };
                // Written only after the append returned: a line implies an acknowledgement.
                put_line(
                    &acks,
                    &format!("A {thread} {counter} {} {}\n", id.lane.0, id.seq.0),
                );
                unsynced += 1;
                if unsynced >= 32 {
                    acks.sync_data().map_err(|e| format!("sync ack log: {e}"))?;
                    unsynced = 0;
                }
                if pace_us > 0 {
                    std::thread::sleep(Duration::from_micros(rng.u64(0..=pace_us)));
                }
            }
            Ok(())
        }));
    }
    drop(writer);
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(what)) => return fail_child(cx, &what, EXIT_ERROR),
            Err(_) => return fail_child(cx, "writer thread panicked", EXIT_ERROR),
        }
    }
    0
}

fn open_reader(cx: &ChildCx) -> Result<Reader, Error> {
    // The previous reader was reaped before we were started, so its lock is gone; retry a
    // little anyway rather than fail on a slow close.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match Reader::open(&cx.queue, CURSOR, &opts()) {
            Err(Error::CursorLocked { .. }) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Reads, verifies, logs (write before ack; fdatasync before the checkpoint that makes the
/// acks durable), acks, and checkpoints every 1..=50 records. `drain` ends after 1.5 s
/// without a record.
fn reader_child(cx: &ChildCx, drain: bool) -> i32 {
    let mut rng = fastrand::Rng::with_seed(cx.seed);
    let who = format!("reader inc {}", cx.inc);
    let log = open_append(&cx.logs.join(format!("deliveries-{:05}.log", cx.inc)));
    let events = open_append(&cx.logs.join(format!("events-r-{:05}.log", cx.inc)));
    let mut reader = match open_reader(cx) {
        Ok(r) => r,
        Err(e) => return fail_child(cx, &format!("{who}: open: {e}"), EXIT_ERROR),
    };
    let wait = Duration::from_millis(if drain { 1500 } else { 100 });
    let mut every = rng.usize(1..=50);
    let mut since = 0;
    let checkpoint = |reader: &mut Reader, since: &mut usize| -> Result<(), String> {
        log.sync_data()
            .map_err(|e| format!("sync delivery log: {e}"))?;
        reader
            .checkpoint()
            .map_err(|e| format!("checkpoint: {e}"))?;
        put_line(&log, "C\n");
        *since = 0;
        Ok(())
    };
    loop {
        log_events(&events, &reader.take_events());
        let rec = match reader.next_timeout(wait) {
            Ok(r) => r,
            Err(e) => return fail_child(cx, &format!("{who}: next: {e}"), EXIT_ERROR),
        };
        let Some(rec) = rec else {
            if since > 0 {
                if let Err(e) = checkpoint(&mut reader, &mut since) {
                    return fail_child(cx, &format!("{who}: {e}"), EXIT_ERROR);
                }
            }
            if drain {
                log_events(&events, &reader.take_events());
                put_line(&log, "END\n");
                return 0;
            }
            continue;
        };
        let tag = match decode_payload(&rec.payload) {
            Ok(t) => t,
            Err(why) => {
                let what = format!("{who}: corrupt record {}: {why}", rec.id);
                return fail_child(cx, &what, EXIT_CORRUPT);
            }
        };
        let line = format!(
            "D {} {} {} {} {} {}\n",
            tag.slot, tag.inc, tag.thread, tag.counter, rec.id.lane.0, rec.id.seq.0
        );
        put_line(&log, &line);
        if let Err(e) = reader.ack(rec.id) {
            return fail_child(cx, &format!("{who}: ack {}: {e}", rec.id), EXIT_ERROR);
        }
        since += 1;
        if since >= every {
            if let Err(e) = checkpoint(&mut reader, &mut since) {
                return fail_child(cx, &format!("{who}: {e}"), EXIT_ERROR);
            }
            every = rng.usize(1..=50);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parent
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer(u16),
    Reader,
    Drain,
}

impl process_support::Role for Role {
    fn writer_slot(self) -> Option<u16> {
        match self {
            Role::Writer(s) => Some(s),
            Role::Reader | Role::Drain => None,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Role::Writer(_) => "writer",
            Role::Reader => "reader",
            Role::Drain => "drain",
        }
    }
}

/// The fleet (8 writer slots, the reader) and the pace of the writers.
struct Harness {
    fleet: Fleet<Role>,
    pace_us: u64,
}

impl Harness {
    /// The next incarnation of `role`, with 2 to `THREADS_MAX` threads.
    fn spawn(&mut self, role: Role) -> process_support::ChildProc<Role> {
        let threads = self.fleet.rng.u16(2..=THREADS_MAX);
        let extra = [
            ("THREADS", threads.to_string()),
            ("PACE_US", self.pace_us.to_string()),
        ];
        self.fleet.spawn(role, &extra)
    }

    fn start(&mut self, role: Role) {
        let p = self.spawn(role);
        *self.fleet.slot(role) = Some(p);
    }
}

/// Waits for `child` as long as it keeps appending to `log`; `None` once it made no progress
/// for `stall` (the children's deadline bounds the whole wait).
fn wait_progressing(child: &mut Child, log: &Path, stall: Duration) -> Option<ExitStatus> {
    let mut last = (0, Instant::now());
    loop {
        if let Some(s) = wait_bounded(child, Duration::from_secs(1)) {
            return Some(s);
        }
        let len = fs::metadata(log).map_or(0, |m| m.len());
        if len != last.0 {
            last = (len, Instant::now());
        } else if last.1.elapsed() >= stall {
            return None;
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    cycles: usize,
    writer_kills: usize,
    reader_kills: usize,
    multi_kills: usize,
}

#[test]
fn kill_nine_writers_and_reader_loses_nothing_acknowledged() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let started = Instant::now();
    let cycles = env_num("EQ_KILL_CYCLES").map_or(DEFAULT_CYCLES, |c| c as usize);
    let seed = env_num("EQ_KILL_SEED").unwrap_or_else(|| fastrand::u64(..));
    let pace_us = env_num("EQ_KILL_PACE_US").unwrap_or(DEFAULT_PACE_US);
    // Kept on failure (the path is in the panic message), removed after a passing run.
    let (root, logs) = run_dir("eq-kill-");
    // A safety net only: children stop by themselves after this even if the parent hangs.
    let budget_ms = 180_000 + 2_000 * cycles as u64;
    let mut h = Harness {
        fleet: Fleet::new(SPEC, &root, &logs, WRITERS, seed, budget_ms),
        pace_us,
    };
    for s in 0..WRITERS {
        h.start(Role::Writer(s));
    }
    h.start(Role::Reader);

    let mut stats = Stats::default();
    for _ in 0..cycles {
        std::thread::sleep(Duration::from_millis(h.fleet.rng.u64(20..=200)));
        h.fleet.check_alive();
        // Usually one victim, sometimes two or three at once; the reader is one of nine.
        let n = match h.fleet.rng.u8(0..10) {
            0 => 3,
            1 | 2 => 2,
            _ => 1,
        };
        let mut victims: Vec<Role> = Vec::new();
        while victims.len() < n {
            let v = h.fleet.rng.u16(0..=WRITERS);
            let v = if v < WRITERS {
                Role::Writer(v)
            } else {
                Role::Reader
            };
            if !victims.contains(&v) {
                victims.push(v);
            }
        }
        stats.multi_kills += usize::from(n > 1);
        for &v in &victims {
            h.fleet.kill9(v);
            match v {
                Role::Writer(_) => stats.writer_kills += 1,
                Role::Reader | Role::Drain => stats.reader_kills += 1,
            }
        }
        if h.fleet.rng.bool() {
            std::thread::sleep(Duration::from_millis(h.fleet.rng.u64(0..=20)));
        }
        for v in victims {
            h.start(v);
        }
        stats.cycles += 1;
    }
    std::thread::sleep(Duration::from_millis(200));
    h.fleet.check_alive();
    let load_elapsed = started.elapsed();

    // Stop everything, then let one last reader drain the queue.
    h.fleet.kill_all();
    let drain_started = Instant::now();
    let mut drain = h.spawn(Role::Drain);
    let drain_log = logs.join(format!("deliveries-{:05}.log", drain.inc));
    let status = wait_progressing(&mut drain.child, &drain_log, Duration::from_secs(30));
    let drain_elapsed = drain_started.elapsed();
    let drained = fs::read_to_string(&drain_log).map_or(0, |t| {
        whole_lines(&t).filter(|l| l.starts_with("D ")).count()
    });
    match status {
        Some(s) if s.success() => {}
        Some(s) => h.fleet.fail(&format!("the draining reader failed: {s}")),
        None => {
            let _ = drain.child.kill();
            let _ = drain.child.wait();
            h.fleet
                .fail("the draining reader delivered nothing for 30 s");
        }
    }

    let mut check = analyze(&logs);
    // The queue itself: no damage on disk, and the drained cursor has nothing left.
    let queue = root.join("queue");
    let verified = escalation_queue_wal::verify(&queue, &opts()).expect("verify");
    if !verified.is_clean() {
        check
            .errors
            .push(format!("verify after the drain: {verified:?}"));
    }
    let mut after = Reader::open(&queue, CURSOR, &opts()).expect("reopen the cursor");
    if let Some(rec) = after
        .next_timeout(Duration::from_millis(300))
        .expect("next")
    {
        check
            .errors
            .push(format!("{} still pending after the drain", rec.id));
    }
    drop(after);
    let elapsed = started.elapsed();
    let events = |kind: &str| check.events.get(kind).copied().unwrap_or(0);
    let summary = [
        format!("cycles={}", stats.cycles),
        format!("writer_kills={}", stats.writer_kills),
        format!("reader_kills={}", stats.reader_kills),
        format!("multi_kill_cycles={}", stats.multi_kills),
        format!("acknowledged={}", check.acknowledged),
        format!("delivered={}", check.delivered),
        format!("unique={}", check.unique),
        format!("duplicates={}", check.duplicates),
        format!("lost={}", check.lost.len()),
        format!("corrupt={}", check.corrupt),
        format!(
            "unacknowledged_delivered={}",
            check.unacknowledged_delivered
        ),
        format!("torn_tails={}", events("TornTail")),
        format!("incomplete_segments={}", events("IncompleteSegmentRemoved")),
        format!(
            "cross_incarnation_reorders={} (acknowledged {})",
            check.cross_incarnation_reorders, check.cross_incarnation_reorders_acked
        ),
        format!("segments_left={}", verified.segments),
        format!("load={:.1}s", load_elapsed.as_secs_f64()),
        format!("drained={drained} in {:.1}s", drain_elapsed.as_secs_f64()),
        format!("elapsed={:.1}s", elapsed.as_secs_f64()),
        format!("seed={seed}"),
    ];
    println!("kill test: {}", summary.join(" "));
    for r in &check.reorder_examples {
        println!("  cross-incarnation reorder: {r}");
    }
    let problems = check.problems();
    if !problems.is_empty() {
        h.fleet.fail(&problems.join("\n"));
    }
    assert!(stats.cycles >= cycles);
    assert!(check.acknowledged > 0, "no append was ever acknowledged");
    drop(h);
    remove_run_dir(&root, "EQ_KILL_KEEP");
}

// ---------------------------------------------------------------------------------------
// Analysis of the children's logs
// ---------------------------------------------------------------------------------------

/// Log files whose names start with `prefix`, sorted by name (incarnations are zero-padded).
fn read_logs(logs: &Path, prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(logs).expect("read logs dir") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(".log") {
            let text = fs::read_to_string(logs.join(&name)).expect("read log");
            out.push((name, text));
        }
    }
    out.sort();
    out
}

fn parse_nums<const N: usize>(fields: &[&str]) -> Option<[u64; N]> {
    let mut out = [0; N];
    if fields.len() != N {
        return None;
    }
    for (o, f) in out.iter_mut().zip(fields) {
        *o = f.parse().ok()?;
    }
    Some(out)
}

#[derive(Debug)]
struct Delivery {
    reader_inc: u32,
    /// Whether a durable checkpoint followed this delivery in the same reader incarnation.
    checkpointed: bool,
    lane: u64,
    seq: u64,
}

#[derive(Debug, Default)]
struct Check {
    acknowledged: usize,
    delivered: usize,
    unique: usize,
    duplicates: usize,
    corrupt: usize,
    unacknowledged_delivered: usize,
    cross_incarnation_reorders: usize,
    /// Of those, how many records had been acknowledged to their writer.
    cross_incarnation_reorders_acked: usize,
    reorder_examples: Vec<String>,
    lost: Vec<String>,
    fifo: Vec<String>,
    bad_duplicates: Vec<String>,
    events: BTreeMap<String, usize>,
    bad_events: Vec<String>,
    errors: Vec<String>,
}

impl Check {
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut section = |title: &str, items: &[String]| {
            if !items.is_empty() {
                p.push(format!("{} {title}; first ones:", items.len()));
                p.extend(items.iter().take(20).map(|i| format!("  {i}")));
            }
        };
        section("acknowledged records lost", &self.lost);
        section("FIFO violations", &self.fifo);
        section("unexpected duplicates", &self.bad_duplicates);
        section("unexpected recovery events", &self.bad_events);
        section("child errors", &self.errors);
        if self.corrupt > 0 {
            p.push(format!("{} corrupt records delivered", self.corrupt));
        }
        p
    }
}

fn analyze(logs: &Path) -> Check {
    let mut c = Check::default();

    // Acknowledged appends: (tag) -> (lane, seq) as the writer saw it.
    let mut acked: HashMap<Tag, (u64, u64)> = HashMap::new();
    for (name, text) in read_logs(logs, "acks-") {
        let mut parts = name.trim_end_matches(".log").split('-').skip(1);
        let slot: u16 = parts.next().and_then(|s| s.parse().ok()).expect("slot");
        let inc: u32 = parts.next().and_then(|s| s.parse().ok()).expect("inc");
        for line in whole_lines(&text) {
            let f: Vec<&str> = line.split(' ').collect();
            if f.first() != Some(&"A") {
                continue;
            }
            let [thread, counter, lane, seq] = parse_nums::<4>(&f[1..]).expect("ack line");
            let tag = Tag {
                slot,
                inc,
                thread: thread as u16,
                counter,
            };
            acked.insert(tag, (lane, seq));
        }
    }
    c.acknowledged = acked.len();

    // Deliveries, in delivery order across reader incarnations.
    let mut order: Vec<Tag> = Vec::new();
    let mut seen: HashMap<Tag, Delivery> = HashMap::new();
    for (name, text) in read_logs(logs, "deliveries-") {
        let reader_inc: u32 = name
            .trim_start_matches("deliveries-")
            .trim_end_matches(".log")
            .parse()
            .expect("reader incarnation");
        let lines: Vec<&str> = whole_lines(&text).collect();
        let last_checkpoint = lines.iter().rposition(|l| *l == "C");
        for (i, line) in lines.iter().enumerate() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.first() != Some(&"D") {
                continue;
            }
            let [slot, inc, thread, counter, lane, seq] =
                parse_nums::<6>(&f[1..]).expect("delivery line");
            let tag = Tag {
                slot: slot as u16,
                inc: inc as u32,
                thread: thread as u16,
                counter,
            };
            let now = Delivery {
                reader_inc,
                checkpointed: last_checkpoint.is_some_and(|c| c > i),
                lane,
                seq,
            };
            c.delivered += 1;
            match seen.get(&tag) {
                None => order.push(tag),
                Some(before) => {
                    c.duplicates += 1;
                    if before.reader_inc == reader_inc {
                        c.bad_duplicates.push(format!(
                            "{tag:?} delivered twice by reader incarnation {reader_inc}"
                        ));
                    } else if before.checkpointed {
                        c.bad_duplicates.push(format!(
                            "{tag:?} (lane {lane} seq {seq}) delivered by reader {reader_inc} \
                             after reader {} had delivered it and checkpointed",
                            before.reader_inc
                        ));
                    }
                    if (before.lane, before.seq) != (lane, seq) {
                        c.bad_duplicates.push(format!(
                            "{tag:?} delivered as lane {} seq {} and as lane {lane} seq {seq}",
                            before.lane, before.seq
                        ));
                    }
                }
            }
            seen.insert(tag, now);
        }
    }
    c.unique = seen.len();

    for (tag, (lane, seq)) in &acked {
        match seen.get(tag) {
            None => c
                .lost
                .push(format!("{tag:?} acknowledged as lane {lane} seq {seq}")),
            Some(d) if (d.lane, d.seq) != (*lane, *seq) => c.fifo.push(format!(
                "{tag:?} acknowledged as lane {lane} seq {seq}, delivered as lane {} seq {}",
                d.lane, d.seq
            )),
            Some(_) => {}
        }
    }
    c.lost.sort();
    c.unacknowledged_delivered = seen.keys().filter(|t| !acked.contains_key(t)).count();

    // FIFO: one writer stream appends to one lane, one append at a time, so its first
    // deliveries must come in counter order. Across incarnations of a slot the streams are in
    // different processes (and maybe lanes): only counted.
    let mut stream_last: HashMap<(u16, u32, u16), u64> = HashMap::new();
    let mut thread_last: HashMap<(u16, u16), Tag> = HashMap::new();
    for tag in &order {
        if let Some(prev) = stream_last.insert((tag.slot, tag.inc, tag.thread), tag.counter) {
            if prev >= tag.counter {
                c.fifo.push(format!(
                    "{tag:?} first delivered after counter {prev} of the same stream"
                ));
            }
        }
        let key = (tag.slot, tag.thread);
        match thread_last.get(&key) {
            Some(newer) if newer.inc > tag.inc => {
                c.cross_incarnation_reorders += 1;
                if acked.contains_key(tag) {
                    c.cross_incarnation_reorders_acked += 1;
                }
                if c.reorder_examples.len() < 10 {
                    let d = |t: &Tag| {
                        let s = &seen[t];
                        let a = if acked.contains_key(t) {
                            "acked"
                        } else {
                            "unacked"
                        };
                        format!("{t:?} lane {} seq {} {a}", s.lane, s.seq)
                    };
                    c.reorder_examples.push(format!(
                        "{} first delivered after {}",
                        d(tag),
                        d(newer)
                    ));
                }
            }
            _ => {
                thread_last.insert(key, *tag);
            }
        }
    }

    // Recovery events: a kill -9 can tear a tail or interrupt a segment's creation; anything
    // else (corruption, gaps, a cursor past the end) is a finding.
    for (name, text) in read_logs(logs, "events-") {
        for line in whole_lines(&text) {
            let kind: String = line.chars().take_while(|ch| ch.is_alphanumeric()).collect();
            if !matches!(kind.as_str(), "TornTail" | "IncompleteSegmentRemoved") {
                c.bad_events.push(format!("{name}: {line}"));
            }
            *c.events.entry(kind).or_default() += 1;
        }
    }

    if let Ok(text) = fs::read_to_string(logs.join("corrupt.log")) {
        c.corrupt = whole_lines(&text).count();
    }
    if let Ok(text) = fs::read_to_string(logs.join("errors.log")) {
        c.errors.extend(whole_lines(&text).map(str::to_owned));
    }
    c
}
