//! How an item ended ([`Outcome`]) and, for a dead letter, its last failure ([`Failure`]).

use crate::client::DeliveryError;
use crate::dead_letter::{bounded, MESSAGE_MAX_BYTES};
use crate::escalation::ValidationError;
use crate::retry::{DeadLetterReason, ErrorClass, ErrorClassOf as _};

/// How an item ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The cloud has it (from this run's request or, asked, from an earlier one).
    Delivered,
    /// Moved to the dead-letter queue.
    DeadLettered(DeadLetterReason),
    /// Older than the retention age; dropped.
    Expired,
    /// Already delivered (dedupe); skipped.
    Duplicate,
    /// A stop came first; the item stays in the wal.
    Stopped,
}

/// The last failure of an item, as a dead letter records it.
#[derive(Clone, Debug, Default)]
pub(super) struct Failure {
    pub(super) class: String,
    pub(super) status: Option<u16>,
    pub(super) error: String,
    pub(super) excerpt: String,
}

impl Failure {
    /// The stored record could not be decoded (no attempt was made).
    pub(super) fn undecodable(error: String) -> Self {
        Self::record(DeadLetterReason::Undecodable.label(), error)
    }

    /// The record breaks a validation rule (no attempt was made). A path the reader may not
    /// open has a class of its own.
    pub(super) fn invalid(error: &ValidationError) -> Self {
        let class = match error {
            ValidationError::ImagePathRefused { .. } => "image_path_refused",
            _ => DeadLetterReason::Invalid.label(),
        };
        Self::record(class, error.to_string())
    }

    fn record(class: &str, error: String) -> Self {
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
