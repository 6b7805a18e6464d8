//! The vocabulary: ids, positions and the record handed to readers.

use bytes::Bytes;
use std::fmt;

/// A writer lane: one sequence of segments appended to by one open writer at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LaneId(pub u16);

/// A segment of a lane. Ids increase by one per segment within a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub u64);

/// A record's sequence number within its lane: dense and increasing from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u64);

impl SegmentId {
    /// The segment after this one; `None` for `u64::MAX` (ids never wrap: a wrapped id
    /// would name a segment that exists or sort before the lane's oldest).
    pub fn checked_next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl Seq {
    /// The sequence number after this one.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for LaneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lane {}", self.0)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segment {}", self.0)
    }
}

/// A place in a lane: a frame boundary inside a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The segment.
    pub segment: SegmentId,
    /// Byte offset of a frame boundary within the segment.
    pub offset: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} offset {}", self.segment, self.offset)
    }
}

/// Identifies one durable record: where it is and its place in its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    /// Lane the record was appended to.
    pub lane: LaneId,
    /// Sequence number within the lane.
    pub seq: Seq,
    /// Where the record's frame starts.
    pub position: Position,
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} seq {} ({})", self.lane, self.seq.0, self.position)
    }
}

/// A durable record as a reader sees it. The payload is zero-copy from the segment's map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's identity; pass it to `Reader::ack`.
    pub id: RecordId,
    /// Enqueue time, unix nanoseconds (stamped by the writer).
    pub time_ns: u64,
    /// The bytes appended.
    pub payload: Bytes,
}

/// How an append is made durable. Only [`Durability::SyncEachAppend`] upholds the rule
/// "durable before acknowledged"; the others are explicit opt-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every append returns only after an `fdatasync` that began after its bytes were
    /// written has returned OK. Concurrent appends share one sync (group commit).
    #[default]
    SyncEachAppend,
    /// Appends return once written to the OS; a background flusher syncs at this interval.
    /// A power loss can lose up to one interval of acknowledged appends.
    Interval(std::time::Duration),
    /// Never sync. Records become visible to readers right after the write. Tests and
    /// throw-away data only.
    None,
}
