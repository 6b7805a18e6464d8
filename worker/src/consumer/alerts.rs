//! The worker's incidents: what each says and the context it carries. Free functions that
//! build a draft from what they are given; [`Cloud::raise`](super::cloud::Cloud::raise)
//! attaches the system state and raises it.

use std::time::Instant;

use escalation_queue_wal::{Error as WalError, Event};

use crate::client::DeliveryError;
use crate::dead_letter::{AttemptLog, DeadLetter};
use crate::escalation::Escalation;
use crate::incidents::{IncidentDraft, IncidentKind};
use crate::layout::Error;
use crate::WorkerConfig;

/// The incident for a wal event: corruption, gaps and cursors past the end are CRITICAL;
/// `None` for the events that are not incidents (retention, recovery of a torn tail).
pub(super) fn wal_event(event: &Event) -> Option<IncidentDraft> {
    let (subject, title) = match event {
        Event::Corruption { corruption, .. } => (
            corruption.to_string(),
            "the main wal has damaged records; they were quarantined and reading continued",
        ),
        Event::Gap {
            lane,
            expected,
            found,
        } => (
            format!("{lane} gap {}..{}", expected.0, found.0),
            "records are missing from a lane of the main wal",
        ),
        Event::CursorPastEnd { lane, .. } => (
            format!("{lane} cursor past end"),
            "the worker's cursor pointed past the recovered end of a lane (data lost in a power failure or deleted)",
        ),
        Event::Expired { .. } => return None,
        Event::TornTail { .. } | Event::IncompleteSegmentRemoved { .. } => {
            tracing::info!(?event, "wal recovery");
            return None;
        }
    };
    let draft = IncidentDraft::new(IncidentKind::Corruption, title)
        .subject(subject)
        .error(format!("{event:?}"))
        .tried([
            "the wal quarantined the damage and continued with the next valid record".to_owned(),
        ])
        .details(serde_json::json!({ "event": format!("{event:?}") }));
    Some(draft)
}

/// The HIGH threshold that is a gauge: the head item's age, when over the threshold.
pub(super) fn backlog_too_old(age_ms: u64, config: &WorkerConfig) -> Option<IncidentDraft> {
    let threshold_ms = config.incidents.oldest_pending_alert_ms;
    (age_ms >= threshold_ms).then(|| {
        IncidentDraft::new(
            IncidentKind::BacklogTooOld,
            "the oldest pending escalation has waited longer than the threshold",
        )
        .tried(["delivery continues; see circuit state and recent errors".to_owned()])
        .details(serde_json::json!({ "age_ms": age_ms, "threshold_ms": threshold_ms }))
    })
}

pub(super) fn expired(esc: &Escalation, age_ms: u64, config: &WorkerConfig) -> IncidentDraft {
    IncidentDraft::new(
        IncidentKind::Expired,
        "an escalation was older than the retention age before it could be delivered; dropped",
    )
    .tried(["delivery was retried until the retention age".to_owned()])
    .details(serde_json::json!({
        "image_query_id": esc.image_query_id,
        "detector_id": esc.detector_id,
        "age_ms": age_ms,
        "retention_ms": config.retention_ms,
        "enqueued_at_unix_ms": esc.enqueued_at_unix_ms,
    }))
}

pub(super) fn unreachable(
    since: Instant,
    error: &DeliveryError,
    consecutive_failures: u32,
    config: &WorkerConfig,
) -> IncidentDraft {
    let down_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
    IncidentDraft::new(
        IncidentKind::CloudUnreachable,
        "the cloud has not accepted a delivery for longer than the threshold",
    )
    .error(error)
    .tried([
        format!(
            "retried with backoff (cap {} ms)",
            config.backoff.delay_max_ms
        ),
        "the circuit breaker probes with the head item".to_owned(),
    ])
    .details(serde_json::json!({
        "unreachable_ms": down_ms,
        "threshold_ms": config.incidents.unreachable_alert_ms,
        "consecutive_failures": consecutive_failures,
    }))
}

pub(super) fn spike(
    spike: crate::incidents::Spike,
    error: &DeliveryError,
    config: &WorkerConfig,
) -> IncidentDraft {
    IncidentDraft::new(
        IncidentKind::ErrorRateSpike,
        "delivery failures per minute are above 10x their moving baseline",
    )
    .error(error)
    .tried(["failed attempts are retried or dead-lettered by the policy".to_owned()])
    .details(serde_json::json!({
        "failures_in_bucket": spike.failures,
        "baseline_per_bucket": spike.baseline,
        "spike": config.incidents.spike,
    }))
}

pub(super) fn recovered(esc: &Escalation, log: &AttemptLog) -> IncidentDraft {
    let classes: Vec<String> = log.records().into_iter().filter_map(|a| a.class).collect();
    IncidentDraft::new(
        IncidentKind::TransientRecovered,
        "an escalation was delivered after transient errors",
    )
    .tried([format!("{} attempts", log.total())])
    .details(serde_json::json!({
        "image_query_id": esc.image_query_id,
        "attempts": log.total(),
        "error_classes": classes,
    }))
}

pub(super) fn auth_failure(
    esc: &Escalation,
    error: &DeliveryError,
    config: &WorkerConfig,
) -> IncidentDraft {
    IncidentDraft::new(
        IncidentKind::AuthFailure,
        "the cloud rejects the API token: delivery is paused until it is fixed",
    )
    .error(error)
    .tried([
        format!(
            "retrying the head item ({}) every {} ms",
            esc.image_query_id, config.auth_retry_interval_ms
        ),
        "nothing was dead-lettered; the queue keeps every item".to_owned(),
    ])
    .details(serde_json::json!({
        "http_status": error.http_status(),
        "image_query_id": esc.image_query_id,
        "fix": "set a valid GROUNDLIGHT_API_TOKEN and restart the reader, or rotate the token",
    }))
}

/// The incident for a dead letter; its subject is the reason's label.
pub(super) fn dead_lettered(entry: &DeadLetter) -> IncidentDraft {
    let info = &entry.info;
    tracing::warn!(id = %info.id, image_query_id = ?info.image_query_id, cause = %info.cause, "escalation dead-lettered");
    IncidentDraft::new(
        IncidentKind::DeadLettered,
        format!("an escalation was dead-lettered: {}", info.cause),
    )
    .subject(info.cause.label())
    .error(&info.error)
    .tried([format!("{} attempts", info.attempts_total)])
    .details(serde_json::json!({
        "dead_letter_id": info.id,
        "image_query_id": info.image_query_id,
        "cause": info.cause,
        "http_status": info.http_status,
        "response_excerpt": info.response_excerpt,
        "attempts": info.attempts,
        "replay": format!("escalation-queue dlq replay {}", info.id),
    }))
}

pub(super) fn dead_letter_write_failure(error: &Error, config: &WorkerConfig) -> IncidentDraft {
    IncidentDraft::new(
        storage_kind(error),
        "the dead-letter queue cannot be written; the item stays at the head of the queue",
    )
    .subject("dead-letter")
    .error(error)
    .tried([format!(
        "retrying every {} ms; nothing is acknowledged until the dead letter is durable",
        config.dead_letter_retry_ms
    )])
}

pub(super) fn storage_failure(title: &str, error: &WalError) -> IncidentDraft {
    let kind = match error {
        WalError::NoSpace { .. } | WalError::QueueFull { .. } => IncidentKind::DiskFull,
        _ => IncidentKind::WriterPoisoned,
    };
    IncidentDraft::new(kind, title)
        .subject("worker cursor")
        .error(error)
        .tried(["the worker stops; restart it to recover the queue".to_owned()])
}

/// The CRITICAL kind of a storage failure.
fn storage_kind(error: &Error) -> IncidentKind {
    match error {
        Error::Wal(WalError::NoSpace { .. } | WalError::QueueFull { .. }) => IncidentKind::DiskFull,
        Error::Wal(WalError::Io { source, .. })
            if escalation_queue_wal::is_storage_full(source) =>
        {
            IncidentKind::DiskFull
        }
        _ => IncidentKind::WriterPoisoned,
    }
}
