//! Per-item retry budgets: attempts and age.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use super::classify::Classification;
use super::DeadLetterReason;

/// Seven days in milliseconds: the retention age (an upstream security requirement).
pub const DEFAULT_AGE_MAX_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Budget settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Attempts charged before a retryable item is dead-lettered. Default `None`: unlimited,
    /// like the Python original (the age limit still applies).
    pub attempts_max: Option<NonZeroU32>,
    /// Age after which a retryable item is dead-lettered. Default [`DEFAULT_AGE_MAX_MS`].
    pub age_max_ms: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            attempts_max: None,
            age_max_ms: DEFAULT_AGE_MAX_MS,
        }
    }
}

/// One item's budget. Attempts admitted as circuit-breaker probes are counted but not
/// charged: an outage is global and must not exhaust every item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemBudget {
    config: BudgetConfig,
    attempts_charged: u32,
    attempts_total: u32,
}

impl ItemBudget {
    /// A fresh budget.
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            attempts_charged: 0,
            attempts_total: 0,
        }
    }

    /// Records an attempt; `charged` is false for a probe made while the circuit was open.
    pub fn record_attempt(&mut self, charged: bool) {
        self.attempts_total = self.attempts_total.saturating_add(1);
        if charged {
            self.attempts_charged = self.attempts_charged.saturating_add(1);
        }
    }

    /// Attempts that consumed budget.
    pub fn attempts_charged(&self) -> u32 {
        self.attempts_charged
    }

    /// All attempts, probes included.
    pub fn attempts_total(&self) -> u32 {
        self.attempts_total
    }

    /// The limit hit by an item of age `age_ms`, if any (`AgeExhausted` or
    /// `AttemptsExhausted`). Age is checked first.
    pub fn exhausted(&self, age_ms: u64) -> Option<DeadLetterReason> {
        if age_ms >= self.config.age_max_ms {
            return Some(DeadLetterReason::AgeExhausted {
                age_ms,
                max_ms: self.config.age_max_ms,
            });
        }
        let max = self.config.attempts_max?.get();
        (self.attempts_charged >= max).then_some(DeadLetterReason::AttemptsExhausted {
            attempts: self.attempts_charged,
            max,
        })
    }

    /// Turns a `Retry` into `DeadLetter` with the exhausted limit as the reason when the
    /// budget is spent; every other classification passes through.
    pub fn apply(&self, classification: Classification, age_ms: u64) -> Classification {
        match (classification, self.exhausted(age_ms)) {
            (Classification::Retry { .. }, Some(reason)) => Classification::DeadLetter { reason },
            (other, _) => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Classification = Classification::Retry { not_before: None };

    #[test]
    fn attempts_limit() {
        let config = BudgetConfig {
            attempts_max: NonZeroU32::new(2),
            ..Default::default()
        };
        let mut budget = ItemBudget::new(config);
        budget.record_attempt(true);
        assert_eq!(budget.apply(RETRY, 0), RETRY);
        budget.record_attempt(false); // probe while open: free
        assert_eq!(budget.apply(RETRY, 0), RETRY);
        budget.record_attempt(true);
        let expected = Classification::DeadLetter {
            reason: DeadLetterReason::AttemptsExhausted {
                attempts: 2,
                max: 2,
            },
        };
        assert_eq!(budget.apply(RETRY, 0), expected);
        assert_eq!((budget.attempts_charged(), budget.attempts_total()), (2, 3));
        assert_eq!(
            budget.apply(Classification::Delivered, 0),
            Classification::Delivered
        );
    }

    #[test]
    fn age_limit_defaults_to_retention() {
        let budget = ItemBudget::new(BudgetConfig::default());
        assert_eq!(budget.apply(RETRY, DEFAULT_AGE_MAX_MS - 1), RETRY);
        assert!(matches!(
            budget.apply(RETRY, DEFAULT_AGE_MAX_MS),
            Classification::DeadLetter {
                reason: DeadLetterReason::AgeExhausted { .. }
            }
        ));
    }

    #[test]
    fn unlimited_attempts_by_default() {
        let mut budget = ItemBudget::new(BudgetConfig::default());
        (0..10_000).for_each(|_| budget.record_attempt(true));
        assert_eq!(budget.exhausted(0), None);
    }
}
