//! The systemic-rejection rule in the worker (`retry::SystemicRejects`): a run of the same
//! non-retryable answer across escalations pauses delivery with a CRITICAL incident and
//! probes with the head item at the breaker's interval, instead of dead-lettering it.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use escalation_queue_wal::Record;

use super::Worker;
use crate::client::DeliveryError;
use crate::dead_letter::DeadLetterId;
use crate::escalation::Escalation;
use crate::incidents::{IncidentDraft, IncidentKind};
use crate::layout::QueueError;
use crate::retry::{DeadLetterReason, RejectVerdict, RejectedItem, Wait, WaitCause};
use crate::stats::Stats;

impl Worker {
    /// Applies the rule to a rejection the policy would dead-letter for `reason`. True
    /// when the item is held instead (delivery paused; the wait before the probe is done).
    pub(super) fn hold_for_systemic_fault(
        &mut self,
        record: &Record,
        esc: &Escalation,
        reason: &DeadLetterReason,
        error: &DeliveryError,
        attempts: u32,
    ) -> Result<bool, QueueError> {
        let DeadLetterReason::Rejected {
            status: Some(status),
            ..
        } = *reason
        else {
            return Ok(false);
        };
        let item = RejectedItem {
            dead_letter_id: DeadLetterId::for_record(record.id.lane.0, record.id.seq.0).to_string(),
            detector_id: esc.detector_id.clone(),
        };
        let before = self.systemic.fault();
        let tripped_now = match self.systemic.on_rejected(status, item) {
            RejectVerdict::DeadLetter => {
                if let Some(old) = before {
                    self.systemic_fault_ended(old, Some(status));
                }
                return Ok(false);
            }
            RejectVerdict::Hold { tripped_now } => tripped_now,
        };
        let now = Instant::now();
        self.breaker.trip(now);
        self.stats.set_circuit_state(self.breaker.state());
        self.stats.systemic_fault_status.store(status, Relaxed);
        Stats::add(&self.stats.retried, 1);
        self.summary.retried += 1;
        if tripped_now {
            self.raise_systemic_rejection(status, esc, error);
        }
        let probe_in = self.breaker.probe_in(now).unwrap_or_default();
        let wait = Wait::new(probe_in, WaitCause::SystemicFault);
        self.wait(wait, esc, Some(error), attempts)?;
        Ok(true)
    }

    /// An escalation was accepted: any run of rejections is over.
    pub(super) fn end_systemic_run(&mut self) {
        if let Some(status) = self.systemic.on_accepted() {
            self.systemic_fault_ended(status, None);
        }
    }

    fn systemic_fault_ended(&mut self, status: u16, now_answered: Option<u16>) {
        self.stats.systemic_fault_status.store(0, Relaxed);
        tracing::warn!(
            status,
            now_answered,
            "the cloud no longer answers HTTP {status} to everything: systemic fault over, delivery resumed"
        );
    }

    fn raise_systemic_rejection(&self, status: u16, esc: &Escalation, error: &DeliveryError) {
        let run = self.systemic.run();
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
        let draft = IncidentDraft::new(
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
                esc.image_query_id, self.config.breaker.cool_down_max_ms
            ),
        ])
        .details(serde_json::json!({
            "http_status": status,
            "threshold": self.config.systemic_reject_threshold,
            "detectors": detectors,
            "dead_lettered": dead_lettered,
            "response_excerpt": excerpt,
            "fix": "check the endpoint (GROUNDLIGHT_ENDPOINT / client.endpoint) and its path; then replay the dead letters above with `escalation-queue dlq replay --id ID`. If the cloud really rejects these escalations, set worker.systemic_reject_threshold = 0 and restart to dead-letter them",
        }));
        self.raise(draft);
    }
}
