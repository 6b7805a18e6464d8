//! The error-rate spike detector: failures counted per bucket (a minute by default), an
//! exponentially weighted moving baseline of the per-bucket count, and a trigger when the
//! current bucket exceeds `factor` × baseline and a floor. Time is passed in.

use serde::{Deserialize, Serialize};

/// Spike detector settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpikeConfig {
    /// Bucket length. Default 60000 (a minute); minimum 1.
    pub bucket_ms: u64,
    /// Weight of the newest bucket in the baseline. Default 0.2; clamped to 0.01..=1.
    pub baseline_weight: f64,
    /// Trigger when the current bucket's failures exceed this multiple of the baseline.
    /// Default 10.
    pub factor: f64,
    /// …and are at least this many. Default 20.
    pub failures_min: u64,
}

impl Default for SpikeConfig {
    fn default() -> Self {
        Self {
            bucket_ms: 60_000,
            baseline_weight: 0.2,
            factor: 10.0,
            failures_min: 20,
        }
    }
}

/// A detected spike.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spike {
    /// Failures in the current bucket.
    pub failures: u64,
    /// The baseline, failures per bucket.
    pub baseline: f64,
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct SpikeDetector {
    config: SpikeConfig,
    bucket_start_ms: Option<u64>,
    current: u64,
    baseline: f64,
}

impl SpikeDetector {
    /// A detector with an empty history (baseline 0: the floor alone decides at first).
    pub fn new(config: SpikeConfig) -> Self {
        let config = SpikeConfig {
            bucket_ms: config.bucket_ms.max(1),
            baseline_weight: config.baseline_weight.clamp(0.01, 1.0),
            ..config
        };
        Self {
            config,
            bucket_start_ms: None,
            current: 0,
            baseline: 0.0,
        }
    }

    /// The baseline, failures per bucket.
    pub fn baseline(&self) -> f64 {
        self.baseline
    }

    /// Rolls the buckets forward to `now_ms` (a quiet bucket counts as 0 failures).
    pub fn tick(&mut self, now_ms: u64) {
        let bucket = self.config.bucket_ms;
        let start = *self.bucket_start_ms.get_or_insert(now_ms);
        if now_ms < start.saturating_add(bucket) {
            return;
        }
        let elapsed_buckets = (now_ms - start) / bucket;
        let w = self.config.baseline_weight;
        self.baseline = w * self.current as f64 + (1.0 - w) * self.baseline;
        // Further empty buckets decay the baseline; bounded so a long sleep costs nothing.
        for _ in 1..elapsed_buckets.min(64) {
            self.baseline *= 1.0 - w;
        }
        self.current = 0;
        self.bucket_start_ms = Some(start + elapsed_buckets * bucket);
    }

    /// Counts a failure at `now_ms`; returns a spike when this failure makes the current
    /// bucket exceed the threshold (once per bucket: only the crossing failure reports).
    pub fn record_failure(&mut self, now_ms: u64) -> Option<Spike> {
        self.tick(now_ms);
        self.current += 1;
        let threshold = (self.config.factor * self.baseline).max(0.0);
        let over = |n: u64| n as f64 > threshold && n >= self.config.failures_min;
        (over(self.current) && !over(self.current - 1)).then_some(Spike {
            failures: self.current,
            baseline: self.baseline,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> SpikeDetector {
        SpikeDetector::new(SpikeConfig {
            bucket_ms: 1000,
            baseline_weight: 0.5,
            factor: 10.0,
            failures_min: 5,
        })
    }

    #[test]
    fn steady_failures_build_a_baseline_and_do_not_trigger() {
        let mut d = detector();
        // 2 failures per bucket for 10 buckets: below the floor, baseline → 2.
        for b in 0..10 {
            assert_eq!(d.record_failure(b * 1000), None);
            assert_eq!(d.record_failure(b * 1000 + 500), None);
        }
        d.tick(10_000);
        assert!((d.baseline() - 2.0).abs() < 0.01, "{}", d.baseline());
        // 19 in one bucket is below 10 × baseline; the one crossing it reports, once.
        let spikes: Vec<_> = (0..40).map(|i| d.record_failure(10_000 + i)).collect();
        assert!(spikes[..19].iter().all(Option::is_none));
        let reported: Vec<_> = spikes.iter().flatten().collect();
        assert_eq!(reported.len(), 1);
        assert!((20..=21).contains(&reported[0].failures), "{reported:?}");
    }

    #[test]
    fn floor_applies_with_an_empty_baseline_and_quiet_buckets_decay() {
        let mut d = detector();
        let first: Vec<_> = (0..5).map(|i| d.record_failure(i)).collect();
        assert_eq!(first.iter().filter(|s| s.is_some()).count(), 1);
        assert_eq!(first[4].map(|s| s.failures), Some(5));
        d.tick(1000);
        assert!((d.baseline() - 2.5).abs() < 1e-9);
        d.tick(5000);
        assert!(d.baseline() < 0.2, "{}", d.baseline());
    }
}
