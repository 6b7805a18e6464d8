//! Failures end to end: injected faults on a real loopback connection, classified by the
//! decision table (docs/SEMANTICS.md §3), with the breaker, budget and backoff a worker loop applies.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroU32;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use escalation_queue_worker::{
    Admission, ApiToken, AttemptContext, Backoff, BackoffConfig, BreakerConfig, BudgetConfig,
    CircuitBreaker, CircuitState, Classification, ClassificationPolicy, ClientConfig,
    DeadLetterReason, DeliveryError, Destination, ErrorClass, Escalation, FaultAction,
    GroundlightClient, ItemBudget, MockOutcome, OutageMode, TimeoutPhase, Wait,
};

use support::{classify, client, escalation, start_mock, submit, TOKEN};

#[test]
fn every_status_row_classifies_end_to_end() {
    // Story: the Python original dropped 5xx and TLS errors and retried a bad token forever;
    // each row of the decision table (docs/SEMANTICS.md §3) must hold over real HTTP.
    let mock = start_mock();
    let client = client(&mock.endpoint());
    let retry = Classification::Retry { not_before: None };
    let dead = |status| Classification::DeadLetter {
        reason: DeadLetterReason::Rejected {
            class: ErrorClass::of_status(status),
            status: Some(status),
        },
    };
    let table = [
        (400, dead(400)),
        (401, Classification::PauseAuth),
        (403, Classification::PauseAuth),
        (404, dead(404)),
        (408, retry),
        (413, dead(413)),
        (429, retry),
        (500, retry),
        (502, retry),
        (503, retry),
        (504, retry),
        (302, retry),
    ];
    for (status, expected) in table {
        mock.push_faults([FaultAction::Respond {
            status,
            retry_after: None,
        }]);
        let result = submit(&client, &escalation(), 1);
        match &result {
            Err(DeliveryError::Http {
                status: got,
                body_excerpt,
                ..
            }) => {
                assert_eq!(*got, status);
                assert!(body_excerpt.contains("injected fault"), "{body_excerpt}");
            }
            other => panic!("{status}: expected an Http error, got {other:?}"),
        }
        assert_eq!(classify(&result, false), expected, "status {status}");
    }
    // Redirects are reported, not followed: one request per submission, never two.
    assert_eq!(mock.requests().len(), table.len());
}

#[test]
fn retry_after_seconds_and_http_dates_are_honoured() {
    // Story: the original ignored Retry-After ("could inspect the 'retry-after' key").
    let mock = start_mock();
    let client = client(&mock.endpoint());
    mock.push_faults([FaultAction::Respond {
        status: 429,
        retry_after: Some("7".into()),
    }]);
    let result = submit(&client, &escalation(), 1);
    assert_eq!(
        classify(&result, false),
        Classification::Retry {
            not_before: Some(Duration::from_secs(7))
        }
    );

    let at = SystemTime::now() + Duration::from_secs(120);
    mock.push_faults([FaultAction::Respond {
        status: 503,
        retry_after: Some(httpdate::fmt_http_date(at)),
    }]);
    let result = submit(&client, &escalation(), 1);
    let Classification::Retry {
        not_before: Some(delay),
    } = classify(&result, false)
    else {
        panic!("expected a retry with a delay, got {result:?}");
    };
    assert!(
        (Duration::from_secs(117)..=Duration::from_secs(120)).contains(&delay),
        "{delay:?}"
    );
}

#[test]
fn read_timeout_then_duplicate_400_counts_as_delivered() {
    // Story: when the response is lost (here: slower than the read timeout), the cloud has
    // already created the image query; the retry's 400 "already exists" must count as
    // delivered, not be dead-lettered as the original did.
    let mock = start_mock();
    let client = client(&mock.endpoint());
    let esc = escalation();
    mock.push_faults([FaultAction::Delay { delay_ms: 1_000 }]);
    let first = submit(&client, &esc, 1);
    let error = first.as_ref().expect_err("read timeout");
    assert!(
        matches!(
            error,
            DeliveryError::Timeout {
                phase: TimeoutPhase::Read
            }
        ),
        "{error:?}"
    );
    assert!(error.response_possibly_lost());
    assert_eq!(
        classify(&first, false),
        Classification::Retry { not_before: None }
    );

    let second = submit(&client, &esc, 2);
    assert!(
        matches!(second, Err(DeliveryError::Http { status: 400, .. })),
        "{second:?}"
    );
    assert_eq!(classify(&second, true), Classification::DeliveredDuplicate);
    assert_eq!(mock.image_query_ids(), [esc.image_query_id]);
}

#[test]
fn dropped_response_then_duplicate_400_counts_as_delivered() {
    // Story: the cloud accepted the request, then the connection died before the answer.
    let mock = start_mock();
    let client = client(&mock.endpoint());
    let esc = escalation();
    mock.push_faults([FaultAction::DropResponse]);
    let first = submit(&client, &esc, 1);
    let error = first.as_ref().expect_err("dropped");
    assert!(matches!(error, DeliveryError::Reset { .. }), "{error:?}");
    assert!(error.response_possibly_lost());
    assert_eq!(
        classify(&first, false),
        Classification::Retry { not_before: None }
    );
    assert!(matches!(
        mock.requests()[0].outcome,
        MockOutcome::ResponseDropped { status: 201 }
    ));

    let second = submit(&client, &esc, 2);
    assert_eq!(classify(&second, true), Classification::DeliveredDuplicate);
    // A 400 without an earlier lost response stays a dead letter.
    assert!(matches!(
        classify(&second, false),
        Classification::DeadLetter { .. }
    ));
}

#[test]
fn reset_is_retryable_and_the_retry_succeeds() {
    // Story: urllib3 re-raised a reset mid-POST as ProtocolError and the original dropped
    // the item; we retry, and since the mock reset before processing, the retry creates it.
    let mock = start_mock();
    let client = client(&mock.endpoint());
    let esc = escalation();
    mock.push_faults([FaultAction::Reset]);
    let first = submit(&client, &esc, 1);
    let error = first.as_ref().expect_err("reset");
    assert!(matches!(error, DeliveryError::Reset { .. }), "{error:?}");
    assert_eq!(
        classify(&first, false),
        Classification::Retry { not_before: None }
    );
    let second = submit(&client, &esc, 2).expect("retry delivered");
    assert_eq!(second.image_query.id, esc.image_query_id);
}

#[test]
fn refused_connections_are_retryable_connect_errors() {
    // Story: a network outage must keep the item, and nothing was sent, so a later 400 is
    // not a duplicate.
    let mock = start_mock();
    let client = client(&mock.endpoint());
    mock.start_outage(Duration::from_secs(5), OutageMode::Refuse);
    let deadline = Instant::now() + Duration::from_secs(2);
    let result = loop {
        // The acceptor closes the listener within one poll interval.
        let result = submit(&client, &escalation(), 2);
        if matches!(result, Err(DeliveryError::Connect { .. })) || Instant::now() > deadline {
            break result;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let error = result.as_ref().expect_err("refused");
    assert!(matches!(error, DeliveryError::Connect { .. }), "{error:?}");
    assert!(!error.response_possibly_lost());
    assert_eq!(
        classify(&result, false),
        Classification::Retry { not_before: None }
    );
    mock.end_outage();
    let deadline = Instant::now() + Duration::from_secs(2);
    while submit(&client, &escalation(), 2).is_err() {
        assert!(
            Instant::now() < deadline,
            "the mock did not come back after the outage"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connect_timeout_is_a_connect_phase_timeout_and_retries_use_the_short_one() {
    // Story: #290 split connect and read timeouts and shortened the connect timeout on
    // retries ("we expect we have bad network connectivity"); a connect timeout means
    // nothing was sent. A listener with a full accept backlog drops further SYNs, so
    // connecting hangs until the timeout.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    listener.listen(0).expect("listen");
    let addr = listener
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    let fillers: Vec<TcpStream> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok())
        .collect();
    let mut config = ClientConfig::new(ApiToken::new(TOKEN).expect("token"));
    config.endpoint = format!("http://{addr}");
    config.connect_timeout_first_ms = 10_000;
    config.connect_timeout_retry_ms = 300;
    let client = GroundlightClient::new(config).expect("client");
    let started = Instant::now();
    let result = submit(&client, &escalation(), 2);
    let error = result.as_ref().expect_err("connect timeout");
    assert!(
        matches!(
            error,
            DeliveryError::Timeout {
                phase: TimeoutPhase::Connect
            }
        ),
        "{error:?}"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "retry used the first-attempt timeout: {elapsed:?}"
    );
    assert!(!error.response_possibly_lost());
    assert_eq!(
        classify(&result, false),
        Classification::Retry { not_before: None }
    );
    drop(fillers);
}

#[test]
fn tls_failure_is_retryable() {
    // Story: the original mapped urllib3 SSLError to status 0 and dropped the item.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            thread::sleep(Duration::from_millis(100));
        }
    });
    let result = submit(&client(&format!("https://{addr}")), &escalation(), 1);
    let error = result.as_ref().expect_err("tls failure");
    assert!(matches!(error, DeliveryError::Tls { .. }), "{error:?}");
    assert_eq!(
        classify(&result, false),
        Classification::Retry { not_before: None }
    );
    server.join().expect("server thread");
}

/// What a minimal worker loop saw while delivering one item.
struct Run {
    outcome: Classification,
    budget: ItemBudget,
    breaker_opened: bool,
}

/// Delivers one item the way the worker loop will: breaker admission, submit, classify,
/// budget, then the wait (the probe interval while open, else the backoff). Bounded by
/// `deadline`.
fn deliver_one(
    client: &GroundlightClient,
    esc: &Escalation,
    breaker: &mut CircuitBreaker,
    budget_config: BudgetConfig,
    deadline: Instant,
) -> Run {
    let policy = ClassificationPolicy::default();
    let mut backoff = Backoff::with_seed(
        BackoffConfig {
            delay_base_ms: 10,
            delay_max_ms: 40,
            retry_after_max_ms: 50,
        },
        1,
    );
    let mut budget = ItemBudget::new(budget_config);
    let (mut attempt, mut retries, mut lost, mut breaker_opened) =
        (AttemptContext::FIRST, 0, false, false);
    loop {
        assert!(Instant::now() < deadline, "item not settled in time");
        let probe = match breaker.admit(Instant::now()) {
            Admission::Wait { retry_in } => {
                breaker_opened = true;
                thread::sleep(retry_in.min(Duration::from_millis(50)));
                continue;
            }
            Admission::Allowed { probe } => probe,
        };
        breaker_opened |= probe;
        let result = client.submit(esc, attempt);
        budget.record_attempt(!probe);
        let now_ms = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let class = budget.apply(policy.classify(&result, lost), esc.age_ms(now_ms));
        lost |= result
            .as_ref()
            .err()
            .is_some_and(DeliveryError::response_possibly_lost);
        if class.is_breaker_failure() {
            breaker.record_failure(Instant::now());
        } else {
            breaker.record_success();
        }
        match class {
            Classification::Retry { not_before } => {
                // The worker's rule: while open, the probe interval alone; else the backoff.
                let probe_in = breaker.probe_in(Instant::now());
                let wait =
                    Wait::after_retryable_failure(probe_in, &mut backoff, retries, not_before);
                thread::sleep(wait.length);
                retries = if probe_in.is_some() { 0 } else { retries + 1 };
                attempt = attempt.next();
            }
            outcome => {
                return Run {
                    outcome,
                    budget,
                    breaker_opened,
                }
            }
        }
    }
}

#[test]
fn outage_opens_the_breaker_instead_of_burning_the_budget() {
    // Story: outages are global. Without a breaker every item would spend its attempts on a
    // dead cloud and be dead-lettered; with it, probes while open are free and the item is
    // delivered when the cloud returns.
    let mock = start_mock();
    mock.start_outage(Duration::from_millis(800), OutageMode::ServiceUnavailable);
    let client = client(&mock.endpoint());
    let mut breaker = CircuitBreaker::new(BreakerConfig {
        failure_threshold: 3,
        cool_down_base_ms: 50,
        cool_down_max_ms: 200,
    });
    let budget = BudgetConfig {
        attempts_max: NonZeroU32::new(4),
        ..BudgetConfig::default()
    };
    let run = deliver_one(
        &client,
        &escalation(),
        &mut breaker,
        budget,
        Instant::now() + Duration::from_secs(10),
    );
    assert_eq!(run.outcome, Classification::Delivered);
    assert!(run.breaker_opened);
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert!(run.budget.attempts_charged() <= 3, "{:?}", run.budget);
    assert!(
        run.budget.attempts_total() > run.budget.attempts_charged(),
        "{:?}",
        run.budget
    );
}

#[test]
fn persistent_failures_exhaust_the_budget() {
    // Story: a retryable failure that never clears must end as a visible dead letter once
    // the configured budget is spent, not block the queue forever.
    let mock = start_mock();
    mock.start_outage(Duration::from_secs(30), OutageMode::ServiceUnavailable);
    let client = client(&mock.endpoint());
    let mut breaker = CircuitBreaker::new(BreakerConfig {
        failure_threshold: 100,
        ..BreakerConfig::default()
    });
    let budget = BudgetConfig {
        attempts_max: NonZeroU32::new(3),
        ..BudgetConfig::default()
    };
    let run = deliver_one(
        &client,
        &escalation(),
        &mut breaker,
        budget,
        Instant::now() + Duration::from_secs(10),
    );
    assert_eq!(
        run.outcome,
        Classification::DeadLetter {
            reason: DeadLetterReason::AttemptsExhausted {
                attempts: 3,
                max: 3
            }
        }
    );
    assert_eq!(mock.requests().len(), 3);
    mock.end_outage();
}
