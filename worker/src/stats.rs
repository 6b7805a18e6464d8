//! Counters and gauges of one worker, lock-free (atomics), shared with whoever serves them
//! (the status server); [`Stats::snapshot`] gives a serializable copy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, Ordering::Relaxed};

use serde::Serialize;

use crate::retry::{CircuitState, DeadLetterReason, WaitCause};

/// Upper bounds (inclusive, milliseconds) of the latency histogram buckets; one more bucket
/// counts everything slower.
pub const LATENCY_BUCKET_BOUNDS_MS: [u64; 16] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 5_000, 30_000, 60_000, 300_000, 3_600_000,
    86_400_000,
];

/// A fixed-bucket histogram of milliseconds.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKET_BOUNDS_MS.len() + 1],
    sum_ms: AtomicU64,
}

/// A copy of a [`LatencyHistogram`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HistogramSnapshot {
    /// `(upper bound in ms, count)`; the last bound is `None` (+Inf). Not cumulative.
    pub buckets: Vec<(Option<u64>, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of all observations, in milliseconds.
    pub sum_ms: u64,
}

impl LatencyHistogram {
    /// Counts one observation.
    pub fn observe_ms(&self, ms: u64) {
        let i = LATENCY_BUCKET_BOUNDS_MS.partition_point(|bound| *bound < ms);
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Relaxed);
        }
        self.sum_ms.fetch_add(ms, Relaxed);
    }

    /// A copy.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let bounds = LATENCY_BUCKET_BOUNDS_MS.iter().copied().map(Some);
        let buckets: Vec<_> = bounds
            .chain([None])
            .zip(&self.buckets)
            .map(|(bound, count)| (bound, count.load(Relaxed)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, c)| c).sum(),
            buckets,
            sum_ms: self.sum_ms.load(Relaxed),
        }
    }
}

/// The worker's counters (monotonic since it started) and gauges (current values).
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) delivered: AtomicU64,
    pub(crate) delivered_duplicates: AtomicU64,
    pub(crate) attempts: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: [AtomicU64; DeadLetterReason::LABELS.len()],
    pub(crate) expired: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) queue_depth: AtomicU64,
    pub(crate) oldest_pending_age_ms: AtomicU64,
    pub(crate) circuit_state: AtomicU8,
    pub(crate) paused_for_auth: AtomicBool,
    pub(crate) incidents: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
    /// 0 when not waiting, else the [`WaitCause`] index + 1.
    pub(crate) wait_cause: AtomicU8,
    pub(crate) wait_until_unix_ms: AtomicU64,
    pub(crate) waits: [AtomicU64; WaitCause::ALL.len()],
    pub(crate) wait_ms: [AtomicU64; WaitCause::ALL.len()],
    /// The HTTP status of the systemic fault in force; 0 when none.
    pub(crate) systemic_fault_status: AtomicU16,
    pub(crate) delivery_latency: LatencyHistogram,
    pub(crate) request_latency: LatencyHistogram,
}

/// A serializable copy of [`Stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Records this worker has seen since it started: finished (delivered, dead-lettered,
    /// expired, duplicate) plus those still pending in the wal.
    pub enqueued: u64,
    /// Items the cloud accepted (duplicates included).
    pub delivered: u64,
    /// Of `delivered`: a 400 after a lost response, counted as delivered earlier.
    pub delivered_duplicates: u64,
    /// Delivery attempts made.
    pub attempts: u64,
    /// Attempts that ended in a retry.
    pub retried: u64,
    /// Items dead-lettered, by reason ([`DeadLetterReason::label`]).
    pub dead_lettered: BTreeMap<&'static str, u64>,
    /// Sum of `dead_lettered`.
    pub dead_lettered_total: u64,
    /// Items older than the retention age, dropped (with the records retention deleted).
    pub expired: u64,
    /// Items skipped because their request id or image query id was already delivered.
    pub duplicates: u64,
    /// Records durable in the wal and not yet finished (read at most a second ago).
    pub queue_depth: u64,
    /// Age of the item at the head of the queue (0 when idle).
    pub oldest_pending_age_ms: u64,
    /// `closed`, `open` or `half_open`.
    pub circuit_state: &'static str,
    /// Delivery is paused because the cloud rejected the API token.
    pub paused_for_auth: bool,
    /// Incidents raised (repeats within the dedupe window not counted).
    pub incidents: u64,
    /// Cursor checkpoints written.
    pub checkpoints: u64,
    /// Why the worker is waiting before its next attempt right now (`backoff`,
    /// `retry_after`, `breaker`, `auth_pause`, `systemic_fault`); `None` when it is not.
    pub wait_cause: Option<&'static str>,
    /// When the current wait ends (unix ms); `None` when not waiting.
    pub wait_until_unix_ms: Option<u64>,
    /// Waits since the worker started, by cause: how many and how long in total.
    pub waits: BTreeMap<&'static str, WaitTotals>,
    /// The HTTP status of a systemic fault in force (a run of identical rejections that
    /// paused delivery); `None` when there is none.
    pub systemic_fault_status: Option<u16>,
    /// From enqueue to delivery.
    pub delivery_latency: HistogramSnapshot,
    /// Duration of each delivery attempt.
    pub request_latency: HistogramSnapshot,
}

/// How many waits of one cause there were and how long they lasted in total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WaitTotals {
    /// Waits started.
    pub count: u64,
    /// Milliseconds waited (a stop cuts a wait short; the time really waited is counted).
    pub total_ms: u64,
}

impl Stats {
    /// A copy of every counter and gauge.
    pub fn snapshot(&self) -> StatsSnapshot {
        let dead_lettered: BTreeMap<_, _> = DeadLetterReason::LABELS
            .into_iter()
            .zip(&self.dead_lettered)
            .map(|(label, count)| (label, count.load(Relaxed)))
            .collect();
        let dead_lettered_total = dead_lettered.values().sum();
        let delivered = self.delivered.load(Relaxed);
        let expired = self.expired.load(Relaxed);
        let duplicates = self.duplicates.load(Relaxed);
        let queue_depth = self.queue_depth.load(Relaxed);
        StatsSnapshot {
            enqueued: delivered + dead_lettered_total + expired + duplicates + queue_depth,
            delivered,
            delivered_duplicates: self.delivered_duplicates.load(Relaxed),
            attempts: self.attempts.load(Relaxed),
            retried: self.retried.load(Relaxed),
            dead_lettered,
            dead_lettered_total,
            expired,
            duplicates,
            queue_depth,
            oldest_pending_age_ms: self.oldest_pending_age_ms.load(Relaxed),
            circuit_state: self.circuit_state().as_str(),
            paused_for_auth: self.paused_for_auth.load(Relaxed),
            incidents: self.incidents.load(Relaxed),
            checkpoints: self.checkpoints.load(Relaxed),
            wait_cause: self.wait_cause().map(WaitCause::as_str),
            wait_until_unix_ms: self
                .wait_cause()
                .map(|_| self.wait_until_unix_ms.load(Relaxed)),
            waits: WaitCause::ALL
                .iter()
                .map(|c| (c.as_str(), self.wait_totals(*c)))
                .collect(),
            systemic_fault_status: Some(self.systemic_fault_status.load(Relaxed))
                .filter(|s| *s != 0),
            delivery_latency: self.delivery_latency.snapshot(),
            request_latency: self.request_latency.snapshot(),
        }
    }

    /// Clears the gauges a worker sets from its own state (circuit breaker, auth pause),
    /// keeping every counter: for a new worker that continues these stats.
    pub(crate) fn reset_worker_gauges(&self) {
        self.set_circuit_state(CircuitState::Closed);
        self.paused_for_auth.store(false, Relaxed);
        self.end_wait(0);
        self.systemic_fault_status.store(0, Relaxed);
    }

    /// The cause of the wait in progress, if any.
    pub fn wait_cause(&self) -> Option<WaitCause> {
        let code = usize::from(self.wait_cause.load(Relaxed));
        code.checked_sub(1)
            .and_then(|i| WaitCause::ALL.get(i))
            .copied()
    }

    /// Waits of `cause` so far.
    pub fn wait_totals(&self, cause: WaitCause) -> WaitTotals {
        let load = |a: &[AtomicU64]| a.get(cause.index()).map_or(0, |c| c.load(Relaxed));
        WaitTotals {
            count: load(&self.waits),
            total_ms: load(&self.wait_ms),
        }
    }

    /// A wait of `cause` starts, ending at `until_unix_ms`.
    pub(crate) fn begin_wait(&self, cause: WaitCause, until_unix_ms: u64) {
        if let Some(c) = self.waits.get(cause.index()) {
            c.fetch_add(1, Relaxed);
        }
        self.wait_until_unix_ms.store(until_unix_ms, Relaxed);
        let code = u8::try_from(cause.index() + 1).unwrap_or(u8::MAX);
        self.wait_cause.store(code, Relaxed);
    }

    /// The wait in progress ended after `waited_ms`.
    pub(crate) fn end_wait(&self, waited_ms: u64) {
        if let Some(c) = self.wait_cause().and_then(|c| self.wait_ms.get(c.index())) {
            c.fetch_add(waited_ms, Relaxed);
        }
        self.wait_cause.store(0, Relaxed);
        self.wait_until_unix_ms.store(0, Relaxed);
    }

    /// Items dead-lettered with `label` (one of [`DeadLetterReason::LABELS`]).
    pub fn dead_lettered_count(&self, label: &str) -> u64 {
        DeadLetterReason::LABELS
            .iter()
            .position(|l| *l == label)
            .and_then(|i| self.dead_lettered.get(i))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// The circuit breaker's state.
    pub fn circuit_state(&self) -> CircuitState {
        match self.circuit_state.load(Relaxed) {
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    pub(crate) fn count_dead_letter(&self, reason: &DeadLetterReason) {
        if let Some(c) = self.dead_lettered.get(reason.label_index()) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn set_circuit_state(&self, state: CircuitState) {
        let code = match state {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        };
        self.circuit_state.store(code, Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let h = LatencyHistogram::default();
        for ms in [0, 1, 2, 3, 86_400_000, 86_400_001] {
            h.observe_ms(ms);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.buckets[0], (Some(1), 2));
        assert_eq!(s.buckets[1], (Some(2), 1));
        assert_eq!(s.buckets[2], (Some(5), 1));
        assert_eq!(s.buckets.last(), Some(&(None, 1)));
    }

    #[test]
    fn snapshot_serializes_with_reason_labels() {
        let stats = Stats::default();
        stats.count_dead_letter(&DeadLetterReason::Rejected {
            class: crate::retry::ErrorClass::BadRequest,
            status: Some(400),
        });
        stats.count_dead_letter(&DeadLetterReason::Undecodable);
        Stats::add(&stats.delivered, 3);
        Stats::set(&stats.queue_depth, 4);
        stats.set_circuit_state(CircuitState::Open);
        let snap = stats.snapshot();
        assert_eq!(snap.enqueued, 3 + 2 + 4);
        assert_eq!(snap.dead_lettered_total, 2);
        let json = serde_json::to_value(&snap).expect("json");
        assert_eq!(json["dead_lettered"]["bad_request"], 1);
        assert_eq!(stats.dead_lettered_count("undecodable"), 1);
        assert_eq!(json["circuit_state"], "open");
    }

    #[test]
    fn a_continuing_worker_clears_the_gauges_of_the_last_one_but_keeps_the_counters() {
        // Story: after a reopen, /health must not report an open circuit or an auth pause
        // of a worker that no longer exists, while counters go on.
        let stats = Stats::default();
        Stats::add(&stats.delivered, 7);
        stats.set_circuit_state(CircuitState::Open);
        stats.paused_for_auth.store(true, Relaxed);
        stats.reset_worker_gauges();
        let snap = stats.snapshot();
        assert_eq!(snap.delivered, 7);
        assert_eq!(snap.circuit_state, "closed");
        assert!(!snap.paused_for_auth);
    }

    #[test]
    fn a_wait_shows_its_cause_and_end_while_it_lasts_and_adds_to_its_totals() {
        // Story: the logged retry_in_ms left the breaker's pause out; an operator must see
        // what the worker is waiting for, until when, and how much time each cause cost.
        let stats = Stats::default();
        stats.begin_wait(WaitCause::Breaker, 1_234);
        let snap = stats.snapshot();
        assert_eq!(snap.wait_cause, Some("breaker"));
        assert_eq!(snap.wait_until_unix_ms, Some(1_234));
        stats.end_wait(800);
        stats.begin_wait(WaitCause::Breaker, 5_000);
        stats.end_wait(200);
        let snap = stats.snapshot();
        assert_eq!((snap.wait_cause, snap.wait_until_unix_ms), (None, None));
        let breaker = snap.waits["breaker"];
        assert_eq!((breaker.count, breaker.total_ms), (2, 1_000));
        assert_eq!(snap.waits["backoff"], WaitTotals::default());
        let json = serde_json::to_value(&snap).expect("json");
        assert_eq!(json["waits"]["breaker"]["total_ms"], 1_000);
        assert_eq!(json["wait_cause"], serde_json::Value::Null);
    }
}
