//! Human escalation (seed 002): each trigger yields exactly one incident, deduplicated,
//! with its context, in `incidents.jsonl` (and the webhook when configured).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use escalation_queue_producer::{ErrorKind, EscalationQueue};
use escalation_queue_wal::{ErrorKind as WalErrorKind, Fault, SimDisk};
use escalation_queue_worker::{
    BreakerConfig, FaultAction, Incident, IncidentConfig, IncidentKind, IncidentLog, OutageMode,
    QueueOptions, Severity, SpikeConfig, WebhookConfig, WorkerConfig,
};
use support::{fast_config, minimal_escalation, Harness};

fn incidents_in(dir: &Path) -> Vec<Incident> {
    IncidentLog::new(dir.join("incidents.jsonl"), 1 << 20)
        .read_all()
        .expect("incident log")
}

fn of_kind(dir: &Path, kind: IncidentKind) -> Vec<Incident> {
    incidents_in(dir)
        .into_iter()
        .filter(|i| i.kind == kind)
        .collect()
}

fn with_incidents(incidents: IncidentConfig) -> WorkerConfig {
    WorkerConfig {
        incidents,
        ..fast_config()
    }
}

fn respond(status: u16, n: usize) -> Vec<FaultAction> {
    (0..n)
        .map(|_| FaultAction::Respond {
            status,
            retry_after: None,
        })
        .collect()
}

/// Exactly one incident of `kind`, with a complete context.
fn exactly_one(dir: &Path, kind: IncidentKind, severity: Severity) -> Incident {
    let found = of_kind(dir, kind);
    assert_eq!(found.len(), 1, "{kind}: {found:#?}");
    let incident = found.into_iter().next().expect("one");
    assert_eq!(incident.severity, severity);
    assert!(!incident.title.is_empty());
    incident
}

/// Exactly one incident of `kind` in the harness's queue, raised by the worker: its context
/// is complete (circuit state, configuration, what was tried).
fn raised_by_the_worker(h: &Harness, kind: IncidentKind, severity: Severity) -> Incident {
    let incident = exactly_one(&h.root(), kind, severity);
    assert_worker_context(&incident);
    incident
}

fn assert_worker_context(incident: &Incident) {
    let ctx = &incident.context;
    assert!(
        ["closed", "open", "half_open"].contains(&ctx.circuit_state.as_str()),
        "{ctx:?}"
    );
    assert!(ctx.config["retention_ms"].is_u64(), "{ctx:?}");
    assert!(ctx.config["policy"]["bad_request"].is_string(), "{ctx:?}");
    assert!(!incident.tried.is_empty(), "{incident:?}");
}

#[test]
fn dead_letters_raise_one_medium_incident_per_reason_within_the_window() {
    // Story: three bad items in a row must not page three times; one incident says what
    // happened and the window's count says how often.
    let h = Harness::new();
    h.enqueue(3);
    h.mock.push_faults(respond(400, 3));
    let (summary, _, incidents) = h.drain(fast_config());
    assert_eq!(summary.dead_lettered, 3);
    let incident = raised_by_the_worker(&h, IncidentKind::DeadLettered, Severity::Medium);
    assert_eq!(incident.key, "dead_lettered:bad_request");
    assert_eq!(incident.details["http_status"], 400);
    assert!(incident.details["dead_letter_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("dl_")));
    assert_eq!(incidents.count_in_window("dead_lettered:bad_request"), 3);
}

#[test]
fn recovered_transient_errors_raise_one_low_incident() {
    // Story: transient errors that recovered are logged for review, once.
    let h = Harness::new();
    h.enqueue(2);
    h.mock.push_faults([
        FaultAction::Respond {
            status: 503,
            retry_after: None,
        },
        FaultAction::Pass,
        FaultAction::Reset,
    ]);
    let (summary, _, _) = h.drain(fast_config());
    assert_eq!(summary.delivered, 2);
    let incident = raised_by_the_worker(&h, IncidentKind::TransientRecovered, Severity::Low);
    assert_eq!(incident.details["attempts"], 2);
}

#[test]
fn auth_failure_raises_one_critical_incident() {
    // Story: a bad token needs a human at once; repeated 401s must not flood the sinks.
    let h = Harness::new();
    h.enqueue(1);
    h.mock.push_faults(respond(401, 4));
    let (summary, stats, _) = h.drain(fast_config());
    assert_eq!((summary.delivered, summary.dead_lettered), (1, 0));
    let incident = raised_by_the_worker(&h, IncidentKind::AuthFailure, Severity::Critical);
    assert_eq!(incident.details["http_status"], 401);
    assert!(incident.context.paused_for_auth);
    assert!(!stats.snapshot().paused_for_auth, "resumed");
}

#[test]
fn unreachable_cloud_raises_one_high_incident() {
    // Story: an outage longer than the threshold needs a human, whatever the breaker does.
    let h = Harness::new();
    h.enqueue(1);
    h.mock
        .start_outage(Duration::from_millis(600), OutageMode::Refuse);
    let config = with_incidents(IncidentConfig {
        unreachable_alert_ms: 150,
        ..IncidentConfig::default()
    });
    let (summary, _, _) = h.drain(config);
    assert_eq!(summary.delivered, 1);
    let incident = raised_by_the_worker(&h, IncidentKind::CloudUnreachable, Severity::High);
    assert!(incident.details["unreachable_ms"].as_u64() >= Some(150));
    assert_eq!(incident.context.queue_depth, 1);
}

#[test]
fn error_rate_spike_raises_one_high_incident() {
    // Story: a sudden burst of failures above 10x the moving baseline is escalated once.
    let h = Harness::new();
    h.enqueue(1);
    h.mock.push_faults(respond(503, 12));
    let config = WorkerConfig {
        breaker: BreakerConfig {
            failure_threshold: 1000,
            ..BreakerConfig::default()
        },
        ..with_incidents(IncidentConfig {
            spike: SpikeConfig {
                bucket_ms: 60_000,
                failures_min: 5,
                ..SpikeConfig::default()
            },
            ..IncidentConfig::default()
        })
    };
    let (summary, _, _) = h.drain(config);
    assert_eq!(summary.delivered, 1);
    let incident = raised_by_the_worker(&h, IncidentKind::ErrorRateSpike, Severity::High);
    assert_eq!(incident.details["failures_in_bucket"], 5);
}

#[test]
fn old_backlog_raises_one_high_incident() {
    // Story: an escalation waiting for an hour means the cloud is not getting edge data.
    let h = Harness::new();
    for _ in 0..3 {
        let mut old = minimal_escalation();
        old.enqueued_at_unix_ms -= 60_000;
        h.queue.enqueue(&old).expect("enqueue");
    }
    h.mock.push_faults(respond(503, 8));
    let config = with_incidents(IncidentConfig {
        oldest_pending_alert_ms: 30_000,
        ..IncidentConfig::default()
    });
    let (summary, _, _) = h.drain(config);
    assert_eq!(summary.delivered, 3);
    let incident = raised_by_the_worker(&h, IncidentKind::BacklogTooOld, Severity::High);
    assert!(incident.context.oldest_pending_age_ms >= 60_000);
}

#[test]
fn corruption_raises_one_critical_incident_and_the_rest_is_delivered() {
    // Story: the original crash-looped on damaged queue files; we quarantine the damage,
    // deliver the rest, and tell a human exactly where it was.
    let h = Harness::new();
    let items = h.enqueue(3);
    support::damage_record(&h.root(), &items[1].image_query_id);
    let (summary, _, _) = h.drain(fast_config());
    assert_eq!(summary.delivered, 2);
    let incident = raised_by_the_worker(&h, IncidentKind::Corruption, Severity::Critical);
    assert!(incident.key.contains("crc32c mismatch"), "{}", incident.key);
}

#[test]
fn poisoned_writer_raises_one_critical_incident() {
    // Story: after a failed fsync the kernel may have dropped the data (fsyncgate); the
    // writer refuses everything until reopened, and a human must know.
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = SimDisk::new(1);
    let options = QueueOptions {
        storage: Some(Arc::new(disk.clone())),
        ..support::options()
    };
    let queue = EscalationQueue::open_with(dir.path(), options).expect("queue");
    queue.enqueue(&minimal_escalation()).expect("first enqueue");
    disk.inject(Fault::SyncFailsOnce(1));
    for _ in 0..3 {
        let err = queue.enqueue(&minimal_escalation()).expect_err("poisoned");
        assert_eq!(err.kind(), ErrorKind::Wal(WalErrorKind::Poisoned), "{err}");
        assert!(err.to_string().contains("open the queue again"), "{err}");
    }
    let incident = exactly_one(dir.path(), IncidentKind::WriterPoisoned, Severity::Critical);
    assert!(incident.error.is_some());
    assert_eq!(incident.context.circuit_state, "unknown");
}

#[test]
fn full_queue_raises_one_critical_incident() {
    // Story: the original had no size limit at all; ours refuses with a clear error and
    // escalates instead of filling the disk.
    let dir = tempfile::tempdir().expect("tempdir");
    let options = QueueOptions {
        image_size_max_bytes: 4096,
        segment_bytes: 128 << 10,
        queue_bytes_max: 256 << 10,
        free_disk_bytes_min: 0,
        ..QueueOptions::default()
    };
    let queue = EscalationQueue::open_with(dir.path(), options).expect("queue");
    let mut esc = minimal_escalation();
    esc.image = escalation_queue_worker::ImageSource::Inline(vec![0xff; 4000].into());
    let mut refused = 0;
    for _ in 0..200 {
        esc.image_query_id = escalation_queue_worker::new_image_query_id();
        match queue.enqueue(&esc) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Wal(WalErrorKind::QueueFull), "{e}");
                assert!(e.is_retryable());
                refused += 1;
            }
        }
    }
    assert!(refused > 100, "{refused}");
    exactly_one(dir.path(), IncidentKind::DiskFull, Severity::Critical);
}

/// A minimal HTTP server that records POST bodies and answers 200.
fn webhook_server() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                if let Ok(json) = serde_json::from_slice(&body) {
                    seen.lock().expect("lock").push(json);
                }
            }
            let mut stream = reader.into_inner();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, bodies)
}

#[test]
fn webhook_gets_each_incident_once_and_a_dead_webhook_never_blocks_delivery() {
    // Story: a pager must get one message per incident, and a broken pager must not stop
    // escalations from reaching the cloud.
    let (url, bodies) = webhook_server();
    let h = Harness::new();
    h.enqueue(3);
    h.mock.push_faults(respond(400, 3));
    let config = with_incidents(IncidentConfig {
        webhook: Some(WebhookConfig::new(url)),
        ..IncidentConfig::default()
    });
    h.drain(config);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while bodies.lock().expect("lock").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let got = bodies.lock().expect("lock").clone();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["kind"], "dead_lettered");
    assert_eq!(got[0]["severity"], "MEDIUM");

    // A webhook that accepts connections and never answers: delivery is not slowed.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!("http://{}/", silent.local_addr().expect("addr"));
    let (summary, elapsed) = twenty_dead_letters(silent_url);
    assert_eq!(summary.dead_lettered, 20);
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

    // 20 distinct incidents against a limit of 10 per minute: 10 sent, 10 dropped.
    let (url, bodies) = webhook_server();
    let (_, _) = twenty_dead_letters(url);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while bodies.lock().expect("lock").len() < 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(bodies.lock().expect("lock").len(), 10);
}

/// Twenty 404s, each its own incident (no dedupe window), with the webhook at `url`.
/// Twenty identical rejections in a row are a systemic fault by default (delivery would
/// pause after five); this test is about the webhook, so that rule is off here.
fn twenty_dead_letters(url: String) -> (escalation_queue_worker::RunSummary, Duration) {
    let h = Harness::new();
    h.enqueue(20);
    h.mock.push_faults(respond(404, 20));
    let config = WorkerConfig {
        systemic_reject_threshold: 0,
        ..with_incidents(IncidentConfig {
            webhook: Some(WebhookConfig::new(url)),
            dedupe_window_ms: 0,
            ..IncidentConfig::default()
        })
    };
    let started = std::time::Instant::now();
    let (summary, _, _) = h.drain(config);
    (summary, started.elapsed())
}
