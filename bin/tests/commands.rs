//! The happy path of every subcommand, run as an operator would run it: the real binary,
//! a temporary queue directory, the mock cloud as a separate process. What these guard is
//! the operator surface of docs/OPERATIONS.md: that `enqueue` prints the image query id only once
//! the escalation is durable, that `status`/`inspect`/`dlq list` report what is really in
//! the queue (as JSON a script can rely on), that `drain` exits 0 or 1 as documented, and
//! that `demo` finishes quickly with nothing lost.

mod util;

use std::time::{Duration, Instant};

use util::{MockCloudProcess, Sandbox, TOKEN};

/// `--help` documents the exit codes and the configuration precedence; `--version` works.
#[test]
fn help_documents_exit_codes() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["--help"]);
    out.expect_code(0);
    for needle in [
        "Exit codes:",
        "4  another process holds the queue",
        "ESCALATION_QUEUE__",
        "demo",
    ] {
        assert!(
            out.stdout.contains(needle),
            "--help lacks {needle:?}:\n{}",
            out.stdout
        );
    }
    let out = sandbox.run(&["--version"]);
    out.expect_code(0);
    assert!(
        out.stdout.starts_with("escalation-queue "),
        "{}",
        out.stdout
    );
}

/// `enqueue` from a file and from stdin: each prints its image query id, and `status` and
/// `inspect` then show both records, pending, with their detector and size.
#[test]
fn enqueue_then_status_and_inspect_show_the_records() {
    let sandbox = Sandbox::new();
    let image = sandbox.file("frame.jpg", b"\xff\xd8\xff\xe0 pretend jpeg");
    let out = sandbox.run(&[
        "enqueue",
        "--detector-id",
        "det_door",
        "--image",
        image.to_str().expect("utf-8"),
        "--image-query-id",
        "iq_fromfile1",
        "--confidence-threshold",
        "0.75",
        "--human-review",
        "ALWAYS",
        "--metadata",
        r#"{"is_edge_audit": true}"#,
    ]);
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "iq_fromfile1");

    let mut cmd = sandbox.command(&[
        "enqueue",
        "--detector-id",
        "det_gate",
        "--image",
        "-",
        "--json",
    ]);
    cmd.env("RUST_LOG", "warn");
    let out = sandbox.run_with(cmd, Some(b"\x89PNG from stdin"));
    out.expect_code(0);
    let receipt = out.json();
    let from_stdin = receipt["image_query_id"].as_str().expect("id").to_owned();
    assert!(from_stdin.starts_with("iq_"), "{receipt}");

    let status = sandbox.status();
    assert_eq!(status["pending_total"], 2, "{status:#}");
    assert_eq!(status["reader_running"], false);
    assert_eq!(status["dead_letters"], 0);
    assert!(
        status["oldest_pending_age_ms"].as_u64().is_some(),
        "{status:#}"
    );
    assert!(
        status["bytes_on_disk"]["total_bytes"]
            .as_u64()
            .expect("bytes")
            > 0
    );
    let human = sandbox.run(&["status"]);
    human.expect_code(0);
    assert!(human.stdout.contains("pending       2"), "{}", human.stdout);

    let out = sandbox.run(&["inspect", "--json"]);
    out.expect_code(0);
    let records = out.json()["records"].as_array().expect("records").clone();
    let ids: Vec<&str> = records
        .iter()
        .map(|r| r["image_query_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["iq_fromfile1", from_stdin.as_str()]);
    assert_eq!(records[0]["detector_id"], "det_door");
    let human = sandbox.run(&["inspect", "--limit", "1"]);
    human.expect_code(0);
    assert!(
        human.stdout.contains("iq_fromfile1") && human.stdout.contains("more pending"),
        "{}",
        human.stdout
    );
    assert_eq!(
        sandbox.status()["pending_total"],
        2,
        "inspect consumes nothing"
    );
    sandbox.run(&["verify"]).expect_code(0);
}

/// `drain` delivers everything to the cloud and exits 0; the cloud holds every id.
#[test]
fn drain_delivers_everything_and_exits_0() {
    let sandbox = Sandbox::new();
    let ids = sandbox.enqueue_many(20);
    let cloud = MockCloudProcess::start(&sandbox, &["--script", "503,reset,429"]);
    let mut cmd = sandbox.command(&["drain", "--endpoint", &cloud.endpoint, "--json"]);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN)
        .env("ESCALATION_QUEUE__WORKER__BACKOFF__DELAY_BASE_MS", "10");
    let out = sandbox.run_with(cmd, None);
    out.expect_code(0);
    let summary = out.json();
    assert_eq!(summary["delivered"], 20, "{summary:#}");
    assert_eq!(summary["dead_lettered"], 0);
    assert!(
        summary["retried"].as_u64().expect("retried") >= 3,
        "{summary:#}"
    );
    assert_eq!(sandbox.status()["pending_total"], 0);
    let received = cloud.stop();
    let mut created: Vec<String> =
        serde_json::from_value(received["image_query_ids"].clone()).expect("ids");
    created.sort();
    let mut expected = ids;
    expected.sort();
    assert_eq!(created, expected);
}

/// An item the cloud rejects (HTTP 400) ends in the dead-letter queue, and `drain` says
/// so with exit 1. `dlq list` shows it with its cause; `dlq replay --id` puts it back and
/// a second drain delivers it; `dlq purge --all --yes` empties the dead-letter queue.
#[test]
fn drain_with_a_rejection_exits_1_and_dlq_list_replay_purge_work() {
    let sandbox = Sandbox::new();
    let ids = sandbox.enqueue_many(3);
    let cloud = MockCloudProcess::start(&sandbox, &["--script", "400,pass,400"]);
    let drain = |sandbox: &Sandbox| {
        let mut cmd = sandbox.command(&["drain", "--endpoint", &cloud.endpoint]);
        cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
        sandbox.run_with(cmd, None)
    };
    let out = drain(&sandbox);
    out.expect_code(1)
        .expect_stderr(&["dead-lettered", "dlq list"]);
    assert!(
        out.stdout.contains("1 delivered, 2 dead-lettered"),
        "{}",
        out.stdout
    );

    let out = sandbox.run(&["dlq", "list", "--json"]);
    out.expect_code(0);
    let list = out.json();
    let entries = list.as_array().expect("array");
    assert_eq!(entries.len(), 2, "{list:#}");
    assert_eq!(entries[0]["image_query_id"], ids[0].as_str());
    assert_eq!(entries[0]["http_status"], 400);
    let human = sandbox.run(&["dlq", "list"]);
    human.expect_code(0);
    assert!(
        human.stdout.contains(&ids[2]) && human.stdout.contains("HTTP 400"),
        "{}",
        human.stdout
    );

    let out = sandbox.run(&["dlq", "replay", "--id", &ids[0]]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("replayed 1 dead letter: ")
            && out.stdout.contains("1 dead letter left"),
        "{}",
        out.stdout
    );
    assert_eq!(sandbox.status()["pending_total"], 1);
    drain(&sandbox).expect_code(0);
    assert_eq!(sandbox.status()["dead_letters"], 1);

    let out = sandbox.run(&["dlq", "purge", "--all", "--yes"]);
    out.expect_code(0);
    assert!(out.stdout.contains("purged 1"), "{}", out.stdout);
    assert_eq!(sandbox.status()["dead_letters"], 0);
    let received = cloud.stop();
    let created = received["image_query_ids"].as_array().expect("ids");
    assert!(
        created.iter().any(|id| id == ids[0].as_str()),
        "replayed item delivered"
    );
}

/// `mock-cloud` answers like the API (201 with an ImageQuery for a good request, 401 for
/// a bad token, faults from flags) and reports what it received on SIGTERM.
#[test]
fn mock_cloud_serves_and_reports() {
    let sandbox = Sandbox::new();
    let cloud = MockCloudProcess::start(&sandbox, &["--script", "503"]);
    let addr: std::net::SocketAddr = cloud
        .endpoint
        .trim_start_matches("http://")
        .trim_end_matches("/device-api")
        .parse()
        .expect("addr");
    let post = |token: &str| {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let body = b"\xff\xd8\xff";
        let head = format!(
            "POST /device-api/v1/image-queries?detector_id=det_1&image_query_id=iq_mock1&want_async=True HTTP/1.0\r\n\
             x-api-token: {token}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        use std::io::{Read, Write};
        stream.write_all(head.as_bytes()).expect("send");
        stream.write_all(body).expect("send body");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    };
    assert!(post(TOKEN).contains(" 503 "), "scripted fault first");
    assert!(post("wrong").contains(" 401 "), "bad token");
    let created = post(TOKEN);
    assert!(
        created.contains(" 201 ") && created.contains("iq_mock1"),
        "{created}"
    );
    let summary = cloud.stop();
    assert_eq!(summary["requests"], 3);
    assert_eq!(summary["token_mismatches"], 1);
    assert_eq!(summary["image_query_ids"][0], "iq_mock1");
}

/// The README's "run the main job" command: it must work on a fresh machine with no
/// network beyond loopback, finish well under a minute, and lose nothing.
#[test]
fn demo_finishes_quickly_and_loses_nothing() {
    let sandbox = Sandbox::new();
    let started = Instant::now();
    let out = sandbox.run(&["demo"]);
    out.expect_code(0);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "demo took {:?}",
        started.elapsed()
    );
    let lost = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("lost "))
        .expect("a lost row");
    assert_eq!(lost.split_whitespace().nth(1), Some("0"), "{}", out.stdout);
    assert!(
        out.stdout.contains("enqueued (durable)      300"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("dead-lettered             3"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("nothing lost"), "{}", out.stdout);
    assert!(
        !sandbox.queue_dir().exists(),
        "the demo never touches the configured queue"
    );
}
