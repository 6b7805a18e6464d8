//! Maps an attempt's result to what happens to the item next (the decision table, docs/SEMANTICS.md §3).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::class::{ErrorClass, ErrorClassOf as _};
use super::DeadLetterReason;
use crate::client::{Delivered, DeliveryError};

/// What a policy row says to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyAction {
    /// Keep the item and try again after a backoff.
    Retry,
    /// Stop delivering and raise a CRITICAL incident; the item stays queued.
    PauseAuth,
    /// Move the item to the dead-letter queue.
    DeadLetter,
    /// Count the item as delivered by an earlier attempt.
    DeliveredDuplicate,
}

/// What happens to an item after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classification {
    /// The cloud accepted it.
    Delivered,
    /// A 400 after an earlier attempt whose response was lost: the cloud already has it.
    DeliveredDuplicate,
    /// Try again, not before `not_before` (the server's `Retry-After`) when given.
    Retry {
        /// The server-requested delay.
        not_before: Option<Duration>,
    },
    /// The token was rejected: pause delivery and raise a CRITICAL incident. Never dead-letter.
    PauseAuth,
    /// Give up on the item.
    DeadLetter {
        /// Why.
        reason: DeadLetterReason,
    },
}

impl Classification {
    /// Whether the item is done (delivered or duplicate).
    pub fn is_delivered(&self) -> bool {
        matches!(self, Self::Delivered | Self::DeliveredDuplicate)
    }

    /// Whether this counts as a failure for the [`CircuitBreaker`](super::CircuitBreaker):
    /// only retryable outcomes do; any other answer shows the cloud is reachable.
    pub fn is_breaker_failure(&self) -> bool {
        matches!(self, Self::Retry { .. })
    }
}

/// The classification table, one field per row; [`Default`] is docs/SEMANTICS.md §3. Deserializes
/// from a config table in which missing rows keep their default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassificationPolicy {
    /// Refused, DNS, reset, TLS, socket errors, malformed HTTP. Default `Retry`.
    pub network: PolicyAction,
    /// Connect, send and read timeouts. Default `Retry`.
    pub timeout: PolicyAction,
    /// HTTP 429 (the `Retry-After` is honoured). Default `Retry`.
    pub too_many_requests: PolicyAction,
    /// HTTP 5xx. Default `Retry` (the Python original dropped these).
    pub server_error: PolicyAction,
    /// HTTP 408. Default `Retry`.
    pub request_timeout: PolicyAction,
    /// HTTP 400 when no earlier response was lost. Default `DeadLetter`.
    pub bad_request: PolicyAction,
    /// HTTP 400 after an earlier attempt whose response was lost. Default `DeliveredDuplicate`.
    pub bad_request_after_lost_response: PolicyAction,
    /// HTTP 401 and 403. Default `PauseAuth`.
    pub unauthorized: PolicyAction,
    /// Other 4xx. Default `DeadLetter`.
    pub client_error: PolicyAction,
    /// 1xx, 3xx and other odd statuses: an endpoint misconfiguration, not the item's fault.
    /// Default `Retry` (the circuit breaker then pauses delivery).
    pub unexpected_status: PolicyAction,
    /// 2xx with a body that is not an ImageQuery. Default `Retry`: if the cloud did create
    /// it, the retry's 400 is then recognised as a duplicate.
    pub bad_response: PolicyAction,
    /// 2xx with an ImageQuery whose id is not the one sent, or empty. Default `DeadLetter`:
    /// the cloud did not confirm this escalation, and resending could create yet another
    /// image query; the dead letter keeps it visible (with an incident) and replayable.
    pub wrong_image_query: PolicyAction,
    /// Image missing or unreadable. Default `DeadLetter`.
    pub image_unavailable: PolicyAction,
    /// The request could not be built. Default `Retry` (keeps the item; needs a fix).
    pub request_build: PolicyAction,
}

impl Default for ClassificationPolicy {
    fn default() -> Self {
        use PolicyAction::{DeadLetter, DeliveredDuplicate, PauseAuth, Retry};
        Self {
            network: Retry,
            timeout: Retry,
            too_many_requests: Retry,
            server_error: Retry,
            request_timeout: Retry,
            bad_request: DeadLetter,
            bad_request_after_lost_response: DeliveredDuplicate,
            unauthorized: PauseAuth,
            client_error: DeadLetter,
            unexpected_status: Retry,
            bad_response: Retry,
            wrong_image_query: DeadLetter,
            image_unavailable: DeadLetter,
            request_build: Retry,
        }
    }
}

impl ClassificationPolicy {
    /// The row for `class`; `previous_response_lost` selects the duplicate row for a 400.
    pub fn action(&self, class: ErrorClass, previous_response_lost: bool) -> PolicyAction {
        match class {
            ErrorClass::Network => self.network,
            ErrorClass::Timeout => self.timeout,
            ErrorClass::TooManyRequests => self.too_many_requests,
            ErrorClass::ServerError => self.server_error,
            ErrorClass::RequestTimeout => self.request_timeout,
            ErrorClass::BadRequest if previous_response_lost => {
                self.bad_request_after_lost_response
            }
            ErrorClass::BadRequest => self.bad_request,
            ErrorClass::Unauthorized => self.unauthorized,
            ErrorClass::ClientError => self.client_error,
            ErrorClass::UnexpectedStatus => self.unexpected_status,
            ErrorClass::BadResponse => self.bad_response,
            ErrorClass::WrongImageQuery => self.wrong_image_query,
            ErrorClass::ImageUnavailable => self.image_unavailable,
            ErrorClass::RequestBuild => self.request_build,
        }
    }

    /// Classifies one attempt. `previous_response_lost` is true when any earlier attempt of
    /// the same item ended with [`DeliveryError::response_possibly_lost`].
    pub fn classify(
        &self,
        result: &Result<Delivered, DeliveryError>,
        previous_response_lost: bool,
    ) -> Classification {
        let error = match result {
            Ok(_) => return Classification::Delivered,
            Err(error) => error,
        };
        let class = ErrorClass::of(error);
        match self.action(class, previous_response_lost) {
            PolicyAction::Retry => {
                let not_before = match error {
                    DeliveryError::Http { retry_after, .. } => *retry_after,
                    _ => None,
                };
                Classification::Retry { not_before }
            }
            PolicyAction::PauseAuth => Classification::PauseAuth,
            PolicyAction::DeliveredDuplicate => Classification::DeliveredDuplicate,
            PolicyAction::DeadLetter => Classification::DeadLetter {
                reason: DeadLetterReason::Rejected {
                    class,
                    status: error.http_status(),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> Result<Delivered, DeliveryError> {
        Err(DeliveryError::Http {
            status,
            retry_after: None,
            location: None,
            body_excerpt: String::new(),
        })
    }

    #[test]
    fn default_table() {
        let policy = ClassificationPolicy::default();
        let retry = Classification::Retry { not_before: None };
        let dead = |status| Classification::DeadLetter {
            reason: DeadLetterReason::Rejected {
                class: ErrorClass::of_status(status),
                status: Some(status),
            },
        };
        let cases = [
            (429, retry),
            (500, retry),
            (502, retry),
            (503, retry),
            (599, retry),
            (408, retry),
            (301, retry),
            (400, dead(400)),
            (404, dead(404)),
            (413, dead(413)),
            (422, dead(422)),
            (401, Classification::PauseAuth),
            (403, Classification::PauseAuth),
        ];
        for (status, expected) in cases {
            assert_eq!(policy.classify(&http(status), false), expected, "{status}");
        }
        assert_eq!(
            policy.classify(&http(400), true),
            Classification::DeliveredDuplicate
        );
        assert_eq!(policy.classify(&http(404), true), dead(404));
    }

    #[test]
    fn retry_after_is_carried() {
        let err = Err(DeliveryError::Http {
            status: 429,
            retry_after: Some(Duration::from_secs(7)),
            location: None,
            body_excerpt: String::new(),
        });
        let class = ClassificationPolicy::default().classify(&err, false);
        assert_eq!(
            class,
            Classification::Retry {
                not_before: Some(Duration::from_secs(7))
            }
        );
        assert!(class.is_breaker_failure());
    }

    #[test]
    fn policy_deserializes_with_defaults_for_missing_rows() {
        let policy: ClassificationPolicy =
            serde_json::from_str(r#"{"server_error": "dead_letter", "unauthorized": "retry"}"#)
                .expect("policy");
        let expected = ClassificationPolicy {
            server_error: PolicyAction::DeadLetter,
            unauthorized: PolicyAction::Retry,
            ..Default::default()
        };
        assert_eq!(policy, expected);
        assert!(serde_json::from_str::<ClassificationPolicy>(r#"{"typo": "retry"}"#).is_err());
    }

    #[test]
    fn rows_are_configurable() {
        let policy = ClassificationPolicy {
            server_error: PolicyAction::DeadLetter,
            ..Default::default()
        };
        assert!(matches!(
            policy.classify(&http(503), false),
            Classification::DeadLetter { .. }
        ));
    }
}
