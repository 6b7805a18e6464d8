//! Worker performance measurements (ignored by default; run in release):
//!
//! ```sh
//! cargo test --release -p escalation-queue-worker --test worker_perf -- --ignored --nocapture --test-threads=1
//! ```
//!
//! * `throughput_1kib`: one worker thread delivers 1 KiB-image escalations to the mock
//!   cloud answering at once over keep-alive. Target ≥ 5,000/s. `EQ_PERF_ITEMS` (20000).
//! * `attempt_marker_cost`: deliveries/s as in `throughput_1kib` with the attempt marker
//!   synced (default) and unsynced (`Durability::None`), same run, and the marker alone
//!   (µs per pwrite + fdatasync). `EQ_PERF_ITEMS` (20000).
//! * `rss_while_draining_2gib`: the worker process's resident memory while draining a 2 GiB
//!   backlog of 256 KiB records (the backlog is written first, the worker runs in a child
//!   process, the mock cloud in this one). Target ≤ 32 MiB. `EQ_PERF_BACKLOG_MIB` (2048),
//!   `EQ_PERF_SEGMENT_MIB` (main-wal segment size, default 64: the queue default),
//!   `EQ_PERF_LANES` (writer lanes the backlog is spread over, default 4),
//!   `EQ_PERF_IMAGE_MAX_KIB` (`image_size_max_bytes`, default 16384: the queue default).

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use escalation_queue_producer::EscalationQueue;
use escalation_queue_wal::{Durability, LaneId, Position, RecordId, SegmentId, Seq};
use escalation_queue_worker::{
    AttemptJournal, Escalation, ImageSource, MarkerDurability, MockCloud, MockCloudConfig,
    QueueOptions, Worker, WorkerConfig,
};
use support::{client, TOKEN};

const CHILD_ENV: &str = "EQ_PERF_CHILD";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fills `dir` with `count` escalations of `image_bytes` from `EQ_PERF_LANES` (4) threads,
/// each with its own handle, so its own lane.
fn fill(dir: &Path, options: &QueueOptions, count: usize, image_bytes: usize) {
    let lanes = usize::try_from(env_u64("EQ_PERF_LANES", 4))
        .unwrap_or(4)
        .max(1);
    std::thread::scope(|s| {
        for t in 0..lanes {
            let queue = EscalationQueue::open_with(dir, options.clone()).expect("queue");
            s.spawn(move || {
                let mut image = vec![0xa5_u8; image_bytes];
                image[..4].copy_from_slice(b"\xff\xd8\xff\xe0");
                let image = bytes::Bytes::from(image);
                for _ in (t..count).step_by(lanes) {
                    let esc = Escalation::new("det_perf", ImageSource::Inline(image.clone()));
                    queue.enqueue(&esc).expect("enqueue");
                }
            });
        }
    });
}

fn quiet_mock() -> MockCloud {
    let mut config = MockCloudConfig::new(TOKEN);
    config.recorded_requests_max = 16;
    MockCloud::start(config).expect("mock")
}

#[test]
#[ignore = "performance measurement; run in release"]
fn throughput_1kib() {
    let items = usize::try_from(env_u64("EQ_PERF_ITEMS", 20_000)).unwrap_or(20_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("queue");
    let options = QueueOptions {
        free_disk_bytes_min: 0,
        ..QueueOptions::default()
    };
    fill(&dir, &options, items, 1024);
    let mock = quiet_mock();
    let client = client(&mock.endpoint());
    let mut worker = Worker::open(&dir, &options, WorkerConfig::default()).expect("worker");
    let started = Instant::now();
    let summary = worker.drain(&client).expect("drain");
    let elapsed = started.elapsed();
    assert_eq!(summary.delivered, items as u64);
    let per_s = items as f64 / elapsed.as_secs_f64();
    let checkpoints = worker.stats().snapshot().checkpoints;
    println!(
        "worker throughput: {items} escalations of 1 KiB in {:.2} s = {per_s:.0}/s (one worker thread, mock cloud over keep-alive, {checkpoints} checkpoints)",
        elapsed.as_secs_f64()
    );
}

/// Drains `items` 1 KiB escalations from a fresh queue with `options`; deliveries per second.
fn drain_rate(options: &QueueOptions, items: usize) -> f64 {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("queue");
    fill(&dir, options, items, 1024);
    let mock = quiet_mock();
    let client = client(&mock.endpoint());
    let mut worker = Worker::open(&dir, options, WorkerConfig::default()).expect("worker");
    let started = Instant::now();
    let summary = worker.drain(&client).expect("drain");
    assert_eq!(summary.delivered, items as u64);
    items as f64 / started.elapsed().as_secs_f64()
}

#[test]
#[ignore = "performance measurement; run in release"]
fn attempt_marker_cost() {
    // What the durable attempt marker (one 32-byte pwrite + fdatasync before each item's
    // first request) costs: deliveries/s with it synced (the default) and with it only
    // written to the OS (the queue's `Durability::None`), same run, same mock; and the
    // marker alone.
    let items = usize::try_from(env_u64("EQ_PERF_ITEMS", 20_000)).unwrap_or(20_000);
    let synced = QueueOptions {
        free_disk_bytes_min: 0,
        ..QueueOptions::default()
    };
    let buffered = QueueOptions {
        durability: Durability::None,
        ..synced.clone()
    };
    let with_marker = drain_rate(&synced, items);
    let without_sync = drain_rate(&buffered, items);
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("attempts.log");
    let mut journal = AttemptJournal::open(&path, 1024, MarkerDurability::Synced).expect("journal");
    let marks = 5_000_u64;
    let started = Instant::now();
    for seq in 0..marks {
        let id = RecordId {
            lane: LaneId(0),
            seq: Seq(seq),
            position: Position {
                segment: SegmentId(0),
                offset: 0,
            },
        };
        journal.mark(id, &format!("iq_perf{seq}")).expect("mark");
        journal.settled(id);
        journal.checkpointed();
    }
    let per_mark_us = started.elapsed().as_secs_f64() * 1e6 / marks as f64;
    let (written, sync_time) = journal.marks_written();
    let sync_us = sync_time.as_secs_f64() * 1e6 / written.max(1) as f64;
    println!(
        "attempt marker: {with_marker:.0} deliveries/s with the synced marker, {without_sync:.0}/s with it unsynced ({:.2}x); marker alone {per_mark_us:.1} µs (pwrite + fdatasync {sync_us:.1} µs, {} compactions' worth included); {items} items of 1 KiB",
        with_marker / without_sync,
        marks - written
    );
}

/// Current and peak resident memory of this process, and the file-backed part, in KiB.
fn memory_kib() -> (u64, u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("VmRSS:"),
        field("VmHWM:"),
        field("RssAnon:"),
        field("RssFile:"),
    )
}

fn perf_options() -> QueueOptions {
    let segment_mib = env_u64("EQ_PERF_SEGMENT_MIB", 64);
    QueueOptions {
        segment_bytes: segment_mib << 20,
        image_size_max_bytes: usize::try_from(env_u64("EQ_PERF_IMAGE_MAX_KIB", 16 << 10) << 10)
            .unwrap_or(16 << 20),
        queue_bytes_max: 16 << 30,
        free_disk_bytes_min: 0,
        durability: Durability::None,
        ..QueueOptions::default()
    }
}

#[test]
#[ignore = "child of rss_while_draining_2gib"]
fn rss_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let endpoint = std::env::var("EQ_PERF_ENDPOINT").expect("endpoint");
    let peak_rss = Arc::new(AtomicU64::new(0));
    let peak_anon = Arc::new(AtomicU64::new(0));
    let peak_file = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (rss, anon, file, done) = (
            peak_rss.clone(),
            peak_anon.clone(),
            peak_file.clone(),
            done.clone(),
        );
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let (now, _, a, f) = memory_kib();
                rss.fetch_max(now, Ordering::Relaxed);
                anon.fetch_max(a, Ordering::Relaxed);
                file.fetch_max(f, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let client = client(&endpoint);
    let (before, _, _, _) = memory_kib();
    let mut worker = Worker::open(&dir, &perf_options(), WorkerConfig::default()).expect("worker");
    let started = Instant::now();
    let summary = worker.drain(&client).expect("drain");
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let (_, hwm, _, _) = memory_kib();
    println!(
        "PERF-RSS delivered={} secs={:.1} rss_before_kib={before} peak_rss_kib={} vm_hwm_kib={hwm} peak_rss_anon_kib={} peak_rss_file_kib={}",
        summary.delivered,
        started.elapsed().as_secs_f64(),
        peak_rss.load(Ordering::Relaxed),
        peak_anon.load(Ordering::Relaxed),
        peak_file.load(Ordering::Relaxed),
    );
}

#[test]
#[ignore = "performance measurement; writes a 2 GiB backlog"]
fn rss_while_draining_2gib() {
    let backlog_mib = env_u64("EQ_PERF_BACKLOG_MIB", 2048);
    let count = usize::try_from(backlog_mib * 4).unwrap_or(8192);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("queue");
    let options = perf_options();
    let started = Instant::now();
    fill(&dir, &options, count, 256 << 10);
    println!(
        "backlog: {count} records of 256 KiB written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mock = quiet_mock();
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "rss_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_ENV, &dir)
        .env("EQ_PERF_ENDPOINT", mock.endpoint())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert!(child.wait().expect("wait").success(), "child failed");
    let line = out
        .lines()
        .find(|l| l.starts_with("PERF-RSS"))
        .expect("child report");
    println!(
        "worker draining {backlog_mib} MiB of 256 KiB records, segments of {} MiB: {line}",
        options.segment_bytes >> 20
    );
    assert!(line.contains(&format!("delivered={count}")), "{line}");
}
