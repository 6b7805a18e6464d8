//! A crash-safe, multi-process, segmented write-ahead log used as a FIFO queue.
//!
//! Writers in any number of processes append records to one queue directory; each open
//! [`Writer`] claims a *lane* (its own sequence of preallocated segment files) with `flock`,
//! and concurrent appends within a process share one `write` and one `fdatasync` (group
//! commit). A [`Reader`] in another process follows every lane up to its durable end,
//! merges lanes by enqueue time, hands out payloads zero-copy from memory maps, and records
//! progress in a named cursor whose checkpoints are atomic. Recovery cuts off torn tails,
//! reports and steps over corruption, and never crash-loops.
//!
//! ```
//! use escalation_queue_wal::{Options, Reader, Writer};
//!
//! # fn main() -> Result<(), escalation_queue_wal::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let opts = Options::default()
//!     .segment_bytes(1 << 20)
//!     .record_bytes_max(64 << 10)
//!     .free_disk_bytes_min(0);
//! let writer = Writer::open(dir.path(), &opts)?;
//! writer.append(b"first")?; // returns once durable
//! writer.append(b"second")?;
//!
//! let mut reader = Reader::open(dir.path(), "worker", &opts)?;
//! while let Some(record) = reader.next()? {
//!     println!("{:?}", record.payload);
//!     reader.ack(record.id)?;
//! }
//! reader.checkpoint()?; // acknowledgements are durable; consumed segments are deleted
//! # Ok(())
//! # }
//! ```
//!
//! The on-disk format is described in `docs/FORMAT.md`, the invariants in
//! `docs/ARCHITECTURE.md`.

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]

mod cursor;
mod error;
mod format;
mod fs;
mod inspect;
mod mmap;
mod options;
mod reader;
mod recovery;
mod segment;
mod sim;
mod types;
mod writer;

pub use cursor::{Checkpoint, LanePosition};
pub use error::{Corruption, CorruptionKind, Error, Event, Result};
pub use fs::{LockGuard, OpenMode, RealStorage, SlowSyncStorage, Storage, StorageFile};
pub use inspect::{
    inspect, verify, CursorInfo, CursorLane, Inspection, LaneInfo, SegmentInfo, VerifyReport,
};
pub use options::{Options, LANES_LIMIT};
pub use reader::Reader;
pub use sim::{CrashMode, Fault, SimDisk};
pub use types::{Durability, LaneId, Position, Record, RecordId, SegmentId, Seq};

/// The on-disk format's building blocks, for tools and tests that craft or damage files.
pub mod layout {
    pub use crate::cursor::SLOT_LEN as CHECKPOINT_SLOT_LEN;
    pub use crate::format::{
        decode_frame, encode_record, frame_len, BadRecord, BadSegmentHeader, BootId, FileName,
        Frame, RecordHeader, RecordKind, SegmentHeader, Watermark, ALIGN, FORMAT_VERSION,
        RECORD_HEADER_LEN, SEAL_LEN, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, WATERMARK_LEN,
    };
}

pub use writer::Writer;
