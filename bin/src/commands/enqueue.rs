//! `enqueue`: one escalation from the command line. Prints the image query id only once
//! the record is durable (the default durability syncs before returning).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use escalation_queue::wal::Error as WalError;
use escalation_queue::worker::{Metadata, RecordLimits};
use escalation_queue::{
    Error as QueueHandleError, Escalation, EscalationQueue, HumanReview, ImageSource,
};

use crate::cli::EnqueueArgs;
use crate::config::Config;
use crate::exit::{Exit, UsageError};

use super::{print_json, writable_queue_dir};

/// Runs `enqueue`.
pub fn enqueue(config: &Config, args: &EnqueueArgs) -> anyhow::Result<ExitCode> {
    let limit = config.queue.image_size_max_bytes;
    let image = read_image(&args.image, limit)?;
    let escalation = build(args, image, &config.queue.record_limits())?;
    let dir = writable_queue_dir(config)?;
    let queue = open_waiting_for_a_lane(config, dir, args.lane_wait_ms)
        .with_context(|| format!("cannot open the queue {}", dir.display()))?;
    let receipt = queue
        .enqueue(&escalation)
        .context("the escalation was not enqueued")?;
    tracing::info!(
        image_query_id = %receipt.image_query_id,
        request_id = %receipt.request_id,
        detector_id = %escalation.detector_id,
        lane = receipt.lane,
        seq = receipt.seq,
        possibly_submitted = escalation.possibly_submitted,
        "escalation enqueued (durable)"
    );
    if args.json {
        print_json(&serde_json::json!({
            "image_query_id": receipt.image_query_id,
            "request_id": receipt.request_id,
            "lane": receipt.lane,
            "seq": receipt.seq,
            "record_len_bytes": receipt.record_len_bytes,
            "possibly_submitted": escalation.possibly_submitted,
        }))?;
    } else {
        println!("{}", receipt.image_query_id);
    }
    Ok(Exit::Ok.into())
}

/// Longest `--lane-wait-ms` accepted: 10 minutes.
const LANE_WAIT_MS_MAX: u64 = 600_000;

/// Opens the queue, waiting up to `wait_ms` for a writer lane when other processes hold
/// every one (probe F27: 40 concurrent enqueues with 16 lanes failed 11 at once). A lane
/// frees up as soon as its process exits, so short-lived `enqueue` processes queue up
/// behind each other instead of failing; after `wait_ms` it is still exit 4.
fn open_waiting_for_a_lane(
    config: &Config,
    dir: &Path,
    wait_ms: u64,
) -> anyhow::Result<EscalationQueue> {
    if wait_ms > LANE_WAIT_MS_MAX {
        return Err(UsageError::new(format!(
            "--lane-wait-ms {wait_ms}: allowed: 0 to {LANE_WAIT_MS_MAX}"
        ))
        .into());
    }
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let mut pause = Duration::from_millis(5);
    let mut logged = false;
    loop {
        match EscalationQueue::open_with(dir, config.queue.clone()) {
            Err(QueueHandleError::Wal(WalError::NoFreeLane { lanes_max, .. }))
                if Instant::now() < deadline =>
            {
                if !logged {
                    tracing::info!(
                        lanes_max,
                        wait_ms,
                        "every writer lane is taken; waiting for one to free up"
                    );
                    logged = true;
                }
                // Jittered (by pid and clock), so that waiting processes do not retry in
                // lockstep.
                let jitter = jitter_up_to(pause);
                let left = deadline.saturating_duration_since(Instant::now());
                std::thread::sleep((pause + jitter).min(left));
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e @ QueueHandleError::Wal(WalError::NoFreeLane { .. })) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "no writer lane became free within --lane-wait-ms {wait_ms}"
                )))
            }
            other => return Ok(other?),
        }
    }
}

fn jitter_up_to(max: Duration) -> Duration {
    let nanos = escalation_queue::wal::clock::since_epoch().subsec_nanos();
    let seed = u64::from(nanos ^ std::process::id().wrapping_mul(2_654_435_761));
    let max_us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(seed % max_us)
}

fn build(
    args: &EnqueueArgs,
    image: Vec<u8>,
    limits: &RecordLimits,
) -> Result<Escalation, UsageError> {
    let mut esc = Escalation::new(args.detector_id.clone(), ImageSource::Inline(image.into()));
    if let Some(id) = &args.image_query_id {
        esc.image_query_id = id.clone();
    }
    if let Some(id) = &args.request_id {
        esc.request_id = id.clone();
    }
    esc.possibly_submitted = args.possibly_submitted;
    esc.confidence_threshold = args.confidence_threshold;
    esc.patience_time_s = args.patience_time;
    if let Some(review) = &args.human_review {
        let review: HumanReview = review
            .parse()
            .map_err(|e| UsageError::new(format!("--human-review: {e}")))?;
        esc.human_review = Some(review);
    }
    if let Some(json) = &args.metadata {
        let metadata = Metadata::from_json_str(json)
            .map_err(|e| UsageError::new(format!("--metadata: {e}")))?;
        esc.metadata = Some(metadata);
    }
    esc.validate_with(limits)
        .map_err(|e| UsageError::new(format!("escalation rejected: {e}")))?;
    Ok(esc)
}

/// Reads the image (or stdin for `-`), refusing more than `limit` bytes.
fn read_image(path: &Path, limit: usize) -> Result<Vec<u8>, UsageError> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut image = Vec::new();
    let (name, read) = if path == Path::new("-") {
        let read = std::io::stdin().lock().take(cap).read_to_end(&mut image);
        ("stdin".to_owned(), read)
    } else {
        let read = std::fs::File::open(path).and_then(|f| {
            // Sized once from the file's length: growing by doubling would hold up to
            // twice the image while it is read (probe F27, enqueue RSS).
            let len = f.metadata().map_or(0, |m| m.len()).min(cap);
            image.reserve_exact(usize::try_from(len).unwrap_or(0).saturating_add(1));
            f.take(cap).read_to_end(&mut image)
        });
        (path.display().to_string(), read)
    };
    read.map_err(|e| UsageError::new(format!("cannot read image {name} (--image): {e}")))?;
    if image.len() > limit {
        return Err(UsageError::new(format!(
            "image {name} (--image) is larger than queue.image_size_max_bytes = {limit}"
        )));
    }
    if image.is_empty() {
        return Err(UsageError::new(format!("image {name} (--image) is empty")));
    }
    Ok(image)
}
