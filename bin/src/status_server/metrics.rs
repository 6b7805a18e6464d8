//! `/metrics`: the worker's counters and gauges in the Prometheus text format, encoded by
//! `prometheus-client` from a fresh snapshot at every scrape. Counters run for the life of
//! the process: a worker reopened after an error continues them
//! (`Worker::continue_stats`).

use std::fmt;
use std::sync::Arc;

use escalation_queue::worker::{HistogramSnapshot, StatsSnapshot};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::health;
use super::state::ReaderState;

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry whose one collector reads `state` at each scrape.
pub fn registry(state: Arc<ReaderState>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ReaderCollector(state)));
    registry
}

/// The registry in the text format.
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[derive(Debug)]
struct ReaderCollector(Arc<ReaderState>);

impl Collector for ReaderCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let snap = self.0.snapshot();
        let s = snap.stats.snapshot();
        let counters = [
            (
                "escalation_queue_delivered",
                "Escalations the cloud accepted (duplicates included).",
                s.delivered,
            ),
            (
                "escalation_queue_delivered_duplicates",
                "Of delivered: HTTP 400 after a lost response, delivered earlier.",
                s.delivered_duplicates,
            ),
            (
                "escalation_queue_attempts",
                "Delivery attempts.",
                s.attempts,
            ),
            (
                "escalation_queue_retried",
                "Attempts that ended in a retry.",
                s.retried,
            ),
            (
                "escalation_queue_expired",
                "Escalations older than the retention age, dropped.",
                s.expired,
            ),
            (
                "escalation_queue_duplicates_skipped",
                "Escalations skipped as already delivered.",
                s.duplicates,
            ),
            (
                "escalation_queue_incidents",
                "Incidents raised.",
                s.incidents,
            ),
            (
                "escalation_queue_checkpoints",
                "Cursor checkpoints written.",
                s.checkpoints,
            ),
            (
                "escalation_queue_reader_restarts",
                "Reopens of the queue after an error.",
                snap.restarts,
            ),
        ];
        for (name, help, value) in counters {
            counter(&mut enc, name, help, value)?;
        }
        let metric = ConstCounter::new(0_u64);
        let mut family = enc.encode_descriptor(
            "escalation_queue_dead_lettered",
            "Escalations moved to the dead-letter queue, by reason.",
            None,
            metric.metric_type(),
        )?;
        for (reason, value) in &s.dead_lettered {
            let labels = [("reason", *reason)];
            ConstCounter::new(*value).encode(family.encode_family(&labels)?)?;
        }
        let health = health::evaluate(&self.0);
        let gauges = [
            (
                "escalation_queue_depth",
                "Escalations durable and not yet finished.",
                s.queue_depth as f64,
            ),
            (
                "escalation_queue_oldest_pending_age_seconds",
                "Age of the head of the queue (0 when idle).",
                s.oldest_pending_age_ms as f64 / 1000.0,
            ),
            (
                "escalation_queue_paused_for_auth",
                "1 while delivery is paused because the token is rejected.",
                f64::from(u8::from(s.paused_for_auth)),
            ),
            (
                "escalation_queue_health",
                "0 healthy, 1 degraded, 2 unhealthy (see /health).",
                f64::from(health.status.level()),
            ),
            (
                "escalation_queue_uptime_seconds",
                "Seconds since the reader started.",
                self.0.uptime_ms() as f64 / 1000.0,
            ),
        ];
        for (name, help, value) in gauges {
            gauge(&mut enc, name, help, value)?;
        }
        if let Some(disk) = health.checks.disk {
            let help = "Bytes free on the queue's file system.";
            gauge(
                &mut enc,
                "escalation_queue_disk_free_bytes",
                help,
                disk.free_bytes as f64,
            )?;
            let help = "Size of the queue's file system.";
            gauge(
                &mut enc,
                "escalation_queue_disk_total_bytes",
                help,
                disk.total_bytes as f64,
            )?;
        }
        let help = "queue.free_disk_bytes_min: below it the queue refuses new segments.";
        gauge(
            &mut enc,
            "escalation_queue_disk_free_min_bytes",
            help,
            self.0.free_disk_bytes_min as f64,
        )?;
        let metric = ConstGauge::new(0_i64);
        let mut family = enc.encode_descriptor(
            "escalation_queue_circuit_state",
            "1 for the circuit breaker's current state.",
            None,
            metric.metric_type(),
        )?;
        for state in ["closed", "open", "half_open"] {
            let labels = [("state", state)];
            let value = i64::from(state == s.circuit_state);
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        waits(&mut enc, &s)?;
        let latency = [
            (
                "escalation_queue_delivery_latency_seconds",
                "From enqueue to delivery.",
                &s.delivery_latency,
            ),
            (
                "escalation_queue_request_duration_seconds",
                "Duration of each delivery attempt.",
                &s.request_latency,
            ),
        ];
        for (name, help, histogram) in latency {
            encode_histogram(&mut enc, name, help, histogram)?;
        }
        Ok(())
    }
}

/// The worker's waits by cause: how many, how long in all, and which one is in progress.
fn waits(enc: &mut DescriptorEncoder, s: &StatsSnapshot) -> fmt::Result {
    let metric = ConstCounter::new(0_u64);
    let mut family = enc.encode_descriptor(
        "escalation_queue_waits",
        "Waits before a next attempt, by cause.",
        None,
        metric.metric_type(),
    )?;
    for (cause, totals) in &s.waits {
        let labels = [("cause", *cause)];
        ConstCounter::new(totals.count).encode(family.encode_family(&labels)?)?;
    }
    let metric = ConstCounter::new(0.0_f64);
    let mut family = enc.encode_descriptor(
        "escalation_queue_wait_seconds",
        "Time spent waiting before a next attempt, by cause.",
        None,
        metric.metric_type(),
    )?;
    for (cause, totals) in &s.waits {
        let labels = [("cause", *cause)];
        let seconds = totals.total_ms as f64 / 1000.0;
        ConstCounter::new(seconds).encode(family.encode_family(&labels)?)?;
    }
    let metric = ConstGauge::new(0_i64);
    let mut family = enc.encode_descriptor(
        "escalation_queue_waiting",
        "1 for the cause of the wait in progress (all 0 when not waiting).",
        None,
        metric.metric_type(),
    )?;
    for cause in s.waits.keys() {
        let labels = [("cause", *cause)];
        let value = i64::from(s.wait_cause == Some(*cause));
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn encode_histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &HistogramSnapshot,
) -> fmt::Result {
    let buckets: Vec<(f64, u64)> = histogram
        .buckets
        .iter()
        .map(|(bound_ms, count)| {
            (
                bound_ms.map_or(f64::INFINITY, |ms| ms as f64 / 1000.0),
                *count,
            )
        })
        .collect();
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    let sum_seconds = histogram.sum_ms as f64 / 1000.0;
    metric.encode_histogram::<NoLabelSet>(sum_seconds, histogram.count, &buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StatusConfig;

    #[test]
    fn every_family_is_encoded() {
        let dir = tempfile::tempdir().expect("dir");
        let thresholds = StatusConfig {
            enabled: true,
            addr: "127.0.0.1:0".parse().expect("addr"),
            oldest_pending_degraded_ms: 1,
            disk_free_degraded_bytes: 0,
            critical_incident_degraded_ms: 0,
            actions_enabled: false,
        };
        let state = Arc::new(ReaderState::new(dir.path(), thresholds, 0));
        let text = encode(&registry(state)).expect("encode");
        for line in [
            "escalation_queue_delivered_total 0",
            "escalation_queue_dead_lettered_total{reason=\"bad_request\"} 0",
            "escalation_queue_circuit_state{state=\"closed\"} 1",
            "escalation_queue_waits_total{cause=\"breaker\"} 0",
            "escalation_queue_wait_seconds_total{cause=\"systemic_fault\"} 0",
            "escalation_queue_waiting{cause=\"backoff\"} 0",
            "escalation_queue_delivery_latency_seconds_bucket{le=\"+Inf\"} 0",
            "escalation_queue_health 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
