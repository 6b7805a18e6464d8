//! `enqueue`: one escalation from the command line. Prints the image query id only once
//! the record is durable (the default durability syncs before returning).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use escalation_queue::worker::{Metadata, RecordLimits};
use escalation_queue::{Escalation, EscalationQueue, HumanReview, ImageSource};

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
    let queue = EscalationQueue::open_with(dir, config.queue.clone())
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
        let read = std::fs::File::open(path).and_then(|f| f.take(cap).read_to_end(&mut image));
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
