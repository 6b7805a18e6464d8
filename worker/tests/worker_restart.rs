//! Restarts: the dedupe set survives them, a crash redelivers only the records after the
//! last checkpoint (and their 400s count as delivered), a graceful stop leaves the in-flight
//! item for redelivery and returns within the request's timeout.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use escalation_queue_worker::{
    AttemptContext, BackoffConfig, Delivered, DeliveryError, Destination, Escalation, FaultAction,
    GroundlightClient, Lookup, MockOutcome, WorkerConfig,
};
use support::{fast_config, minimal_escalation, Harness};

#[test]
fn dedupe_survives_a_restart() {
    // Story: the edge's SDK retries a request with the same X-Request-Id, and each retry
    // queues another line; the original remembered only 15 ids. Ours remembers 100k, on
    // disk, across restarts.
    let h = Harness::new();
    let delivered = h.enqueue(5);
    assert_eq!(h.drain(fast_config()).0.delivered, 5);
    for (i, old) in delivered.iter().enumerate() {
        let mut again = minimal_escalation();
        if i % 2 == 0 {
            again.request_id = old.request_id.clone();
        } else {
            again.image_query_id = old.image_query_id.clone();
        }
        h.queue.enqueue(&again).expect("enqueue");
    }
    let fresh = h.enqueue(1);
    let (summary, stats, _) = h.drain(fast_config());
    assert_eq!((summary.duplicates, summary.delivered), (5, 1));
    assert_eq!(stats.snapshot().duplicates, 5);
    assert_eq!(h.mock.requests().len(), 6);
    assert_eq!(
        h.mock.image_query_ids().last(),
        Some(&fresh[0].image_query_id)
    );
}

#[test]
fn a_reopened_worker_continues_the_counters_of_the_one_it_replaces() {
    // Story: the daemon reopens the queue after a storage error. If this fails, /stats
    // and /metrics counters jump back to zero in a running process (a Prometheus counter
    // reset with no restart behind it).
    let h = Harness::new();
    h.enqueue(3);
    let (first, stats, _) = h.drain(fast_config());
    assert_eq!(first.delivered, 3);
    h.enqueue(2);
    let mut second = h.worker(fast_config());
    second.continue_stats(Arc::clone(&stats));
    assert!(Arc::ptr_eq(&second.stats(), &stats));
    second.drain(h.client.as_ref()).expect("drain");
    let snap = stats.snapshot();
    assert_eq!(snap.delivered, 5, "{snap:?}");
    assert!(snap.attempts >= 5, "{snap:?}");
}

/// Panics on its `panic_at`-th submission: a worker crash at a chosen moment.
struct Crashing {
    inner: Arc<GroundlightClient>,
    calls: AtomicUsize,
    panic_at: usize,
}

impl Destination for Crashing {
    fn name(&self) -> &str {
        "crashing"
    }

    fn submit(
        &self,
        esc: &Escalation,
        attempt: AttemptContext,
    ) -> Result<Delivered, DeliveryError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.panic_at {
            panic!("simulated crash");
        }
        self.inner.submit(esc, attempt)
    }

    fn lookup(&self, image_query_id: &str) -> Result<Lookup, DeliveryError> {
        self.inner.lookup(image_query_id)
    }
}

/// Runs a worker that crashes on its 11th submission over the 20 queued `items`, then a
/// clean one; returns the second run's summary and the requests the first run made.
fn crash_then_restart_with(
    h: &Harness,
    items: &[Escalation],
    checkpoint_acks_max: u32,
) -> (escalation_queue_worker::RunSummary, usize) {
    for esc in items {
        h.queue.enqueue(esc).expect("enqueue");
    }
    let config = WorkerConfig {
        checkpoint_acks_max,
        checkpoint_interval_ms: 60_000,
        ..fast_config()
    };
    let mut worker = h.worker(config.clone());
    let crashing = Crashing {
        inner: Arc::clone(&h.client),
        calls: AtomicUsize::new(0),
        panic_at: 11,
    };
    let crashed = std::thread::spawn(move || worker.drain(&crashing)).join();
    assert!(crashed.is_err(), "the worker thread panicked");
    let before = h.mock.requests().len();
    assert_eq!(before, 10);
    let (summary, _, _) = h.drain(config);
    (summary, before)
}

fn crash_then_restart(
    checkpoint_acks_max: u32,
) -> (Harness, escalation_queue_worker::RunSummary, usize) {
    let h = Harness::new();
    let items: Vec<Escalation> = (0..20).map(|_| minimal_escalation()).collect();
    let (summary, before) = crash_then_restart_with(&h, &items, checkpoint_acks_max);
    (h, summary, before)
}

/// The methods of the requests the mock received from index `from` on, counted.
fn methods_since(h: &Harness, from: usize) -> (usize, usize) {
    let requests = h.mock.requests();
    let later = &requests[from..];
    let posts = later.iter().filter(|r| r.method == "POST").count();
    (posts, later.len() - posts)
}

#[test]
fn crash_redelivers_only_after_the_last_checkpoint_and_their_400s_count_as_delivered() {
    // Story: acknowledgements after the last checkpoint are lost in a crash, so those
    // records come again; the cloud already has them and answers 400, and confirms it
    // has them when asked (GET). They were delivered: not dead letters, not lost. (The
    // original recorded them as failures.)
    let (h, summary, before) = crash_then_restart(64);
    assert_eq!(summary.delivered, 20);
    assert_eq!(summary.delivered_duplicates, 10, "{summary:?}");
    assert_eq!(summary.dead_lettered, 0);
    assert_eq!(methods_since(&h, before), (20, 10), "20 POSTs, 10 lookups");
    assert_eq!(h.mock.image_query_ids().len(), 20);

    // With a checkpoint every 4 acks, only the 2 records after the last one come again.
    let (h, summary, before) = crash_then_restart(4);
    assert_eq!((summary.delivered, summary.delivered_duplicates), (12, 2));
    assert_eq!(methods_since(&h, before), (12, 2));
    assert_eq!(h.mock.image_query_ids().len(), 20);
}

#[test]
fn after_a_crash_a_rejected_escalation_that_was_never_sent_is_a_dead_letter() {
    // Story: after a kill -9, an escalation that had never been sent got HTTP
    // 400 (its detector is rejected) and was counted as a delivered duplicate, because
    // every record in the first `checkpoint_acks_max + 1` of a lane was "possibly
    // submitted". It vanished from the operator's view. Now only records with a durable
    // attempt marker are, and their 400 is settled by asking the cloud.
    let h = Harness::rejecting("det_2rejected");
    let items: Vec<Escalation> = (0..20)
        .map(|i| {
            let mut esc = minimal_escalation();
            if [5, 10, 15].contains(&i) {
                esc.detector_id = "det_2rejected".to_owned();
            }
            esc
        })
        .collect();
    // Item 5 is rejected before the crash (and comes again), item 10 is marked when the
    // crash hits before its request goes out, item 15 was never attempted.
    let (summary, before) = crash_then_restart_with(&h, &items, 64);
    assert_eq!(summary.dead_lettered, 3, "{summary:?}");
    assert_eq!((summary.delivered, summary.delivered_duplicates), (17, 9));
    // Lookups: the 10 records attempted before the crash and the one marked at it; none
    // for the never-attempted one.
    assert_eq!(methods_since(&h, before), (20, 11));
    let letters = h.dead_letters().list().expect("list");
    let mut rejected: Vec<&str> = letters
        .iter()
        .filter_map(|l| l.info.image_query_id.as_deref())
        .collect();
    rejected.sort_unstable();
    let mut expected: Vec<&str> = [5, 10, 15]
        .iter()
        .map(|&i| items[i].image_query_id.as_str())
        .collect();
    expected.sort_unstable();
    assert_eq!(rejected, expected);
    assert!(letters.iter().all(|l| l.info.http_status == Some(400)));
    assert_eq!(h.mock.image_query_ids().len(), 17);
}

#[test]
fn graceful_stop_leaves_the_in_flight_item_and_the_next_run_knows_it_may_exist() {
    // Story: stopping mid-backoff after a lost response must neither lose the item nor
    // dead-letter it when the restart's attempt gets "already exists".
    let h = Harness::new();
    h.enqueue(2);
    h.mock.push_faults([FaultAction::DropResponse]);
    let slow = WorkerConfig {
        backoff: BackoffConfig {
            delay_base_ms: 60_000,
            delay_max_ms: 60_000,
            retry_after_max_ms: 60_000,
        },
        jitter_seed: None,
        ..fast_config()
    };
    let running = h.spawn(slow);
    running.wait_for(Duration::from_secs(5), |s| s.snapshot().retried == 1);
    let summary = running.stop_within(Duration::from_millis(1500));
    assert_eq!((summary.delivered, summary.dead_lettered), (0, 0));
    let (summary, _, _) = h.drain(fast_config());
    assert_eq!((summary.delivered, summary.delivered_duplicates), (2, 1));
    assert_eq!(summary.dead_lettered, 0);
    assert_eq!(h.mock.image_query_ids().len(), 2);
}

#[test]
fn stop_during_a_hung_request_returns_within_its_timeout() {
    // Story: SIGTERM must not wait for an outage to end; the request in progress is
    // bounded by the read timeout (300 ms here), and the item stays queued.
    let h = Harness::new();
    h.enqueue(1);
    h.mock.push_faults([FaultAction::Delay { delay_ms: 5_000 }]);
    let running = h.spawn(fast_config());
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.mock.requests().is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let summary = running.stop_within(Duration::from_millis(1500));
    assert_eq!(summary.delivered, 0);
    assert!(matches!(
        h.mock.requests()[0].outcome,
        MockOutcome::Responded {
            delay_ms: 5_000,
            ..
        }
    ));
    let (summary, _, _) = h.drain(fast_config());
    assert_eq!((summary.delivered, summary.delivered_duplicates), (1, 1));
}
