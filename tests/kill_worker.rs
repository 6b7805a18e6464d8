//! Process-kill soak of the whole pipeline: 4 writer processes enqueue escalations through
//! `EscalationQueue` while one worker process delivers them with `Worker::run` to a
//! `MockCloud` that injects seeded random faults (503s, resets, dropped responses, a few slow
//! answers). The test `kill -9`s a random writer or the worker (sometimes both) every
//! 20–200 ms and restarts it; at the end it kills everything and drains the queue with one
//! last worker in this process, the faults off.
//!
//! Claims checked at the end:
//! * every escalation a writer saw acknowledged (an `A` line in its ack log, written after
//!   `enqueue` returned `Ok`) is in the cloud or in the dead-letter queue: 0 lost;
//! * nothing is in the cloud (or dead-lettered) that a writer never tried to enqueue (an `I`
//!   line, written before `enqueue`);
//! * duplicate submissions (an image query id sent again after the cloud created it) that a
//!   worker kill explains (a kill between the creation and the resubmission) touch at most
//!   `(worker kills + 1) × (checkpoint_acks_max + 1)` items: a kill redelivers at most what
//!   was acknowledged since the last cursor checkpoint plus the one in flight. Retries within
//!   one run after a lost answer are counted, not bounded.
//!
//! How it runs: the test binary re-executes itself (`current_exe()`) with `--exact
//! kill_worker_child_entry` and `EQ_KW_CHILD=writer|worker`; that entry is a no-op in a normal
//! run. Children stop by themselves when their parent goes away or a deadline passes.
//!
//! Default: 300 kill cycles (`cargo test --test kill_worker -- --nocapture`). Soak:
//! `EQ_KILL_WORKER_CYCLES=10000 cargo test --release --test kill_worker -- --nocapture`.
//! Other knobs: `EQ_KILL_WORKER_SEED` (replay the parent's random choices and the mock's
//! faults; printed in the figures line), `EQ_KILL_WORKER_PACE_US` (most microseconds a
//! writer thread sleeps between enqueues, default 40000), `EQ_KILL_WORKER_KEEP=1` (keep the
//! directory; it is always kept when the test fails).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::ops::Deref;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use escalation_queue::worker::{
    DeadLetterQueue, Error, Escalation, GroundlightClient, ImageSource, MockCloud, MockCloudConfig,
    MockOutcome, QueueOptions, Worker, WorkerConfig,
};
use escalation_queue::EscalationQueue;

#[allow(dead_code, reason = "this binary uses only the worker settings")]
mod chaos_support;
mod process_support;
use process_support::{
    child_main, env_num, open_append, put_line, record_failure, remove_run_dir, run_dir,
    whole_lines, ChildEnv, Fleet, FleetSpec,
};

const CHILD_ENV: &str = "EQ_KW_CHILD";
/// The children's variables (`EQ_KW_DIR`, …) and logs.
const SPEC: FleetSpec = FleetSpec {
    test: "kill_worker test",
    child_test: "kill_worker_child_entry",
    role_env: CHILD_ENV,
    env_prefix: "EQ_KW",
    failure_logs: &["errors.log"],
};
const TOKEN: &str = "api_2killworker";
const WRITERS: u16 = 4;
const THREADS: u16 = 2;
const DEFAULT_CYCLES: usize = 300;
const DEFAULT_PACE_US: u64 = 40_000;
/// The worker's `checkpoint_acks_max`: the default (64), spelled out for the bound.
const CHECKPOINT_ACKS_MAX: u32 = 64;
/// Exit codes of a child that stops by itself.
const EXIT_ERROR: i32 = 2;

/// The chaos test's queue options, with smaller segments.
fn options() -> QueueOptions {
    QueueOptions {
        segment_bytes: 256 << 10,
        ..chaos_support::options()
    }
}

/// The chaos test's fast worker settings, `checkpoint_acks_max` spelled out for the bound.
fn worker_config(seed: u64) -> WorkerConfig {
    WorkerConfig {
        checkpoint_acks_max: CHECKPOINT_ACKS_MAX,
        ..chaos_support::child_config(seed)
    }
}

/// The chaos test's client (150 ms timeouts: slower answers are lost responses).
fn client(endpoint: &str) -> GroundlightClient {
    chaos_support::client(endpoint, TOKEN)
}

/// The image query id of one enqueue: writer slot, incarnation, thread, counter.
fn iq_id(slot: u16, inc: u32, thread: u16, counter: u64) -> String {
    format!("iq_kw{slot}x{inc}x{thread}x{counter}")
}

// ---------------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------------

/// The child processes' entry point: a no-op unless `EQ_KW_CHILD` is set.
#[test]
fn kill_worker_child_entry() {
    // Story: not a test of its own; the soak below re-executes this binary into this entry
    // to get writer and worker processes it can SIGKILL.
    child_main(&SPEC, |role, env| {
        let cx = ChildCx {
            env,
            pace_us: env.num("PACE_US"),
            endpoint: env.var("ENDPOINT"),
        };
        match role {
            "writer" => writer_child(&cx),
            "worker" => worker_child(&cx),
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
    pace_us: u64,
    endpoint: String,
}

impl Deref for ChildCx<'_> {
    type Target = ChildEnv;

    fn deref(&self) -> &ChildEnv {
        self.env
    }
}

/// Records why a child stops by itself, for the parent to print.
fn fail_child(cx: &ChildCx, what: &str) -> i32 {
    record_failure(&cx.logs.join("errors.log"), what);
    EXIT_ERROR
}

/// One `EscalationQueue` handle (one lane), two threads enqueueing small inline images.
/// Each thread logs `I <id>` before and `A <id>` after a successful enqueue. The ack log
/// survives a SIGKILL of this process (the page cache is the kernel's), so no fsync is needed.
fn writer_child(cx: &ChildCx) -> i32 {
    let who = format!("writer {} inc {}", cx.slot, cx.inc);
    let log = open_append(
        &cx.logs
            .join(format!("acks-{:02}-{:05}.log", cx.slot, cx.inc)),
    );
    // The killed incarnation was reaped before we were started, so its lane is free.
    let queue = match EscalationQueue::open_with(&cx.queue, options()) {
        Ok(q) => q,
        Err(e) => return fail_child(cx, &format!("{who}: open: {e}")),
    };
    let log = std::sync::Arc::new(log);
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (queue, log) = (queue.clone(), log.clone());
            let (slot, inc, pace_us) = (cx.slot, cx.inc, cx.pace_us);
            let mut rng = fastrand::Rng::with_seed(cx.seed ^ (u64::from(thread) << 48));
            std::thread::spawn(move || -> Result<(), String> {
                for counter in 0.. {
                    let mut image = b"\xff\xd8\xff\xe0".to_vec();
                    image.extend((0..rng.usize(16..240)).map(|_| rng.u8(..)));
                    let mut esc =
                        Escalation::new(format!("det_kw{slot}"), ImageSource::Inline(image.into()));
                    esc.image_query_id = iq_id(slot, inc, thread, counter);
                    esc.request_id = format!("req_uukw{slot}x{inc}x{thread}x{counter}");
                    put_line(&log, &format!("I {}\n", esc.image_query_id));
                    loop {
                        match queue.enqueue(&esc) {
                            Ok(_) => break,
                            Err(e) if e.is_retryable() => {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            Err(e) => return Err(format!("t{thread} enqueue: {e}")),
                        }
                    }
                    // Written only after enqueue returned Ok: a line implies an acknowledgement.
                    put_line(&log, &format!("A {}\n", esc.image_query_id));
                    if pace_us > 0 {
                        std::thread::sleep(Duration::from_micros(rng.u64(0..=pace_us)));
                    }
                }
                Ok(())
            })
        })
        .collect();
    drop(queue);
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(what)) => return fail_child(cx, &format!("{who}: {what}")),
            Err(_) => return fail_child(cx, &format!("{who}: thread panicked")),
        }
    }
    0
}

/// Opens the worker, retrying a little while a just-reaped predecessor's lock goes away.
fn open_worker(queue: &Path, seed: u64) -> Result<Worker, Error> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match Worker::open(queue, &options(), worker_config(seed)) {
            Err(Error::WorkerRunning { .. }) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn worker_child(cx: &ChildCx) -> i32 {
    let who = format!("worker inc {}", cx.inc);
    let mut worker = match open_worker(&cx.queue, cx.seed) {
        Ok(w) => w,
        Err(e) => return fail_child(cx, &format!("{who}: open: {e}")),
    };
    match worker.run(&client(&cx.endpoint)) {
        Ok(summary) => fail_child(cx, &format!("{who}: run returned unasked: {summary:?}")),
        Err(e) => fail_child(cx, &format!("{who}: run: {e}")),
    }
}

// ---------------------------------------------------------------------------------------
// Parent
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer(u16),
    Worker,
}

impl process_support::Role for Role {
    fn writer_slot(self) -> Option<u16> {
        match self {
            Role::Writer(s) => Some(s),
            Role::Worker => None,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Role::Writer(_) => "writer",
            Role::Worker => "worker",
        }
    }
}

/// The fleet (4 writer slots, the worker), what its children are told, and when each
/// worker incarnation was killed.
struct Harness {
    fleet: Fleet<Role>,
    endpoint: String,
    pace_us: u64,
    /// When each worker incarnation was killed (taken just before the SIGKILL).
    worker_kills: Vec<SystemTime>,
}

impl Harness {
    fn start(&mut self, role: Role) {
        let extra = [
            ("PACE_US", self.pace_us.to_string()),
            ("ENDPOINT", self.endpoint.clone()),
        ];
        self.fleet.start(role, &extra);
    }

    fn kill_victim(&mut self, role: Role) {
        if role == Role::Worker {
            self.worker_kills.push(SystemTime::now());
        }
        self.fleet.kill9(role);
    }

    fn kill_all(&mut self) {
        if self.fleet.single.is_some() {
            self.worker_kills.push(SystemTime::now());
        }
        self.fleet.kill_all();
    }
}

#[derive(Debug, Default)]
struct Stats {
    cycles: usize,
    writer_kills: usize,
    worker_kills: usize,
    both_kills: usize,
}

#[test]
fn kill_writers_and_worker_loses_no_acknowledged_escalation() {
    // Story: an edge box loses processes to the OOM killer, watchdogs and power-button
    // restarts while the cloud is flaky. Whatever dies and whenever, an escalation the
    // edge was told is queued must reach the cloud or the dead-letter queue, nothing
    // invented may reach the cloud, and the resubmissions a restarted worker makes must
    // stay within what its checkpoint interval allows.
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let started = Instant::now();
    let cycles = env_num("EQ_KILL_WORKER_CYCLES").map_or(DEFAULT_CYCLES, |c| c as usize);
    let seed = env_num("EQ_KILL_WORKER_SEED").unwrap_or_else(|| fastrand::u64(..));
    let pace_us = env_num("EQ_KILL_WORKER_PACE_US").unwrap_or(DEFAULT_PACE_US);
    // Kept on failure (the path is in the panic message), removed after a passing run.
    let (root, logs) = run_dir("eq-kill-worker-");
    let queue = root.join("queue");

    let mut config = MockCloudConfig::new(TOKEN);
    config.recorded_requests_max = usize::MAX;
    config.faults.random = Some(chaos_support::random_faults(seed, 300));
    let mock = MockCloud::start(config).expect("mock cloud");

    // A safety net only: children stop by themselves after this even if the parent hangs.
    let budget_ms = 180_000 + 2_000 * cycles as u64;
    let mut h = Harness {
        fleet: Fleet::new(SPEC, &root, &logs, WRITERS, seed, budget_ms),
        endpoint: mock.endpoint(),
        pace_us,
        worker_kills: Vec::new(),
    };
    for s in 0..WRITERS {
        h.start(Role::Writer(s));
    }
    h.start(Role::Worker);

    let mut stats = Stats::default();
    for _ in 0..cycles {
        std::thread::sleep(Duration::from_millis(h.fleet.rng.u64(20..=200)));
        h.fleet.check_alive();
        // One of five processes, or one in ten times a writer and the worker together.
        let victims: Vec<Role> = if h.fleet.rng.u8(0..10) == 0 {
            vec![Role::Writer(h.fleet.rng.u16(0..WRITERS)), Role::Worker]
        } else {
            match h.fleet.rng.u16(0..=WRITERS) {
                s if s < WRITERS => vec![Role::Writer(s)],
                _ => vec![Role::Worker],
            }
        };
        stats.both_kills += usize::from(victims.len() > 1);
        for &v in &victims {
            h.kill_victim(v);
            match v {
                Role::Writer(_) => stats.writer_kills += 1,
                Role::Worker => stats.worker_kills += 1,
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

    // Stop everything (the worker by SIGKILL too), then drain in this process, faults off.
    h.kill_all();
    mock.set_random_faults(None);
    let drain_started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (queue, endpoint) = (queue.clone(), mock.endpoint());
        std::thread::spawn(move || {
            let result = open_worker(&queue, seed)
                .and_then(|mut w| w.drain(&client(&endpoint)))
                .map_err(|e| e.to_string());
            let _ = tx.send(result);
        });
    }
    let last = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Ok(summary)) => summary,
        Ok(Err(e)) => h.fleet.fail(&format!("the final drain failed: {e}")),
        Err(_) => h.fleet.fail("the final drain did not finish within 120 s"),
    };
    let drain_elapsed = drain_started.elapsed();

    let check = analyze(&logs, &queue, &mock, &h.worker_kills);
    let elapsed = started.elapsed();
    // Every worker kill (the final one included) redelivers at most the acknowledgements
    // since its last checkpoint plus the item in flight.
    let bound = (stats.worker_kills + 1) * (CHECKPOINT_ACKS_MAX as usize + 1);
    let summary = [
        format!("cycles={}", stats.cycles),
        format!("writer_kills={}", stats.writer_kills),
        format!("worker_kills={}", stats.worker_kills),
        format!("both_kill_cycles={}", stats.both_kills),
        format!("acknowledged={}", check.acknowledged),
        format!("attempted={}", check.attempted),
        format!("delivered={}", check.delivered_acked),
        format!("dead_lettered={}", check.dead_acked),
        format!("lost={}", check.lost.len()),
        format!("unacknowledged_in_cloud={}", check.unacked_in_cloud),
        format!("never_enqueued_in_cloud={}", check.phantom.len()),
        format!(
            "duplicates={} (after a worker kill: {} submissions of {} items, bound {bound}; in-run retries after a lost answer: {})",
            check.dup_submissions,
            check.dup_restart_submissions,
            check.dup_restart_items,
            check.dup_in_run
        ),
        format!("faults={:?}", check.faults),
        format!("final_drain_delivered={}", last.delivered),
        format!("load={:.1}s", load_elapsed.as_secs_f64()),
        format!("drain={:.1}s", drain_elapsed.as_secs_f64()),
        format!("elapsed={:.1}s", elapsed.as_secs_f64()),
        format!("seed={seed}"),
    ];
    println!("kill_worker figures: {}", summary.join(" "));
    let mut problems = Vec::new();
    let mut section = |title: &str, items: &[String]| {
        if !items.is_empty() {
            problems.push(format!("{} {title}; first ones:", items.len()));
            problems.extend(items.iter().take(20).map(|i| format!("  {i}")));
        }
    };
    section("acknowledged escalations lost", &check.lost);
    section(
        "escalations in the cloud or dead-lettered that were never enqueued",
        &check.phantom,
    );
    section("child errors", &check.errors);
    if check.dup_restart_items > bound {
        problems.push(format!(
            "{} items resubmitted after worker kills, bound {bound}",
            check.dup_restart_items
        ));
    }
    if !problems.is_empty() {
        h.fleet.fail(&problems.join("\n"));
    }
    assert!(stats.cycles >= cycles);
    assert!(check.acknowledged > 0, "no enqueue was ever acknowledged");
    drop(h);
    remove_run_dir(&root, "EQ_KILL_WORKER_KEEP");
}

// ---------------------------------------------------------------------------------------
// Analysis
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Check {
    acknowledged: usize,
    attempted: usize,
    delivered_acked: usize,
    dead_acked: usize,
    unacked_in_cloud: usize,
    lost: Vec<String>,
    phantom: Vec<String>,
    dup_submissions: usize,
    dup_restart_submissions: usize,
    dup_restart_items: usize,
    dup_in_run: usize,
    faults: BTreeMap<String, usize>,
    errors: Vec<String>,
}

fn analyze(logs: &Path, queue: &Path, mock: &MockCloud, worker_kills: &[SystemTime]) -> Check {
    let mut c = Check::default();
    let mut attempted: HashSet<String> = HashSet::new();
    let mut acked: HashSet<String> = HashSet::new();
    for entry in fs::read_dir(logs).expect("read logs dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("acks-") && name.ends_with(".log")) {
            continue;
        }
        let text = fs::read_to_string(&path).expect("read ack log");
        for line in whole_lines(&text) {
            match line.split_once(' ') {
                Some(("I", id)) => {
                    attempted.insert(id.to_owned());
                }
                Some(("A", id)) => {
                    acked.insert(id.to_owned());
                }
                _ => {}
            }
        }
    }
    c.acknowledged = acked.len();
    c.attempted = attempted.len();

    let created: HashSet<String> = mock.image_query_ids().into_iter().collect();
    let dead: HashSet<String> = DeadLetterQueue::open(queue, options())
        .expect("dead-letter queue")
        .list()
        .expect("list dead letters")
        .into_iter()
        .filter_map(|l| l.info.image_query_id)
        .collect();
    for id in &acked {
        let (in_cloud, in_dlq) = (created.contains(id), dead.contains(id));
        c.delivered_acked += usize::from(in_cloud);
        c.dead_acked += usize::from(in_dlq && !in_cloud);
        if !in_cloud && !in_dlq {
            c.lost.push(id.clone());
        }
    }
    c.lost.sort();
    for id in created.iter().chain(&dead) {
        if !attempted.contains(id) {
            c.phantom.push(id.clone());
        }
    }
    c.unacked_in_cloud = created.iter().filter(|id| !acked.contains(*id)).count();

    // Duplicate submissions: a request for an id the cloud already created. One with a
    // worker kill between the creation and the request is a redelivery after the kill.
    let mut created_at: HashMap<String, SystemTime> = HashMap::new();
    let mut restart_items: HashSet<String> = HashSet::new();
    for r in mock.requests() {
        let kind = match &r.outcome {
            MockOutcome::Reset => Some("reset".to_owned()),
            MockOutcome::ResponseDropped { .. } => Some("dropped_response".to_owned()),
            MockOutcome::Responded { delay_ms, .. } if *delay_ms > 0 => Some("slow".to_owned()),
            MockOutcome::Responded {
                status: 201 | 400, ..
            } => None,
            MockOutcome::Responded { status, .. } => Some(format!("http_{status}")),
        };
        if let Some(kind) = kind {
            *c.faults.entry(kind).or_default() += 1;
        }
        let Some(id) = r.param("image_query_id") else {
            continue;
        };
        if let Some(t0) = created_at.get(id) {
            c.dup_submissions += 1;
            if worker_kills.iter().any(|k| t0 < k && *k < r.received_at) {
                c.dup_restart_submissions += 1;
                restart_items.insert(id.to_owned());
            } else {
                c.dup_in_run += 1;
            }
        }
        if let Some(created) = &r.created_image_query_id {
            created_at.insert(created.clone(), r.received_at);
        }
    }
    c.dup_restart_items = restart_items.len();

    if let Ok(text) = fs::read_to_string(logs.join("errors.log")) {
        c.errors.extend(whole_lines(&text).map(str::to_owned));
    }
    c
}
