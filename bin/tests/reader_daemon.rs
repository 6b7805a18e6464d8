//! The reader as a daemon, against the mock cloud as a separate process.
//!
//! The Python original lost items in two crash windows and had no way to ask it how it
//! was doing. These tests guard the replacement's promises (docs/OPERATIONS.md, "Stopping", "Status server"): a reader
//! killed with SIGKILL mid-delivery and started again delivers every escalation (at least
//! once, nothing lost); SIGTERM stops it cleanly within the in-flight request plus 2 s,
//! releasing the queue; while it runs, `/health`, `/stats` and `/metrics` tell the truth,
//! `/health` turns `degraded` with a reason when the cloud goes away, and the API token
//! never appears in its logs.

mod util;

use std::time::{Duration, Instant};

use serde_json::Value;
use util::{get_json, http, spawn_reader, wait_until, MockCloudProcess, Sandbox, TOKEN};

const WAIT: Duration = Duration::from_secs(30);

/// SIGKILL mid-stream, restart: every escalation reaches the cloud, none is left pending
/// or dead-lettered. The cloud is slowed to ~15 ms per request so the kill lands while
/// records are in flight and acknowledgements are not yet checkpointed.
#[test]
fn reader_killed_and_restarted_loses_nothing() {
    let sandbox = Sandbox::new();
    let ids = sandbox.enqueue_many(120);
    let cloud = MockCloudProcess::start(
        &sandbox,
        &["--timeout-rate", "1", "--timeout-delay-ms", "15"],
    );
    let mut first = spawn_reader(&sandbox, &cloud.endpoint, &[]);
    let addr = first.status_addr();
    wait_until(WAIT, "the first reader to deliver 30", || {
        get_json(addr, "/stats").1["worker"]["delivered"]
            .as_u64()
            .unwrap_or(0)
            >= 30
    });
    first.kill();
    let pending = sandbox.status()["pending_total"].as_u64().expect("pending");
    assert!(
        pending > 0 && pending < 120,
        "killed mid-stream: {pending} pending"
    );

    let mut second = spawn_reader(&sandbox, &cloud.endpoint, &[]);
    wait_until(WAIT, "the queue to drain after the restart", || {
        sandbox.status()["pending_total"] == 0
    });
    second.terminate();
    assert_eq!(second.wait_exit(WAIT), Some(0));
    assert_eq!(sandbox.status()["dead_letters"], 0);

    let received = cloud.stop();
    let created: Vec<&str> = received["image_query_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !created.contains(&id.as_str()))
        .collect();
    assert!(missing.is_empty(), "lost after SIGKILL: {missing:?}");
}

/// SIGTERM while a request is in flight: the reader finishes or abandons that one
/// request, checkpoints, and exits 0 within the request's duration plus 2 s; the queue is
/// then free for the next reader and the rest is still pending.
#[test]
fn sigterm_stops_cleanly_and_releases_the_queue() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(5);
    let cloud = MockCloudProcess::start(
        &sandbox,
        &["--timeout-rate", "1", "--timeout-delay-ms", "700"],
    );
    let mut reader = spawn_reader(&sandbox, &cloud.endpoint, &[]);
    let addr = reader.status_addr();
    wait_until(WAIT, "a request in flight", || {
        get_json(addr, "/stats").1["worker"]["attempts"]
            .as_u64()
            .unwrap_or(0)
            >= 1
            || get_json(addr, "/stats").1["worker"]["delivered"]
                .as_u64()
                .unwrap_or(0)
                >= 1
    });
    let asked = Instant::now();
    reader.terminate();
    assert_eq!(reader.wait_exit(Duration::from_secs(10)), Some(0));
    let took = asked.elapsed();
    assert!(
        took < Duration::from_millis(700 + 2_000),
        "stop took {took:?}"
    );
    reader.wait_stderr(WAIT, |l| l.contains("reader stopped"));
    let status = sandbox.status();
    assert_eq!(status["reader_running"], false);
    assert!(
        status["pending_total"].as_u64().expect("pending") >= 1,
        "{status:#}"
    );
    let again = spawn_reader(&sandbox, &cloud.endpoint, &[]);
    again.wait_stderr(WAIT, |l| l.contains("reader started"));
}

/// `/health`, `/stats` and `/metrics` answer correctly while the reader delivers; other
/// paths get 404 and other methods 405. When the cloud becomes unreachable, `/health`
/// says `degraded` (still HTTP 200: restarting the reader would not help) and why. The
/// token, logged at trace level throughout (where the HTTP client dumps raw requests), never appears in the output.
#[test]
fn status_endpoints_answer_while_the_reader_runs() {
    let sandbox = Sandbox::new();
    let ids = sandbox.enqueue_many(5);
    let cloud = MockCloudProcess::start(&sandbox, &[]);
    let extra = [
        "--log-level",
        "trace",
        "--set",
        "status.disk_free_degraded_bytes=0",
        "--set",
        "worker.backoff.delay_base_ms=10",
        "--set",
        "worker.breaker.failure_threshold=2",
        "--set",
        "worker.maintenance_interval_ms=50",
    ];
    let mut reader = spawn_reader(&sandbox, &cloud.endpoint, &extra);
    let addr = reader.status_addr();
    assert!(addr.ip().is_loopback());
    wait_until(WAIT, "5 deliveries", || {
        get_json(addr, "/stats").1["worker"]["delivered"] == 5
    });

    let (code, health) = get_json(addr, "/health");
    assert_eq!(
        (code, &health["status"]),
        (200, &Value::from("healthy")),
        "{health:#}"
    );
    assert_eq!(health["checks"]["circuit"], "closed");
    assert!(
        health["checks"]["disk"]["free_bytes"].as_u64().is_some(),
        "{health:#}"
    );

    let (code, stats) = get_json(addr, "/stats");
    assert_eq!(code, 200);
    assert_eq!(stats["worker"]["dead_lettered_total"], 0);
    assert_eq!(stats["reader"]["wal"]["state"], "running");
    assert!(stats["queue_dir"].as_str().expect("dir").ends_with("queue"));

    let (code, head, metrics) = http(addr, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        head.to_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    for line in [
        "escalation_queue_delivered_total 5",
        "escalation_queue_circuit_state{state=\"closed\"} 1",
        "escalation_queue_delivery_latency_seconds_count 5",
        "# TYPE escalation_queue_depth gauge",
        "# EOF",
    ] {
        assert!(metrics.contains(line), "{line:?} missing:\n{metrics}");
    }
    assert_eq!(http(addr, "GET", "/nope").0, 404);
    assert_eq!(http(addr, "POST", "/health").0, 405);
    assert_eq!(http(addr, "DELETE", "/metrics").0, 405);

    // The cloud goes away: the next escalations fail to connect, the circuit opens.
    let received = cloud.stop();
    assert_eq!(
        received["image_query_ids"].as_array().expect("ids").len(),
        ids.len()
    );
    sandbox.enqueue_many(1);
    wait_until(WAIT, "/health to report the outage", || {
        get_json(addr, "/health").1["status"] == "degraded"
    });
    let (code, health) = get_json(addr, "/health");
    assert_eq!(code, 200);
    let reasons = health["reasons"].to_string();
    assert!(reasons.contains("circuit breaker"), "{health:#}");
    let (_, _, metrics) = http(addr, "GET", "/metrics");
    assert!(metrics.contains("escalation_queue_health 1"), "{metrics}");

    reader.terminate();
    assert_eq!(reader.wait_exit(WAIT), Some(0));
    let logs = reader.stderr_text();
    assert!(
        logs.contains("DEBUG") || logs.contains("\"level\":\"DEBUG\""),
        "debug logs on"
    );
    assert!(!logs.contains(TOKEN), "the API token leaked into the logs");
}
