//! Systemic rejections: the same non-retryable answer for one escalation after another is
//! a fault of the setup (a wrong endpoint path answering 404 to everything), not of each
//! item, and must not empty the queue into the dead letters in milliseconds.
//!
//! The worker reports each escalation's final cloud answer: a rejection the policy would
//! dead-letter (with its HTTP status) or an acceptance. `threshold` consecutive rejections
//! with the same status, each for a different escalation, trip the detector: the first
//! `threshold - 1` were dead-lettered (nothing could tell them from bad items yet), the
//! one that trips it and every later one stay queued while the head item probes. A probe
//! answered with the same status keeps the fault; any other answer ends it. Retryable
//! failures, auth pauses and items that never reach the cloud neither extend nor break a run.

/// One escalation of the current run of identical rejections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedItem {
    /// Its dead-letter id (`dl_LANE_SEQ`).
    pub dead_letter_id: String,
    /// Its detector.
    pub detector_id: String,
}

/// What to do with a rejected escalation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectVerdict {
    /// An item-specific rejection (so far): dead-letter it.
    DeadLetter,
    /// A systemic fault: keep the item at the head and probe with it.
    Hold {
        /// This rejection tripped the detector (the first hold of the fault).
        tripped_now: bool,
    },
}

/// See the module docs. `threshold` 0 turns the rule off.
#[derive(Clone, Debug, Default)]
pub struct SystemicRejects {
    threshold: u32,
    status: Option<u16>,
    run: Vec<RejectedItem>,
    tripped: bool,
}

impl SystemicRejects {
    /// A detector that trips after `threshold` identical rejections (0: never).
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold,
            ..Self::default()
        }
    }

    /// The status of the systemic fault in force, if any.
    pub fn fault(&self) -> Option<u16> {
        self.status.filter(|_| self.tripped)
    }

    /// The escalations of the current run, oldest first (the dead-lettered ones, then the
    /// one that tripped the detector).
    pub fn run(&self) -> &[RejectedItem] {
        &self.run
    }

    /// An escalation was rejected with `status`.
    pub fn on_rejected(&mut self, status: u16, item: RejectedItem) -> RejectVerdict {
        if self.tripped && self.status == Some(status) {
            return RejectVerdict::Hold { tripped_now: false };
        }
        if self.status != Some(status) {
            self.clear();
            self.status = Some(status);
        }
        let len = u32::try_from(self.run.len()).unwrap_or(u32::MAX);
        if len < self.threshold {
            self.run.push(item);
        }
        if self.threshold > 0 && len.saturating_add(1) >= self.threshold {
            self.tripped = true;
            return RejectVerdict::Hold { tripped_now: true };
        }
        RejectVerdict::DeadLetter
    }

    /// An escalation was accepted (delivered or a duplicate): ends any run; returns the
    /// status of a systemic fault this ended.
    pub fn on_accepted(&mut self) -> Option<u16> {
        let ended = self.fault();
        self.clear();
        ended
    }

    fn clear(&mut self) {
        self.status = None;
        self.run.clear();
        self.tripped = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u32) -> RejectedItem {
        RejectedItem {
            dead_letter_id: format!("dl_0_{n}"),
            detector_id: "det_a".to_owned(),
        }
    }

    #[test]
    fn the_threshold_th_identical_rejection_holds_and_so_do_its_probes() {
        let mut s = SystemicRejects::new(3);
        assert_eq!(s.on_rejected(404, item(1)), RejectVerdict::DeadLetter);
        assert_eq!(s.on_rejected(404, item(2)), RejectVerdict::DeadLetter);
        assert_eq!(
            s.on_rejected(404, item(3)),
            RejectVerdict::Hold { tripped_now: true }
        );
        assert_eq!(s.fault(), Some(404));
        assert_eq!(s.run().len(), 3);
        assert_eq!(
            s.on_rejected(404, item(3)),
            RejectVerdict::Hold { tripped_now: false }
        );
        assert_eq!(s.on_accepted(), Some(404));
        assert_eq!(s.fault(), None);
        assert_eq!(s.on_rejected(404, item(4)), RejectVerdict::DeadLetter);
    }

    #[test]
    fn an_acceptance_or_another_status_breaks_the_run() {
        // Story: one bad detector among good ones is dead-lettered item by item, forever.
        let mut s = SystemicRejects::new(3);
        for n in 0..10 {
            assert_eq!(s.on_rejected(400, item(n)), RejectVerdict::DeadLetter);
            assert_eq!(s.on_rejected(400, item(n)), RejectVerdict::DeadLetter);
            assert_eq!(s.on_accepted(), None);
        }
        assert_eq!(s.on_rejected(400, item(1)), RejectVerdict::DeadLetter);
        assert_eq!(s.on_rejected(422, item(2)), RejectVerdict::DeadLetter);
        assert_eq!(s.on_rejected(400, item(3)), RejectVerdict::DeadLetter);
        assert_eq!(s.run().len(), 1);
    }

    #[test]
    fn a_different_status_ends_a_fault_and_starts_a_new_run() {
        let mut s = SystemicRejects::new(2);
        s.on_rejected(404, item(1));
        assert!(matches!(
            s.on_rejected(404, item(2)),
            RejectVerdict::Hold { .. }
        ));
        assert_eq!(s.on_rejected(400, item(2)), RejectVerdict::DeadLetter);
        assert_eq!(s.fault(), None);
    }

    #[test]
    fn threshold_zero_never_trips() {
        let mut s = SystemicRejects::new(0);
        for n in 0..1000 {
            assert_eq!(s.on_rejected(404, item(n)), RejectVerdict::DeadLetter);
        }
        assert!(s.run().is_empty());
    }
}
