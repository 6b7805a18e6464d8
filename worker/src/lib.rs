//! The escalation domain of `escalation-queue`: the [`Escalation`] record and its versioned
//! encoding, the Groundlight cloud client ([`GroundlightClient`] behind the [`Destination`]
//! trait), retry classification, backoff, the circuit breaker, per-item budgets, and
//! [`MockCloud`], a fault-injecting stand-in for the cloud API.
//!
//! ```
//! use escalation_queue_worker::{Escalation, ImageSource, RecordLimits};
//!
//! let esc = Escalation::new("det_123", ImageSource::Inline(b"\xff\xd8\xff..".to_vec().into()));
//! let record = esc.encode(&RecordLimits::DEFAULT)?;
//! let decoded = Escalation::decode(&record.into())?;
//! assert_eq!(decoded, esc);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod escalation;
mod retry;

pub use client::{
    normalize_endpoint, parse_retry_after, ApiToken, AttemptContext, ClientConfig, ConfigError,
    Delivered, DeliveryError, Destination, GroundlightClient, ImageQuery, TimeoutPhase,
    BODY_EXCERPT_MAX_BYTES, DEFAULT_ENDPOINT, ENV_API_TOKEN, ENV_ENDPOINT,
};
pub use escalation::{
    new_image_query_id, new_request_id, DecodeError, EncodeError, Escalation, HumanReview,
    IdField, ImageError, ImageFormat, ImageSource, Metadata, MetadataError,
    ParseHumanReviewError, RecordLimits, ValidationError, DEFAULT_IMAGE_SIZE_MAX_BYTES,
    FORMAT_VERSION, ID_LEN_MAX_CHARS, IMAGE_QUERY_ID_PREFIX, METADATA_SIZE_LIMIT_BYTES,
    REQUEST_ID_PREFIX,
};
pub use retry::{
    Admission, Backoff, BackoffConfig, BreakerConfig, BudgetConfig, BudgetLimit, CircuitBreaker,
    CircuitState, Classification, ClassificationPolicy, DeadLetterReason, ErrorClass, ItemBudget,
    PolicyAction, DEFAULT_AGE_MAX_MS,
};
