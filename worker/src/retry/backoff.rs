//! Exponential backoff with full jitter, and `Retry-After` that wins when longer.

use std::time::Duration;

/// Backoff settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        Self { delay_base_ms: 500, delay_max_ms: 30_000, retry_after_max_ms: 300_000 }
    }
}

impl BackoffConfig {
    /// Clamps every field to its minimum.
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
        Self { config: config.validated(), rng: fastrand::Rng::with_seed(seed) }
    }

    /// The configuration in use.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// The jitter ceiling for retry number `retry` (0 = first retry), in milliseconds.
    pub fn ceiling_ms(&self, retry: u32) -> u64 {
        let factor = 1_u64.checked_shl(retry.min(63)).unwrap_or(u64::MAX);
        self.config.delay_base_ms.saturating_mul(factor).min(self.config.delay_max_ms)
    }

    /// The delay before retry number `retry` (0 = first retry): a full-jitter draw, or the
    /// server's `Retry-After` (capped at `retry_after_max_ms`) when that is longer.
    pub fn delay(&mut self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let jitter_ms = self.rng.u64(0..=self.ceiling_ms(retry));
        let requested_ms = retry_after
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).min(self.config.retry_after_max_ms))
            .unwrap_or(0);
        Duration::from_millis(jitter_ms.max(requested_ms))
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
    fn validated_clamps() {
        let c = BackoffConfig { delay_base_ms: 0, delay_max_ms: 0, retry_after_max_ms: 0 }.validated();
        assert_eq!((c.delay_base_ms, c.delay_max_ms), (1, 1));
    }
}
