//! A crash-safe escalation queue: edge processes enqueue image-query escalations into a
//! segmented write-ahead log, and a worker delivers them to the Groundlight cloud, retrying
//! through outages, dead-lettering what cannot be delivered, and raising incidents for what
//! needs a human. Nothing acknowledged is lost, and every record ends delivered,
//! dead-lettered or expired.
//!
//! This crate is the facade: [`EscalationQueue`] (one per process; clone it for threads)
//! and, for the reader process, [`Worker`]. The [`wal`], [`producer`] and [`worker`] crates
//! are re-exported whole; the names most callers need are re-exported here. A process that
//! only enqueues (the Python package, any Rust producer) links `escalation-queue-producer`
//! alone: the same record, options and writer handle without the worker's HTTP client and
//! TLS.
//!
//! ```
//! use escalation_queue::{
//!     ApiToken, ClientConfig, Escalation, EscalationQueue, GroundlightClient, ImageSource,
//!     MockCloud, MockCloudConfig, QueueOptions, Worker, WorkerConfig,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//!
//! // An edge-endpoint process: enqueue returns once the escalation is durable.
//! let queue = EscalationQueue::open(dir.path())?;
//! let jpeg = b"\xff\xd8\xff\xe0 a small image".to_vec();
//! let receipt = queue.enqueue(&Escalation::new("det_123", ImageSource::Inline(jpeg.into())))?;
//! println!("queued {} in lane {}", receipt.image_query_id, receipt.lane);
//!
//! // The reader process: deliver everything (here to a local stand-in for the cloud).
//! let cloud = MockCloud::start(MockCloudConfig::new("api_token"))?;
//! let mut client_config = ClientConfig::new(ApiToken::new("api_token")?);
//! client_config.endpoint = cloud.endpoint();
//! let client = GroundlightClient::new(client_config)?;
//! let mut worker = Worker::open(dir.path(), &QueueOptions::default(), WorkerConfig::default())?;
//! let summary = worker.drain(&client)?;
//! assert_eq!((summary.delivered, summary.dead_lettered), (1, 0));
//! assert_eq!(cloud.image_query_ids(), [receipt.image_query_id]);
//! # Ok(())
//! # }
//! ```
//!
//! The queue directory layout, the delivery rules and every difference from the Python
//! original are in `docs/SEMANTICS.md`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod queue;

pub use {
    escalation_queue_producer as producer,
    escalation_queue_producer::{EnqueueReceipt, Error, ErrorKind, Result},
    escalation_queue_wal as wal, escalation_queue_worker as worker,
    escalation_queue_worker::{
        ApiToken, ClientConfig, DeadLetter, DeadLetterId, DeadLetterQueue, DeadLetterReport,
        Destination, Escalation, GroundlightClient, HumanReview, ImageSource, Incident,
        IncidentConfig, QueueLayout, QueueOptions, RunSummary, Selector, Severity, Stats,
        StatsSnapshot, StopHandle, ValidationError, Worker, WorkerConfig,
    },
    queue::EscalationQueue,
};

#[cfg(feature = "mock-cloud")]
pub use escalation_queue_worker::{MockCloud, MockCloudConfig};
