//! Recovery after a cloud outage, through the real binary: `escalation-queue reader` with
//! its default delivery settings against `escalation-queue mock-cloud` answering 503.
//!
//! Issue 9 §2: the reader used to wait the jittered backoff *and* a breaker pause that
//! doubled to 60 s, so it delivered nothing for minutes after the cloud was back, and its
//! logged `retry_in_ms` left the breaker's pause out.

mod util;

use std::time::{Duration, Instant};

use serde_json::Value;
use util::{get_json, http, spawn_reader, wait_until, MockCloudProcess, Sandbox};

const OUTAGE: Duration = Duration::from_secs(15);

/// A 15 s outage (503 with `Retry-After: 1`) from the start; the reader runs with its
/// defaults. While the outage lasts `/stats` and `/metrics` show the wait in progress and
/// its cause; the first delivery comes less than 10 s after the cloud answers again (the
/// probe interval is capped at 5 s), the backlog then drains; every wait is logged once
/// with its real length and cause, and none while the circuit is open exceeds the cap.
#[test]
fn the_reader_delivers_within_seconds_after_an_outage_ends() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(40);
    let outage_ms = OUTAGE.as_millis().to_string();
    let cloud = MockCloudProcess::start(
        &sandbox,
        &["--outage-after-ms", "0", "--outage-ms", &outage_ms],
    );
    // The outage starts as the mock starts listening: it ends at most this late.
    let outage_ends = Instant::now() + OUTAGE;
    let mut reader = spawn_reader(&sandbox, &cloud.endpoint, &[]);
    let addr = reader.status_addr();

    wait_until(OUTAGE, "/stats to show a breaker wait", || {
        get_json(addr, "/stats").1["worker"]["wait_cause"] == "breaker"
    });
    let (_, stats) = get_json(addr, "/stats");
    assert!(
        stats["worker"]["wait_until_unix_ms"].as_u64().is_some(),
        "{stats:#}"
    );
    let (_, _, metrics) = http(addr, "GET", "/metrics");
    for line in [
        "escalation_queue_waiting{cause=\"breaker\"} 1",
        "escalation_queue_waits_total{cause=\"backoff\"}",
        "escalation_queue_wait_seconds_total{cause=\"breaker\"}",
    ] {
        assert!(metrics.contains(line), "{line:?} missing:\n{metrics}");
    }

    let delivered = || {
        get_json(addr, "/stats").1["worker"]["delivered"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_until(OUTAGE + Duration::from_secs(60), "a delivery", || {
        delivered() >= 1
    });
    let to_first = Instant::now().saturating_duration_since(outage_ends);
    assert!(
        to_first < Duration::from_secs(10),
        "first delivery {to_first:?} after the outage ended"
    );
    wait_until(Duration::from_secs(30), "the backlog to drain", || {
        delivered() == 40
    });
    let (_, stats) = get_json(addr, "/stats");
    assert_eq!(stats["worker"]["dead_lettered_total"], 0);
    assert_eq!(stats["worker"]["wait_cause"], Value::Null);

    reader.terminate();
    assert_eq!(reader.wait_exit(Duration::from_secs(30)), Some(0));
    let waits: Vec<Value> = reader
        .stderr_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["wait_cause"].is_string())
        .collect();
    let retried = stats["worker"]["retried"].as_u64().expect("retried");
    assert_eq!(waits.len() as u64, retried, "one log line per wait");
    for wait in &waits {
        let ms = wait["retry_in_ms"].as_u64().expect("retry_in_ms");
        if wait["wait_cause"] == "breaker" {
            assert!(ms <= 5_000, "breaker wait of {ms} ms: {wait}");
        }
    }
    assert!(waits.iter().any(|w| w["wait_cause"] == "breaker"));
    cloud.stop();
}

/// An endpoint that answers 404 to everything (here the first 8 requests, as if the
/// path were fixed afterwards): the reader dead-letters the first four, then pauses as a
/// systemic fault — `/health` says so, `/stats` shows `systemic_fault_status` 404 and the
/// rest still queued — and once the cloud answers normally the rest is delivered.
#[test]
fn a_404_for_everything_pauses_the_reader_instead_of_emptying_the_queue() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(20);
    let script = ["404"; 8].join(",");
    let cloud = MockCloudProcess::start(&sandbox, &["--script", &script]);
    let mut reader = spawn_reader(&sandbox, &cloud.endpoint, &[]);
    let addr = reader.status_addr();
    wait_until(Duration::from_secs(20), "the systemic fault", || {
        get_json(addr, "/stats").1["worker"]["systemic_fault_status"] == 404
    });
    let (_, stats) = get_json(addr, "/stats");
    assert_eq!(stats["worker"]["dead_lettered_total"], 4, "{stats:#}");
    let (code, health) = get_json(addr, "/health");
    assert_eq!((code, &health["status"]), (200, &Value::from("degraded")));
    assert!(
        health["reasons"].to_string().contains("systemic fault"),
        "{health:#}"
    );
    wait_until(Duration::from_secs(30), "the rest to be delivered", || {
        get_json(addr, "/stats").1["worker"]["delivered"] == 16
    });
    let (_, stats) = get_json(addr, "/stats");
    assert_eq!(stats["worker"]["systemic_fault_status"], Value::Null);
    assert_eq!(stats["worker"]["dead_lettered_total"], 4);
    reader.terminate();
    assert_eq!(reader.wait_exit(Duration::from_secs(30)), Some(0));
    assert_eq!(sandbox.status()["dead_letters"], 4);
    cloud.stop();
}
