//! The status page in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `.ci/run`) loads `/` from a running reader delivering to the mock cloud, and the test
//! reads what a person would see in the DOM Chromium built, then saves a screenshot
//! (phone width) under the test's temp dir. No mock of the browser. With `CI=true` a
//! missing `chromium` fails; elsewhere the test says SKIPPED and returns.
//!
//! Guards docs/OPERATIONS.md "Status page": the numbers match `/stats`; a dead letter
//! appears after the cloud rejects a detector (HTTP 400); the breaker state appears while
//! the cloud is unreachable.
//!
//! `EQ_STATUS_PAGE_SCREENSHOT=<path>` also copies the screenshot there (how
//! docs/status-page.png is made).

mod util;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{get_json, spawn_reader, tool_or_skip, wait_until, MockCloudProcess, Sandbox};

const WAIT: Duration = Duration::from_secs(30);
/// One Chromium run at most (a cold start on a busy 2-core box takes a few seconds).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);
const REJECTED: &str = "det_rejected_by_cloud";

/// Runs headless Chromium with `args` and a profile under `dir`; returns its stdout.
fn chromium(dir: &Path, args: &[String]) -> String {
    let profile = dir.join("chromium-profile");
    let out = dir.join("chromium.out");
    let err = dir.join("chromium.err");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within {BROWSER_TIMEOUT:?}: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}): {stderr}");
    std::fs::read_to_string(&out).expect("chromium output")
}

/// The text of the element with `id` in `dom` (the markup Chromium serialised).
fn text_of(dom: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no element #{id} in the page:\n{dom}"));
    let after = &dom[start..];
    let open_end = after.find('>').expect("end of tag") + 1;
    let inner = &after[open_end..];
    let close = inner.find("</").expect("closing tag");
    inner[..close].trim().to_owned()
}

fn number_of(dom: &str, id: &str) -> u64 {
    let text = text_of(dom, id);
    text.parse()
        .unwrap_or_else(|e| panic!("#{id} is {text:?}, not a number: {e}"))
}

/// A person opens the page: deliveries and the dead letter the cloud caused are there
/// with the numbers `/stats` gives; then the cloud goes away and, after a reload, the page
/// says the breaker is open and why. A screenshot at phone width is saved.
#[test]
fn a_person_sees_deliveries_a_dead_letter_and_the_open_breaker() {
    if !tool_or_skip("chromium", "the status page is tested in a real browser") {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(4);
    sandbox.enqueue_for(REJECTED, 1);
    let cloud = MockCloudProcess::start(&sandbox, &["--reject-detector", REJECTED]);
    let extra = [
        "--set",
        "status.disk_free_degraded_bytes=0",
        "--set",
        "worker.backoff.delay_base_ms=10",
        "--set",
        "worker.breaker.failure_threshold=2",
    ];
    let reader = spawn_reader(&sandbox, &cloud.endpoint, &extra);
    let addr = reader.status_addr();
    let url = format!("http://{addr}/");
    wait_until(WAIT, "4 deliveries, 1 dead letter, nothing pending", || {
        let w = get_json(addr, "/stats").1["worker"].take();
        w["delivered"] == 4 && w["dead_lettered_total"] == 1 && w["queue_depth"] == 0
    });
    let dir = sandbox.root.path();

    let dom = chromium(dir, &["--dump-dom".to_owned(), url.clone()]);
    let stats: Value = get_json(addr, "/stats").1;
    let worker = &stats["worker"];
    assert_eq!(text_of(&dom, "health-status"), "healthy", "{dom}");
    for (id, key) in [
        ("delivered", "delivered"),
        ("dead-lettered", "dead_lettered_total"),
        ("pending", "queue_depth"),
        ("retried", "retried"),
        ("expired", "expired"),
    ] {
        assert_eq!(
            number_of(&dom, id),
            worker[key].as_u64().expect("number"),
            "#{id} vs /stats worker.{key}"
        );
    }
    assert_eq!(number_of(&dom, "hour-delivered"), 4, "the chart's hour");
    assert_eq!(number_of(&dom, "dead-letter-count"), 1);
    assert!(
        dom.contains(REJECTED),
        "the rejected detector is listed:\n{dom}"
    );
    assert!(dom.contains("HTTP 400"), "the cause is shown:\n{dom}");
    assert_eq!(text_of(&dom, "circuit"), "closed");

    // The cloud goes away; the next escalation fails to connect and the breaker opens.
    cloud.stop();
    sandbox.enqueue_many(1);
    wait_until(WAIT, "the breaker to open", || {
        get_json(addr, "/stats").1["worker"]["circuit_state"] != "closed"
    });
    let dom = chromium(dir, &["--dump-dom".to_owned(), url.clone()]);
    let circuit = text_of(&dom, "circuit");
    assert!(
        circuit == "open" || circuit == "half open",
        "breaker shown as {circuit:?}:\n{dom}"
    );
    assert_eq!(text_of(&dom, "health-status"), "degraded");
    assert!(
        dom.contains("circuit breaker"),
        "the reason is shown:\n{dom}"
    );

    let shot = dir.join("page.png");
    chromium(
        dir,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=412,1300".to_owned(),
            url,
        ],
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a {} byte screenshot is blank",
        png.len()
    );
    println!("screenshot: {} ({} bytes)", shot.display(), png.len());
    if let Some(copy) = std::env::var_os("EQ_STATUS_PAGE_SCREENSHOT") {
        std::fs::copy(&shot, &copy).expect("copy the screenshot");
    }
}
