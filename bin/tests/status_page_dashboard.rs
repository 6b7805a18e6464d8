//! The Grafana dashboard (deploy/grafana/escalation-queue.json) and the Prometheus alert
//! rules (deploy/prometheus/alerts.yml) name only metrics a running reader really exports:
//! the test scrapes `/metrics` of the real binary delivering to the mock cloud (one
//! delivery, one dead letter) and compares every `escalation_queue_*` name the two files
//! mention with the sample names of the scrape. A panel or alert on a metric that does not
//! exist shows "no data" or never fires, silently; this is where that is caught.
//! (`promtool check rules` / `test rules` check the rules' syntax and behaviour in .ci/run.)

mod util;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use util::{get_json, http, spawn_reader, wait_until, MockCloudProcess, Sandbox};

const WAIT: Duration = Duration::from_secs(30);

fn deploy(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Every `escalation_queue_*` identifier in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("escalation_queue_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The strings of the dashboard's queries (panel targets and template variables).
fn dashboard_queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// The sample names of a scrape (`name{labels} value` or `name value`).
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_dashboard_and_the_alerts_use_only_metrics_the_reader_exports() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(1);
    sandbox.enqueue_for("det_rejected_for_metrics", 1);
    let cloud =
        MockCloudProcess::start(&sandbox, &["--reject-detector", "det_rejected_for_metrics"]);
    let reader = spawn_reader(&sandbox, &cloud.endpoint, &[]);
    let addr = reader.status_addr();
    wait_until(WAIT, "1 delivery and 1 dead letter", || {
        let w = get_json(addr, "/stats").1["worker"].take();
        w["delivered"] == 1 && w["dead_lettered_total"] == 1
    });
    let (code, _, scrape) = http(addr, "GET", "/metrics");
    assert_eq!(code, 200);
    let exported = exported(&scrape);

    let dashboard: Value =
        serde_json::from_str(&deploy("grafana/escalation-queue.json")).expect("dashboard JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    let in_dashboard = metric_names(&queries.join("\n"));
    let in_alerts = metric_names(&deploy("prometheus/alerts.yml"));

    for (file, names) in [("the dashboard", &in_dashboard), ("alerts.yml", &in_alerts)] {
        let missing: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics /metrics does not export: {missing:?}\nexported: {exported:?}"
        );
    }
    // What the dashboard must show (docs/OPERATIONS.md "Dashboard and alerts").
    for needed in [
        "escalation_queue_depth",
        "escalation_queue_oldest_pending_age_seconds",
        "escalation_queue_delivered_total",
        "escalation_queue_retried_total",
        "escalation_queue_dead_lettered_total",
        "escalation_queue_circuit_state",
        "escalation_queue_disk_free_bytes",
        "escalation_queue_request_duration_seconds_bucket",
    ] {
        assert!(
            in_dashboard.contains(needed),
            "the dashboard shows no {needed}"
        );
    }
    let alerts = deploy("prometheus/alerts.yml");
    for alert in [
        "EscalationQueueOldestPendingTooOld",
        "EscalationQueueDeadLettersGrowing",
        "EscalationQueueAuthPaused",
        "EscalationQueueDiskNearlyFull",
        "EscalationQueueReaderDown",
    ] {
        assert!(
            alerts.contains(&format!("alert: {alert}")),
            "no alert {alert}"
        );
    }
    println!("the dashboard uses: {in_dashboard:?}");
}
