//! Retry mechanics of the worker over real HTTP: `Retry-After`, the backoff cap, the
//! circuit breaker opening and closing with the head item as probe, and per-item budgets.

mod support;

use std::num::NonZeroU32;
use std::time::Duration;

use escalation_queue_worker::{
    BackoffConfig, BreakerConfig, BudgetConfig, DeadLetterReason, FaultAction, WorkerConfig,
};
use support::{fast_config, request_gaps_ms, Harness};

fn unavailable(n: usize) -> Vec<FaultAction> {
    (0..n)
        .map(|_| FaultAction::Respond {
            status: 503,
            retry_after: None,
        })
        .collect()
}

/// A configuration whose breaker never opens, to observe the backoff alone.
fn no_breaker(backoff: BackoffConfig) -> WorkerConfig {
    WorkerConfig {
        backoff,
        breaker: BreakerConfig {
            failure_threshold: 1000,
            ..BreakerConfig::default()
        },
        ..fast_config()
    }
}

/// A configuration with `budget` whose breaker never opens, so that only the budget ends
/// an item's retries.
fn with_budget(budget: BudgetConfig) -> WorkerConfig {
    WorkerConfig {
        budget,
        ..no_breaker(fast_config().backoff)
    }
}

#[test]
fn retry_after_is_honoured() {
    // Story: the original ignored Retry-After ("could inspect the 'retry-after' key") and
    // hammered a rate-limited cloud on its own fixed schedule.
    let h = Harness::new();
    h.enqueue(1);
    h.mock.push_faults([FaultAction::Respond {
        status: 429,
        retry_after: Some("1".into()),
    }]);
    let (summary, _, _) = h.drain(fast_config());
    assert_eq!(summary.delivered, 1);
    let gaps = request_gaps_ms(&h.mock);
    assert_eq!(gaps.len(), 1);
    assert!((1000..3000).contains(&gaps[0]), "waited {} ms", gaps[0]);
}

#[test]
fn backoff_grows_with_full_jitter_and_is_capped() {
    // Story: exponential backoff without a cap would leave an item waiting hours after a
    // long outage; without jitter, many edges would retry in lockstep.
    let h = Harness::new();
    h.enqueue(1);
    h.mock.push_faults(unavailable(12));
    let backoff = BackoffConfig {
        delay_base_ms: 10,
        delay_max_ms: 80,
        retry_after_max_ms: 1000,
    };
    let (summary, _, _) = h.drain(no_breaker(backoff));
    assert_eq!((summary.delivered, summary.retried), (1, 12));
    let gaps = request_gaps_ms(&h.mock);
    assert_eq!(gaps.len(), 12);
    // Ceilings 10, 20, 40, 80, 80, …: no wait exceeds the cap (plus scheduling slack).
    assert!(gaps.iter().all(|g| *g <= 80 + 150), "{gaps:?}");
    // Full jitter: the waits differ, and later ones reach beyond the first ceiling.
    assert!(gaps[4..].iter().any(|g| *g > 12), "{gaps:?}");
    let distinct: std::collections::BTreeSet<_> = gaps.iter().collect();
    assert!(distinct.len() > 3, "{gaps:?}");
}

#[test]
fn circuit_opens_on_an_outage_probes_with_the_head_item_and_closes() {
    // Story: outages are global; without a breaker every item would burn its budget. With
    // attempts_max = 4, the item still gets through after 6 failures because the attempts
    // admitted as half-open probes are not charged.
    let h = Harness::new();
    let items = h.enqueue(2);
    h.mock.push_faults(unavailable(6));
    let config = WorkerConfig {
        breaker: BreakerConfig {
            failure_threshold: 3,
            cool_down_base_ms: 100,
            cool_down_max_ms: 200,
        },
        budget: BudgetConfig {
            attempts_max: NonZeroU32::new(4),
            ..BudgetConfig::default()
        },
        ..fast_config()
    };
    let running = h.spawn(config);
    running.wait_for(Duration::from_secs(5), |s| {
        s.snapshot().circuit_state == "open"
    });
    running.wait_for(Duration::from_secs(5), |s| s.snapshot().delivered == 2);
    assert_eq!(running.stats.snapshot().circuit_state, "closed");
    let summary = running.stop();
    assert_eq!(summary.dead_lettered, 0);
    let requests = h.mock.requests();
    assert_eq!(requests.len(), 8);
    // The probes are the head item: every failed request was for the first escalation.
    let head = items[0].image_query_id.as_str();
    assert!(requests[..7]
        .iter()
        .all(|r| r.param("image_query_id") == Some(head)));
    // While open, requests are spaced by the cool-down (100, then 200 ms), not the backoff.
    let gaps = request_gaps_ms(&h.mock);
    assert!(gaps[2] >= 90, "{gaps:?}");
    assert!(gaps[3] >= 190 && gaps[4] >= 190, "{gaps:?}");
}

#[test]
fn attempts_budget_dead_letters_a_persistent_failure() {
    // Story: a retryable failure that never clears must end as a visible dead letter once
    // its budget is spent, not block the queue forever.
    let h = Harness::new();
    h.enqueue(2);
    h.mock.push_faults(unavailable(3));
    let config = with_budget(BudgetConfig {
        attempts_max: NonZeroU32::new(3),
        ..BudgetConfig::default()
    });
    let (summary, stats, _) = h.drain(config);
    assert_eq!((summary.dead_lettered, summary.delivered), (1, 1));
    assert_eq!(h.mock.requests().len(), 4);
    let letters = h.dead_letters().list().expect("list");
    assert_eq!(
        letters[0].info.cause,
        DeadLetterReason::AttemptsExhausted {
            attempts: 3,
            max: 3
        }
    );
    assert_eq!(letters[0].info.attempts.len(), 3);
    assert_eq!(letters[0].info.http_status, Some(503));
    assert_eq!(stats.snapshot().dead_lettered["attempts_exhausted"], 1);
}

#[test]
fn age_budget_dead_letters_an_item_retried_too_long() {
    // Story: a configurable maximum age bounds how long one item may hold the head.
    let h = Harness::new();
    h.enqueue(1);
    h.mock.push_faults(unavailable(1000));
    let config = with_budget(BudgetConfig {
        attempts_max: None,
        age_max_ms: 300,
    });
    let (summary, _, _) = h.drain(config);
    assert_eq!(summary.dead_lettered, 1);
    let letters = h.dead_letters().list().expect("list");
    assert!(
        matches!(
            letters[0].info.cause,
            DeadLetterReason::AgeExhausted { max_ms: 300, .. }
        ),
        "{:?}",
        letters[0].info.cause
    );
}
