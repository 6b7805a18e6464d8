//! An item's age, robust to a writer's wrong clock. The enqueue stamp is the writer's wall
//! clock; edge boxes boot without one (stamps from 1970) and clocks can be set ahead. A stamp
//! is believed only inside sanity bounds: not before [`CLOCK_FLOOR_UNIX_MS`] (a date before
//! this software existed, so no true enqueue is earlier) and not more than
//! [`FUTURE_SKEW_MAX_MS`] after the reader's clock. Otherwise the item's age is counted from
//! when this worker first took it (a monotonic clock), so a 1970 stamp does not expire at
//! once and a far-future stamp still expires after the retention age. Even a believed stamp
//! never makes an item younger than the time this worker has held it. See
//! `docs/SEMANTICS.md` §2.

use std::time::Instant;

use crate::dead_letter::now_unix_ms;
use crate::escalation::Escalation;

/// 2025-01-01T00:00:00Z: stamps before it come from a clock that was not set.
pub(super) const CLOCK_FLOOR_UNIX_MS: u64 = 1_735_689_600_000;

/// Stamps more than 5 minutes ahead of the reader's clock come from a clock set ahead.
pub(super) const FUTURE_SKEW_MAX_MS: u64 = 5 * 60_000;

/// When the worker first took the head item.
#[derive(Clone, Copy, Debug)]
pub(super) struct FirstSeen {
    pub(super) lane: u16,
    pub(super) seq: u64,
    pub(super) at: Instant,
}

/// Whether `stamp_ms` is a plausible enqueue time at reader time `now_ms`.
pub(super) fn stamp_is_plausible(stamp_ms: u64, now_ms: u64) -> bool {
    (CLOCK_FLOOR_UNIX_MS..=now_ms.saturating_add(FUTURE_SKEW_MAX_MS)).contains(&stamp_ms)
}

/// The age of `esc` now, first taken by this worker at `first_seen` (`None`: not held).
pub(super) fn item_age_ms(first_seen: Option<FirstSeen>, esc: &Escalation) -> u64 {
    let held_ms = first_seen.map_or(0, |f| {
        u64::try_from(f.at.elapsed().as_millis()).unwrap_or(u64::MAX)
    });
    age_ms(esc, now_unix_ms(), held_ms)
}

/// The age of `esc` at reader time `now_ms`, held by this worker for `held_ms`.
pub(super) fn age_ms(esc: &Escalation, now_ms: u64, held_ms: u64) -> u64 {
    if stamp_is_plausible(esc.enqueued_at_unix_ms, now_ms) {
        esc.age_ms(now_ms).max(held_ms)
    } else {
        held_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escalation::ImageSource;

    const NOW: u64 = 1_796_000_000_000;

    fn stamped(ms: u64) -> Escalation {
        let mut esc = Escalation::new("det", ImageSource::Inline(vec![1].into()));
        esc.enqueued_at_unix_ms = ms;
        esc
    }

    /// Story (probe F11): an escalation stamped in 1970 (an edge box before time sync) was
    /// expired at once, and one stamped 30 days ahead would never expire.
    #[test]
    fn implausible_stamps_age_from_when_the_worker_took_the_item() {
        assert_eq!(age_ms(&stamped(60_000), NOW, 5), 5);
        assert_eq!(age_ms(&stamped(NOW + 30 * 86_400_000), NOW, 7), 7);
        // Plausible stamps are believed, and never make the item younger than held.
        assert_eq!(age_ms(&stamped(NOW - 1_000), NOW, 5), 1_000);
        assert_eq!(age_ms(&stamped(NOW + 60_000), NOW, 5), 5);
        assert_eq!(age_ms(&stamped(NOW - 1_000), NOW, 9_000), 9_000);
        // A reader whose own clock is unset trusts no stamp.
        assert_eq!(age_ms(&stamped(NOW), 120_000, 3), 3);
    }
}
