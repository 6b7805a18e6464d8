//! The producer side of `escalation-queue`: what a process that only enqueues links.
//!
//! The [`Escalation`] record (validation, ids, metadata, its versioned wire encoding), the
//! queue directory layout and options ([`QueueLayout`], [`QueueOptions`]), the incidents a
//! writer raises ([`incidents`]), the dead-letter entry and its stored layout
//! ([`dead_letter`]), and [`EscalationQueue`], the writer handle: enqueue returns an
//! [`EnqueueReceipt`] once the escalation is durable. No network code: no HTTP
//! client, no TLS, no server (`cargo tree -e normal -p escalation-queue-producer` is
//! checked by `.ci/run`). The delivery worker is `escalation-queue-worker`; the
//! `escalation-queue` crate re-exports both.
//!
//! ```
//! use escalation_queue_producer::{Escalation, EscalationQueue, ImageSource};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let queue = EscalationQueue::open(dir.path())?;
//! let jpeg = b"\xff\xd8\xff\xe0 a small image".to_vec();
//! let receipt = queue.enqueue(&Escalation::new("det_123", ImageSource::Inline(jpeg.into())))?;
//! println!("queued {} in lane {}", receipt.image_query_id, receipt.lane);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod dead_letter;
mod error;
mod escalation;
pub mod incidents;
mod layout;
mod queue;

pub use escalation_queue_wal as wal;
pub use {
    error::{Error, ErrorKind, MalformedEntry, Result},
    escalation::{
        new_image_query_id, new_request_id, DecodeError, EncodeError, EncodedRecord, Escalation,
        HumanReview, IdField, ImageError, ImageFormat, ImageSource, Metadata, MetadataError,
        ParseHumanReviewError, RecordLimits, ValidationError, DEFAULT_IMAGE_SIZE_MAX_BYTES,
        FORMAT_VERSION, FORMAT_VERSION_V1, ID_LEN_MAX_CHARS, IMAGE_QUERY_ID_PREFIX,
        METADATA_SIZE_LIMIT_BYTES, REQUEST_ID_PREFIX,
    },
    layout::{
        QueueLayout, QueueOptions, ATTEMPTS_FILE, DEAD_LETTER_CONTEXT_MAX_BYTES,
        DEAD_LETTER_CURSOR, DEAD_LETTER_DIR, DEDUPE_FILE, INCIDENTS_FILE,
        RECORD_OVERHEAD_MAX_BYTES, WAL_DIR, WORKER_CURSOR,
    },
    queue::{EnqueueReceipt, EscalationQueue},
};

/// Helpers the worker crate shares with the producer (private directories, telling a full
/// disk, Python's float repr). Not a stable API.
#[doc(hidden)]
pub mod support {
    pub use crate::escalation::python_float_repr;
    pub use crate::layout::{create_private_dir, is_no_space};
}
