//! Exponential backoff with full jitter, and `Retry-After` that wins when longer.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::layout::Error;

/// Backoff settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// Ceiling of the first retry's delay. Default 500; minimum 1.
    pub delay_base_ms: u64,
    /// Largest ceiling; delays never exceed it unless `Retry-After` asks for more.
    /// Default 30000; minimum `delay_base_ms`.
    pub delay_max_ms: u64,
    /// Largest `Retry-After` honoured; longer requests are cut to this. Default 300000.
    pub retry_after_max_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            delay_base_ms: 500,
            delay_max_ms: 30_000,
            retry_after_max_ms: 300_000,
        }
    }
}

impl BackoffConfig {
    /// Rejects what [`validated`](Self::validated) would clamp: configuration loading calls
    /// this, so a bad value stops the start (probe F20) instead of being changed silently.
    /// Keys are named relative to `worker`.
    pub fn validate(&self) -> Result<(), Error> {
        if self.delay_base_ms == 0 {
            return Err(Error::Config {
                key: "backoff.delay_base_ms",
                value: "0".to_owned(),
                allowed: "at least 1".to_owned(),
            });
        }
        if self.delay_max_ms < self.delay_base_ms {
            return Err(Error::Config {
                key: "backoff.delay_max_ms",
                value: self.delay_max_ms.to_string(),
                allowed: format!("at least delay_base_ms ({})", self.delay_base_ms),
            });
        }
        Ok(())
    }

    /// Clamps every field to its minimum (the worker's own defence; configuration loading
    /// rejects these values first with [`validate`](Self::validate)).
    #[must_use]
    pub fn validated(mut self) -> Self {
        self.delay_base_ms = self.delay_base_ms.max(1);
        self.delay_max_ms = self.delay_max_ms.max(self.delay_base_ms);
        self
    }
}

/// Computes retry delays. "Full jitter": the delay is uniform in `[0, ceiling]` where the
/// ceiling doubles per retry from `delay_base_ms` up to `delay_max_ms`.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    rng: fastrand::Rng,
}

impl Backoff {
    /// A backoff seeded from the thread's random generator.
    pub fn new(config: BackoffConfig) -> Self {
        Self::with_seed(config, fastrand::u64(..))
    }

    /// A deterministic backoff, for tests and reproducible simulations.
    pub fn with_seed(config: BackoffConfig, seed: u64) -> Self {
        Self {
            config: config.validated(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// The jitter ceiling for retry number `retry` (0 = first retry), in milliseconds.
    pub fn ceiling_ms(&self, retry: u32) -> u64 {
        let factor = 1_u64.checked_shl(retry.min(63)).unwrap_or(u64::MAX);
        self.config
            .delay_base_ms
            .saturating_mul(factor)
            .min(self.config.delay_max_ms)
    }

    /// The delay before retry number `retry` (0 = first retry): a full-jitter draw, or the
    /// server's `Retry-After` (capped at `retry_after_max_ms`) when that is longer. Which of
    /// the two it was is the wait's cause (`Wait::after_retryable_failure`).
    pub fn delay(&mut self, retry: u32, retry_after: Option<Duration>) -> Duration {
        self.jitter(retry).max(self.retry_after_capped(retry_after))
    }

    /// A full-jitter draw for retry number `retry`: uniform in 0 to the retry's ceiling.
    pub fn jitter(&mut self, retry: u32) -> Duration {
        Duration::from_millis(self.rng.u64(0..=self.ceiling_ms(retry)))
    }

    /// The server's `Retry-After` cut to `retry_after_max_ms` (zero when there is none).
    pub fn retry_after_capped(&self, retry_after: Option<Duration>) -> Duration {
        let cap = Duration::from_millis(self.config.retry_after_max_ms);
        retry_after.map_or(Duration::ZERO, |d| d.min(cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_then_cap() {
        let backoff = Backoff::with_seed(BackoffConfig::default(), 1);
        let ceilings: Vec<u64> = (0..8).map(|n| backoff.ceiling_ms(n)).collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(backoff.ceiling_ms(u32::MAX), 30_000);
    }

    #[test]
    fn same_seed_same_delays() {
        let mut a = Backoff::with_seed(BackoffConfig::default(), 42);
        let mut b = Backoff::with_seed(BackoffConfig::default(), 42);
        for n in 0..20 {
            assert_eq!(a.delay(n, None), b.delay(n, None));
        }
    }

    #[test]
    fn full_jitter_covers_zero_to_cap_and_never_exceeds_it() {
        let mut backoff = Backoff::with_seed(BackoffConfig::default(), 9);
        let draws: Vec<u64> = (0..10_000)
            .map(|_| backoff.delay(20, None).as_millis() as u64)
            .collect();
        assert!(draws.iter().all(|&d| d <= 30_000));
        assert!(*draws.iter().min().unwrap_or(&u64::MAX) < 300);
        assert!(*draws.iter().max().unwrap_or(&0) > 29_700);
        let mean = draws.iter().sum::<u64>() / draws.len() as u64;
        assert!((14_000..16_000).contains(&mean), "mean {mean}");
        // Each decile of [0, cap] gets roughly a tenth of the draws.
        for decile in 0..10 {
            let n = draws.iter().filter(|&&d| d * 10 / 30_001 == decile).count();
            assert!((800..1200).contains(&n), "decile {decile}: {n}");
        }
        for retry in 0..6 {
            let ceiling = backoff.ceiling_ms(retry);
            assert!((0..1000).all(|_| backoff.delay(retry, None).as_millis() as u64 <= ceiling));
        }
    }

    #[test]
    fn retry_after_wins_when_longer_but_is_capped() {
        let mut backoff = Backoff::with_seed(BackoffConfig::default(), 3);
        assert_eq!(
            backoff.delay(0, Some(Duration::from_secs(10))),
            Duration::from_secs(10)
        );
        assert_eq!(
            backoff.delay(0, Some(Duration::from_secs(3600))),
            Duration::from_secs(300)
        );
        // A short Retry-After is a floor, not a replacement for the jitter.
        let delays: Vec<Duration> = (0..200)
            .map(|_| backoff.delay(10, Some(Duration::from_millis(5))))
            .collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(5)));
        assert!(delays.iter().any(|d| *d > Duration::from_secs(1)));
    }

    /// Probe F20: `delay_base_ms = 0` and `delay_max_ms < delay_base_ms` started without
    /// complaint; they are rejected, naming the key and the bound.
    #[test]
    fn validate_rejects_what_validated_clamps() {
        BackoffConfig::default().validate().expect("defaults");
        let zero = BackoffConfig {
            delay_base_ms: 0,
            ..BackoffConfig::default()
        };
        let msg = zero.validate().expect_err("zero").to_string();
        assert!(msg.contains("backoff.delay_base_ms = 0"), "{msg}");
        let inverted = BackoffConfig {
            delay_base_ms: 500,
            delay_max_ms: 100,
            ..BackoffConfig::default()
        };
        let msg = inverted.validate().expect_err("inverted").to_string();
        assert!(
            msg.contains("delay_max_ms = 100") && msg.contains("500"),
            "{msg}"
        );
    }

    #[test]
    fn validated_clamps() {
        let c = BackoffConfig {
            delay_base_ms: 0,
            delay_max_ms: 0,
            retry_after_max_ms: 0,
        }
        .validated();
        assert_eq!((c.delay_base_ms, c.delay_max_ms), (1, 1));
    }
}
