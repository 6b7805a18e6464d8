//! One test per row of the classification table (docs/SEMANTICS.md §3), run by
//! the real worker over loopback HTTP against the mock cloud: attempts made, waits between
//! them, and where the item ends (delivered, dead-lettered, expired, still queued).

mod support;

use std::time::{Duration, Instant};

use escalation_queue_wal::Writer;
use escalation_queue_worker::{
    AttemptContext, DeadLetterReason, Destination, ErrorClass, FaultAction, ImageSource,
    MockOutcome, OutageMode, RecordedRequest, RunSummary,
};
use support::{fast_config, minimal_escalation, request_gaps_ms, Harness};

/// Enqueues one escalation, scripts `faults` for its first requests, drains.
fn one_item(faults: Vec<FaultAction>) -> (Harness, RunSummary) {
    let h = Harness::new();
    h.enqueue(1);
    h.mock.push_faults(faults);
    let (summary, _, _) = h.drain(fast_config());
    (h, summary)
}

fn respond(status: u16) -> FaultAction {
    FaultAction::Respond {
        status,
        retry_after: None,
    }
}

fn assert_retried_then_delivered(h: &Harness, summary: &RunSummary, failures: usize) {
    let requests = h.mock.requests();
    assert_eq!(requests.len(), failures + 1, "attempts");
    assert_eq!(summary.delivered, 1);
    assert_eq!(summary.retried, failures as u64);
    assert_eq!(summary.dead_lettered, 0);
    assert_eq!(h.mock.image_query_ids().len(), 1);
    // Waits come from the backoff: full jitter under the 20 ms cap (plus scheduling slack).
    assert!(
        request_gaps_ms(&h.mock).iter().all(|g| *g < 500),
        "{:?}",
        request_gaps_ms(&h.mock)
    );
    assert!(h.dead_letters().list().expect("list").is_empty());
}

#[test]
fn server_errors_and_408_are_retried_not_dropped() {
    // Story: the Python original turned cloud 5xx into a permanent failure (the SDK raised
    // InternalApiError with status None), losing escalations during a cloud incident.
    for status in [500, 502, 503, 504, 408] {
        let (h, summary) = one_item(vec![respond(status), respond(status)]);
        assert_retried_then_delivered(&h, &summary, 2);
    }
}

#[test]
fn too_many_requests_is_retried() {
    // Story: 429 was the only HTTP status the original retried; it still is.
    let (h, summary) = one_item(vec![respond(429)]);
    assert_retried_then_delivered(&h, &summary, 1);
}

#[test]
fn connection_reset_is_retried() {
    // Story: urllib3 re-raised a reset mid-POST as ProtocolError; the original dropped it.
    let (h, summary) = one_item(vec![FaultAction::Reset, FaultAction::Reset]);
    assert_retried_then_delivered(&h, &summary, 2);
    assert!(matches!(h.mock.requests()[0].outcome, MockOutcome::Reset));
}

#[test]
fn refused_connections_are_retried_until_the_network_returns() {
    // Story: a network outage must keep every item; nothing was sent, nothing is lost.
    let h = Harness::new();
    h.enqueue(1);
    h.mock
        .start_outage(Duration::from_millis(300), OutageMode::Refuse);
    let started = Instant::now();
    let (summary, stats, _) = h.drain(fast_config());
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(summary.delivered, 1);
    assert!(summary.retried >= 1, "{summary:?}");
    assert_eq!(summary.dead_lettered, 0);
    assert_eq!(stats.snapshot().circuit_state, "closed");
}

#[test]
fn read_timeout_is_retried_and_the_duplicate_400_counts_as_delivered() {
    // Story: the response was slower than the read timeout, so the cloud already created
    // the image query; the retry's 400 "already exists" means delivered. The original
    // recorded it as a failure.
    let (h, summary) = one_item(vec![FaultAction::Delay { delay_ms: 800 }]);
    let requests = h.mock.requests();
    assert_eq!(requests.len(), 3);
    assert!(matches!(
        requests[1].outcome,
        MockOutcome::Responded { status: 400, .. }
    ));
    assert_lookup(&requests[2], 200);
    assert_eq!((summary.delivered, summary.delivered_duplicates), (1, 1));
    assert_eq!(summary.dead_lettered, 0);
    assert_eq!(h.mock.image_query_ids().len(), 1);
}

#[test]
fn lost_response_then_400_is_delivered_not_dead_lettered() {
    // Story: the cloud accepted the request and the connection died before the answer; the
    // original dead-lettered the retry's 400.
    let (h, summary) = one_item(vec![FaultAction::DropResponse]);
    let requests = h.mock.requests();
    assert_eq!(requests.len(), 3, "POST, POST (400), GET (200)");
    assert_lookup(&requests[2], 200);
    assert_eq!((summary.delivered, summary.delivered_duplicates), (1, 1));
    assert!(h.dead_letters().list().expect("list").is_empty());
}

/// `request` is the worker's lookup of the item: a GET of its image query, answered `status`.
fn assert_lookup(request: &RecordedRequest, status: u16) {
    assert_eq!(request.method, "GET");
    let iq = request.path.rsplit('/').next().unwrap_or_default();
    assert!(iq.starts_with("iq_"), "{}", request.path);
    assert!(
        matches!(request.outcome, MockOutcome::Responded { status: s, .. } if s == status),
        "{:?}",
        request.outcome
    );
}

#[test]
fn a_400_after_a_reset_is_dead_lettered_when_the_cloud_says_it_never_had_it() {
    // Story: the first attempt's connection was reset before the cloud processed it, and
    // the retry got 400 because the detector is rejected. The worker used to count that 400
    // as "already exists" (delivered) and the bad escalation vanished. Now it asks the
    // cloud, which has no such image query: a dead letter with the 400's body.
    let h = Harness::rejecting("det_2workertests");
    h.enqueue(1);
    h.mock.push_faults([FaultAction::Reset]);
    let (summary, _, _) = h.drain(fast_config());
    let requests = h.mock.requests();
    assert_eq!(requests.len(), 3, "POST (reset), POST (400), GET (404)");
    assert_lookup(&requests[2], 404);
    assert_eq!(
        (summary.delivered, summary.dead_lettered),
        (0, 1),
        "{summary:?}"
    );
    let letters = h.dead_letters().list().expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].info.http_status, Some(400));
    assert!(letters[0]
        .info
        .response_excerpt
        .contains("rejects submissions"));
}

#[test]
fn a_failed_lookup_is_asked_again_never_guessed() {
    // Story: the lookup that settles a 400 can fail too (503, a reset). Guessing either way
    // would lose a bad escalation or dead-letter a delivered one: the worker asks again.
    let (h, summary) = one_item(vec![
        FaultAction::DropResponse,
        FaultAction::Pass,
        respond(503),
        FaultAction::Reset,
    ]);
    let requests = h.mock.requests();
    let methods: Vec<&str> = requests.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["POST", "POST", "GET", "GET", "GET"]);
    assert_lookup(&requests[4], 200);
    assert_eq!((summary.delivered, summary.delivered_duplicates), (1, 1));
    assert_eq!(summary.dead_lettered, 0);
}

#[test]
fn redirects_and_odd_statuses_are_retried() {
    // Story: a 3xx means a misconfigured endpoint, not a bad item: keep it (the breaker
    // pauses delivery), never follow the redirect with the token.
    let (h, summary) = one_item(vec![respond(302)]);
    assert_retried_then_delivered(&h, &summary, 1);
}

#[test]
fn bad_request_is_dead_lettered_after_one_attempt_with_context() {
    // Story: a 400 with no earlier lost response is a bad item; it must be visible, not
    // retried forever and not silently dropped.
    let (h, summary) = one_item(vec![respond(400)]);
    assert_eq!(h.mock.requests().len(), 1);
    assert_eq!((summary.delivered, summary.dead_lettered), (0, 1));
    let letters = h.dead_letters().list().expect("list");
    assert_eq!(letters.len(), 1);
    let info = &letters[0].info;
    assert_eq!(info.http_status, Some(400));
    assert_eq!(info.error_class, "bad_request");
    assert!(info.response_excerpt.contains("injected fault"), "{info:?}");
    assert_eq!(info.attempts.len(), 1);
    assert_eq!(info.attempts[0].http_status, Some(400));
    assert!(info.attempts[0].at_unix_ms >= info.enqueued_at_unix_ms);
    assert!(info.dead_lettered_at_unix_ms >= info.attempts[0].at_unix_ms);
    assert_eq!(
        info.cause,
        DeadLetterReason::Rejected {
            class: ErrorClass::BadRequest,
            status: Some(400)
        }
    );
}

#[test]
fn other_client_errors_are_dead_lettered() {
    // Story: 404, 413, 422 will not change on retry.
    for status in [404, 413, 422] {
        let (h, summary) = one_item(vec![respond(status)]);
        assert_eq!(h.mock.requests().len(), 1, "{status}");
        assert_eq!(summary.dead_lettered, 1, "{status}");
        let letters = h.dead_letters().list().expect("list");
        assert_eq!(letters[0].info.http_status, Some(status));
        assert_eq!(letters[0].info.error_class, "client_error");
    }
}

#[test]
fn unauthorized_pauses_without_dead_lettering_and_resumes_when_the_token_works() {
    // Story: the original retried a bad token forever while blocking the queue, silently.
    // We pause, raise a CRITICAL incident, keep every item, and resume once it works.
    let h = Harness::new();
    let items = h.enqueue(3);
    h.mock.set_api_token("another-token");
    let running = h.spawn(fast_config());
    running.wait_for(Duration::from_secs(5), |s| s.snapshot().paused_for_auth);
    std::thread::sleep(Duration::from_millis(200));
    let attempts_paused = h.mock.requests().len();
    // Only the head item is retried, every auth_retry_interval_ms (50 ms).
    assert!((2..=8).contains(&attempts_paused), "{attempts_paused}");
    let paused = running.stats.snapshot();
    assert_eq!((paused.delivered, paused.dead_lettered_total), (0, 0));
    assert!(h
        .mock
        .requests()
        .iter()
        .all(|r| r.param("image_query_id") == Some(items[0].image_query_id.as_str())));
    h.mock.set_api_token(support::TOKEN);
    running.wait_for(Duration::from_secs(5), |s| s.snapshot().delivered == 3);
    assert!(!running.stats.snapshot().paused_for_auth);
    let auth: Vec<_> = running
        .incidents
        .recent()
        .into_iter()
        .filter(|i| i.key == "auth_failure")
        .collect();
    assert_eq!(auth.len(), 1);
    let summary = running.stop();
    assert_eq!(summary.dead_lettered, 0);
}

#[test]
fn forbidden_pauses_like_unauthorized() {
    // Story: 403 is the other face of a token problem; it must never dead-letter either.
    let (h, summary) = one_item(vec![respond(403), respond(403)]);
    assert_eq!(h.mock.requests().len(), 3);
    assert_eq!((summary.delivered, summary.dead_lettered), (1, 0));
    assert!(h.dead_letters().list().expect("list").is_empty());
}

#[test]
fn missing_image_is_dead_lettered_with_the_record_bytes() {
    // Story: the Python layout stored images as files; a missing file is permanent.
    let h = Harness::new();
    let mut esc = minimal_escalation();
    esc.image = ImageSource::Path("/nonexistent/escalation-queue-test.jpg".into());
    h.queue.enqueue(&esc).expect("enqueue");
    let (summary, _, _) = h.drain(fast_config());
    assert_eq!(summary.dead_lettered, 1);
    assert!(h.mock.requests().is_empty(), "nothing reached the cloud");
    let letters = h.dead_letters().list().expect("list");
    assert_eq!(letters[0].info.error_class, "image_unavailable");
    let decoded = escalation_queue_worker::Escalation::decode(&letters[0].record).expect("record");
    assert_eq!(decoded, esc);
}

#[test]
fn undecodable_record_is_dead_lettered_with_its_raw_bytes() {
    // Story: the original crash-looped (later: skipped) on torn JSON lines; a record we
    // cannot decode goes to the dead-letter queue byte for byte.
    let h = Harness::new();
    let opts = support::options().wal_options();
    let raw = b"\x09not an escalation".to_vec();
    Writer::open(h.root().join("wal"), &opts)
        .expect("writer")
        .append(&raw)
        .expect("append");
    let (summary, stats, _) = h.drain(fast_config());
    assert_eq!(summary.dead_lettered, 1);
    assert!(h.mock.requests().is_empty());
    let letters = h.dead_letters().list().expect("list");
    assert_eq!(&letters[0].record[..], &raw[..]);
    assert_eq!(letters[0].info.cause, DeadLetterReason::Undecodable);
    assert_eq!(stats.snapshot().dead_lettered["undecodable"], 1);
}

#[test]
fn expired_items_are_counted_not_sent() {
    // Story: retention (7 days) is a security requirement upstream; an item older than it
    // is not delivered, and the drop is counted and logged rather than silent.
    let h = Harness::new();
    let mut old = minimal_escalation();
    old.enqueued_at_unix_ms -= 8 * 24 * 3600 * 1000;
    h.queue.enqueue(&old).expect("enqueue");
    h.enqueue(1);
    let (summary, stats, _) = h.drain(fast_config());
    assert_eq!((summary.expired, summary.delivered), (1, 1));
    assert_eq!(h.mock.requests().len(), 1);
    assert_eq!(stats.snapshot().expired, 1);
}

#[test]
fn a_producer_flagged_escalation_is_settled_by_asking_the_cloud() {
    // Story: edge-endpoint's own synchronous submit timed out after sending, so it queued
    // the escalation with `possibly_submitted`. The cloud has it: the worker's POST gets
    // 400 "already exists", and without the flag that 400 dead-lettered a delivered
    // escalation. With it, the worker asks the cloud and counts a delivered duplicate; a
    // flagged escalation the cloud does not have is still a dead letter.
    let h = Harness::rejecting("det_2rejected");
    let mut sent = minimal_escalation();
    sent.possibly_submitted = true;
    h.client
        .submit(&sent, AttemptContext::FIRST)
        .expect("the producer's own submit reached the cloud");
    h.queue.enqueue(&sent).expect("enqueue");
    let mut rejected = minimal_escalation();
    rejected.possibly_submitted = true;
    rejected.detector_id = "det_2rejected".to_owned();
    h.queue.enqueue(&rejected).expect("enqueue");
    let (summary, _, _) = h.drain(fast_config());
    assert_eq!(
        (
            summary.delivered,
            summary.delivered_duplicates,
            summary.dead_lettered
        ),
        (1, 1, 1),
        "{summary:?}"
    );
    let requests = h.mock.requests();
    let methods: Vec<&str> = requests.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["POST", "POST", "GET", "POST", "GET"]);
    assert_lookup(&requests[2], 200);
    assert_lookup(&requests[4], 404);
    let letters = h.dead_letters().list().expect("list");
    assert_eq!(
        letters[0].info.image_query_id.as_deref(),
        Some(rejected.image_query_id.as_str())
    );
}
