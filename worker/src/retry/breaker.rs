//! A circuit breaker that pauses delivery during outages instead of burning item budgets.
//!
//! `Closed` → (N consecutive retryable failures) → `Open` → (cool-down) → `HalfOpen`, where
//! exactly one probe (the head item) may go → `Closed` on success, `Open` again on failure
//! with a doubled cool-down, capped at `cool_down_max_ms` (5 s by default): however long
//! an outage lasts, a probe goes out at least that often, which bounds the time from the
//! cloud's recovery to the first delivery. Time is passed in, so tests need no sleeping.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::layout::Error;

/// Circuit breaker settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive retryable failures that open the circuit. Default 5; minimum 1.
    pub failure_threshold: u32,
    /// First cool-down before a probe. Default 1000; minimum 1.
    pub cool_down_base_ms: u64,
    /// Largest cool-down, i.e. the longest interval between probes (it doubles per failed
    /// probe up to this). Default 5000; minimum base. It bounds the recovery time.
    pub cool_down_max_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down_base_ms: 1_000,
            cool_down_max_ms: 5_000,
        }
    }
}

impl BreakerConfig {
    /// Rejects what [`validated`](Self::validated) would clamp (probe F20); keys are named
    /// relative to `worker`. The upper bound of `cool_down_max_ms` is checked by
    /// [`WorkerConfig::validate`](crate::WorkerConfig::validate).
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |key, value: u64, allowed: String| Error::Config {
            key,
            value: value.to_string(),
            allowed,
        };
        if self.failure_threshold == 0 {
            return Err(invalid("breaker.failure_threshold", 0, "at least 1".into()));
        }
        if self.cool_down_base_ms == 0 {
            return Err(invalid("breaker.cool_down_base_ms", 0, "at least 1".into()));
        }
        if self.cool_down_max_ms < self.cool_down_base_ms {
            let allowed = format!("at least cool_down_base_ms ({})", self.cool_down_base_ms);
            return Err(invalid(
                "breaker.cool_down_max_ms",
                self.cool_down_max_ms,
                allowed,
            ));
        }
        Ok(())
    }

    /// Clamps every field to its minimum (the worker's own defence; configuration loading
    /// rejects these values first with [`validate`](Self::validate)).
    #[must_use]
    pub fn validated(mut self) -> Self {
        self.failure_threshold = self.failure_threshold.max(1);
        self.cool_down_base_ms = self.cool_down_base_ms.max(1);
        self.cool_down_max_ms = self.cool_down_max_ms.max(self.cool_down_base_ms);
        self
    }
}

/// The externally visible state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Deliveries flow.
    Closed,
    /// Paused until the cool-down ends.
    Open,
    /// One probe is allowed.
    HalfOpen,
}

impl CircuitState {
    /// `"closed"`, `"open"` or `"half_open"`, for stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to "may I send now?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Send. A `probe` tests a half-open circuit and does not consume the item's budget.
    Allowed {
        /// Whether this attempt is the half-open probe.
        probe: bool,
    },
    /// Do not send; ask again after `retry_in`.
    Wait {
        /// Time until the circuit may admit an attempt.
        retry_in: Duration,
    },
}

#[derive(Clone, Copy, Debug)]
enum Inner {
    Closed { consecutive_failures: u32 },
    Open { until: Instant, trips: u32 },
    HalfOpen { probe_in_flight: bool, trips: u32 },
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Inner,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config: config.validated(),
            inner: Inner::Closed {
                consecutive_failures: 0,
            },
        }
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        match self.inner {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { .. } => CircuitState::Open,
            Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// When an open circuit lets a probe through.
    pub fn open_until(&self) -> Option<Instant> {
        match self.inner {
            Inner::Open { until, .. } => Some(until),
            _ => None,
        }
    }

    /// The time from `now` until an open circuit admits its probe; `None` unless open.
    pub fn probe_in(&self, now: Instant) -> Option<Duration> {
        self.open_until()
            .map(|until| until.saturating_duration_since(now))
    }

    /// Opens the circuit at `now` whatever its state, for a fault the worker recognises
    /// itself (a run of identical rejections): from closed with the base cool-down, from
    /// half-open (a failed probe) with the doubled one. An open circuit stays as it is.
    pub fn trip(&mut self, now: Instant) {
        self.inner = match self.inner {
            Inner::Closed { .. } => self.open(now, 0),
            Inner::HalfOpen { trips, .. } => self.open(now, trips.saturating_add(1)),
            open @ Inner::Open { .. } => open,
        };
    }

    /// Consecutive retryable failures while closed.
    pub fn consecutive_failures(&self) -> u32 {
        match self.inner {
            Inner::Closed {
                consecutive_failures,
            } => consecutive_failures,
            _ => self.config.failure_threshold,
        }
    }

    /// Asks to send an attempt at `now`; an expired cool-down turns the circuit half-open
    /// and admits exactly one probe.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.inner {
            Inner::Closed { .. } => Admission::Allowed { probe: false },
            Inner::Open { until, trips } if now >= until => {
                self.inner = Inner::HalfOpen {
                    probe_in_flight: true,
                    trips,
                };
                Admission::Allowed { probe: true }
            }
            Inner::Open { until, .. } => Admission::Wait {
                retry_in: until - now,
            },
            Inner::HalfOpen {
                probe_in_flight: false,
                trips,
            } => {
                self.inner = Inner::HalfOpen {
                    probe_in_flight: true,
                    trips,
                };
                Admission::Allowed { probe: true }
            }
            Inner::HalfOpen {
                probe_in_flight: true,
                ..
            } => Admission::Wait {
                retry_in: Duration::from_millis(self.config.cool_down_base_ms),
            },
        }
    }

    /// Records an attempt the cloud answered (anything not retryable): closes the circuit.
    pub fn record_success(&mut self) {
        self.inner = Inner::Closed {
            consecutive_failures: 0,
        };
    }

    /// Records a retryable failure at `now`.
    pub fn record_failure(&mut self, now: Instant) {
        self.inner = match self.inner {
            Inner::Closed {
                consecutive_failures,
            } => {
                let failures = consecutive_failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    self.open(now, 0)
                } else {
                    Inner::Closed {
                        consecutive_failures: failures,
                    }
                }
            }
            Inner::HalfOpen { trips, .. } => self.open(now, trips.saturating_add(1)),
            // A late result of an attempt admitted before the circuit opened.
            open @ Inner::Open { .. } => open,
        };
    }

    /// The cool-down after `trips` failed probes: base × 2^trips, capped.
    pub fn cool_down(&self, trips: u32) -> Duration {
        let factor = 1_u64.checked_shl(trips.min(63)).unwrap_or(u64::MAX);
        let ms = self
            .config
            .cool_down_base_ms
            .saturating_mul(factor)
            .min(self.config.cool_down_max_ms);
        Duration::from_millis(ms)
    }

    fn open(&self, now: Instant, trips: u32) -> Inner {
        Inner::Open {
            until: now + self.cool_down(trips),
            trips,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            cool_down_base_ms: 100,
            cool_down_max_ms: 350,
        })
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.record_failure(t0);
        b.record_failure(t0);
        b.record_success();
        b.record_failure(t0);
        b.record_failure(t0);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.consecutive_failures(), 2);
        b.record_failure(t0);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(
            b.admit(t0 + Duration::from_millis(40)),
            Admission::Wait {
                retry_in: Duration::from_millis(60)
            }
        );
    }

    #[test]
    fn half_open_allows_exactly_one_probe() {
        let t0 = Instant::now();
        let mut b = breaker();
        (0..3).for_each(|_| b.record_failure(t0));
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.admit(t1), Admission::Allowed { probe: true });
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(matches!(b.admit(t1), Admission::Wait { .. }));
        b.record_success();
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.admit(t1), Admission::Allowed { probe: false });
    }

    #[test]
    fn failed_probes_double_the_cool_down_up_to_the_cap() {
        let mut now = Instant::now();
        let mut b = breaker();
        (0..3).for_each(|_| b.record_failure(now));
        let mut cool_downs = Vec::new();
        for _ in 0..4 {
            let until = b.open_until().expect("open");
            cool_downs.push((until - now).as_millis());
            now = until;
            assert_eq!(b.admit(now), Admission::Allowed { probe: true });
            b.record_failure(now);
            assert_eq!(b.state(), CircuitState::Open);
        }
        assert_eq!(cool_downs, [100, 200, 350, 350]);
    }

    #[test]
    fn the_default_probe_interval_is_capped_at_five_seconds() {
        // Story: the cool-down used to double up to 60 s, so after a long outage the first
        // delivery could come a minute after the cloud was back.
        let b = CircuitBreaker::new(BreakerConfig::default());
        assert_eq!(b.cool_down(0), Duration::from_secs(1));
        assert_eq!(b.cool_down(3), Duration::from_secs(5));
        assert_eq!(b.cool_down(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn trip_opens_from_closed_and_doubles_from_half_open() {
        let t0 = Instant::now();
        let mut b = breaker();
        assert_eq!(b.probe_in(t0), None);
        b.trip(t0);
        assert_eq!(b.probe_in(t0), Some(Duration::from_millis(100)));
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.admit(t1), Admission::Allowed { probe: true });
        b.trip(t1);
        assert_eq!(b.probe_in(t1), Some(Duration::from_millis(200)));
        b.trip(t1 + Duration::from_millis(50));
        assert_eq!(b.probe_in(t1), Some(Duration::from_millis(200)));
    }

    #[test]
    fn state_names() {
        let names: Vec<_> = [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(names, ["closed", "open", "half_open"]);
    }
}
