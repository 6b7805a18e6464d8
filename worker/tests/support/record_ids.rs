//! Record ids and image query ids for the attempt journal's tests: its unit tests
//! (`src/attempts/tests.rs`) and the crash-state exploration (`tests/crash_states.rs`)
//! both include this file (`#[path]`), so that the two mark the same ids the same way.

use escalation_queue_wal::{LaneId, Position, RecordId, SegmentId, Seq};

/// Record `seq` of `lane`; the journal keys a marker by lane and sequence only, so every
/// id here stands at the start of segment 0.
pub fn id(lane: u16, seq: u64) -> RecordId {
    RecordId {
        lane: LaneId(lane),
        seq: Seq(seq),
        position: Position {
            segment: SegmentId(0),
            offset: 0,
        },
    }
}

/// The image query id the tests give record `seq` of `lane`.
pub fn iq(lane: u16, seq: u64) -> String {
    format!("iq_{lane}x{seq}")
}
