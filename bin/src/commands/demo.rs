//! `demo`: the whole system in one process, on loopback, in a temporary directory.
//!
//! A mock cloud with random faults and an outage in the middle; several writer threads,
//! each holding its own lane as the edge-endpoint's processes do, enqueue a few hundred
//! escalations (a few with an image file that has disappeared, which must end in the
//! dead-letter queue); the reader delivers with live progress; then the tally is checked
//! against what the mock cloud actually holds: nothing may be lost.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use escalation_queue::worker::{
    BackoffConfig, BreakerConfig, DeadLetterInfo, FaultPlan, MockOutcome, OutageMode, RandomFaults,
};
use escalation_queue::{
    ApiToken, ClientConfig, DeadLetterQueue, Escalation, EscalationQueue, GroundlightClient,
    ImageSource, MockCloud, MockCloudConfig, QueueOptions, Stats, StopHandle, Worker, WorkerConfig,
};

use crate::cli::DemoArgs;
use crate::commands::dlq::dead_letter_table;
use crate::exit::{Exit, UsageError};
use crate::progress::{finished, Fallback, Progress};
use crate::render::{count, duration_ms};
use crate::shutdown::Shutdown;

const TOKEN: &str = "demo-token";
/// The demo gives up (and reports what is left) after this long.
const DEADLINE: Duration = Duration::from_secs(50);
/// Writers spread their enqueues over about this long, so the outage hits mid-stream.
const ENQUEUE_SPAN: Duration = Duration::from_millis(2_500);
/// The outage starts this long after the first enqueue.
const OUTAGE_AT: Duration = Duration::from_millis(600);
/// One escalation in this many has an image file that was deleted before delivery.
const MISSING_IMAGE_EVERY: u32 = 100;

/// Runs `demo`.
pub fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    check_args(args)?;
    let dir = tempfile::Builder::new()
        .prefix("escalation-queue-demo-")
        .tempdir()
        .context("cannot create a temporary directory for the demo")?;
    let started = Instant::now();
    let cloud = start_cloud(args.seed)?;
    let options = demo_queue_options(dir.path());
    let mut worker = Worker::open(dir.path(), &options, demo_worker_config(args.seed))
        .context("cannot open the demo queue")?;
    let client = demo_client(&cloud)?;
    let stats = worker.stats();
    let total = u64::from(args.escalations);
    println!(
        "escalation-queue demo: {} from {}, queue in {} (removed at the end)",
        count(total, "escalation"),
        count(u64::from(args.writers), "writer thread"),
        dir.path().display(),
    );
    println!(
        "mock cloud on {} with random faults (3% 503, 2% resets, 2% lost responses) and a {} \
         outage (503s) soon after the start",
        cloud.addr(),
        duration_ms(args.outage_ms)
    );
    let shutdown = Shutdown::install().context("cannot install the signal handlers")?;
    shutdown.attach(worker.stop_handle());
    let progress = Progress::start(
        Arc::clone(&stats),
        Arc::new(AtomicU64::new(total)),
        Fallback::Lines,
    );
    let run = thread::scope(|scope| -> anyhow::Result<Run> {
        let writers_done = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..args.writers)
            .map(|w| {
                let done = Arc::clone(&writers_done);
                let dir = dir.path();
                let options = options.clone();
                scope.spawn(move || {
                    let result = write_share(dir, options, w, args);
                    done.fetch_add(1, Ordering::AcqRel);
                    result
                })
            })
            .collect();
        let cloud = &cloud;
        scope.spawn(move || schedule_outage(cloud, args.outage_ms, &shutdown));
        let stop = worker.stop_handle();
        let conductor = {
            let stats = Arc::clone(&stats);
            let done = Arc::clone(&writers_done);
            let writers = usize::from(args.writers);
            scope.spawn(move || conduct(&stats, total, &done, writers, &stop))
        };
        let summary = worker.run(&client).context("the demo reader failed")?;
        let timed_out = conductor.join().unwrap_or(true);
        let mut receipts = Vec::new();
        for writer in writers {
            let share = writer
                .join()
                .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
            receipts.extend(share);
        }
        Ok(Run {
            receipts,
            retried: summary.retried,
            timed_out,
        })
    })?;
    // Every escalation the writers enqueued is either finished or still pending.
    progress.finish(Some(total.saturating_sub(finished(&stats.snapshot()))));
    drop(worker);
    let tally = tally(&run, &stats, &cloud, dir.path(), &options)?;
    print_tally(&tally, &run, args, started.elapsed());
    match tally.lost {
        0 => Ok(Exit::Ok.into()),
        _ => Ok(Exit::WorkFailed.into()),
    }
}

/// What the writers and the reader did.
#[derive(Debug)]
struct Run {
    /// Image query ids enqueued (durably).
    receipts: Vec<String>,
    retried: u64,
    timed_out: bool,
}

fn check_args(args: &DemoArgs) -> Result<(), UsageError> {
    if !(1..=100_000).contains(&args.escalations) {
        return Err(UsageError::new(format!(
            "--escalations {}: allowed 1 to 100000",
            args.escalations
        )));
    }
    if !(1..=16).contains(&args.writers) {
        return Err(UsageError::new(format!(
            "--writers {}: allowed 1 to 16",
            args.writers
        )));
    }
    if args.outage_ms > 20_000 {
        return Err(UsageError::new(format!(
            "--outage-ms {}: allowed 0 to 20000",
            args.outage_ms
        )));
    }
    Ok(())
}

fn start_cloud(seed: u64) -> anyhow::Result<MockCloud> {
    let mut config = MockCloudConfig::new(TOKEN);
    config.faults = FaultPlan {
        script: Default::default(),
        random: Some(RandomFaults {
            seed,
            unavailable_rate: 0.03,
            reset_rate: 0.02,
            drop_response_rate: 0.02,
            delay_rate: 0.0,
            rate_limited_rate: 0.0,
            delay_ms: 0,
        }),
    };
    MockCloud::start(config).context("cannot start the mock cloud on loopback")
}

/// Small segments: the demo's images are small and its directory is temporary. Its path
/// images (deleted ones) are under `<dir>/deleted-images`, the images directory.
fn demo_queue_options(dir: &Path) -> QueueOptions {
    QueueOptions {
        images_dir: Some(dir.join("deleted-images")),
        image_size_max_bytes: 256 << 10,
        segment_bytes: 1 << 20,
        queue_bytes_max: 256 << 20,
        free_disk_bytes_min: 0,
        ..QueueOptions::default()
    }
}

/// Short delays so that an outage of seconds is ridden out in seconds.
fn demo_worker_config(seed: u64) -> WorkerConfig {
    WorkerConfig {
        backoff: BackoffConfig {
            delay_base_ms: 20,
            delay_max_ms: 300,
            retry_after_max_ms: 1_000,
        },
        breaker: BreakerConfig {
            failure_threshold: 3,
            cool_down_base_ms: 100,
            cool_down_max_ms: 500,
        },
        maintenance_interval_ms: 100,
        jitter_seed: Some(seed),
        ..WorkerConfig::default()
    }
}

fn demo_client(cloud: &MockCloud) -> anyhow::Result<GroundlightClient> {
    let mut config = ClientConfig::new(ApiToken::new(TOKEN)?);
    config.endpoint = cloud.endpoint();
    config.connect_timeout_first_ms = 1_000;
    config.connect_timeout_retry_ms = 500;
    config.read_timeout_ms = 2_000;
    Ok(GroundlightClient::new(config)?)
}

/// One writer thread: its own queue handle (its own lane), its share of the escalations.
fn write_share(
    dir: &Path,
    options: QueueOptions,
    writer: u16,
    args: &DemoArgs,
) -> anyhow::Result<Vec<String>> {
    let queue =
        EscalationQueue::open_with(dir, options).context("a writer cannot open the queue")?;
    let writers = u32::from(args.writers);
    let mine: Vec<u32> = (0..args.escalations)
        .filter(|i| i % writers == u32::from(writer))
        .collect();
    let pause = ENQUEUE_SPAN / u32::try_from(mine.len().max(1)).unwrap_or(u32::MAX);
    let mut ids = Vec::with_capacity(mine.len());
    for i in mine {
        let image = match i % MISSING_IMAGE_EVERY == MISSING_IMAGE_EVERY / 2 {
            true => ImageSource::Path(missing_image(dir, i)),
            false => ImageSource::Inline(sample_jpeg(i).into()),
        };
        let mut esc = Escalation::new(format!("det_demo{}", i % 5), image);
        esc.confidence_threshold = Some(0.9);
        let receipt = queue.enqueue(&esc).context("a demo enqueue failed")?;
        ids.push(receipt.image_query_id);
        thread::sleep(pause);
    }
    Ok(ids)
}

/// An image path whose file is gone by the time the reader gets to it.
fn missing_image(dir: &Path, i: u32) -> PathBuf {
    dir.join(format!("deleted-images/frame-{i}.jpg"))
}

/// A few KiB that sniff as JPEG.
fn sample_jpeg(i: u32) -> Vec<u8> {
    let mut image = vec![0xFF, 0xD8, 0xFF, 0xE0];
    image.extend((0..4096_u32).map(|b| (b.wrapping_mul(31) ^ i) as u8));
    image.extend([0xFF, 0xD9]);
    image
}

fn schedule_outage(cloud: &MockCloud, outage_ms: u64, shutdown: &Shutdown) {
    if outage_ms == 0 || shutdown.sleep(OUTAGE_AT) {
        return;
    }
    cloud.start_outage(
        Duration::from_millis(outage_ms),
        OutageMode::ServiceUnavailable,
    );
}

/// Stops the reader once every escalation is finished (or at the deadline); returns
/// whether the deadline was hit.
fn conduct(
    stats: &Stats,
    total: u64,
    writers_done: &AtomicUsize,
    writers: usize,
    stop: &StopHandle,
) -> bool {
    let started = Instant::now();
    loop {
        if stop.is_stopped() {
            return false;
        }
        let all_written = writers_done.load(Ordering::Acquire) == writers;
        if all_written && finished(&stats.snapshot()) >= total {
            stop.stop();
            return false;
        }
        if started.elapsed() >= DEADLINE {
            stop.stop();
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The outcome, checked against the mock cloud and the dead-letter queue.
#[derive(Debug)]
struct Tally {
    enqueued: usize,
    delivered: u64,
    delivered_duplicates: u64,
    in_cloud: usize,
    /// The dead letters, to show inline: the queue directory is removed at the end.
    dead_letters: Vec<DeadLetterInfo>,
    expired: u64,
    lost: usize,
    answers: String,
}

fn tally(
    run: &Run,
    stats: &Stats,
    cloud: &MockCloud,
    dir: &Path,
    options: &QueueOptions,
) -> anyhow::Result<Tally> {
    let s = stats.snapshot();
    let in_cloud: HashSet<String> = cloud.image_query_ids().into_iter().collect();
    let dead_letters: Vec<DeadLetterInfo> = DeadLetterQueue::open(dir, options.clone())?
        .list()?
        .into_iter()
        .map(|d| d.info)
        .collect();
    let dead: HashSet<&str> = dead_letters
        .iter()
        .filter_map(|d| d.image_query_id.as_deref())
        .collect();
    let lost = run
        .receipts
        .iter()
        .filter(|id| !in_cloud.contains(*id) && !dead.contains(id.as_str()))
        .count();
    Ok(Tally {
        enqueued: run.receipts.len(),
        delivered: s.delivered,
        delivered_duplicates: s.delivered_duplicates,
        in_cloud: run
            .receipts
            .iter()
            .filter(|id| in_cloud.contains(*id))
            .count(),
        dead_letters,
        expired: s.expired,
        lost,
        answers: answers(cloud),
    })
}

/// What the mock cloud answered, e.g. `301 × 201, 40 × 503, 6 resets, 5 dropped`.
fn answers(cloud: &MockCloud) -> String {
    let mut by_status = std::collections::BTreeMap::new();
    let (mut resets, mut dropped) = (0, 0);
    for request in cloud.requests() {
        match request.outcome {
            MockOutcome::Responded { status, .. } => *by_status.entry(status).or_insert(0) += 1,
            MockOutcome::Reset => resets += 1,
            MockOutcome::ResponseDropped { .. } => dropped += 1,
        }
    }
    let mut parts: Vec<String> = by_status
        .iter()
        .map(|(status, n)| format!("{n} × HTTP {status}"))
        .collect();
    parts.push(format!("{resets} connection resets"));
    parts.push(format!("{dropped} responses lost after processing"));
    parts.join(", ")
}

fn print_tally(t: &Tally, run: &Run, args: &DemoArgs, elapsed: Duration) {
    let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let delivered_note = format!(
        "the mock cloud holds {} of them ({} resent after a lost response, whose HTTP 400 \
         \"already exists\" counts as delivered)",
        t.in_cloud, t.delivered_duplicates
    );
    let rows = [
        (
            "enqueued (durable)",
            t.enqueued.to_string(),
            format!("by {} writer threads, one lane each", args.writers),
        ),
        ("delivered", t.delivered.to_string(), delivered_note),
        (
            "retried",
            run.retried.to_string(),
            "attempts retried through the outage and the faults".to_owned(),
        ),
        (
            "dead-lettered",
            t.dead_letters.len().to_string(),
            "image file deleted before upload (listed below)".to_owned(),
        ),
        ("expired", t.expired.to_string(), String::new()),
        (
            "lost",
            t.lost.to_string(),
            "enqueued, but neither in the cloud nor dead-lettered".to_owned(),
        ),
        ("elapsed", duration_ms(elapsed_ms), String::new()),
    ];
    println!();
    for (name, value, note) in rows {
        let line = format!("  {name:<20} {value:>6}   {note}");
        println!("{}", line.trim_end());
    }
    if !t.dead_letters.is_empty() {
        // The demo's queue is temporary: show here what `dlq list` would show.
        let infos: Vec<&DeadLetterInfo> = t.dead_letters.iter().collect();
        println!("\ndead letters (what `escalation-queue dlq list` shows for a real queue):");
        print!("{}", dead_letter_table(&infos, super::now_unix_ms()));
    }
    println!("\ncloud answers: {}", t.answers);
    if run.timed_out {
        let deadline = DEADLINE.as_secs();
        println!("the demo hit its {deadline} s deadline before every escalation finished");
    }
    match t.lost {
        0 => println!("nothing lost: every escalation ended delivered or dead-lettered."),
        n => println!("{} LOST", count(n as u64, "escalation")),
    }
}
