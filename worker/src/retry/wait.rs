//! The one wait before the next attempt: its length and its cause.
//!
//! After a retryable failure exactly one rule decides the wait. While the circuit is
//! open, the breaker's probe interval governs (the per-item backoff is not drawn, so the
//! two never compound); while it is closed, the per-item backoff does. A `Retry-After`
//! from the cloud wins when it asks for longer (capped by `retry_after_max_ms`).

use std::fmt;
use std::time::{Duration, Instant};

use super::backoff::{Backoff, BackoffConfig};
use super::breaker::{Admission, BreakerConfig, CircuitBreaker};

/// Why the worker is waiting before its next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WaitCause {
    /// The per-item exponential backoff (circuit closed).
    Backoff,
    /// The cloud's `Retry-After`, longer than the backoff or the probe interval.
    RetryAfter,
    /// The circuit breaker is open: the wait until the next half-open probe.
    Breaker,
    /// The cloud rejects the API token: the head item is retried every
    /// `auth_retry_interval_ms`.
    AuthPause,
    /// A run of identical rejections looks like a misconfiguration, not bad items: delivery
    /// is paused and the head item probes at the breaker's interval.
    SystemicFault,
}

impl WaitCause {
    /// Every cause, in the order stats list them.
    pub const ALL: [Self; 5] = [
        Self::Backoff,
        Self::RetryAfter,
        Self::Breaker,
        Self::AuthPause,
        Self::SystemicFault,
    ];

    /// The snake_case name used in logs, stats and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backoff => "backoff",
            Self::RetryAfter => "retry_after",
            Self::Breaker => "breaker",
            Self::AuthPause => "auth_pause",
            Self::SystemicFault => "systemic_fault",
        }
    }

    /// The position in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

impl fmt::Display for WaitCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One wait before the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// How long.
    pub length: Duration,
    /// Why.
    pub cause: WaitCause,
}

impl Wait {
    /// A wait of `length` for `cause`.
    pub fn new(length: Duration, cause: WaitCause) -> Self {
        Self { length, cause }
    }

    /// The wait after a retryable failure (already recorded by the breaker).
    /// `probe_in`: the time until the breaker admits its next probe, `Some` while the
    /// circuit is open; `retries`: the item's retries so far (0 before its first retry);
    /// `retry_after`: the cloud's `Retry-After`, if any.
    pub fn after_retryable_failure(
        probe_in: Option<Duration>,
        backoff: &mut Backoff,
        retries: u32,
        retry_after: Option<Duration>,
    ) -> Self {
        match probe_in {
            Some(probe_in) => {
                let requested = backoff.retry_after_capped(retry_after);
                if requested > probe_in {
                    Self::new(requested, WaitCause::RetryAfter)
                } else {
                    Self::new(probe_in, WaitCause::Breaker)
                }
            }
            None => {
                let jitter = backoff.jitter(retries);
                let requested = backoff.retry_after_capped(retry_after);
                if requested > jitter {
                    Self::new(requested, WaitCause::RetryAfter)
                } else {
                    Self::new(jitter, WaitCause::Backoff)
                }
            }
        }
    }
}

/// The worker's wait rule replayed on a virtual clock through an outage: every attempt
/// fails (retryable) until `outage` has passed, then the first one succeeds. Requests take
/// no time, so this is the rule alone; it gives the recovery figures for outages too long
/// to wait for in a test (labelled as simulated in PERFORMANCE.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutageReplay {
    /// Attempts made during the outage.
    pub attempts: u64,
    /// The longest single wait.
    pub longest_wait: Duration,
    /// From the end of the outage to the first (successful) attempt.
    pub first_success_after_recovery: Duration,
}

impl OutageReplay {
    /// Replays an outage of `outage` with these settings and jitter `seed`.
    pub fn run(
        backoff: BackoffConfig,
        breaker: BreakerConfig,
        outage: Duration,
        seed: u64,
    ) -> Self {
        let mut backoff = Backoff::with_seed(backoff, seed);
        let mut breaker = CircuitBreaker::new(breaker);
        let start = Instant::now();
        let mut now = start;
        let (mut retries, mut attempts, mut longest_wait) = (0, 0, Duration::ZERO);
        loop {
            if let Admission::Wait { retry_in } = breaker.admit(now) {
                longest_wait = longest_wait.max(retry_in);
                now += retry_in;
                continue;
            }
            let elapsed = now.duration_since(start);
            if elapsed >= outage {
                return Self {
                    attempts,
                    longest_wait,
                    first_success_after_recovery: elapsed - outage,
                };
            }
            attempts += 1;
            breaker.record_failure(now);
            let probe_in = breaker.probe_in(now);
            let wait = Wait::after_retryable_failure(probe_in, &mut backoff, retries, None);
            retries = if probe_in.is_some() { 0 } else { retries + 1 };
            longest_wait = longest_wait.max(wait.length);
            now += wait.length;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::{BackoffConfig, BreakerConfig};

    fn backoff() -> Backoff {
        Backoff::with_seed(BackoffConfig::default(), 11)
    }

    #[test]
    fn an_open_circuit_waits_the_probe_interval_not_the_backoff_on_top() {
        // Story: the wait used to be the jittered backoff *and then* the breaker's pause,
        // both growing; an item 20 retries deep would wait up to 30 s + 60 s.
        let mut backoff = backoff();
        let wait = Wait::after_retryable_failure(
            Some(Duration::from_millis(1_500)),
            &mut backoff,
            20,
            None,
        );
        assert_eq!(
            wait,
            Wait::new(Duration::from_millis(1_500), WaitCause::Breaker)
        );
    }

    #[test]
    fn retry_after_wins_over_the_probe_interval_only_when_longer() {
        let mut backoff = backoff();
        let short = Some(Duration::from_secs(1));
        let long = Some(Duration::from_secs(9));
        let probe_in = Some(Duration::from_secs(4));
        assert_eq!(
            Wait::after_retryable_failure(probe_in, &mut backoff, 3, short).cause,
            WaitCause::Breaker
        );
        assert_eq!(
            Wait::after_retryable_failure(probe_in, &mut backoff, 3, long),
            Wait::new(Duration::from_secs(9), WaitCause::RetryAfter)
        );
    }

    #[test]
    fn a_closed_circuit_waits_the_backoff_and_names_retry_after_when_it_won() {
        let mut backoff = backoff();
        let wait = Wait::after_retryable_failure(None, &mut backoff, 0, None);
        assert_eq!(wait.cause, WaitCause::Backoff);
        assert!(wait.length <= Duration::from_millis(500));
        let wait =
            Wait::after_retryable_failure(None, &mut backoff, 0, Some(Duration::from_secs(2)));
        assert_eq!(
            wait,
            Wait::new(Duration::from_secs(2), WaitCause::RetryAfter)
        );
    }

    #[test]
    fn long_outages_never_push_the_probe_interval_past_its_cap() {
        // Story: with 503s to the first 15 requests the reader sent 11 requests in 153 s and
        // delivered nothing; the recovery bound must not depend on the outage's length.
        for minutes in [1, 10, 60, 24 * 60] {
            let outage = Duration::from_secs(60 * minutes);
            let replay = OutageReplay::run(
                BackoffConfig::default(),
                BreakerConfig::default(),
                outage,
                11,
            );
            let longest = replay.longest_wait;
            assert!(
                longest <= Duration::from_secs(5),
                "{minutes} min: {longest:?}"
            );
            let to_first = replay.first_success_after_recovery;
            assert!(
                to_first <= Duration::from_secs(5),
                "{minutes} min: {to_first:?}"
            );
            assert!(replay.attempts >= 12 * minutes, "{minutes} min: {replay:?}");
        }
    }
}
