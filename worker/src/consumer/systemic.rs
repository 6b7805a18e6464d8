//! The systemic-rejection rule in the worker (`retry::SystemicRejects`): a run of the same
//! non-retryable answer across escalations pauses delivery with a CRITICAL incident and
//! probes with the head item at the breaker's interval, instead of dead-lettering it
//! (applied by `Cloud::systemic_hold`). Here: the incident that says so.

use crate::client::DeliveryError;
use crate::escalation::Escalation;
use crate::incidents::{IncidentDraft, IncidentKind};
use crate::retry::RejectedItem;
use crate::WorkerConfig;

/// The CRITICAL incident for a run of `status` rejections (`run`, oldest first; all but
/// the last were dead-lettered before the run was recognised; the last is `esc`).
pub(super) fn rejection_run(
    run: &[RejectedItem],
    status: u16,
    esc: &Escalation,
    error: &DeliveryError,
    config: &WorkerConfig,
) -> IncidentDraft {
    let mut detectors: Vec<&str> = run.iter().map(|i| i.detector_id.as_str()).collect();
    detectors.sort_unstable();
    detectors.dedup();
    let dead_lettered: Vec<&str> = run
        .iter()
        .take(run.len().saturating_sub(1))
        .map(|i| i.dead_letter_id.as_str())
        .collect();
    let excerpt = match error {
        DeliveryError::Http { body_excerpt, .. } => body_excerpt.as_str(),
        _ => "",
    };
    tracing::error!(status, escalations = run.len(), ?detectors, "the cloud answers HTTP {status} to one escalation after another: delivery paused as a systemic fault; nothing more is dead-lettered");
    IncidentDraft::new(
        IncidentKind::SystemicRejection,
        format!(
            "{} escalations in a row were rejected with HTTP {status}: delivery is paused instead of dead-lettering the queue",
            run.len()
        ),
    )
    .subject(status.to_string())
    .error(error)
    .tried([
        format!(
            "the first {} were dead-lettered before the run was recognised",
            dead_lettered.len()
        ),
        format!(
            "the head item ({}) probes every {} ms at most; any other answer resumes delivery",
            esc.image_query_id, config.breaker.cool_down_max_ms
        ),
    ])
    .details(serde_json::json!({
        "http_status": status,
        "threshold": config.systemic_reject_threshold,
        "detectors": detectors,
        "dead_lettered": dead_lettered,
        "response_excerpt": excerpt,
        "fix": "check the endpoint (GROUNDLIGHT_ENDPOINT / client.endpoint) and its path; then replay the dead letters above with `escalation-queue dlq replay --id ID`. If the cloud really rejects these escalations, set worker.systemic_reject_threshold = 0 and restart to dead-letter them",
    }))
}
