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
//! reader.checkpoint()?; // acknowledgements are durable; consumed segments go in the background
//! # Ok(())
//! # }
//! ```
//!
//! The on-disk format is described in `docs/FORMAT.md`, the invariants in
//! `docs/ARCHITECTURE.md`.

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![deny(clippy::indexing_slicing)]

pub mod clock;
mod cursor;
mod error;
mod format;
mod fs;
mod inspect;
mod lane;
mod mmap;
mod options;
mod reader;
mod segment;
#[cfg(any(test, feature = "test-support"))]
mod sim;
mod sync;
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod tmpfs;
mod types;
mod writer;

pub use cursor::{Checkpoint, LanePosition};
pub use error::{Corruption, CorruptionKind, Error, ErrorKind, Event, Result};
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub use fs::SlowSyncStorage;
pub use fs::{
    create_private_dir, is_storage_full, not_regular_kind, open_regular, FileKind, LockGuard,
    OpenMode, RealStorage, Storage, StorageFile,
};
pub use inspect::{
    foreign, inspect, verify, CursorInfo, CursorLane, EndSource, ForeignEntry, Gap, GapKind,
    Inspection, LaneInfo, SegmentInfo, VerifyReport,
};
pub use options::{defaults, Options, LANES_LIMIT};
pub use reader::Reader;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub use sim::{CrashMode, Fault, Repeat, SimDisk, SimErrno, SimOp};
pub use types::{Durability, LaneId, Position, Record, RecordId, SegmentId, Seq};

/// The on-disk format's building blocks, for tools and tests that craft or damage files
/// (feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod layout {
    pub use crate::cursor::SLOT_LEN as CHECKPOINT_SLOT_LEN;
    pub use crate::format::{
        decode_frame, encode_record, frame_len, BadRecord, BadSegmentHeader, BootId, FileName,
        Frame, RecordHeader, RecordKind, SegmentHeader, UncheckedHeader, Watermark, ALIGN,
        FORMAT_VERSION, FORMAT_VERSIONS_READ, RECORD_HEADER_LEN, SEAL_LEN, SEGMENT_HEADER_LEN,
        SEGMENT_MAGIC, WATERMARK_LEN,
    };
    pub use crate::sim::SECTOR;

    use crate::cursor::Checkpoint;
    use crate::types::{LaneId, SegmentId, Seq};

    /// Decodes a checkpoint file's bytes (two slots of [`CHECKPOINT_SLOT_LEN`]; shorter
    /// input is padded with zeros, longer is cut) exactly as a reader loads them: the
    /// valid slot with the higher generation, `None` when neither is valid. For fuzzing
    /// and tools.
    pub fn decode_checkpoint(bytes: &[u8]) -> Option<Checkpoint> {
        use crate::fs::{OpenMode, Storage};
        let mut file = bytes.to_vec();
        file.resize(2 * CHECKPOINT_SLOT_LEN, 0);
        let disk = crate::sim::SimDisk::new(1);
        let dir = std::path::Path::new("/decode");
        let path = dir.join(FileName::Checkpoint("c".to_owned()).render());
        disk.open(&path, OpenMode::Create).ok()?;
        disk.write_file(&path, &file);
        crate::cursor::peek(&disk, dir, "c")
    }

    /// What [`scan_segment`] needs to know about the segment it walks.
    #[derive(Debug, Clone, Copy)]
    pub struct ScanInput {
        /// Lane every frame must carry.
        pub lane: LaneId,
        /// Segment every frame must carry.
        pub segment: SegmentId,
        /// Largest payload accepted.
        pub len_max: u32,
        /// Offset before which everything is known durable (damage there is corruption).
        pub durable_hint: u64,
        /// Sequence number of the first record scanned.
        pub first_seq: Seq,
        /// Search past damage for a later batch (off only for an exact watermark).
        pub lookahead: bool,
    }

    /// What [`scan_segment`] found.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ScanSummary {
        /// Offset just past the last valid frame.
        pub end: u64,
        /// The segment ends in a seal.
        pub sealed: bool,
        /// Sequence number after the last valid record.
        pub next_seq: Seq,
        /// Valid data records.
        pub records: u64,
        /// Damage stepped over: (offset, where reading resumed).
        pub damage: Vec<(u64, Option<u64>)>,
        /// Where a torn tail starts.
        pub torn_at: Option<u64>,
    }

    /// Runs recovery's segment scanner (torn tail vs corruption) over `data` from `from`.
    /// For fuzzing and tools.
    pub fn scan_segment(data: &[u8], from: u64, input: &ScanInput) -> ScanSummary {
        let cx = crate::segment::ScanContext {
            lane: input.lane,
            segment: input.segment,
            len_max: input.len_max,
            durable_hint: input.durable_hint,
            first_seq: input.first_seq,
            lookahead: input.lookahead,
        };
        let s = crate::segment::scan(data, from, &cx);
        ScanSummary {
            end: s.end,
            sealed: s.seal.is_some(),
            next_seq: s.next_seq,
            records: s.records,
            damage: s.damage.iter().map(|d| (d.offset, d.resumed_at)).collect(),
            torn_at: s.torn_at,
        }
    }
}

pub use writer::Writer;
