//! The real Groundlight Python SDK against our side, as the edge-endpoint's reader uses it:
//! the SDK drives `escalation-queue mock-cloud` (so the mock is proven to answer what the
//! SDK needs), and the SDK and our `drain` send the same escalation to one capture server
//! on 127.0.0.1 (so our request is proven to be the SDK's, field by field).
//!
//! The SDK comes from virtualenvs that `.ci/run` creates (one per SDK version: the one the
//! edge-endpoint pins and the newest), passed as `EQ_SDK_PYTHONS` (their `python`
//! executables, `:`-separated). Without it the tests skip with a printed reason, except
//! under `CI=true`, where they fail.

mod util;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use util::{Sandbox, TOKEN};

/// The SDK version the edge-endpoint pins.
const PINNED_SDK: &str = "0.30.0";

/// The script that submits one escalation with the SDK and reads it back.
const SUBMIT_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/submit.py");

/// The `python` of each SDK virtualenv, or none (and a printed reason) outside CI.
fn sdk_pythons() -> Vec<PathBuf> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let listed = std::env::var("EQ_SDK_PYTHONS").unwrap_or_default();
    let pythons: Vec<PathBuf> = std::env::split_paths(&listed)
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    if pythons.is_empty() {
        assert!(
            !ci,
            "CI=true but EQ_SDK_PYTHONS is not set: .ci/run creates the groundlight SDK \
             virtualenvs and sets it"
        );
        println!(
            "SKIPPED: EQ_SDK_PYTHONS is not set (the python of a virtualenv with \
             `pip install groundlight`; .ci/run sets it)"
        );
        return pythons;
    }
    for python in &pythons {
        assert!(
            python.is_file(),
            "EQ_SDK_PYTHONS lists {python:?}, which is missing"
        );
    }
    if ci {
        assert!(
            pythons.len() >= 2,
            "CI=true: EQ_SDK_PYTHONS must list the pinned SDK and the newest: {listed}"
        );
    }
    pythons
}

/// Under CI, the versions run must include the pinned one and another (the newest).
fn check_versions_run(versions: &BTreeSet<String>) {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if ci {
        assert!(
            versions.contains(PINNED_SDK) && versions.len() >= 2,
            "CI=true: the SDK versions run were {versions:?}; expected {PINNED_SDK} and the newest"
        );
    }
}

/// Optional SDK arguments of one submission (`""` leaves one out).
struct Submission<'a> {
    image_query_id: &'a str,
    metadata: &'a str,
    patience_time: &'a str,
    confidence_threshold: &'a str,
    human_review: &'a str,
}

/// Runs `submit.py` with `python` against `endpoint`; returns its JSON line.
fn sdk_submit(
    sandbox: &Sandbox,
    python: &PathBuf,
    endpoint: &str,
    token: &str,
    image: &PathBuf,
    s: &Submission<'_>,
) -> Value {
    let mut cmd = Command::new(python);
    cmd.arg(SUBMIT_PY)
        .args([endpoint, "det_2sdkparity"])
        .arg(image)
        .args([
            s.image_query_id,
            s.metadata,
            s.patience_time,
            s.confidence_threshold,
            s.human_review,
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", sandbox.root.path())
        // The newest SDK keeps a token cache; keep it in the sandbox.
        .env(
            "GROUNDLIGHT_TOKEN_DIR",
            sandbox.root.path().join("gl-tokens"),
        )
        .env("GROUNDLIGHT_API_TOKEN", token)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = sandbox.run_with(cmd, None);
    assert_eq!(
        out.code,
        Some(0),
        "the SDK ({python:?}) failed against {endpoint}:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let line = out.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// Story: the reader this project replaces submits with the `groundlight` SDK, and the demo
/// and tests stand in for the cloud with `mock-cloud`. Pointed at the old mock, both SDK
/// versions failed in the constructor (no `GET /v1/me`), then on its null `patience_time`,
/// and the newest SDK refused the mock's default token. Now each SDK version, with the
/// mock's default token, constructs its client, submits with the edge-endpoint's
/// parameters (with and without patience time and threshold) and reads the image query
/// back.
#[test]
fn the_real_sdk_submits_to_and_reads_back_from_mock_cloud_with_its_default_token() {
    let pythons = sdk_pythons();
    if pythons.is_empty() {
        return;
    }
    let sandbox = Sandbox::new();
    let image = sandbox.file("image.jpg", b"\xff\xd8\xff\xe0 a jpeg-ish test image");
    // No --token and no GROUNDLIGHT_API_TOKEN: the mock's default token.
    let mock = sandbox.spawn(&["mock-cloud", "--listen", "127.0.0.1:0"]);
    let line = mock.wait_stdout(Duration::from_secs(20), |l| l.starts_with("listening on "));
    let endpoint = line.trim_start_matches("listening on ").trim().to_owned();
    let default_token = "api_mockcloud_default_token_0000";
    let mut versions = BTreeSet::new();
    let mut ids = Vec::new();
    for (n, python) in pythons.iter().enumerate() {
        // The common case: the escalation has no patience time or threshold; the SDK's
        // model requires both in the answer (the API fills in the detector's).
        let bare_id = format!("iq_2sdkbare{n}");
        let bare = Submission {
            image_query_id: &bare_id,
            metadata: "",
            patience_time: "",
            confidence_threshold: "",
            human_review: "",
        };
        let got = sdk_submit(&sandbox, python, &endpoint, default_token, &image, &bare);
        assert_eq!(got["id"], bare_id.as_str(), "{got}");
        assert_eq!(got["fetched_id"], bare_id.as_str(), "{got}");
        assert_eq!(got["patience_time"], 30.0, "{got}");
        assert_eq!(got["confidence_threshold"], 0.9, "{got}");
        let full_id = format!("iq_2sdkfull{n}");
        let full = Submission {
            image_query_id: &full_id,
            metadata: r#"{"is_edge_audit": true, "edge_result": {"confidence": 0.97, "label": 0}}"#,
            patience_time: "45.5",
            confidence_threshold: "0.75",
            human_review: "ALWAYS",
        };
        let got = sdk_submit(&sandbox, python, &endpoint, default_token, &image, &full);
        assert_eq!(got["id"], full_id.as_str(), "{got}");
        assert_eq!(got["fetched_id"], full_id.as_str(), "{got}");
        assert_eq!(got["patience_time"], 45.5, "{got}");
        assert_eq!(got["confidence_threshold"], 0.75, "{got}");
        assert_eq!(
            got["metadata"],
            json!({"is_edge_audit": true, "edge_result": {"confidence": 0.97, "label": 0}}),
            "{got}"
        );
        versions.insert(got["sdk_version"].as_str().unwrap_or("?").to_owned());
        ids.push(bare_id);
        ids.push(full_id);
    }
    mock.terminate();
    let mut mock = mock;
    assert_eq!(mock.wait_exit(Duration::from_secs(10)), Some(0));
    let summary: Value =
        serde_json::from_str(mock.stdout_lines().last().expect("summary")).expect("summary JSON");
    assert_eq!(summary["image_query_ids"], json!(ids), "{summary}");
    assert_eq!(summary["token_mismatches"], 0, "{summary}");
    assert_eq!(summary["lookups"], ids.len(), "{summary}");
    println!("SDK versions run against mock-cloud: {versions:?}");
    check_versions_run(&versions);
}

/// One request as the capture server read it, bytes as sent.
#[derive(Clone, Debug)]
struct Captured {
    method: String,
    /// The request target: path, then `?` and the query exactly as encoded.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Captured {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The query's `name=value` pairs, still percent-encoded, in order.
    fn raw_query(&self) -> Vec<(String, String)> {
        let query = self.target.split_once('?').map_or("", |(_, q)| q);
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (n, v) = p.split_once('=').unwrap_or((p, ""));
                (n.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn param(&self, name: &str) -> Option<String> {
        self.raw_query()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

/// A capture server on 127.0.0.1 answering like the API: `GET …/v1/me`, 404 for the token
/// management routes, 201 with a full ImageQuery for a submission, 200 for a lookup.
/// Connections are kept alive (as urllib3 and ureq expect). Returns the endpoint and the
/// requests seen; the thread ends with the test process.
fn capture_server() -> (String, Arc<Mutex<Vec<Captured>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let for_thread = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = Arc::clone(&for_thread);
            std::thread::spawn(move || serve_captured(stream, &seen));
        }
    });
    (format!("http://{addr}/device-api"), seen)
}

fn serve_captured(stream: TcpStream, seen: &Mutex<Vec<Captured>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Captured {
            method,
            target,
            headers,
            body,
        };
        let (status, answer) = capture_answer(&request);
        seen.lock().expect("lock").push(request);
        let answer = answer.to_string();
        let reason = match status {
            200 => "OK",
            201 => "Created",
            _ => "Not Found",
        };
        let written = write!(
            writer,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if written.is_err() {
            return;
        }
    }
}

fn capture_answer(request: &Captured) -> (u16, Value) {
    let path = request.path();
    let image_query = |id: &str| {
        json!({
            "id": id, "type": "image_query", "created_at": "2026-01-01T00:00:00.000000Z",
            "query": "", "detector_id": request.param("detector_id").unwrap_or_default(),
            "result_type": "binary_classification", "result": null, "patience_time": 30.0,
            "confidence_threshold": 0.9, "metadata": null, "rois": null, "text": null,
            "done_processing": false,
        })
    };
    if path.ends_with("/v1/me") {
        let me = json!({"email": "c@capture.invalid", "username": "c@capture.invalid",
                        "group": {"id": 1, "name": "capture"}, "is_superuser": false});
        (200, me)
    } else if request.method == "POST" && path.ends_with("/v1/image-queries") {
        let id = request.param("image_query_id").unwrap_or_default();
        (201, image_query(&id))
    } else if let Some(id) = path.split("/v1/image-queries/").nth(1) {
        (200, image_query(id))
    } else {
        (404, json!({"detail": "Not found."}))
    }
}

/// The submission among `requests`, the only POST.
fn the_post(requests: &[Captured]) -> Captured {
    let posts: Vec<_> = requests.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 1, "{requests:#?}");
    posts[0].clone()
}

/// Decodes the metadata parameter (percent-encoded, padded base64url of JSON).
fn decode_metadata(value: &str) -> Value {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let text = value.replace("%3D", "");
    let mut bits = 0_u32;
    let mut held = 0;
    let mut bytes = Vec::new();
    for c in text.bytes() {
        let six = alphabet.iter().position(|&a| a == c).expect("base64url");
        bits = (bits << 6) | u32::try_from(six).expect("six bits");
        held += 6;
        if held >= 8 {
            held -= 8;
            bytes.push(u8::try_from((bits >> held) & 0xff).expect("byte"));
        }
    }
    serde_json::from_slice(&bytes).expect("JSON")
}

fn is_sdk_request_id(value: &str) -> bool {
    value
        .strip_prefix("req_uu")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Story: the cloud must receive from us what it has always received from the SDK. The
/// SDK (each version) and our `drain` send the same escalation to one capture server; the
/// two submissions are compared field by field: method and path, the query parameters
/// (names, order, values and encoding, exactly as on the wire), the body bytes, the set of
/// headers and each one's value, except the ones whose difference is deliberate
/// (`User-Agent` names the sender; `X-Request-Id` carries the queued request id, in the
/// SDK's `req_uu<hex>` format). Before, our query had another order and we sent no
/// `Accept-Encoding`.
#[test]
fn our_submission_is_the_sdks_for_the_same_escalation_field_by_field() {
    let pythons = sdk_pythons();
    if pythons.is_empty() {
        return;
    }
    let image_bytes: Vec<u8> = b"\xff\xd8\xff\xe0"
        .iter()
        .copied()
        .chain((0..40_000_u32).map(|i| (i * 7 % 251) as u8))
        .collect();
    // Keys in sorted order at every level: our producer keeps metadata keys sorted, the
    // SDK keeps the caller's order (see the second comparison below).
    let metadata = r#"{"edge_result": {"confidence": 0.97, "label": 0, "rois": null, "text": null}, "is_edge_audit": true}"#;
    let image_query_id = "iq_2zZb3hW0ZQ1pJ4F7q9pZ1example";
    let request_id = "req_uu0123456789abcdef0123456789abcdef";
    let mut versions = BTreeSet::new();
    for python in &pythons {
        let sandbox = Sandbox::new();
        let image = sandbox.file("image.jpg", &image_bytes);

        let (sdk_endpoint, sdk_seen) = capture_server();
        let submission = Submission {
            image_query_id,
            metadata,
            patience_time: "30",
            confidence_threshold: "0.9",
            human_review: "ALWAYS",
        };
        let got = sdk_submit(&sandbox, python, &sdk_endpoint, TOKEN, &image, &submission);
        let version = got["sdk_version"].as_str().unwrap_or("?").to_owned();
        let sdk = the_post(&sdk_seen.lock().expect("lock"));

        let image_arg = image.to_str().expect("utf-8 path");
        let ours = our_post(
            &sandbox,
            &[
                "--detector-id",
                "det_2sdkparity",
                "--image",
                image_arg,
                "--image-query-id",
                image_query_id,
                "--request-id",
                request_id,
                "--metadata",
                metadata,
                "--patience-time",
                "30",
                "--confidence-threshold",
                "0.9",
                "--human-review",
                "ALWAYS",
            ],
        );

        let what = format!("SDK {version} vs ours");
        assert_eq!(ours.method, sdk.method, "{what}");
        assert_eq!(ours.path(), sdk.path(), "{what}");
        assert_eq!(ours.raw_query(), sdk.raw_query(), "{what}: the query");
        assert_eq!(ours.body, sdk.body, "{what}: the body");
        let names = |r: &Captured| -> BTreeSet<String> {
            r.headers
                .iter()
                .map(|(n, _)| n.to_ascii_lowercase())
                .collect()
        };
        assert_eq!(names(&ours), names(&sdk), "{what}: the header names");
        for name in [
            "content-type",
            "content-length",
            "accept",
            "accept-encoding",
            "x-api-token",
        ] {
            assert_eq!(ours.header(name), sdk.header(name), "{what}: {name}");
        }
        let sdk_request_id = sdk.header("x-request-id").unwrap_or_default();
        assert!(
            is_sdk_request_id(sdk_request_id),
            "{what}: {sdk_request_id}"
        );
        assert_eq!(ours.header("x-request-id"), Some(request_id), "{what}");
        let sdk_ua = sdk.header("user-agent").unwrap_or_default();
        assert!(sdk_ua.starts_with("Groundlight-Python-SDK/"), "{sdk_ua}");
        let our_ua = ours.header("user-agent").unwrap_or_default();
        assert!(our_ua.starts_with("escalation-queue/"), "{our_ua}");
        versions.insert(version);
    }
    check_versions_run(&versions);
}

/// Story: metadata given with its keys in another order reaches the cloud with the same
/// meaning from us and from the SDK (our producer stores it with sorted keys, so the base64
/// text can differ; SEMANTICS.md says why that is harmless).
#[test]
fn metadata_in_any_key_order_means_the_same_from_us_and_the_sdk() {
    let pythons = sdk_pythons();
    if pythons.is_empty() {
        return;
    }
    let metadata =
        r#"{"is_edge_audit": true, "edge_result": {"text": null, "label": 1, "confidence": 0.5}}"#;
    let sandbox = Sandbox::new();
    let image = sandbox.file("image.jpg", b"\xff\xd8\xff\xe0 small");
    let (sdk_endpoint, sdk_seen) = capture_server();
    let submission = Submission {
        image_query_id: "iq_2metadataorder",
        metadata,
        patience_time: "",
        confidence_threshold: "",
        human_review: "",
    };
    sdk_submit(
        &sandbox,
        &pythons[0],
        &sdk_endpoint,
        TOKEN,
        &image,
        &submission,
    );
    let sdk = the_post(&sdk_seen.lock().expect("lock"));
    let image_arg = image.to_str().expect("utf-8 path");
    let ours = our_post(
        &sandbox,
        &[
            "--detector-id",
            "det_2sdkparity",
            "--image",
            image_arg,
            "--image-query-id",
            "iq_2metadataorder",
            "--metadata",
            metadata,
        ],
    );
    let decoded = |r: &Captured| decode_metadata(&r.param("metadata").expect("metadata"));
    assert_eq!(decoded(&ours), decoded(&sdk));
    assert_eq!(
        ours.param("metadata").map(|m| m.len()),
        sdk.param("metadata").map(|m| m.len()),
        "same json.dumps length, so the same size limit applies"
    );
}

/// Our request for the escalation `enqueue_args` describe: the real binary's `enqueue`,
/// then `drain` to a capture server on loopback; the one POST it received.
fn our_post(sandbox: &Sandbox, enqueue_args: &[&str]) -> Captured {
    let (our_endpoint, our_seen) = capture_server();
    let mut args = vec!["enqueue"];
    args.extend_from_slice(enqueue_args);
    sandbox.run(&args).expect_code(0);
    let mut drain = sandbox.command(&["drain", "--endpoint", &our_endpoint]);
    drain.env("GROUNDLIGHT_API_TOKEN", TOKEN);
    let out = sandbox.run_with(drain, None);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let post = the_post(&our_seen.lock().expect("lock"));
    post
}
