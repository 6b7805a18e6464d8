//! Settling a 400 for an escalation that may have been submitted before: the cloud is asked
//! (`GET {endpoint}/v1/image-queries/{id}`) instead of guessing. 200 with the same id: an
//! earlier request delivered it (a duplicate delivery). 404: the 400 was a real rejection,
//! dead-lettered with the 400's body. Anything else (network, 5xx, 429, a wrong id): the
//! lookup is retried with the normal backoff (the auth pause for 401/403) until one of the
//! two answers comes, a stop, or the retention age.

use std::time::{Duration, Instant};

use escalation_queue_wal::Record;

use super::deliver::{Failure, Item, Outcome};
use super::Worker;
use crate::client::{DeliveryError, Destination, Lookup};
use crate::escalation::Escalation;
use crate::layout::QueueError;
use crate::retry::{DeadLetterReason, ErrorClass, Wait, WaitCause};

/// What one lookup said.
enum Verdict {
    Delivered,
    NotFound,
    Failed(DeliveryError),
}

impl Worker {
    /// Settles `rejection` (the 400) for `esc`, which may have been submitted before.
    pub(super) fn settle_by_lookup(
        &mut self,
        record: &Record,
        esc: &Escalation,
        dest: &dyn Destination,
        rejection: &DeliveryError,
        item: &mut Item,
    ) -> Result<Outcome, QueueError> {
        let mut failures = 0_u32;
        loop {
            if self.stop.is_stopped() {
                return Ok(Outcome::Stopped);
            }
            let age_ms = self.item_age_ms(esc);
            if age_ms >= self.config.retention_ms {
                return Ok(self.expire(esc, age_ms));
            }
            self.maybe_maintain(false)?;
            match verdict(dest.lookup(&esc.image_query_id), esc) {
                Verdict::Delivered => {
                    self.on_answered();
                    self.on_delivered(esc, true, item);
                    return Ok(Outcome::Delivered);
                }
                Verdict::NotFound => {
                    self.on_answered();
                    self.count_failure(rejection);
                    tracing::info!(image_query_id = %esc.image_query_id, detector_id = %esc.detector_id, "HTTP 400, and the cloud does not have this image query: a real rejection");
                    let reason = DeadLetterReason::Rejected {
                        class: ErrorClass::of(rejection),
                        status: rejection.http_status(),
                    };
                    let failure = Failure::delivery(rejection);
                    return self.dead_letter(record, Some(esc), reason, failure, &item.log);
                }
                Verdict::Failed(error) => {
                    tracing::info!(
                        image_query_id = %esc.image_query_id,
                        error = %error,
                        lookups_failed = failures.saturating_add(1),
                        "could not ask the cloud whether it has this image query (after HTTP 400); asking again"
                    );
                    let wait = self.lookup_wait(esc, &error, failures);
                    failures = failures.saturating_add(1);
                    self.wait(wait, esc, Some(&error), item.log.total())?;
                }
            }
        }
    }

    /// The wait before the next lookup, by the same rule as a retried submission (SEMANTICS
    /// §5): the auth pause for 401/403; else the breaker's probe interval while the circuit
    /// is open, the backoff while it is closed, `Retry-After` when longer. Counted as a
    /// retryable failure (breaker, outage alert).
    fn lookup_wait(&mut self, esc: &Escalation, error: &DeliveryError, failures: u32) -> Wait {
        if let DeliveryError::Http {
            status: 401 | 403, ..
        } = error
        {
            self.pause_for_auth(esc, error);
            let pause = Duration::from_millis(self.config.auth_retry_interval_ms);
            return Wait::new(pause, WaitCause::AuthPause);
        }
        self.on_retryable_failure(error);
        let retry_after = match error {
            DeliveryError::Http { retry_after, .. } => *retry_after,
            _ => None,
        };
        let probe_in = self.breaker.probe_in(Instant::now());
        Wait::after_retryable_failure(probe_in, &mut self.backoff, failures, retry_after)
    }
}

fn verdict(result: Result<Lookup, DeliveryError>, esc: &Escalation) -> Verdict {
    match result {
        Ok(Lookup::Found(found)) if found.id == esc.image_query_id => Verdict::Delivered,
        Ok(Lookup::Found(found)) => Verdict::Failed(DeliveryError::WrongImageQuery {
            status: 200,
            sent: esc.image_query_id.clone(),
            got: found.id,
        }),
        Ok(Lookup::NotFound) => Verdict::NotFound,
        Err(error) => Verdict::Failed(error),
    }
}
