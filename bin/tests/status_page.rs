//! The status page (`GET /` on the reader's status server), fetched over HTTP from the
//! real binary delivering to the mock cloud as a separate process.
//!
//! Guards docs/OPERATIONS.md "Status page": the page is one HTML document that tells the
//! same numbers as `/stats`, lists a dead letter with its cause and last error, and shows
//! what came from outside (a detector id full of markup) as text, never as markup; it
//! loads nothing from elsewhere and refuses what the other routes refuse.

mod util;

use std::time::Duration;

use util::{get_json, http, spawn_reader, wait_until, MockCloudProcess, Sandbox};

const WAIT: Duration = Duration::from_secs(30);

/// A detector id a producer may legally send (printable ASCII, no spaces) that is also
/// HTML: the page must show it, escaped.
pub const HOSTILE_DETECTOR: &str = r#"det_"'><script>alert("x")</script><b>"#;

/// The page shows the delivered count of `/stats`, the dead letter the mock caused by
/// rejecting the hostile detector (cause and HTTP status), and the detector id escaped:
/// no `<script>` of the client's reaches the document.
#[test]
fn the_page_tells_the_stats_and_escapes_what_came_from_outside() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(3);
    sandbox.enqueue_for(HOSTILE_DETECTOR, 1);
    let cloud = MockCloudProcess::start(&sandbox, &["--reject-detector", HOSTILE_DETECTOR]);
    let reader = spawn_reader(&sandbox, &cloud.endpoint, &[]);
    let addr = reader.status_addr();
    wait_until(WAIT, "3 deliveries, 1 dead letter, nothing pending", || {
        let w = get_json(addr, "/stats").1["worker"].take();
        w["delivered"] == 3 && w["dead_lettered_total"] == 1 && w["queue_depth"] == 0
    });

    let (code, head, page) = http(addr, "GET", "/");
    assert_eq!(code, 200, "{head}\n{page}");
    let head = head.to_lowercase();
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    for needle in [
        r#"<meta http-equiv="refresh" content="10">"#,
        r#"<meta name="viewport""#,
        r#"<dd id="delivered">3</dd>"#,
        r#"<dd id="dead-lettered">1</dd>"#,
        r#"<dd id="pending">0</dd>"#,
        r#"<span id="hour-delivered">3</span>"#,
        r#"<span id="dead-letter-count">1</span>"#,
        r#"<b class="cause">rejected (bad_request, HTTP 400)</b> · 1 attempt ·"#,
        "<svg ",
        r#"det_&quot;&#39;&gt;&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;b&gt;"#,
    ] {
        assert!(
            page.contains(needle),
            "{needle:?} missing from the page:\n{page}"
        );
    }
    assert!(
        !page.contains("<script"),
        "markup from outside reached the page:\n{page}"
    );
    // No external assets: every src/href is local.
    for attr in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "<link ",
        "<img ",
    ] {
        assert!(!page.contains(attr), "{attr:?} in the page:\n{page}");
    }
}

/// The page is read-only and as strict as the other routes: other methods 405, a body
/// 413, an unknown page number the last page, and `/health` keeps answering.
#[test]
fn the_page_is_read_only_and_strict() {
    let sandbox = Sandbox::new();
    let cloud = MockCloudProcess::start(&sandbox, &[]);
    let reader = spawn_reader(&sandbox, &cloud.endpoint, &[]);
    let addr = reader.status_addr();
    assert_eq!(http(addr, "POST", "/").0, 405);
    assert_eq!(http(addr, "DELETE", "/?page=1").0, 405);
    for query in [
        "/?page=0",
        "/?page=999999999999999999999",
        "/?page=%3Cscript%3E",
        "/?",
    ] {
        let (code, _, page) = http(addr, "GET", query);
        assert_eq!(code, 200, "{query}");
        assert!(
            page.contains("<dd id=\"delivered\">0</dd>"),
            "{query}: {page}"
        );
        assert!(!page.contains("<script"), "{query}: {page}");
    }
    let (code, _, _) = util::http_with_body(addr, "POST", "/", "action=purge");
    assert_eq!(code, 413);
    assert_eq!(get_json(addr, "/health").0, 200);
}
