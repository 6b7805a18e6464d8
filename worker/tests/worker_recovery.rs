//! Recovery after outages and systemic rejections, over real HTTP against the mock cloud.
//!
//! Issue 9 §2: with the cloud answering 503 to its first 15 requests the reader sent 11
//! requests in 153 s and delivered none of 198 escalations, because each wait was the
//! jittered backoff *plus* a breaker pause doubling to 60 s; and a wrong endpoint path
//! answering 404 to everything dead-lettered the whole queue in milliseconds. These tests
//! guard the recovery bound (first delivery within seconds of the cloud answering again,
//! then full speed), the visibility of every wait, and the systemic-rejection rule.
//!
//! `outage_recovery_figures` (ignored) measures the PERFORMANCE.md table:
//! `cargo test --release -p escalation-queue-worker --test worker_recovery -- --ignored --nocapture`.

mod support;

use std::time::{Duration, Instant, SystemTime};

use escalation_queue_worker::{
    BackoffConfig, BreakerConfig, Escalation, FaultAction, ImageSource, Incident, IncidentKind,
    MockCloud, MockOutcome, OutageMode, OutageReplay, Severity, WorkerConfig,
};
use support::{fast_config, Harness, Running, JPEG};

/// The defaults, with a fixed jitter seed so that a run is reproducible.
fn defaults() -> WorkerConfig {
    WorkerConfig {
        jitter_seed: Some(9),
        ..WorkerConfig::default()
    }
}

/// When the mock first answered 201.
fn first_delivery(mock: &MockCloud) -> Option<SystemTime> {
    mock.requests()
        .iter()
        .find(|r| matches!(r.outcome, MockOutcome::Responded { status: 201, .. }))
        .map(|r| r.received_at)
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

/// Runs `n` queued escalations through an outage of `outage` (503s from now on) with
/// `config`; returns the time from the end of the outage to the first delivery, the time
/// from the first delivery to the last, and the stopped worker's run.
fn through_outage(
    h: &Harness,
    n: u64,
    outage: Duration,
    config: WorkerConfig,
) -> (Duration, Duration, Running) {
    let outage_ends = SystemTime::now() + outage;
    h.mock.start_outage(outage, OutageMode::ServiceUnavailable);
    let running = h.spawn(config);
    running.wait_for(outage + Duration::from_secs(120), |s| {
        s.snapshot().delivered == n
    });
    let last = SystemTime::now();
    let first = first_delivery(&h.mock).expect("a delivery");
    (since(first, outage_ends), since(last, first), running)
}

/// Story: after an outage of several seconds the first delivery comes within a few
/// seconds of the cloud answering again (probes at most 5 s apart by default), not tens
/// of seconds later because the backoff and the breaker's pause compounded. Before the
/// fix, this run (seed 9) sent its 7th request 14 s in and its 8th 26 s later: the first
/// delivery came about 25 s after the cloud was back.
#[test]
fn delivery_resumes_within_seconds_once_an_outage_ends() {
    let h = Harness::new();
    h.enqueue(50);
    let (to_first, _, running) = through_outage(&h, 50, Duration::from_secs(15), defaults());
    let stats = running.stats.snapshot();
    let summary = running.stop();
    assert_eq!((summary.delivered, summary.dead_lettered), (50, 0));
    assert!(
        to_first < Duration::from_secs(10),
        "first delivery {to_first:?} after the outage ended"
    );
    // While the circuit was open, requests were spaced by the capped probe interval only.
    let times: Vec<SystemTime> = h.mock.requests().iter().map(|r| r.received_at).collect();
    let longest = times
        .windows(2)
        .map(|w| since(w[1], w[0]))
        .max()
        .unwrap_or_default();
    assert!(longest < Duration::from_secs(7), "longest gap {longest:?}");
    // Every wait followed a failed request: once the cloud answered, the backlog flowed
    // without a leftover per-item wait.
    let failed = h
        .mock
        .requests()
        .iter()
        .filter(|r| matches!(r.outcome, MockOutcome::Responded { status: 503, .. }))
        .count() as u64;
    let waits: u64 = stats.waits.values().map(|w| w.count).sum();
    assert_eq!(waits, failed, "{stats:?}");
}

/// Story: the logged `retry_in_ms` left the breaker's pause out (5,279 ms logged, 8 s
/// gap). Every wait is counted with its cause and its real length, and the wait in
/// progress shows its cause and end in the stats.
#[test]
fn every_wait_is_visible_with_its_cause_and_real_length() {
    let h = Harness::new();
    h.enqueue(3);
    h.mock
        .start_outage(Duration::from_millis(600), OutageMode::ServiceUnavailable);
    let config = WorkerConfig {
        backoff: BackoffConfig {
            retry_after_max_ms: 0,
            ..fast_config().backoff
        },
        breaker: BreakerConfig {
            failure_threshold: 3,
            cool_down_base_ms: 100,
            cool_down_max_ms: 150,
        },
        ..fast_config()
    };
    let running = h.spawn(config);
    running.wait_for(Duration::from_secs(5), |s| {
        s.snapshot().wait_cause == Some("breaker")
    });
    let during = running.stats.snapshot();
    let until = during.wait_until_unix_ms.expect("until");
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    assert!(
        until >= now_ms.saturating_sub(50) && until <= now_ms + 200,
        "{until} vs {now_ms}"
    );
    running.wait_for(Duration::from_secs(10), |s| s.snapshot().delivered == 3);
    let stats = running.stats.snapshot();
    running.stop();
    assert_eq!(stats.wait_cause, None);
    let backoff = stats.waits["backoff"];
    let breaker = stats.waits["breaker"];
    assert_eq!(backoff.count, 2, "{stats:?}");
    assert!(breaker.count >= 2, "{stats:?}");
    assert_eq!(stats.retried, backoff.count + breaker.count);
    // The counted time is the time really waited: the request gaps add up to it.
    let requests = h.mock.requests();
    let failed = requests
        .iter()
        .take_while(|r| matches!(r.outcome, MockOutcome::Responded { status: 503, .. }))
        .count();
    let span = since(requests[failed].received_at, requests[0].received_at);
    let waited = Duration::from_millis(backoff.total_ms + breaker.total_ms);
    assert!(waited <= span, "waited {waited:?} in {span:?}");
    assert!(
        span - waited < Duration::from_secs(1),
        "waited {waited:?} in {span:?}"
    );
}

fn rejected(status: u16, n: usize) -> Vec<FaultAction> {
    (0..n)
        .map(|_| FaultAction::Respond {
            status,
            retry_after: None,
        })
        .collect()
}

fn incidents_of(running: &Running, kind: IncidentKind) -> Vec<Incident> {
    running
        .incidents
        .recent()
        .into_iter()
        .filter(|i| i.kind == kind)
        .collect()
}

/// Story: an endpoint path that is wrong answers 404 to every escalation; dead-lettering
/// each one emptied the queue in milliseconds. After `systemic_reject_threshold` (5)
/// identical rejections in a row, delivery pauses with a CRITICAL incident and the head
/// item probes; only the first four are dead-lettered, and once the cloud answers
/// normally again the rest is delivered.
#[test]
fn a_404_for_everything_pauses_delivery_instead_of_dead_lettering_the_queue() {
    let h = Harness::new();
    let items = h.enqueue(30);
    // 4 dead letters, the fifth trips the rule, then 16 probes get the same 404.
    h.mock.push_faults(rejected(404, 21));
    let running = h.spawn(fast_config());
    running.wait_for(Duration::from_secs(5), |s| {
        s.snapshot().systemic_fault_status == Some(404)
    });
    running.wait_for(Duration::from_secs(5), |s| {
        s.snapshot().wait_cause == Some("systemic_fault")
    });
    let paused = running.stats.snapshot();
    assert_eq!(paused.dead_lettered_total, 4, "{paused:?}");
    assert_eq!(paused.circuit_state, "open");
    let incidents = incidents_of(&running, IncidentKind::SystemicRejection);
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let incident = &incidents[0];
    assert_eq!(incident.severity, Severity::Critical);
    assert_eq!(incident.details["http_status"], 404);
    assert_eq!(
        incident.details["dead_lettered"].as_array().map(Vec::len),
        Some(4)
    );
    running.wait_for(Duration::from_secs(20), |s| s.snapshot().delivered == 26);
    let stats = running.stats.snapshot();
    let summary = running.stop();
    assert_eq!((summary.delivered, summary.dead_lettered), (26, 4));
    assert_eq!(stats.systemic_fault_status, None);
    assert!(stats.waits["systemic_fault"].count >= 16, "{stats:?}");
    // The probes were the fifth escalation, held at the head; nothing after it was sent
    // before the fault cleared.
    let requests = h.mock.requests();
    let fifth = items[4].image_query_id.as_str();
    assert!(requests[4..21]
        .iter()
        .all(|r| r.param("image_query_id") == Some(fifth)));
    let letters = h.dead_letters().list().expect("list");
    let ids: Vec<_> = letters
        .iter()
        .filter_map(|l| l.info.image_query_id.clone())
        .collect();
    let first_four: Vec<_> = items[..4]
        .iter()
        .map(|e| e.image_query_id.clone())
        .collect();
    assert_eq!(ids, first_four);
}

fn escalation_for(detector: &str) -> Escalation {
    Escalation::new(detector, ImageSource::Inline(JPEG.into()))
}

/// Story: one detector the cloud rejects, among good ones, is item-specific: each of its
/// escalations is dead-lettered at its first answer, however many there are, and
/// delivery never pauses. Runs shorter than the threshold do not pause either.
#[test]
fn one_bad_detector_among_good_ones_is_dead_lettered_at_once() {
    let h = Harness::new();
    let mut faults = Vec::new();
    for round in 0..12 {
        // Rounds of 1, 2, 3 and 4 rejections in a row, each followed by a good one.
        let bad = round % 4 + 1;
        for _ in 0..bad {
            h.queue
                .enqueue(&escalation_for("det_rejected"))
                .expect("enqueue");
            faults.extend(rejected(400, 1));
        }
        h.queue
            .enqueue(&escalation_for("det_good"))
            .expect("enqueue");
        faults.push(FaultAction::Pass);
    }
    h.mock.push_faults(faults);
    let (summary, stats, incidents) = h.drain(fast_config());
    assert_eq!((summary.dead_lettered, summary.delivered), (30, 12));
    assert_eq!(summary.attempts, 42, "each escalation was sent once");
    let snap = stats.snapshot();
    assert_eq!(snap.waits["systemic_fault"].count, 0);
    assert!(incidents
        .recent()
        .iter()
        .all(|i| i.kind != IncidentKind::SystemicRejection));
    let letters = h.dead_letters().list().expect("list");
    assert!(letters.iter().all(
        |l| l.info.detector_id.as_deref() == Some("det_rejected") && l.info.attempts_total == 1
    ));
}

/// The PERFORMANCE.md recovery table: outages of 5 s and 60 s for real (1,000 queued
/// escalations, default settings, 503s with `Retry-After: 1`), and 10 min replayed on a
/// virtual clock with the worker's wait rule (`OutageReplay`, requests take no time).
#[test]
#[ignore = "measures the recovery table (about 75 s); run with --ignored --nocapture"]
fn outage_recovery_figures() {
    println!("| outage | time to first delivery after recovery | time to drain 1,000 after that |");
    println!("|---|---|---|");
    for secs in [5, 60] {
        let h = Harness::new();
        h.enqueue(1_000);
        let started = Instant::now();
        let (to_first, drain, running) =
            through_outage(&h, 1_000, Duration::from_secs(secs), defaults());
        let summary = running.stop();
        assert_eq!(summary.delivered, 1_000);
        println!(
            "| {secs} s (measured, {} attempts during the outage, {:.1} s in all) | {:.2} s | {:.2} s |",
            summary.attempts - 1_000,
            started.elapsed().as_secs_f64(),
            to_first.as_secs_f64(),
            drain.as_secs_f64(),
        );
    }
    for minutes in [10, 60] {
        let outage = Duration::from_secs(60 * minutes);
        let worst = (0..100)
            .map(|seed| {
                OutageReplay::run(
                    BackoffConfig::default(),
                    BreakerConfig::default(),
                    outage,
                    seed,
                )
            })
            .max_by_key(|r| r.first_success_after_recovery)
            .expect("replays");
        println!(
            "| {minutes} min (simulated: virtual clock, 100 seeds, worst) | {:.2} s (longest wait {:.1} s, {} probes) | as for 60 s: the breaker is closed and no per-item wait is left |",
            worst.first_success_after_recovery.as_secs_f64(),
            worst.longest_wait.as_secs_f64(),
            worst.attempts,
        );
    }
}
