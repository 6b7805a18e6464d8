//! The wal's one error type, and the structured reports recovery produces.

use crate::fs::FileKind;
use crate::types::{LaneId, Position, SegmentId, Seq};
use std::path::PathBuf;
use std::sync::Arc;

/// Result alias for the wal.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the wal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("open", "fdatasync", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
        /// The call was a sync (`fdatasync`, `fsync` of a directory): after it failed, the
        /// kernel may have dropped written data, so a writer that sees it is poisoned.
        sync: bool,
    },
    /// A path named like one of the queue's files is not a regular file (a symlink, a
    /// FIFO, a directory, a device, a socket). The queue never follows, opens, writes or
    /// removes such a file; readers skip it and report it, writers take another lane.
    #[error("{op} {path}: it is {found}, not a regular file; the queue never follows symlinks or opens FIFOs, sockets, devices or directories as its files: move it out of the queue directory")]
    NotRegularFile {
        /// What was being done ("open", "flock", ...).
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// What the path is.
        found: FileKind,
    },
    /// A sync failed earlier: the kernel may have dropped the data, so this writer
    /// acknowledges nothing more until the queue is reopened and recovered.
    #[error("writer for {lane} is poisoned by an earlier sync failure ({cause}): it acknowledges nothing more (the kernel may have dropped data); open the queue again to recover")]
    Poisoned {
        /// The lane whose writer is poisoned.
        lane: LaneId,
        /// The failure that poisoned it.
        cause: Arc<std::io::Error>,
    },
    /// [`Writer::close`](crate::Writer::close) was called on a clone of this handle: it
    /// appends nothing more. Open a new writer to append.
    #[error("writer for {lane} was closed; open the queue again to append")]
    Closed {
        /// The lane whose writer was closed.
        lane: LaneId,
    },
    /// The queue holds `queue_bytes_max` already; the append was not made.
    #[error("queue is full: {queue_bytes} bytes on disk, limit {queue_bytes_max} (queue_bytes_max); appends resume when the reader frees segments")]
    QueueFull {
        /// Bytes the queue's segments occupy.
        queue_bytes: u64,
        /// The configured limit.
        queue_bytes_max: u64,
    },
    /// The file system has no room for the next allocation step; the append was not made.
    #[error("no space to grow the queue in {path}: {available_bytes} bytes free, {needed_bytes} needed (the next segment allocation step plus free_disk_bytes_min)")]
    NoSpace {
        /// The queue directory.
        path: PathBuf,
        /// Bytes available to us.
        available_bytes: u64,
        /// Bytes needed.
        needed_bytes: u64,
    },
    /// A lane's newest segment has the largest possible id, so the lane cannot take
    /// another segment. Nothing was appended or removed; the file is almost certainly
    /// stray or damaged (ids grow by one per segment).
    #[error("{lane} of {path} cannot start another segment: its newest segment file has id {newest}, the largest possible (a stray or damaged file name?); move that file away after checking it with `verify`")]
    SegmentIdsExhausted {
        /// The queue directory.
        path: PathBuf,
        /// The lane.
        lane: LaneId,
        /// The newest segment's id.
        newest: u64,
    },
    /// A record was empty; empty records are not allowed.
    #[error("record is empty; records must hold at least one byte")]
    EmptyRecord,
    /// A record exceeded `record_bytes_max`.
    #[error("record of {len} bytes exceeds record_bytes_max = {max}")]
    RecordTooLarge {
        /// Payload length.
        len: usize,
        /// The configured limit.
        max: u32,
    },
    /// Every lane is held by another writer.
    #[error("all {lanes_max} writer lanes of {path} are held by other writers (lanes_max)")]
    NoFreeLane {
        /// The queue directory.
        path: PathBuf,
        /// The configured number of lanes.
        lanes_max: u16,
    },
    /// Another reader holds this cursor.
    #[error("cursor '{name}' of {path} is held by another reader (one reader per cursor)")]
    CursorLocked {
        /// Cursor name.
        name: String,
        /// The queue directory.
        path: PathBuf,
    },
    /// A cursor name is not 1..=64 characters of `a-z0-9_-`.
    #[error("invalid cursor name '{0}': use 1 to 64 characters of a-z, 0-9, '_' and '-'")]
    InvalidCursorName(String),
    /// An option is out of range.
    #[error("invalid option {key} = {value}: {allowed}")]
    Config {
        /// The option's name.
        key: &'static str,
        /// The rejected value.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// `ack` named a record this reader has not delivered.
    #[error("cannot acknowledge {lane} seq {seq}: it has not been delivered by this reader")]
    NotDelivered {
        /// Lane of the record.
        lane: LaneId,
        /// Its sequence number.
        seq: u64,
    },
    /// The reader was opened with `Reader::browse`, which cannot acknowledge or expire.
    #[error("this reader is read-only (opened to browse); open the cursor to acknowledge")]
    ReadOnly,
    /// A cursor's first checkpoint found no space for its file, and the segments it
    /// releases did not free enough: nothing was made durable, nothing is lost, and the
    /// next checkpoint (which may release whole segments) tries again. Until one succeeds,
    /// a crash redelivers from each lane's oldest segment.
    #[error("no space for the first cursor checkpoint in {path}: the acknowledgements are not durable yet and the next checkpoint tries again (a crash meanwhile delivers them again)")]
    CheckpointDeferred {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// Damage the wal cannot step over (for example an unreadable checkpoint with both
    /// slots destroyed, or a segment header that fails its checksum).
    #[error("corruption: {0}")]
    Corrupt(Corruption),
}

/// What kind of failure an [`Error`] is: what callers (retry loops, exit codes, poisoning)
/// decide on, without matching variants or operation names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file-system call failed; `sync` when it was a sync (`fdatasync`, `fsync dir`).
    Io {
        /// The failed call was a sync: a writer that sees it is poisoned.
        sync: bool,
    },
    /// A file named like a queue file is not a regular file.
    NotRegularFile,
    /// The writer is poisoned by an earlier sync failure.
    Poisoned,
    /// The writer was closed.
    Closed,
    /// The queue holds `queue_bytes_max` already.
    QueueFull,
    /// The file system is short of space.
    NoSpace,
    /// A lane has no segment ids left.
    SegmentIdsExhausted,
    /// The record is empty or too large.
    InvalidRecord,
    /// Another process holds what was asked for (every writer lane, a cursor).
    Locked,
    /// An option or a cursor name is invalid.
    Config,
    /// The call does not fit the handle's state (acknowledging what was not delivered, a
    /// browsing reader).
    Misuse,
    /// The first checkpoint was deferred for lack of space.
    CheckpointDeferred,
    /// Stored bytes failed verification.
    Corruption,
}

impl ErrorKind {
    /// True when the operation may succeed later without operator action (the queue is
    /// full, the disk is short of space): the caller should back off and retry.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::QueueFull | Self::NoSpace)
    }
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::io_call(op, path.into(), source, false)
    }

    /// A failed sync (`fdatasync`, `fsync dir`): [`ErrorKind::Io`] with `sync`.
    pub(crate) fn sync_failed(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::io_call(op, path.into(), source, true)
    }

    fn io_call(op: &'static str, path: PathBuf, source: std::io::Error, sync: bool) -> Self {
        if let Some(found) = crate::fs::not_regular_kind(&source) {
            // Not logged here: whoever skips the file reports it, once.
            return Self::NotRegularFile { op, path, found };
        }
        tracing::error!(op, path = %path.display(), error = %source, "wal file-system call failed");
        Self::Io {
            op,
            path,
            source,
            sync,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Io { sync, .. } => ErrorKind::Io { sync: *sync },
            Self::NotRegularFile { .. } => ErrorKind::NotRegularFile,
            Self::Poisoned { .. } => ErrorKind::Poisoned,
            Self::Closed { .. } => ErrorKind::Closed,
            Self::QueueFull { .. } => ErrorKind::QueueFull,
            Self::NoSpace { .. } => ErrorKind::NoSpace,
            Self::SegmentIdsExhausted { .. } => ErrorKind::SegmentIdsExhausted,
            Self::EmptyRecord | Self::RecordTooLarge { .. } => ErrorKind::InvalidRecord,
            Self::NoFreeLane { .. } | Self::CursorLocked { .. } => ErrorKind::Locked,
            Self::InvalidCursorName(_) | Self::Config { .. } => ErrorKind::Config,
            Self::NotDelivered { .. } | Self::ReadOnly => ErrorKind::Misuse,
            Self::CheckpointDeferred { .. } => ErrorKind::CheckpointDeferred,
            Self::Corrupt(_) => ErrorKind::Corruption,
        }
    }

    /// True when the operation may succeed later without operator action
    /// (`QueueFull`, `NoSpace`): the caller should back off and retry.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// The path and what it is, when this error is a refused foreign file
    /// ([`Error::NotRegularFile`]).
    pub fn not_regular_file(&self) -> Option<(&std::path::Path, FileKind)> {
        match self {
            Self::NotRegularFile { path, found, .. } => Some((path, *found)),
            _ => None,
        }
    }
}

/// Where and how stored bytes failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The file.
    pub path: PathBuf,
    /// The lane, when known.
    pub lane: Option<LaneId>,
    /// The segment, when the damage is in a segment.
    pub segment: Option<SegmentId>,
    /// Byte offset of the damage.
    pub offset: u64,
    /// What was wrong.
    pub kind: CorruptionKind,
}

/// What was wrong with damaged bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorruptionKind {
    /// crc32c mismatch.
    Checksum {
        /// Stored crc.
        expected: u32,
        /// Computed crc.
        actual: u32,
    },
    /// A length field out of bounds.
    BadLength {
        /// The value read.
        len: u32,
    },
    /// A frame whose kind byte is unknown.
    BadKind,
    /// A frame that extends past the end of its file.
    Truncated,
    /// A valid frame that belongs to another lane or segment.
    Misplaced,
    /// Zero bytes where the durable end says a record must be.
    Zeroed,
    /// A segment or checkpoint header that is not valid.
    BadHeader,
    /// A file named like a queue file that is not a regular file: skipped, never opened.
    NotRegularFile {
        /// What it is.
        found: FileKind,
    },
    /// A lane's watermark names a segment after every segment the lane has (crafted,
    /// or left from files deleted by hand): ignored until it changes.
    StaleWatermark,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at offset {}", self.path.display(), self.offset)?;
        if let Some(l) = self.lane {
            write!(f, " ({l}")?;
            if let Some(s) = self.segment {
                write!(f, ", {s}")?;
            }
            write!(f, ")")?;
        }
        match self.kind {
            CorruptionKind::Checksum { expected, actual } => {
                write!(
                    f,
                    ": crc32c mismatch, stored {expected:#010x}, computed {actual:#010x}"
                )
            }
            CorruptionKind::BadLength { len } => write!(f, ": length {len} out of bounds"),
            CorruptionKind::BadKind => write!(f, ": unknown record kind"),
            CorruptionKind::Truncated => write!(f, ": frame runs past end of file"),
            CorruptionKind::Misplaced => write!(f, ": frame belongs to another lane or segment"),
            CorruptionKind::Zeroed => write!(f, ": zeroed bytes inside durable data"),
            CorruptionKind::BadHeader => write!(f, ": invalid header"),
            CorruptionKind::NotRegularFile { found } => write!(
                f,
                ": {found}, not a regular file; skipped, never followed or opened (move it out of the queue directory)"
            ),
            CorruptionKind::StaleWatermark => write!(
                f,
                ": the watermark names a segment after every segment of the lane; ignored until a writer or recovery publishes a new one"
            ),
        }
    }
}

/// Something recovery or reading found and handled. Reported, logged, never fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bytes after a lane's last durable record were torn by a crash and cut off
    /// (a seal was written at `at`). Nothing acknowledged is lost by this.
    TornTail {
        /// Lane.
        lane: LaneId,
        /// Where the valid data ends.
        at: Position,
    },
    /// Damaged durable bytes were skipped; `records_lost` records (by sequence number) are
    /// quarantined (`None` when the count cannot be known).
    Corruption {
        /// The damage.
        corruption: Corruption,
        /// Where reading resumed.
        resumed_at: Position,
        /// Records skipped.
        records_lost: Option<u64>,
    },
    /// A checkpoint pointed past the recovered end of a lane (data lost in a power failure
    /// or deleted by hand); the cursor was moved back to the end so that records written
    /// later are not skipped.
    CursorPastEnd {
        /// Lane.
        lane: LaneId,
        /// Checkpointed position.
        cursor: Position,
        /// Recovered end.
        end: Position,
    },
    /// Sequence numbers are missing between two records of a lane.
    Gap {
        /// Lane.
        lane: LaneId,
        /// Expected next sequence.
        expected: Seq,
        /// Sequence found.
        found: Seq,
    },
    /// A segment file whose header never became durable (crash while creating it) was removed.
    IncompleteSegmentRemoved {
        /// Lane.
        lane: LaneId,
        /// Segment.
        segment: SegmentId,
    },
    /// Whole segments were deleted by retention; unconsumed records in them are expired.
    Expired {
        /// Lane.
        lane: LaneId,
        /// Segments deleted.
        segments: u64,
        /// Records that had not been acknowledged.
        records: u64,
    },
}
