//! Delivering the head item: [`Delivery`] holds what one item's attempts borrow and
//! [`Delivery::run`] makes them (through the circuit breaker, classification, budget,
//! backoff, the auth pause, the lookup of a possible duplicate) until the item has an
//! [`Outcome`](super::outcome::Outcome).

use std::time::Instant;

use escalation_queue_producer::RecordLimits;
use escalation_queue_wal::{Reader, Record};

use super::age::{self, FirstSeen};
use super::cloud::Cloud;
use super::lookup::{self, Verdict};
use super::outcome::{Failure, Outcome};
use super::waits;
use crate::attempts::AttemptJournal;
use crate::client::{AttemptContext, Delivered, DeliveryError, Destination};
use crate::dead_letter::{bounded, now_unix_ms, AttemptLog, AttemptRecord, MESSAGE_MAX_BYTES};
use crate::dedupe::InFlight;
use crate::escalation::Escalation;
use crate::layout::Error;
use crate::retry::{
    Admission, BudgetConfig, Classification, DeadLetterReason, ErrorClass, ErrorClassOf as _,
    ItemBudget, Wait,
};

/// The attempts of one item, the head of the queue: what they borrow from the worker and
/// what they keep across attempts.
pub(super) struct Delivery<'a> {
    pub(super) cloud: &'a mut Cloud,
    /// Read only to keep the gauges fresh during long waits.
    pub(super) reader: &'a mut Reader,
    pub(super) journal: &'a mut AttemptJournal,
    /// What a stop leaves in flight, once an attempt is made.
    pub(super) current: &'a mut Option<InFlight>,
    pub(super) limits: RecordLimits,
    pub(super) first_seen: Option<FirstSeen>,
    pub(super) record: &'a Record,
    pub(super) esc: &'a Escalation,
    pub(super) dest: &'a dyn Destination,
    pub(super) item: Item,
}

/// What one item keeps across its attempts.
pub(super) struct Item {
    budget: ItemBudget,
    log: AttemptLog,
    retries: u32,
    previous_lost: bool,
    had_retryable_failure: bool,
}

impl Item {
    /// A fresh item. `possibly_submitted`: an earlier request for it may have reached the
    /// cloud (the restart rule, `window.rs`).
    pub(super) fn new(budget: BudgetConfig, possibly_submitted: bool) -> Self {
        Self {
            budget: ItemBudget::new(budget),
            log: AttemptLog::default(),
            retries: 0,
            previous_lost: possibly_submitted,
            had_retryable_failure: false,
        }
    }
}

impl Delivery<'_> {
    /// Attempts the item until it is delivered, dead-lettered, expired, or a stop comes.
    /// Before the first request of this run the attempt is made durable in the attempt
    /// journal.
    pub(super) fn run(mut self) -> Result<Outcome, Error> {
        loop {
            if self.cloud.stop.is_stopped() {
                return Ok(Outcome::Stopped);
            }
            let now_ms = now_unix_ms();
            let age_ms = self.age_ms();
            crate::stats::Stats::set(&self.cloud.stats.oldest_pending_age_ms, age_ms);
            if age_ms >= self.cloud.config.retention_ms {
                return Ok(self.cloud.expire(self.esc, age_ms));
            }
            self.cloud.maybe_maintain(self.reader);
            let probe = match self.cloud.breaker.admit(Instant::now()) {
                Admission::Allowed { probe } => probe,
                Admission::Wait { retry_in } => {
                    let wait = Wait::new(retry_in, self.cloud.open_circuit_cause());
                    self.wait(wait, None);
                    continue;
                }
            };
            // IMPORTANT: durable before the request goes out, or a crash could hide that it
            // may have been sent (a no-op after the item's first attempt in this run).
            self.journal
                .mark(self.record.id, &self.esc.image_query_id)?;
            let result = self.attempt(probe, now_ms);
            let classification = self.classify(&result, probe, age_ms);
            let outcome = match (result, classification) {
                // "Already exists" is only believed once the cloud confirms it has the item.
                (Err(rejection), Classification::DeliveredDuplicate) => {
                    Some(self.settle_by_lookup(&rejection))
                }
                (result, classification) => self.settle(result, classification),
            };
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
        }
    }

    /// The item's age for expiry, budgets and gauges (`age.rs`).
    fn age_ms(&self) -> u64 {
        age::item_age_ms(self.first_seen, self.esc)
    }

    fn wait(&mut self, wait: Wait, error: Option<&DeliveryError>) {
        let attempts = self.item.log.total();
        waits::wait(self.cloud, self.reader, wait, self.esc, error, attempts);
    }

    fn attempt(&mut self, probe: bool, at_unix_ms: u64) -> Result<Delivered, DeliveryError> {
        let number = self.item.log.total().saturating_add(1);
        *self.current = Some(InFlight {
            lane: self.record.id.lane.0,
            seq: self.record.id.seq.0,
            response_possibly_lost: self.item.previous_lost,
        });
        let started = Instant::now();
        // The image is read here, with the queue's own limits (`QueueOptions::images_dir`
        // and `image_size_max_bytes`): the destination is handed bytes, never a path.
        let result = match self.esc.with_image_loaded(&self.limits) {
            Ok(loaded) => self.dest.submit(&loaded, AttemptContext::new(number)),
            Err(source) => Err(DeliveryError::ImageUnavailable { source }),
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        crate::stats::Stats::add(&self.cloud.stats.attempts, 1);
        self.cloud.stats.request_latency.observe_ms(elapsed_ms);
        let (outcome, class, http_status) = match &result {
            Ok(_) => ("delivered".to_owned(), None, None),
            Err(e) => (
                bounded(e.to_string(), MESSAGE_MAX_BYTES),
                Some(ErrorClass::of(e).to_string()),
                e.http_status(),
            ),
        };
        self.item.log.push(AttemptRecord {
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
        probe: bool,
        age_ms: u64,
    ) -> Classification {
        let classification = self
            .cloud
            .config
            .policy
            .classify(result, self.item.previous_lost);
        // Probes and auth failures are not the item's fault: they do not use its budget.
        let charged = !probe && classification != Classification::PauseAuth;
        self.item.budget.record_attempt(charged);
        if let Err(e) = result {
            self.item.previous_lost |= e.response_possibly_lost();
            if let Some(current) = self.current.as_mut() {
                current.response_possibly_lost = self.item.previous_lost;
            }
            // A 400 that may be the answer to a resubmission (a crash's expected
            // duplicates) is not a failure unless the lookup finds the cloud lacks it.
            if classification != Classification::DeliveredDuplicate {
                self.cloud.count_failure(e);
            }
        }
        self.item.budget.apply(classification, age_ms)
    }

    /// Acts on a classification; `Some` when the item is finished.
    fn settle(
        &mut self,
        result: Result<Delivered, DeliveryError>,
        classification: Classification,
    ) -> Option<Outcome> {
        let error = match (result, classification) {
            (_, c @ (Classification::Delivered | Classification::DeliveredDuplicate)) => {
                self.cloud.on_answered();
                return Some(self.delivered(c == Classification::DeliveredDuplicate));
            }
            (Ok(_), _) => return Some(Outcome::Delivered),
            (Err(error), _) => error,
        };
        match classification {
            Classification::Retry { not_before } => {
                self.cloud.on_retryable_failure(&error);
                self.item.had_retryable_failure = true;
                // While the circuit is open its probe interval alone governs; the per-item
                // backoff starts afresh once the circuit has closed again.
                let probe_in = self.cloud.breaker.probe_in(Instant::now());
                let wait = Wait::after_retryable_failure(
                    probe_in,
                    &mut self.cloud.backoff,
                    self.item.retries,
                    not_before,
                );
                self.item.retries = match probe_in {
                    Some(_) => 0,
                    None => self.item.retries.saturating_add(1),
                };
                self.wait(wait, Some(&error));
                None
            }
            Classification::PauseAuth => {
                self.cloud.on_answered();
                let wait = self.cloud.pause_for_auth(self.esc, &error);
                self.wait(wait, Some(&error));
                None
            }
            Classification::DeadLetter { reason } => {
                if let Some(wait) = self
                    .cloud
                    .systemic_hold(self.record, self.esc, &reason, &error)
                {
                    self.wait(wait, Some(&error));
                    return None;
                }
                if reason.is_budget_exhausted() {
                    self.cloud.on_retryable_failure(&error);
                } else {
                    self.cloud.on_answered();
                }
                Some(self.dead_letter(reason, &error))
            }
            _ => Some(Outcome::Delivered),
        }
    }

    /// Settles `rejection` (a 400 for an item that may have been submitted before) by
    /// asking the cloud whether it has the item (`lookup.rs`).
    fn settle_by_lookup(&mut self, rejection: &DeliveryError) -> Outcome {
        let mut failures = 0_u32;
        loop {
            if self.cloud.stop.is_stopped() {
                return Outcome::Stopped;
            }
            let age_ms = self.age_ms();
            if age_ms >= self.cloud.config.retention_ms {
                return self.cloud.expire(self.esc, age_ms);
            }
            self.cloud.maybe_maintain(self.reader);
            let esc = self.esc;
            match lookup::verdict(self.dest.lookup(&esc.image_query_id), esc) {
                Verdict::Delivered => {
                    self.cloud.on_answered();
                    return self.delivered(true);
                }
                Verdict::NotFound => {
                    self.cloud.on_answered();
                    self.cloud.count_failure(rejection);
                    tracing::info!(image_query_id = %esc.image_query_id, detector_id = %esc.detector_id, "HTTP 400, and the cloud does not have this image query: a real rejection");
                    let reason = DeadLetterReason::Rejected {
                        class: ErrorClass::of(rejection),
                        status: rejection.http_status(),
                    };
                    return self.dead_letter(reason, rejection);
                }
                Verdict::Failed(error) => {
                    tracing::info!(
                        image_query_id = %esc.image_query_id,
                        error = %error,
                        lookups_failed = failures.saturating_add(1),
                        "could not ask the cloud whether it has this image query (after HTTP 400); asking again"
                    );
                    let wait = lookup::wait_after(self.cloud, esc, &error, failures);
                    failures = failures.saturating_add(1);
                    self.wait(wait, Some(&error));
                }
            }
        }
    }

    fn delivered(&mut self, duplicate: bool) -> Outcome {
        let latency_ms = self.age_ms();
        let recovered = self.item.had_retryable_failure;
        self.cloud
            .on_delivered(self.esc, duplicate, &self.item.log, recovered, latency_ms);
        Outcome::Delivered
    }

    fn dead_letter(&mut self, reason: DeadLetterReason, error: &DeliveryError) -> Outcome {
        let failure = Failure::delivery(error);
        self.cloud
            .dead_letter(self.record, Some(self.esc), reason, failure, &self.item.log)
    }
}
