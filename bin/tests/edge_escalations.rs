//! Escalations exactly as edge-endpoint and the Groundlight SDK produce them are accepted by
//! `escalation-queue enqueue` and delivered; only what the SDK itself refuses is refused
//! (docs/SEMANTICS.md §12). A refused escalation is refused with a message naming the rule, and nothing
//! is written.

mod util;

use serde_json::Value;

use util::{MockCloudProcess, Sandbox, TOKEN};

/// `{"k": "x…xé"}` whose `json.dumps` text is `len` characters: the `é` is written as the
/// six characters `\u00e9`, so the text we pass is shorter than what the SDK measures.
fn metadata_of_json_dumps_len(len: usize) -> String {
    // json.dumps: '{"k": "' (7) + x * n + '\u00e9' (6) + '"}' (2).
    format!("{{\"k\":\"{}\u{e9}\"}}", "x".repeat(len - 15))
}

fn enqueue_args<'a>(image: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["enqueue", "--detector-id", "det_edge", "--image", image];
    args.extend_from_slice(extra);
    args
}

fn pending(sandbox: &Sandbox) -> Vec<Value> {
    let out = sandbox.run(&["inspect", "--json"]);
    out.expect_code(0);
    out.json()["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Story: edge-endpoint's route allows `patience_time >= 0`, the SDK sends `0.0`, and
/// edge-endpoint fills metadata up to the SDK's `len(json.dumps(metadata)) <= 1024`. We used
/// to refuse both (patience > 0, metadata <= 975), losing escalations edge-endpoint makes
/// every day. Both are accepted and delivered; one character more is refused, clearly.
#[test]
fn enqueue_accepts_patience_0_and_metadata_of_1024_json_dumps_characters() {
    let sandbox = Sandbox::new();
    let image = sandbox.file("img.jpg", b"\xff\xd8\xff\xe0jpeg");
    let image = image.to_str().expect("utf-8");

    let at_limit = metadata_of_json_dumps_len(1024);
    let out = sandbox.run(&enqueue_args(
        image,
        &["--patience-time", "0", "--metadata", &at_limit, "--json"],
    ));
    out.expect_code(0);
    let accepted = out.json()["image_query_id"]
        .as_str()
        .expect("image query id")
        .to_owned();

    let over = metadata_of_json_dumps_len(1025);
    sandbox
        .run(&enqueue_args(image, &["--metadata", &over]))
        .expect_code(2)
        .expect_stderr(&["metadata is 1025 characters", "json.dumps", "at most 1024"]);
    sandbox
        .run(&enqueue_args(image, &["--patience-time=-0.5"]))
        .expect_code(2)
        .expect_stderr(&["patience_time is -0.5", ">= 0"]);
    let records = pending(&sandbox);
    assert_eq!(
        records.len(),
        1,
        "only the accepted one is queued: {records:#?}"
    );

    let cloud = MockCloudProcess::start(&sandbox, &[]);
    let mut cmd = sandbox.command(&["drain", "--endpoint", &cloud.endpoint, "--json"]);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
    let out = sandbox.run_with(cmd, None);
    out.expect_code(0);
    assert_eq!(out.json()["delivered"], 1, "{}", out.stdout);
    assert_eq!(
        cloud.stop()["image_query_ids"],
        serde_json::json!([accepted])
    );
}

/// Story: a producer whose own synchronous submit failed after the request may have reached
/// the cloud queues the escalation with `--possibly-submitted`; the flag is stored with the
/// record (the reader treats it as possibly submitted) and `inspect` shows it, as JSON and
/// as text, and only for that record.
#[test]
fn enqueue_possibly_submitted_is_stored_and_shown_by_inspect() {
    let sandbox = Sandbox::new();
    let image = sandbox.file("img.jpg", b"\xff\xd8\xff\xe0jpeg");
    let image = image.to_str().expect("utf-8");
    let out = sandbox.run(&enqueue_args(image, &["--possibly-submitted", "--json"]));
    out.expect_code(0);
    let receipt = out.json();
    assert_eq!(receipt["possibly_submitted"], true, "{receipt:#}");
    sandbox.run(&enqueue_args(image, &[])).expect_code(0);

    let records = pending(&sandbox);
    let flags: Vec<(&Value, &Value)> = records
        .iter()
        .map(|r| (&r["image_query_id"], &r["possibly_submitted"]))
        .collect();
    assert_eq!(flags.len(), 2, "{records:#?}");
    assert_eq!(flags[0], (&receipt["image_query_id"], &Value::Bool(true)));
    assert_eq!(flags[1].1, &Value::Bool(false));

    let out = sandbox.run(&["inspect"]);
    out.expect_code(0);
    let flagged_line = out
        .stdout
        .lines()
        .find(|l| l.contains(receipt["image_query_id"].as_str().expect("id")))
        .expect("the flagged record is listed");
    assert!(
        flagged_line.contains("possibly submitted"),
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stdout.matches("possibly submitted").count(),
        1,
        "{}",
        out.stdout
    );
}
