//! The restart rule: which records redelivered at the start of a run may already have
//! been submitted by the previous run (so that a 400 for them means "already exists").
//!
//! * After a clean stop, only the item the previous run left in flight, and only if one of
//!   its attempts may have lost its response.
//! * After a crash, the first `window_records` records of each lane: the previous run
//!   checkpointed at least every `checkpoint_acks_max` acknowledgements, so at most that
//!   many records per lane, plus the one in flight, were submitted and not checkpointed.
//!   This is a superset: new records within the window are treated the same.

use std::collections::HashMap;

use escalation_queue_wal::RecordId;

use crate::dedupe::PreviousRun;

#[derive(Debug)]
pub(super) struct RestartWindow {
    previous: PreviousRun,
    seen_per_lane: HashMap<u16, u32>,
}

impl RestartWindow {
    pub(super) fn new(previous: PreviousRun) -> Self {
        Self {
            previous,
            seen_per_lane: HashMap::new(),
        }
    }

    /// Called once per record delivered by the reader in this run, in order: whether the
    /// record may have been submitted before with its response lost.
    pub(super) fn possibly_submitted(&mut self, id: RecordId) -> bool {
        let seen = self.seen_per_lane.entry(id.lane.0).or_insert(0);
        let index = *seen;
        *seen = seen.saturating_add(1);
        match self.previous {
            PreviousRun::First => false,
            PreviousRun::Clean { in_flight } => in_flight.is_some_and(|f| {
                f.lane == id.lane.0 && f.seq == id.seq.0 && f.response_possibly_lost
            }),
            PreviousRun::Unclean { window_records } => index < window_records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedupe::InFlight;
    use escalation_queue_wal::{LaneId, Position, SegmentId, Seq};

    fn id(lane: u16, seq: u64) -> RecordId {
        RecordId {
            lane: LaneId(lane),
            seq: Seq(seq),
            position: Position {
                segment: SegmentId(0),
                offset: 0,
            },
        }
    }

    #[test]
    fn unclean_window_counts_per_lane() {
        let mut w = RestartWindow::new(PreviousRun::Unclean { window_records: 2 });
        let got: Vec<bool> = [id(0, 5), id(1, 9), id(0, 6), id(0, 7), id(1, 10), id(1, 11)]
            .into_iter()
            .map(|i| w.possibly_submitted(i))
            .collect();
        assert_eq!(got, [true, true, true, false, true, false]);
    }

    #[test]
    fn clean_stop_marks_only_the_lost_in_flight_item() {
        let in_flight = InFlight {
            lane: 1,
            seq: 4,
            response_possibly_lost: true,
        };
        let mut w = RestartWindow::new(PreviousRun::Clean {
            in_flight: Some(in_flight),
        });
        assert!(w.possibly_submitted(id(1, 4)));
        assert!(!w.possibly_submitted(id(1, 5)));
        let mut first = RestartWindow::new(PreviousRun::First);
        assert!(!first.possibly_submitted(id(0, 0)));
    }
}
