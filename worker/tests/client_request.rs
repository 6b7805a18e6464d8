//! What the client sends and how it reads answers: the real `GroundlightClient` over
//! loopback HTTP against the `MockCloud`.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use escalation_queue_worker::{
    ApiToken, Classification, DeadLetterReason, DeliveryError, Destination, ErrorClass, Escalation,
    FaultAction, ImageSource, Lookup, MockCloud, MockCloudConfig,
};

use support::{classify, client, escalation, start_mock, submit, PNG};

#[test]
fn request_has_the_sdk_shape() {
    // Story: the cloud must receive exactly what the Python SDK sends for a queued
    // escalation (EE manage_reader → submit_image_query(want_async=True, …)), or it may
    // reject or misfile it.
    let mock = start_mock();
    let esc = escalation();
    submit(&client(&mock.endpoint()), &esc, 1).expect("delivered");
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/device-api/v1/image-queries")
    );
    let names: Vec<&str> = r.query.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "patience_time",
            "confidence_threshold",
            "human_review",
            "want_async",
            "metadata",
            "image_query_id",
            "detector_id"
        ]
    );
    assert_eq!(r.param("detector_id"), Some("det_2testdetector"));
    assert_eq!(r.param("image_query_id"), Some(esc.image_query_id.as_str()));
    assert_eq!(r.param("patience_time"), Some("30.0"));
    assert_eq!(r.param("confidence_threshold"), Some("0.75"));
    assert_eq!(r.param("human_review"), Some("NEVER"));
    assert_eq!(r.param("want_async"), Some("True"));
    // base64url with padding of the json.dumps text (sorted keys: serde_json's map order).
    let metadata = r.param("metadata").expect("metadata param");
    let json = base64::engine::general_purpose::URL_SAFE
        .decode(metadata)
        .expect("padded base64url");
    assert_eq!(
        String::from_utf8(json).expect("utf8"),
        r#"{"edge_result": {"confidence": 0.5, "label": "YES"}, "is_edge_audit": true}"#
    );
    assert!(r.token_matched);
    assert_eq!(r.header("x-api-token"), Some("<redacted>"));
    assert_eq!(r.header("X-Request-Id"), Some(esc.request_id.as_str()));
    assert_eq!(r.header("Accept"), Some("application/json"));
    assert_eq!(r.header("Content-Type"), Some("image/png"));
    assert!(r
        .header("User-Agent")
        .is_some_and(|ua| ua.starts_with("escalation-queue/")));
    assert_eq!(
        (r.body_len_bytes, r.body_crc32c),
        (PNG.len(), crc32c::crc32c(PNG))
    );
}

#[test]
fn unset_optional_fields_are_not_sent() {
    // Story: the SDK sends only parameters that are set; an empty `metadata=` or
    // `human_review=` would be rejected by the API.
    let mock = start_mock();
    let esc = Escalation::new(
        "det_1",
        ImageSource::Inline(Bytes::from_static(b"\xff\xd8\xffjpeg")),
    );
    submit(&client(&mock.endpoint()), &esc, 1).expect("delivered");
    let r = &mock.requests()[0];
    let names: Vec<&str> = r.query.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["want_async", "image_query_id", "detector_id"]);
    assert_eq!(r.header("Content-Type"), Some("image/jpeg"));
}

#[test]
fn created_image_query_is_parsed() {
    // Story: a 201 with the ImageQuery JSON is the only proof of delivery we record.
    let mock = start_mock();
    let esc = escalation();
    let delivered = submit(&client(&mock.endpoint()), &esc, 1).expect("delivered");
    assert_eq!(delivered.status, 201);
    let iq = &delivered.image_query;
    assert_eq!(iq.id, esc.image_query_id);
    assert_eq!(iq.kind.as_deref(), Some("image_query"));
    assert_eq!(iq.detector_id.as_deref(), Some("det_2testdetector"));
    assert_eq!(iq.confidence_threshold, Some(0.75));
    assert_eq!(iq.result, None, "null result of an async submission");
    assert_eq!(iq.done_processing, Some(false));
    assert!(iq.created_at.as_deref().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(classify(&Ok(delivered), false), Classification::Delivered);
    assert_eq!(mock.image_query_ids(), [esc.image_query_id]);
}

#[test]
fn bad_token_pauses_and_rotation_recovers() {
    // Story: the original retried a bad token forever, blocking the queue; we pause with a
    // CRITICAL incident, and delivery resumes once the token is fixed.
    let mock = start_mock();
    let client = client(&mock.endpoint());
    mock.set_api_token("api_2rotated");
    let result = submit(&client, &escalation(), 1);
    assert!(
        matches!(result, Err(DeliveryError::Http { status: 401, .. })),
        "{result:?}"
    );
    assert_eq!(classify(&result, false), Classification::PauseAuth);
    assert!(!mock.requests()[0].token_matched);
    client.set_api_token(ApiToken::new("api_2rotated").expect("token"));
    submit(&client, &escalation(), 2).expect("delivered with the new token");
}

#[test]
fn keep_alive_reuses_one_connection() {
    // Story: one agent is reused so retries and bursts do not pay a TLS handshake each.
    let mock = start_mock();
    let client = client(&mock.endpoint());
    for _ in 0..3 {
        submit(&client, &escalation(), 1).expect("delivered");
    }
    mock.push_faults([FaultAction::Respond {
        status: 503,
        retry_after: None,
    }]);
    let _ = submit(&client, &escalation(), 1);
    submit(&client, &escalation(), 1).expect("delivered");
    let ids: Vec<u64> = mock.requests().iter().map(|r| r.connection_id).collect();
    assert_eq!(ids.len(), 5);
    assert!(ids.iter().all(|id| *id == ids[0]), "connections: {ids:?}");
}

#[test]
fn missing_image_file_is_dead_lettered() {
    // Story: a queued path whose image vanished (retention, crash) can never succeed.
    let mock = start_mock();
    let mut esc = escalation();
    esc.image = ImageSource::Path(PathBuf::from("/nonexistent/escalation-queue/image"));
    let result = submit(&client(&mock.endpoint()), &esc, 1);
    assert!(
        matches!(result, Err(DeliveryError::ImageUnavailable { .. })),
        "{result:?}"
    );
    assert_eq!(
        classify(&result, false),
        Classification::DeadLetter {
            reason: DeadLetterReason::Rejected {
                class: ErrorClass::ImageUnavailable,
                status: None
            }
        }
    );
    assert!(mock.requests().is_empty(), "nothing may be sent");
}

#[test]
fn success_status_without_an_image_query_is_retried() {
    // Story: a captive portal or proxy answering 2xx with its own page is not a delivery.
    let mock = start_mock();
    mock.push_faults([FaultAction::Respond {
        status: 201,
        retry_after: None,
    }]);
    let result = submit(&client(&mock.endpoint()), &escalation(), 1);
    let error = result.as_ref().expect_err("bad response");
    assert!(
        matches!(error, DeliveryError::BadResponse { status: 201, .. }),
        "{error:?}"
    );
    assert!(error.response_possibly_lost());
    assert_eq!(
        classify(&result, false),
        Classification::Retry { not_before: None }
    );
}

#[test]
fn mock_validates_like_the_api() {
    // Story: the mock must reject what the real API rejects, or client bugs hide in tests.
    let mock = start_mock();
    let client = client(&mock.endpoint());
    let mut empty = escalation();
    empty.image = ImageSource::Inline(Bytes::new());
    // The client refuses to send an empty image at all.
    assert!(matches!(
        submit(&client, &empty, 1),
        Err(DeliveryError::ImageUnavailable { .. })
    ));
    let mut out_of_range = escalation();
    out_of_range.confidence_threshold = Some(1.5);
    assert!(matches!(
        submit(&client, &out_of_range, 1),
        Err(DeliveryError::Http { status: 400, .. })
    ));
}

#[test]
fn mock_shutdown_is_bounded_even_mid_delay() {
    // Story: a test that ends while the mock is holding a response (injected delay) or an
    // idle keep-alive connection must not hang the test run.
    let mut mock = start_mock();
    let client = client(&mock.endpoint());
    submit(&client, &escalation(), 1).expect("delivered"); // leaves an idle connection
    mock.push_faults([FaultAction::Delay { delay_ms: 60_000 }]);
    let _ = submit(&client, &escalation(), 1); // times out client-side; mock still sleeping
    let started = Instant::now();
    mock.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let after = submit(&client, &escalation(), 2);
    assert!(
        after.is_err(),
        "nothing may answer after shutdown: {after:?}"
    );
}

/// A one-request HTTP server on loopback that answers `status` with the JSON `body`.
fn answer_once(status: u16, body: &'static str) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}/device-api", listener.local_addr().expect("addr"));
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut request = Vec::new();
        let mut buf = [0_u8; 4096];
        // Headers, then the declared body (the PNG fixture is small).
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).expect("read");
            assert!(n > 0, "client closed early");
            request.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&request).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("length"));
        let head_len = request
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end")
            + 4;
        while request.len() < head_len + length {
            let n = stream.read(&mut buf).expect("read body");
            assert!(n > 0, "client closed early");
            request.extend_from_slice(&buf[..n]);
        }
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).expect("answer");
    });
    (endpoint, server)
}

#[test]
fn a_success_naming_another_or_an_empty_image_query_is_not_a_delivery() {
    // Story: a 2xx whose ImageQuery is not the one sent (a proxy's cache, a misrouted
    // endpoint, an API that ignored our id) was acknowledged as delivered: the escalation
    // vanished while the cloud had something else. It is an error now, dead-lettered by
    // default (resending could create yet another image query), with an incident.
    for body in [r#"{"id": "iq_somethingelse"}"#, r#"{"id": ""}"#] {
        let (endpoint, server) = answer_once(201, body);
        let esc = escalation();
        let result = submit(&client(&endpoint), &esc, 1);
        server.join().expect("server");
        let error = result.as_ref().expect_err("not a delivery");
        assert!(
            matches!(error, DeliveryError::WrongImageQuery { status: 201, sent, .. } if *sent == esc.image_query_id),
            "{error:?}"
        );
        assert_eq!(
            classify(&result, false),
            Classification::DeadLetter {
                reason: DeadLetterReason::Rejected {
                    class: ErrorClass::WrongImageQuery,
                    status: Some(201)
                }
            }
        );
    }
}

#[test]
fn lookup_finds_what_the_mock_accepted_and_nothing_else() {
    // Story: a 400 for an escalation that may have been sent before is settled by asking
    // the cloud; the mock must answer that GET like the API: the ImageQuery it returned on
    // the POST, 404 for what it never accepted, 401 for a wrong token.
    let mock = start_mock();
    let client = client(&mock.endpoint());
    let esc = escalation();
    let delivered = submit(&client, &esc, 1).expect("delivered");
    assert_eq!(
        client.lookup(&esc.image_query_id).expect("lookup"),
        Lookup::Found(Box::new(delivered.image_query.clone()))
    );
    assert_eq!(
        client.lookup("iq_neveraccepted").expect("lookup"),
        Lookup::NotFound
    );
    let get = mock.requests().pop().expect("recorded");
    assert_eq!(get.method, "GET");
    assert_eq!(get.path, "/device-api/v1/image-queries/iq_neveraccepted");
    assert!(get.token_matched, "the lookup carries the token");
    client.set_api_token(ApiToken::new("api_2wrongtoken").expect("token"));
    assert!(matches!(
        client.lookup(&esc.image_query_id),
        Err(DeliveryError::Http { status: 401, .. })
    ));
}

#[test]
fn the_mock_rejects_a_configured_detector_with_400_and_creates_nothing() {
    // Story: the field report's cloud rejected one detector; tests need that cloud.
    let mut config = MockCloudConfig::new(support::TOKEN);
    config.rejected_detectors = vec!["det_2testdetector".to_owned()];
    let mock = MockCloud::start(config).expect("mock");
    let client = client(&mock.endpoint());
    let esc = escalation();
    let result = submit(&client, &esc, 1);
    assert!(
        matches!(&result, Err(DeliveryError::Http { status: 400, body_excerpt, .. }) if body_excerpt.contains("det_2testdetector")),
        "{result:?}"
    );
    assert!(mock.image_query_ids().is_empty());
    assert_eq!(
        client.lookup(&esc.image_query_id).expect("lookup"),
        Lookup::NotFound
    );
}
