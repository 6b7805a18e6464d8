//! The escalation domain of `escalation-queue`: the [`Escalation`] record and its versioned
//! encoding, the Groundlight cloud client ([`GroundlightClient`] behind the [`Destination`]
//! trait), retry classification, backoff, the circuit breaker, per-item budgets, the
//! delivery [`Worker`], the [`DeadLetterQueue`], the persistent [`DedupeSet`], [`Incidents`]
//! (human escalation), [`Stats`], the queue directory layout ([`QueueLayout`],
//! [`QueueOptions`]), and (feature `mock-cloud`, which the binary enables for `demo` and
//! `mock-cloud`) `MockCloud`, a fault-injecting stand-in for the cloud API.
//! The delivery rules are in `docs/SEMANTICS.md`.
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

mod attempts;
mod client;
mod consumer;
mod dead_letter;
mod dedupe;
mod escalation;
mod incidents;
mod layout;
#[cfg(feature = "mock-cloud")]
mod mock_cloud;
mod retry;
mod stats;

pub use {
    attempts::{AttemptJournal, JournalReport, MarkerDurability},
    client::{
        defaults as client_defaults, normalize_endpoint, parse_retry_after, read_token_file,
        redact_url, url_has_credentials, ApiToken, AttemptContext, ClientConfig, ConfigError,
        Delivered, DeliveryError, Destination, GroundlightClient, ImageQuery, Lookup, ProxyRoute,
        ProxySource, ProxyUrl, TimeoutPhase, TlsRoots, BODY_EXCERPT_MAX_BYTES, DEFAULT_ENDPOINT,
        ENV_API_TOKEN, ENV_ENDPOINT,
    },
    consumer::{RunEnd, RunSummary, StopHandle, Worker, WorkerConfig, BREAKER_COOL_DOWN_MAX_MS},
    dead_letter::{
        AttemptLog, AttemptRecord, DeadLetter, DeadLetterId, DeadLetterInfo, DeadLetterQueue,
        DeadLetterReport, DeadLetterSink, MalformedEntry, Selector, ATTEMPTS_KEPT_MAX,
        DEAD_LETTER_ID_PREFIX, ENTRY_FORMAT_VERSION, MESSAGE_MAX_BYTES,
    },
    dedupe::{DedupeSet, DuplicateOf, InFlight, PreviousRun, DEFAULT_DEDUPE_ITEMS_MAX},
    escalation_queue_producer::{
        new_image_query_id, new_request_id, DecodeError, EncodeError, EncodedRecord, Escalation,
        HumanReview, IdField, ImageError, ImageFormat, ImageSource, Metadata, MetadataError,
        ParseHumanReviewError, RecordLimits, ValidationError, DEFAULT_IMAGE_SIZE_MAX_BYTES,
        FORMAT_VERSION, FORMAT_VERSION_V1, ID_LEN_MAX_CHARS, IMAGE_QUERY_ID_PREFIX,
        METADATA_SIZE_LIMIT_BYTES, REQUEST_ID_PREFIX,
    },
    escalation_queue_producer::{
        Error, QueueLayout, QueueOptions, ATTEMPTS_FILE, DEAD_LETTER_CONTEXT_MAX_BYTES,
        DEAD_LETTER_CURSOR, DEAD_LETTER_DIR, DEDUPE_FILE, INCIDENTS_FILE,
        RECORD_OVERHEAD_MAX_BYTES, WAL_DIR, WORKER_CURSOR,
    },
    incidents::{
        Incident, IncidentConfig, IncidentContext, IncidentDraft, IncidentKind, IncidentLog,
        Incidents, Raised, Severity, Spike, SpikeConfig, SpikeDetector, WebhookConfig,
    },
    retry::{
        Admission, Backoff, BackoffConfig, BreakerConfig, BudgetConfig, CircuitBreaker,
        CircuitState, Classification, ClassificationPolicy, DeadLetterReason, ErrorClass,
        ErrorClassOf, ItemBudget, OutageReplay, PolicyAction, RejectVerdict, RejectedItem,
        SystemicRejects, Wait, WaitCause, DEFAULT_AGE_MAX_MS,
    },
    stats::{
        HistogramSnapshot, LatencyHistogram, Stats, StatsSnapshot, WaitTotals,
        LATENCY_BUCKET_BOUNDS_MS,
    },
};

/// The mock cloud: the binary's `demo` and `mock-cloud` commands and the tests.
#[cfg(feature = "mock-cloud")]
pub use mock_cloud::{
    FaultAction, FaultPlan, MockCloud, MockCloudConfig, MockOutcome, OutageMode, RandomFaults,
    RecordedRequest, BODY_PREFIX_LEN_BYTES,
};
