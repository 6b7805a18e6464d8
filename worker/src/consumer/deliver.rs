//! Delivering the head item: attempts through the circuit breaker, classification, budget,
//! backoff, the auth pause, and dead-lettering with full context.

use std::time::{Duration, Instant};

use escalation_queue_wal::Record;

use super::Worker;
use crate::client::{AttemptContext, Delivered, DeliveryError, Destination};
use crate::dead_letter::{
    bounded, now_unix_ms, AttemptLog, AttemptRecord, DeadLetter, DeadLetterId, DeadLetterInfo,
    MESSAGE_MAX_BYTES,
};
use crate::dedupe::InFlight;
use crate::escalation::Escalation;
use crate::incidents::{IncidentDraft, IncidentKind};
use crate::layout::QueueError;
use crate::retry::{
    Admission, Classification, DeadLetterReason, ErrorClass, ItemBudget, Wait, WaitCause,
};
use crate::stats::{DeadLetterLabel, Stats};

/// How an item ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Delivered,
    DeadLettered,
    Expired,
    Duplicate,
    /// A stop came first; the item stays in the wal.
    Stopped,
}

/// The last failure of an item, as a dead letter records it.
#[derive(Clone, Debug, Default)]
pub(super) struct Failure {
    class: String,
    status: Option<u16>,
    error: String,
    excerpt: String,
}

impl Failure {
    /// A failure of the record itself (no attempt was made).
    pub(super) fn record(class: &str, error: String) -> Self {
        Self {
            class: class.to_owned(),
            error: bounded(error, MESSAGE_MAX_BYTES),
            ..Self::default()
        }
    }

    pub(super) fn delivery(error: &DeliveryError) -> Self {
        let excerpt = match error {
            DeliveryError::Http { body_excerpt, .. }
            | DeliveryError::BadResponse { body_excerpt, .. } => body_excerpt.clone(),
            _ => String::new(),
        };
        Self {
            class: ErrorClass::of(error).to_string(),
            status: error.http_status(),
            error: bounded(error.to_string(), MESSAGE_MAX_BYTES),
            excerpt,
        }
    }
}

/// Per-item state across attempts.
pub(super) struct Item {
    budget: ItemBudget,
    pub(super) log: AttemptLog,
    pub(super) retries: u32,
    previous_lost: bool,
    had_retryable_failure: bool,
}

impl Worker {
    /// Delivers `esc` (the head item) until it is delivered, dead-lettered, expired, or a
    /// stop comes. `possibly_submitted`: an earlier request for it may have reached the
    /// cloud (the restart rule, `window.rs`). Before the first request of this run the
    /// attempt is made durable in the attempt journal.
    pub(super) fn deliver(
        &mut self,
        record: &Record,
        esc: &Escalation,
        dest: &dyn Destination,
        possibly_submitted: bool,
    ) -> Result<Outcome, QueueError> {
        let mut item = Item {
            budget: ItemBudget::new(self.config.budget),
            log: AttemptLog::default(),
            retries: 0,
            previous_lost: possibly_submitted,
            had_retryable_failure: false,
        };
        loop {
            if self.stop.is_stopped() {
                return Ok(Outcome::Stopped);
            }
            let now_ms = now_unix_ms();
            let age_ms = self.item_age_ms(esc);
            Stats::set(&self.stats.oldest_pending_age_ms, age_ms);
            if age_ms >= self.config.retention_ms {
                return Ok(self.expire(esc, age_ms));
            }
            self.maybe_maintain(false)?;
            let probe = match self.breaker.admit(Instant::now()) {
                Admission::Allowed { probe } => probe,
                Admission::Wait { retry_in } => {
                    let wait = Wait::new(retry_in, self.open_circuit_cause());
                    self.wait(wait, esc, None, item.log.total())?;
                    continue;
                }
            };
            // IMPORTANT: durable before the request goes out, or a crash could hide that it
            // may have been sent (a no-op after the item's first attempt in this run).
            self.attempts.mark(record.id, &esc.image_query_id)?;
            let result = self.attempt(record, esc, dest, &mut item, probe, now_ms);
            let classification = self.classify(&result, &mut item, probe, age_ms);
            match (result, classification) {
                // "Already exists" is only believed once the cloud confirms it has the item.
                (Err(rejection), Classification::DeliveredDuplicate) => {
                    return self.settle_by_lookup(record, esc, dest, &rejection, &mut item);
                }
                (result, classification) => {
                    if let Some(outcome) =
                        self.settle(record, esc, result, classification, &mut item)?
                    {
                        return Ok(outcome);
                    }
                }
            }
        }
    }

    fn attempt(
        &mut self,
        record: &Record,
        esc: &Escalation,
        dest: &dyn Destination,
        item: &mut Item,
        probe: bool,
        at_unix_ms: u64,
    ) -> Result<Delivered, DeliveryError> {
        let number = item.log.total().saturating_add(1);
        self.current = Some(InFlight {
            lane: record.id.lane.0,
            seq: record.id.seq.0,
            response_possibly_lost: item.previous_lost,
        });
        let started = Instant::now();
        // The image is read here, with the queue's own limits (`QueueOptions::images_dir`
        // and `image_size_max_bytes`): the destination is handed bytes, never a path.
        let result = match esc.with_image_loaded(&self.options.record_limits()) {
            Ok(loaded) => dest.submit(&loaded, AttemptContext::new(number)),
            Err(source) => Err(DeliveryError::ImageUnavailable { source }),
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Stats::add(&self.stats.attempts, 1);
        self.stats.request_latency.observe_ms(elapsed_ms);
        self.summary.attempts += 1;
        let (outcome, class, http_status) = match &result {
            Ok(_) => ("delivered".to_owned(), None, None),
            Err(e) => (
                bounded(e.to_string(), MESSAGE_MAX_BYTES),
                Some(ErrorClass::of(e).to_string()),
                e.http_status(),
            ),
        };
        item.log.push(AttemptRecord {
            number,
            at_unix_ms,
            elapsed_ms,
            outcome,
            class,
            http_status,
            probe,
        });
        result
    }

    fn classify(
        &mut self,
        result: &Result<Delivered, DeliveryError>,
        item: &mut Item,
        probe: bool,
        age_ms: u64,
    ) -> Classification {
        let classification = self.config.policy.classify(result, item.previous_lost);
        // Probes and auth failures are not the item's fault: they do not use its budget.
        let charged = !probe && classification != Classification::PauseAuth;
        item.budget.record_attempt(charged);
        if let Err(e) = result {
            item.previous_lost |= e.response_possibly_lost();
            if let Some(current) = &mut self.current {
                current.response_possibly_lost = item.previous_lost;
            }
            // A 400 that may be the answer to a resubmission (a crash's expected
            // duplicates) is not a failure unless the lookup finds the cloud lacks it.
            if classification != Classification::DeliveredDuplicate {
                self.count_failure(e);
            }
        }
        item.budget.apply(classification, age_ms)
    }

    /// Acts on a classification; `Some` when the item is finished.
    fn settle(
        &mut self,
        record: &Record,
        esc: &Escalation,
        result: Result<Delivered, DeliveryError>,
        classification: Classification,
        item: &mut Item,
    ) -> Result<Option<Outcome>, QueueError> {
        let error = match (result, classification) {
            (_, c @ (Classification::Delivered | Classification::DeliveredDuplicate)) => {
                self.on_answered();
                self.on_delivered(esc, c == Classification::DeliveredDuplicate, item);
                return Ok(Some(Outcome::Delivered));
            }
            (Ok(_), _) => return Ok(Some(Outcome::Delivered)),
            (Err(error), _) => error,
        };
        match classification {
            Classification::Retry { not_before } => {
                self.on_retryable_failure(&error);
                item.had_retryable_failure = true;
                // While the circuit is open its probe interval alone governs; the per-item
                // backoff starts afresh once the circuit has closed again.
                let probe_in = self.breaker.probe_in(Instant::now());
                let wait = Wait::after_retryable_failure(
                    probe_in,
                    &mut self.backoff,
                    item.retries,
                    not_before,
                );
                item.retries = match probe_in {
                    Some(_) => 0,
                    None => item.retries.saturating_add(1),
                };
                self.wait(wait, esc, Some(&error), item.log.total())?;
                Ok(None)
            }
            Classification::PauseAuth => {
                self.on_answered();
                self.pause_for_auth(esc, &error);
                let pause = Duration::from_millis(self.config.auth_retry_interval_ms);
                let wait = Wait::new(pause, WaitCause::AuthPause);
                self.wait(wait, esc, Some(&error), item.log.total())?;
                Ok(None)
            }
            Classification::DeadLetter { reason } => {
                if self.hold_for_systemic_fault(record, esc, &reason, &error, item.log.total())? {
                    return Ok(None);
                }
                match reason {
                    DeadLetterReason::BudgetExhausted { .. } => self.on_retryable_failure(&error),
                    _ => self.on_answered(),
                }
                let failure = Failure::delivery(&error);
                self.dead_letter(record, Some(esc), reason, failure, &item.log)
                    .map(Some)
            }
            _ => Ok(Some(Outcome::Delivered)),
        }
    }

    /// Counts a failed request in the error-rate spike detector.
    pub(super) fn count_failure(&mut self, error: &DeliveryError) {
        if let Some(spike) = self.spike.record_failure(now_unix_ms()) {
            self.raise_spike(spike, error);
        }
    }

    pub(super) fn on_delivered(&mut self, esc: &Escalation, duplicate: bool, item: &Item) {
        self.end_systemic_run();
        Stats::add(&self.stats.delivered, 1);
        self.summary.delivered += 1;
        if duplicate {
            Stats::add(&self.stats.delivered_duplicates, 1);
            self.summary.delivered_duplicates += 1;
            tracing::info!(image_query_id = %esc.image_query_id, "HTTP 400, and the cloud has this image query: delivered by an earlier attempt");
        }
        let latency_ms = self.item_age_ms(esc);
        self.stats.delivery_latency.observe_ms(latency_ms);
        tracing::info!(
            image_query_id = %esc.image_query_id,
            detector_id = %esc.detector_id,
            request_id = %esc.request_id,
            attempts = item.log.total(),
            latency_ms,
            duplicate,
            "escalation delivered"
        );
        if self
            .stats
            .paused_for_auth
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!("the cloud accepts the API token again; delivery resumed");
        }
        if item.had_retryable_failure {
            self.raise_recovered(esc, &item.log);
        }
    }

    pub(super) fn on_answered(&mut self) {
        if self.breaker.state() != crate::retry::CircuitState::Closed {
            tracing::info!("the cloud answers again: circuit breaker closed");
        }
        self.breaker.record_success();
        self.unreachable_since = None;
        self.stats.set_circuit_state(self.breaker.state());
    }

    pub(super) fn on_retryable_failure(&mut self, error: &DeliveryError) {
        let now = Instant::now();
        let before = self.breaker.state();
        self.breaker.record_failure(now);
        if before != self.breaker.state()
            && self.breaker.state() == crate::retry::CircuitState::Open
        {
            tracing::info!(error = %error, "cloud unreachable: circuit breaker opened; the head item probes it");
        }
        self.stats.set_circuit_state(self.breaker.state());
        Stats::add(&self.stats.retried, 1);
        self.summary.retried += 1;
        let since = *self.unreachable_since.get_or_insert(now);
        let threshold = Duration::from_millis(self.config.incidents.unreachable_alert_ms);
        if now.duration_since(since) >= threshold {
            self.raise_unreachable(since, error);
        }
    }

    /// Appends the dead letter (retrying until it is durable or a stop comes), then counts
    /// and reports it.
    pub(super) fn dead_letter(
        &mut self,
        record: &Record,
        esc: Option<&Escalation>,
        reason: DeadLetterReason,
        failure: Failure,
        log: &AttemptLog,
    ) -> Result<Outcome, QueueError> {
        let now_ms = now_unix_ms();
        let info = DeadLetterInfo {
            id: DeadLetterId::for_record(record.id.lane.0, record.id.seq.0),
            origin_lane: record.id.lane.0,
            origin_seq: record.id.seq.0,
            enqueued_at_unix_ms: esc.map_or(record.time_ns / 1_000_000, |e| e.enqueued_at_unix_ms),
            dead_lettered_at_unix_ms: now_ms,
            detector_id: esc.map(|e| e.detector_id.clone()),
            image_query_id: esc.map(|e| e.image_query_id.clone()),
            request_id: esc.map(|e| e.request_id.clone()),
            cause: (&reason).into(),
            error_class: failure.class,
            http_status: failure.status,
            error: failure.error,
            response_excerpt: failure.excerpt,
            attempts: log.records(),
            attempts_total: log.total(),
            record_len_bytes: record.payload.len() as u64,
        };
        let entry = DeadLetter {
            info,
            record: record.payload.clone(),
        };
        loop {
            match self.dead_letters.append(&entry) {
                Ok(()) => break,
                Err(e) => {
                    self.raise_dead_letter_write_failure(&e);
                    let wait = Duration::from_millis(self.config.dead_letter_retry_ms);
                    if self.stop.sleep(wait) {
                        return Ok(Outcome::Stopped);
                    }
                }
            }
        }
        let label = DeadLetterLabel::of(&reason);
        self.stats.count_dead_letter(label);
        self.summary.dead_lettered += 1;
        self.raise_dead_lettered(&entry, label);
        Ok(Outcome::DeadLettered)
    }

    pub(super) fn pause_for_auth(&mut self, esc: &Escalation, error: &DeliveryError) {
        let was_paused = self
            .stats
            .paused_for_auth
            .swap(true, std::sync::atomic::Ordering::Relaxed);
        if !was_paused {
            tracing::error!(status = ?error.http_status(), "the cloud rejected the API token; delivery paused, retrying the head item every {} ms", self.config.auth_retry_interval_ms);
        }
        let draft = IncidentDraft::new(
            IncidentKind::AuthFailure,
            "the cloud rejects the API token: delivery is paused until it is fixed",
        )
        .error(error)
        .tried([
            format!(
                "retrying the head item ({}) every {} ms",
                esc.image_query_id, self.config.auth_retry_interval_ms
            ),
            "nothing was dead-lettered; the queue keeps every item".to_owned(),
        ])
        .details(serde_json::json!({
            "http_status": error.http_status(),
            "image_query_id": esc.image_query_id,
            "fix": "set a valid GROUNDLIGHT_API_TOKEN and restart the reader, or rotate the token",
        }));
        self.raise(draft);
    }
}
