//! Settling a 400 for an escalation that may have been submitted before: the cloud is asked
//! (`GET {endpoint}/v1/image-queries/{id}`) instead of guessing. 200 with the same id: an
//! earlier request delivered it (a duplicate delivery). 404: the 400 was a real rejection,
//! dead-lettered with the 400's body. Anything else (network, 5xx, 429, a wrong id): the
//! lookup is retried with the normal backoff (the auth pause for 401/403) until one of the
//! two answers comes, a stop, or the retention age. The loop is `Delivery::settle_by_lookup`.

use std::time::Instant;

use super::cloud::Cloud;
use crate::client::{DeliveryError, Lookup};
use crate::escalation::Escalation;
use crate::retry::Wait;

/// What one lookup said.
pub(super) enum Verdict {
    Delivered,
    NotFound,
    Failed(DeliveryError),
}

/// What the answer to a lookup of `esc` says.
pub(super) fn verdict(result: Result<Lookup, DeliveryError>, esc: &Escalation) -> Verdict {
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

/// The wait before the next lookup (after `failures` failed ones), by the same rule as a
/// retried submission (SEMANTICS §5): the auth pause for 401/403; else the breaker's probe
/// interval while the circuit is open, the backoff while it is closed, `Retry-After` when
/// longer. Counted as a retryable failure (breaker, outage alert).
pub(super) fn wait_after(
    cloud: &mut Cloud,
    esc: &Escalation,
    error: &DeliveryError,
    failures: u32,
) -> Wait {
    if let DeliveryError::Http {
        status: 401 | 403, ..
    } = error
    {
        return cloud.pause_for_auth(esc, error);
    }
    cloud.on_retryable_failure(error);
    let retry_after = match error {
        DeliveryError::Http { retry_after, .. } => *retry_after,
        _ => None,
    };
    let probe_in = cloud.breaker.probe_in(Instant::now());
    Wait::after_retryable_failure(probe_in, &mut cloud.backoff, failures, retry_after)
}
