//! Why an item was dead-lettered: the one enum the policy decides, the budget fills in, the
//! dead-letter entry stores, the stats count and `dlq list` shows.
//!
//! Its serialized form is the stored `cause` of a dead-letter entry (postcard: the variant's
//! index in declaration order, then its fields; the error class as its name), so variants
//! and fields keep their order and new ones go last.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::class::ErrorClass;

/// Why an item was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// The policy dead-letters this class of error.
    Rejected {
        /// The table row (stored as its name: `bad_request`, `client_error`, …).
        class: ErrorClass,
        /// The HTTP status, when there was one.
        status: Option<u16>,
    },
    /// A retryable item ran out of attempts.
    AttemptsExhausted {
        /// Attempts charged.
        attempts: u32,
        /// The limit.
        max: u32,
    },
    /// A retryable item grew older than the budget's age limit.
    AgeExhausted {
        /// Its age.
        age_ms: u64,
        /// The limit.
        max_ms: u64,
    },
    /// The stored record could not be decoded (no attempt is made).
    Undecodable,
    /// The record decoded but breaks a validation rule (no attempt is made).
    Invalid,
}

impl DeadLetterReason {
    /// Every [`label`](Self::label): the `reason` values of the dead-letter counters in
    /// `/stats` and `/metrics`.
    pub const LABELS: [&'static str; 8] = [
        "bad_request",
        "client_error",
        "image_unavailable",
        "other_rejected",
        "attempts_exhausted",
        "age_exhausted",
        "undecodable",
        "invalid",
    ];

    /// The stats and metrics label: a rejection by its class (`bad_request`,
    /// `client_error`, `image_unavailable`, else `other_rejected`), every other reason by
    /// its own name.
    pub fn label(&self) -> &'static str {
        Self::LABELS
            .get(self.label_index())
            .copied()
            .unwrap_or("other_rejected")
    }

    /// The position of [`label`](Self::label) in [`LABELS`](Self::LABELS) (the worker's
    /// counters are an array in that order).
    pub fn label_index(&self) -> usize {
        match self {
            Self::Rejected { class, .. } => match class {
                ErrorClass::BadRequest => 0,
                ErrorClass::ClientError => 1,
                ErrorClass::ImageUnavailable => 2,
                _ => 3,
            },
            Self::AttemptsExhausted { .. } => 4,
            Self::AgeExhausted { .. } => 5,
            Self::Undecodable => 6,
            Self::Invalid => 7,
        }
    }

    /// Whether a retryable item was given up on (its budget ran out), rather than
    /// refused by the cloud or by the worker's own checks.
    pub fn is_budget_exhausted(&self) -> bool {
        matches!(
            self,
            Self::AttemptsExhausted { .. } | Self::AgeExhausted { .. }
        )
    }
}

/// The description shown in incidents, logs and `dlq list`.
impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected {
                class,
                status: Some(s),
            } => write!(f, "rejected ({class}, HTTP {s})"),
            Self::Rejected {
                class,
                status: None,
            } => write!(f, "rejected ({class})"),
            Self::AttemptsExhausted { attempts, max } => {
                write!(f, "out of attempts ({attempts} of {max})")
            }
            Self::AgeExhausted { age_ms, max_ms } => {
                write!(f, "too old to retry ({age_ms} ms, limit {max_ms} ms)")
            }
            Self::Undecodable => f.write_str("record undecodable"),
            Self::Invalid => f.write_str("record invalid"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_label_and_description() {
        let rejected = |class| DeadLetterReason::Rejected {
            class,
            status: Some(400),
        };
        let cases = [
            (
                rejected(ErrorClass::BadRequest),
                "bad_request",
                "rejected (bad_request, HTTP 400)",
            ),
            (
                rejected(ErrorClass::ClientError),
                "client_error",
                "rejected (client_error, HTTP 400)",
            ),
            (
                DeadLetterReason::Rejected {
                    class: ErrorClass::ImageUnavailable,
                    status: None,
                },
                "image_unavailable",
                "rejected (image_unavailable)",
            ),
            (
                rejected(ErrorClass::ServerError),
                "other_rejected",
                "rejected (server_error, HTTP 400)",
            ),
            (
                DeadLetterReason::AttemptsExhausted {
                    attempts: 3,
                    max: 3,
                },
                "attempts_exhausted",
                "out of attempts (3 of 3)",
            ),
            (
                DeadLetterReason::AgeExhausted {
                    age_ms: 301,
                    max_ms: 300,
                },
                "age_exhausted",
                "too old to retry (301 ms, limit 300 ms)",
            ),
            (
                DeadLetterReason::Undecodable,
                "undecodable",
                "record undecodable",
            ),
            (DeadLetterReason::Invalid, "invalid", "record invalid"),
        ];
        for (reason, label, description) in cases {
            assert_eq!(reason.label(), label, "{reason:?}");
            assert_eq!(reason.to_string(), description, "{reason:?}");
        }
    }
}
