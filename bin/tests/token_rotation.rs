//! A rotated API token is picked up without restarting the reader, through the real
//! binary: `reader` with `cloud.api_token_file`, `mock-cloud` with `--token-file`.

mod util;

use std::time::Duration;

use serde_json::Value;

use util::{get_json, wait_until, Daemon, Sandbox};

const OLD_TOKEN: &str = "api_2rotationOLDtoken00000";
const NEW_TOKEN: &str = "api_2rotationNEWtoken11111";

/// Replaces `path`'s contents the way secret managers do (write aside, rename over).
fn rotate(path: &std::path::Path, token: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, format!("{token}\n")).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

/// Story: tokens get rotated (the newest SDK rotates TTL tokens itself; operators rotate
/// secrets). The cloud starts refusing the old token: the reader pauses on the 401 (it
/// neither dead-letters nor drops the item), the token file is rewritten, and delivery
/// resumes in the same process, with no restart. Before, the token was read once at start,
/// so only a restart recovered.
#[test]
fn a_token_rotated_in_the_token_file_is_used_without_a_restart() {
    let sandbox = Sandbox::new();
    let mock_token = sandbox.file("mock-token", format!("{OLD_TOKEN}\n").as_bytes());
    let reader_token = sandbox.file("reader-token", format!("{OLD_TOKEN}\n").as_bytes());
    let mock_token_arg = mock_token.to_str().expect("utf-8").to_owned();
    let mock = sandbox.spawn(&[
        "mock-cloud",
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        &mock_token_arg,
    ]);
    let line = mock.wait_stdout(Duration::from_secs(20), |l| l.starts_with("listening on "));
    let endpoint = line.trim_start_matches("listening on ").trim().to_owned();

    let token_file = format!("cloud.api_token_file={}", reader_token.display());
    // No GROUNDLIGHT_API_TOKEN: the file is the only source.
    let reader = Daemon::start(sandbox.command(&[
        "reader",
        "--endpoint",
        &endpoint,
        "--status-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--set",
        &token_file,
        "--set",
        "worker.auth_retry_interval_ms=200",
    ]));
    let status = reader.status_addr();
    let health = || -> Value { get_json(status, "/health").1 };

    let first = sandbox.enqueue_many(1);
    wait_until(Duration::from_secs(30), "the first item delivered", || {
        sandbox.status()["pending_total"] == 0
    });

    // The cloud rotates: the old token is refused from now on.
    rotate(&mock_token, NEW_TOKEN);
    std::thread::sleep(Duration::from_millis(400));
    let second = sandbox.enqueue_many(1);
    wait_until(
        Duration::from_secs(30),
        "the reader paused for auth",
        || health()["checks"]["paused_for_auth"] == true,
    );
    assert_eq!(sandbox.status()["pending_total"], 1, "the item waits");

    // The operator (or a secret manager) writes the new token; the same process resumes.
    rotate(&reader_token, NEW_TOKEN);
    wait_until(Duration::from_secs(30), "the second item delivered", || {
        sandbox.status()["pending_total"] == 0
    });
    assert_eq!(health()["checks"]["paused_for_auth"], false);
    assert!(
        reader
            .stderr_text()
            .contains("API token changed in cloud.api_token_file"),
        "{}",
        reader.stderr_text()
    );
    assert!(
        !reader.stderr_text().contains(NEW_TOKEN) && !reader.stderr_text().contains(OLD_TOKEN),
        "a token was logged"
    );

    drop(reader);
    mock.terminate();
    let mut mock = mock;
    assert_eq!(mock.wait_exit(Duration::from_secs(10)), Some(0));
    let summary: Value =
        serde_json::from_str(mock.stdout_lines().last().expect("summary")).expect("summary JSON");
    let ids = summary["image_query_ids"].as_array().expect("ids").clone();
    assert_eq!(ids, [first[0].as_str(), second[0].as_str()], "{summary}");
    assert!(
        summary["token_mismatches"].as_u64() >= Some(1),
        "the old token was refused at least once: {summary}"
    );
}

/// Story: the reader can follow the SDK's own rotation: pointed at the SDK's token cache
/// (`~/.groundlight/tokens/<snippet>.json`), it reads `current.raw_key`; an unusable file
/// is a configuration error at start (exit 2) that names the key, never the token.
#[test]
fn the_token_file_may_be_the_sdks_token_cache_and_a_bad_one_fails_at_start() {
    let sandbox = Sandbox::new();
    let mock = util::MockCloudProcess::start(&sandbox, &[]);
    let cache = sandbox.file(
        "slot.json",
        format!(
            r#"{{"base_name": "edge", "current": {{"raw_key": "{}", "snippet": "x", "name": "edge 1a2b3c",
                 "expires_at": null, "minted_at": "2026-01-01T00:00:00Z", "token_ttl_seconds": null}},
                 "previous": null}}"#,
            util::TOKEN
        )
        .as_bytes(),
    );
    sandbox.enqueue_many(1);
    let set = format!("cloud.api_token_file={}", cache.display());
    let out = sandbox.run(&["drain", "--endpoint", &mock.endpoint, "--set", &set]);
    out.expect_code(0);
    assert!(out.stdout.contains("1 delivered"), "{out:#?}");

    let empty = sandbox.file("empty-token", b"\n");
    let set = format!("cloud.api_token_file={}", empty.display());
    let out = sandbox.run(&["drain", "--endpoint", &mock.endpoint, "--set", &set]);
    out.expect_code(2)
        .expect_stderr(&["cloud.api_token_file", "empty"]);
    let summary = mock.stop();
    assert_eq!(summary["image_query_ids"].as_array().map(Vec::len), Some(1));
}
