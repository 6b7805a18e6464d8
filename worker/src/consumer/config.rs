//! Worker settings: each documents its default and minimum; [`WorkerConfig::validate`]
//! rejects what is out of range.

use serde::{Deserialize, Serialize};

use crate::dedupe::DEFAULT_DEDUPE_ITEMS_MAX;
use crate::incidents::IncidentConfig;
use crate::layout::Error;
use crate::retry::{
    BackoffConfig, BreakerConfig, BudgetConfig, ClassificationPolicy, DEFAULT_AGE_MAX_MS,
};

/// The largest probe interval a configuration may ask for: 5 minutes.
pub const BREAKER_COOL_DOWN_MAX_MS: u64 = 300_000;

/// Settings of a [`Worker`](super::Worker).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Items enqueued longer ago are expired, not delivered. Default 7 days (an upstream
    /// security requirement); minimum 1.
    pub retention_ms: u64,
    /// The classification table.
    pub policy: ClassificationPolicy,
    /// Retry delays.
    pub backoff: BackoffConfig,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// Per-item budgets.
    pub budget: BudgetConfig,
    /// Consecutive escalations rejected with the same non-retryable HTTP status that make a
    /// systemic fault (delivery pauses and probes instead of dead-lettering the queue; see
    /// SEMANTICS.md). Default 5; 0 turns the rule off, otherwise 2..=10000.
    pub systemic_reject_threshold: u32,
    /// Acknowledgements between cursor checkpoints. Default 64; 1..=100000. A crash
    /// redelivers at most this many records per lane, plus the one in flight.
    pub checkpoint_acks_max: u32,
    /// Longest time acknowledgements wait for a checkpoint. Default 200; minimum 1.
    pub checkpoint_interval_ms: u64,
    /// While the token is rejected, the head item is retried this often. Default 30000;
    /// minimum 1.
    pub auth_retry_interval_ms: u64,
    /// Longest wait for a record when the queue is idle (also bounds stop latency then).
    /// Default 50; minimum 1.
    pub idle_poll_ms: u64,
    /// Gauges, wal events and threshold incidents are refreshed this often. Default 1000;
    /// minimum 1.
    pub maintenance_interval_ms: u64,
    /// Expired wal segments and dead letters are removed this often. Default 60000;
    /// minimum 1.
    pub retention_sweep_interval_ms: u64,
    /// Wait before retrying a failed dead-letter append. Default 1000; minimum 1.
    pub dead_letter_retry_ms: u64,
    /// Recent items whose ids are remembered for duplicate suppression. Default 100000;
    /// minimum 1.
    pub dedupe_items_max: usize,
    /// Incident sinks and thresholds.
    pub incidents: IncidentConfig,
    /// Seed of the backoff jitter (`None`: random), for reproducible runs.
    pub jitter_seed: Option<u64>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            retention_ms: DEFAULT_AGE_MAX_MS,
            policy: ClassificationPolicy::default(),
            backoff: BackoffConfig::default(),
            breaker: BreakerConfig::default(),
            budget: BudgetConfig::default(),
            systemic_reject_threshold: 5,
            checkpoint_acks_max: 64,
            checkpoint_interval_ms: 200,
            auth_retry_interval_ms: 30_000,
            idle_poll_ms: 50,
            maintenance_interval_ms: 1_000,
            retention_sweep_interval_ms: 60_000,
            dead_letter_retry_ms: 1_000,
            dedupe_items_max: DEFAULT_DEDUPE_ITEMS_MAX,
            incidents: IncidentConfig::default(),
            jitter_seed: None,
        }
    }
}

impl WorkerConfig {
    /// Checks every setting; the error names the key, the value and what is allowed.
    pub fn validate(&self) -> Result<(), Error> {
        let at_least_one = [
            ("retention_ms", self.retention_ms),
            ("checkpoint_interval_ms", self.checkpoint_interval_ms),
            ("auth_retry_interval_ms", self.auth_retry_interval_ms),
            ("idle_poll_ms", self.idle_poll_ms),
            ("maintenance_interval_ms", self.maintenance_interval_ms),
            (
                "retention_sweep_interval_ms",
                self.retention_sweep_interval_ms,
            ),
            ("dead_letter_retry_ms", self.dead_letter_retry_ms),
            ("dedupe_items_max", self.dedupe_items_max as u64),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(invalid(key, value, "at least 1"));
            }
        }
        if !(1..=100_000).contains(&self.checkpoint_acks_max) {
            let value = u64::from(self.checkpoint_acks_max);
            return Err(invalid("checkpoint_acks_max", value, "1 to 100000"));
        }
        if self.systemic_reject_threshold == 1 || self.systemic_reject_threshold > 10_000 {
            let value = u64::from(self.systemic_reject_threshold);
            return Err(invalid(
                "systemic_reject_threshold",
                value,
                "0 (off) or 2 to 10000",
            ));
        }
        self.backoff.validate()?;
        self.breaker.validate()?;
        self.incidents_validate()?;
        if self.breaker.cool_down_max_ms > BREAKER_COOL_DOWN_MAX_MS {
            let value = self.breaker.cool_down_max_ms;
            let allowed =
                format!("at most {BREAKER_COOL_DOWN_MAX_MS} (it bounds the recovery time)");
            return Err(invalid("breaker.cool_down_max_ms", value, &allowed));
        }
        Ok(())
    }

    /// The documented minimums of `[worker.incidents]` (probe F20: they were clamped).
    fn incidents_validate(&self) -> Result<(), Error> {
        let incidents = &self.incidents;
        if incidents.jsonl_max_bytes < 4096 {
            let value = incidents.jsonl_max_bytes;
            return Err(invalid("incidents.jsonl_max_bytes", value, "at least 4096"));
        }
        if incidents.spike.bucket_ms == 0 {
            return Err(invalid("incidents.spike.bucket_ms", 0, "at least 1"));
        }
        incidents.webhook.as_ref().map_or(Ok(()), |w| w.validate())
    }

    /// The settings an incident's context shows (no URLs: they may hold credentials).
    pub(crate) fn incident_view(&self) -> serde_json::Value {
        serde_json::json!({
            "retention_ms": self.retention_ms,
            "policy": self.policy,
            "backoff": self.backoff,
            "breaker": self.breaker,
            "budget": self.budget,
            "systemic_reject_threshold": self.systemic_reject_threshold,
            "checkpoint_acks_max": self.checkpoint_acks_max,
            "auth_retry_interval_ms": self.auth_retry_interval_ms,
            "unreachable_alert_ms": self.incidents.unreachable_alert_ms,
            "oldest_pending_alert_ms": self.incidents.oldest_pending_alert_ms,
            "spike": self.incidents.spike,
        })
    }
}

fn invalid(key: &'static str, value: u64, allowed: &str) -> Error {
    Error::Config {
        key,
        value: value.to_string(),
        allowed: allowed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_zero_is_rejected_by_name() {
        WorkerConfig::default().validate().expect("defaults");
        let config = WorkerConfig {
            checkpoint_acks_max: 0,
            ..WorkerConfig::default()
        };
        let err = config.validate().expect_err("invalid");
        assert!(err.to_string().contains("checkpoint_acks_max = 0"), "{err}");
        let parsed: WorkerConfig =
            serde_json::from_str(r#"{"retention_ms": 5, "backoff": {"delay_base_ms": 2}}"#)
                .expect("partial config");
        assert_eq!(parsed.retention_ms, 5);
        assert_eq!(parsed.backoff.delay_base_ms, 2);
        assert_eq!(parsed.checkpoint_acks_max, 64);
    }

    #[test]
    fn a_systemic_threshold_of_one_and_an_unbounded_probe_interval_are_rejected() {
        // Story: a threshold of 1 would pause on every single bad escalation; a probe
        // interval of hours would make the recovery bound meaningless.
        for threshold in [0, 2, 10_000] {
            let config = WorkerConfig {
                systemic_reject_threshold: threshold,
                ..WorkerConfig::default()
            };
            config.validate().expect("valid threshold");
        }
        let one = WorkerConfig {
            systemic_reject_threshold: 1,
            ..WorkerConfig::default()
        };
        let err = one.validate().expect_err("one").to_string();
        assert!(err.contains("systemic_reject_threshold = 1"), "{err}");
        let mut slow = WorkerConfig::default();
        slow.breaker.cool_down_max_ms = 3_600_000;
        let err = slow.validate().expect_err("slow").to_string();
        assert!(err.contains("breaker.cool_down_max_ms = 3600000"), "{err}");
    }
}
