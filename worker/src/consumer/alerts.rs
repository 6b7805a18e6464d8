//! The worker's incidents: what triggers each, and the context it carries.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use escalation_queue_wal::{Error as WalError, Event};

use super::Worker;
use crate::client::DeliveryError;
use crate::dead_letter::{now_unix_ms, AttemptLog, DeadLetter};
use crate::escalation::Escalation;
use crate::incidents::{IncidentContext, IncidentDraft, IncidentKind, Raised, Spike};
use crate::layout::QueueError;
use crate::stats::{DeadLetterLabel, Stats};

impl Worker {
    /// The system state attached to every incident.
    pub(super) fn context(&self) -> IncidentContext {
        IncidentContext {
            queue_depth: self.stats.queue_depth.load(Relaxed),
            oldest_pending_age_ms: self.stats.oldest_pending_age_ms.load(Relaxed),
            circuit_state: self.breaker.state().as_str().to_owned(),
            paused_for_auth: self.stats.paused_for_auth.load(Relaxed),
            config: self.config_view.clone(),
        }
    }

    pub(super) fn raise(&self, draft: IncidentDraft) {
        let raised = self.incidents.raise(draft, self.context(), now_unix_ms());
        if matches!(raised, Raised::New(_)) {
            Stats::add(&self.stats.incidents, 1);
        }
    }

    /// Reports what the wal found: corruption, gaps and cursors past the end are CRITICAL;
    /// records deleted by retention are counted as expired.
    pub(super) fn report_wal_events(&mut self) {
        for event in self.reader.take_events() {
            let (subject, title) = match &event {
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
                Event::Expired { records, .. } => {
                    Stats::add(&self.stats.expired, *records);
                    self.summary.expired += records;
                    continue;
                }
                Event::TornTail { .. } | Event::IncompleteSegmentRemoved { .. } => {
                    tracing::info!(?event, "wal recovery");
                    continue;
                }
            };
            let draft = IncidentDraft::new(IncidentKind::Corruption, title)
                .subject(subject)
                .error(format!("{event:?}"))
                .tried([
                    "the wal quarantined the damage and continued with the next valid record"
                        .to_owned(),
                ])
                .details(serde_json::json!({ "event": format!("{event:?}") }));
            self.raise(draft);
        }
    }

    /// The HIGH threshold that is a gauge: the head item's age.
    pub(super) fn check_thresholds(&self) {
        let age_ms = self.stats.oldest_pending_age_ms.load(Relaxed);
        let threshold_ms = self.config.incidents.oldest_pending_alert_ms;
        if age_ms >= threshold_ms {
            let draft = IncidentDraft::new(
                IncidentKind::BacklogTooOld,
                "the oldest pending escalation has waited longer than the threshold",
            )
            .tried(["delivery continues; see circuit state and recent errors".to_owned()])
            .details(serde_json::json!({ "age_ms": age_ms, "threshold_ms": threshold_ms }));
            self.raise(draft);
        }
    }

    pub(super) fn raise_unreachable(&self, since: Instant, error: &DeliveryError) {
        let down_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
        let draft = IncidentDraft::new(
            IncidentKind::CloudUnreachable,
            "the cloud has not accepted a delivery for longer than the threshold",
        )
        .error(error)
        .tried([
            format!(
                "retried with backoff (cap {} ms)",
                self.config.backoff.delay_max_ms
            ),
            "the circuit breaker probes with the head item".to_owned(),
        ])
        .details(serde_json::json!({
            "unreachable_ms": down_ms,
            "threshold_ms": self.config.incidents.unreachable_alert_ms,
            "consecutive_failures": self.breaker.consecutive_failures(),
        }));
        self.raise(draft);
    }

    pub(super) fn raise_spike(&self, spike: Spike, error: &DeliveryError) {
        let draft = IncidentDraft::new(
            IncidentKind::ErrorRateSpike,
            "delivery failures per minute are above 10x their moving baseline",
        )
        .error(error)
        .tried(["failed attempts are retried or dead-lettered by the policy".to_owned()])
        .details(serde_json::json!({
            "failures_in_bucket": spike.failures,
            "baseline_per_bucket": spike.baseline,
            "spike": self.config.incidents.spike,
        }));
        self.raise(draft);
    }

    pub(super) fn raise_recovered(&self, esc: &Escalation, log: &AttemptLog) {
        let classes: Vec<String> = log.records().into_iter().filter_map(|a| a.class).collect();
        let draft = IncidentDraft::new(
            IncidentKind::TransientRecovered,
            "an escalation was delivered after transient errors",
        )
        .tried([format!("{} attempts", log.total())])
        .details(serde_json::json!({
            "image_query_id": esc.image_query_id,
            "attempts": log.total(),
            "error_classes": classes,
        }));
        self.raise(draft);
    }

    pub(super) fn raise_dead_lettered(&self, entry: &DeadLetter, label: DeadLetterLabel) {
        let info = &entry.info;
        let draft = IncidentDraft::new(
            IncidentKind::DeadLettered,
            format!("an escalation was dead-lettered: {}", info.cause),
        )
        .subject(label.as_str())
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
        }));
        tracing::warn!(id = %info.id, image_query_id = ?info.image_query_id, cause = %info.cause, "escalation dead-lettered");
        self.raise(draft);
    }

    pub(super) fn raise_dead_letter_write_failure(&self, error: &QueueError) {
        let kind = storage_kind(error);
        let draft = IncidentDraft::new(
            kind,
            "the dead-letter queue cannot be written; the item stays at the head of the queue",
        )
        .subject("dead-letter")
        .error(error)
        .tried([format!(
            "retrying every {} ms; nothing is acknowledged until the dead letter is durable",
            self.config.dead_letter_retry_ms
        )]);
        self.raise(draft);
    }

    pub(super) fn raise_storage_failure(&self, title: &str, error: &WalError) {
        let kind = match error {
            WalError::NoSpace { .. } | WalError::QueueFull { .. } => IncidentKind::DiskFull,
            _ => IncidentKind::WriterPoisoned,
        };
        let draft = IncidentDraft::new(kind, title)
            .subject("worker cursor")
            .error(error)
            .tried(["the worker stops; restart it to recover the queue".to_owned()]);
        self.raise(draft);
    }
}

/// The CRITICAL kind of a storage failure.
pub(crate) fn storage_kind(error: &QueueError) -> IncidentKind {
    match error {
        QueueError::Wal(WalError::NoSpace { .. } | WalError::QueueFull { .. }) => {
            IncidentKind::DiskFull
        }
        QueueError::Wal(WalError::Io { source, .. })
            if escalation_queue_wal::is_storage_full(source) =>
        {
            IncidentKind::DiskFull
        }
        _ => IncidentKind::WriterPoisoned,
    }
}
