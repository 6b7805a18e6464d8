//! The last hour of delivery, per minute, for the status page's chart: a ring of at most
//! [`MINUTES`] + 1 samples of the worker's running totals (delivered, and failed =
//! retried + dead-lettered), the last one taken in each minute. Samples come from the
//! server's accept loop (at most one a second) and from every page request, so the ring
//! is fed whether or not anyone looks. A minute's count is the growth of a total between
//! the last samples of that minute and of the minute before; the totals start at zero
//! with the process, which is the baseline before the first sample.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use escalation_queue::Stats;

/// Minutes shown.
pub const MINUTES: usize = 60;
/// Samples are taken at most this often (milliseconds) by [`History::tick`].
const SAMPLE_INTERVAL_MS: u64 = 1_000;

/// Running totals at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Escalations delivered.
    pub delivered: u64,
    /// Attempts that failed: retried plus dead-lettered.
    pub failed: u64,
}

impl Totals {
    /// The totals in `stats` now.
    pub fn of(stats: &Stats) -> Self {
        let s = stats.snapshot();
        Self {
            delivered: s.delivered,
            failed: s.retried.saturating_add(s.dead_lettered_total),
        }
    }
}

/// One minute's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinuteCounts {
    /// Minutes since the unix epoch.
    pub minute: u64,
    /// Delivered in that minute.
    pub delivered: u64,
    /// Failed attempts in that minute.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Ring {
    /// (minute, totals at the last sample in it), oldest first.
    samples: VecDeque<(u64, Totals)>,
    /// The totals before the oldest sample kept.
    baseline: Totals,
    last_sample_ms: Option<u64>,
}

/// The ring, shared by the accept loop and the page.
#[derive(Debug, Default)]
pub struct History(Mutex<Ring>);

impl History {
    /// Records `totals` as seen at `now_ms`.
    pub fn record(&self, now_ms: u64, totals: Totals) {
        let mut ring = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        ring.last_sample_ms = Some(now_ms);
        let minute = now_ms / 60_000;
        match ring.samples.back_mut() {
            Some((last, value)) if *last >= minute => *value = totals,
            _ => ring.samples.push_back((minute, totals)),
        }
        while ring.samples.len() > MINUTES + 1 {
            if let Some((_, oldest)) = ring.samples.pop_front() {
                ring.baseline = oldest;
            }
        }
    }

    /// Samples `stats` unless a sample was taken within the last second.
    pub fn tick(&self, now_ms: u64, stats: &Stats) {
        let due = {
            let ring = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            ring.last_sample_ms
                .is_none_or(|last| now_ms.saturating_sub(last) >= SAMPLE_INTERVAL_MS)
        };
        if due {
            self.record(now_ms, Totals::of(stats));
        }
    }

    /// The [`MINUTES`] minutes ending with the one holding `now_ms`, oldest first.
    pub fn last_hour(&self, now_ms: u64) -> Vec<MinuteCounts> {
        let ring = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now_minute = now_ms / 60_000;
        let first = now_minute.saturating_sub(MINUTES as u64 - 1);
        // The totals at the end of `minute`: the last sample at or before it.
        let end = |minute: u64| {
            ring.samples
                .iter()
                .rev()
                .find(|(m, _)| *m <= minute)
                .map_or(ring.baseline, |(_, t)| *t)
        };
        (first..=now_minute)
            .map(|minute| {
                let before = match minute.checked_sub(1) {
                    Some(previous) => end(previous),
                    None => ring.baseline,
                };
                let after = end(minute);
                MinuteCounts {
                    minute,
                    delivered: after.delivered.saturating_sub(before.delivered),
                    failed: after.failed.saturating_sub(before.failed),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn totals(delivered: u64, failed: u64) -> Totals {
        Totals { delivered, failed }
    }

    /// Each minute shows what grew in it; minutes without samples show nothing; the
    /// counts of the hour add up to the totals when the process is younger than an hour.
    #[test]
    fn minutes_count_the_growth_of_the_totals() {
        let h = History::default();
        let t0 = 1_000 * MIN;
        h.record(t0 + 5_000, totals(3, 1));
        h.record(t0 + 50_000, totals(5, 1));
        h.record(t0 + 2 * MIN, totals(9, 4));
        let hour = h.last_hour(t0 + 2 * MIN + 10);
        assert_eq!(hour.len(), MINUTES);
        let last3: Vec<(u64, u64)> = hour[MINUTES - 3..]
            .iter()
            .map(|m| (m.delivered, m.failed))
            .collect();
        assert_eq!(last3, [(5, 1), (0, 0), (4, 3)]);
        let sum: u64 = hour.iter().map(|m| m.delivered).sum();
        assert_eq!(sum, 9);
    }

    /// The ring stays bounded over a long life and forgets what is older than an hour.
    #[test]
    fn the_ring_is_bounded_and_forgets_old_minutes() {
        let h = History::default();
        for minute in 0..500u64 {
            h.record(minute * MIN, totals(minute * 2, minute));
        }
        assert!(h.0.lock().expect("lock").samples.len() <= MINUTES + 1);
        let hour = h.last_hour(499 * MIN);
        assert!(
            hour.iter().all(|m| (m.delivered, m.failed) == (2, 1)),
            "{hour:?}"
        );
        assert_eq!(hour.first().map(|m| m.minute), Some(440));
    }
}
