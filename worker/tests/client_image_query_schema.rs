//! A 2xx is a delivery only if its body is an ImageQuery the Groundlight SDK would accept:
//! every field its model requires, well typed (the real `GroundlightClient` against a
//! one-answer server on loopback).

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use escalation_queue_worker::{Classification, DeliveryError, Destination, Lookup};
use serde_json::{json, Value};

use support::{classify, client, escalation, start_mock, submit};

/// A server on loopback answering one request with `status` and `body`.
fn answer_once(status: u16, body: String) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}/device-api", listener.local_addr().expect("addr"));
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut request = Vec::new();
        let mut buf = [0_u8; 4096];
        let head_len = loop {
            if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = stream.read(&mut buf).expect("read");
            assert!(n > 0, "client closed early");
            request.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&request[..head_len]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("length"));
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

/// The ImageQuery the API answers for `id`: every field the SDK's model requires.
fn full_image_query(id: &str) -> Value {
    json!({
        "id": id, "type": "image_query", "created_at": "2026-01-01T00:00:00.000000Z",
        "query": "Is there a person?", "detector_id": "det_2testdetector",
        "result_type": "binary_classification", "result": null, "patience_time": 30.0,
        "confidence_threshold": 0.75, "metadata": null, "rois": null, "text": null,
        "done_processing": false,
    })
}

#[test]
fn a_complete_image_query_is_a_delivery() {
    let esc = escalation();
    let (endpoint, server) = answer_once(201, full_image_query(&esc.image_query_id).to_string());
    let delivered = submit(&client(&endpoint), &esc, 1).expect("delivered");
    server.join().expect("server");
    assert_eq!(delivered.image_query.id, esc.image_query_id);
    assert_eq!(delivered.image_query.patience_time, Some(30.0));
}

/// An edit of an ImageQuery's fields.
type Change = fn(&mut serde_json::Map<String, Value>);

/// Story: the SDK rejects an answer whose `patience_time` is null (the old mock's), or
/// that lacks a field its model requires; we counted such a 2xx as delivered. It is a bad
/// response now (retried: the escalation may not have been recorded as we sent it).
#[test]
fn an_image_query_the_sdk_would_reject_is_not_a_delivery() {
    let cases: [(&str, Change); 7] = [
        ("null patience_time", |m| {
            m.insert("patience_time".into(), Value::Null);
        }),
        ("null confidence_threshold", |m| {
            m.insert("confidence_threshold".into(), Value::Null);
        }),
        ("no created_at", |m| {
            m.remove("created_at");
        }),
        ("no metadata key", |m| {
            m.remove("metadata");
        }),
        ("no result_type", |m| {
            m.remove("result_type");
        }),
        ("rois not a list", |m| {
            m.insert("rois".into(), json!("x"));
        }),
        ("query not a string", |m| {
            m.insert("query".into(), json!(7));
        }),
    ];
    for (what, change) in cases {
        let esc = escalation();
        let mut body = full_image_query(&esc.image_query_id);
        change(body.as_object_mut().expect("object"));
        let (endpoint, server) = answer_once(201, body.to_string());
        let result = submit(&client(&endpoint), &esc, 1);
        server.join().expect("server");
        let error = result.as_ref().expect_err(what);
        assert!(
            matches!(error, DeliveryError::BadResponse { status: 201, .. }),
            "{what}: {error:?}"
        );
        assert_eq!(
            classify(&result, false),
            Classification::Retry { not_before: None },
            "{what}"
        );
    }
}

/// Story: the mock answers what the SDK requires, also when the escalation has no patience
/// time or threshold (it fills in the detector defaults, as the API does), and a lookup
/// reads back the same ImageQuery.
#[test]
fn the_mock_answers_complete_image_queries_with_the_api_defaults() {
    let mock = start_mock();
    let client = client(&mock.endpoint());
    let mut esc = escalation();
    esc.patience_time_s = None;
    esc.confidence_threshold = None;
    let delivered = submit(&client, &esc, 1).expect("delivered");
    assert_eq!(delivered.image_query.patience_time, Some(30.0));
    assert_eq!(delivered.image_query.confidence_threshold, Some(0.9));
    match client.lookup(&esc.image_query_id).expect("lookup") {
        Lookup::Found(iq) => assert_eq!(*iq, delivered.image_query),
        Lookup::NotFound => panic!("the mock lost {}", esc.image_query_id),
    }
}
