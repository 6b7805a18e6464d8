//! Replay and purge from the status page, only with `status.actions_enabled = true`, and
//! then only with the page's CSRF token and a ticked confirmation, in a small POST body.
//! Driven over HTTP against the real binary and the mock cloud.
//!
//! Guards docs/OPERATIONS.md "Status page": off by default (no forms, a body is refused
//! with 413 as on every route); on, a POST without the token or the confirmation changes
//! nothing, a form over 4 KiB is refused, and a confirmed purge with the token removes the
//! dead letter (`dlq list` agrees).

mod util;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use util::{get_json, http, http_with_body, spawn_reader, wait_until, MockCloudProcess, Sandbox};

const WAIT: Duration = Duration::from_secs(30);
const REJECTED: &str = "det_rejected_for_actions";

/// The value of the first `name="<name>" value="…"` pair in `page`.
fn form_value(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in the page:\n{page}"))
        + marker.len();
    let len = page[start..].find('"').expect("closing quote");
    page[start..start + len].to_owned()
}

/// Announces a 100-byte form, sends 10 bytes and waits: the server gives up within its
/// 5 s head timeout (plus slack) and answers 408, closing the connection.
fn stalled_form(addr: SocketAddr) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let started = Instant::now();
    write!(
        stream,
        "POST /actions HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\ntoken=abcd"
    )
    .expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn dead_letters(sandbox: &Sandbox) -> usize {
    let out = sandbox.run(&["dlq", "list", "--json"]);
    out.expect_code(0);
    out.json().as_array().expect("array").len()
}

#[test]
fn a_confirmed_purge_with_the_token_is_the_only_change_the_page_can_make() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_for(REJECTED, 1);
    let cloud = MockCloudProcess::start(&sandbox, &["--reject-detector", REJECTED]);
    let reader = spawn_reader(
        &sandbox,
        &cloud.endpoint,
        &["--set", "status.actions_enabled=true"],
    );
    let addr = reader.status_addr();
    wait_until(WAIT, "1 dead letter", || {
        get_json(addr, "/stats").1["worker"]["dead_lettered_total"] == 1
    });
    let (code, head, page) = http(addr, "GET", "/");
    assert_eq!(code, 200);
    assert!(head.to_lowercase().contains("form-action 'self'"), "{head}");
    let token = form_value(&page, "token");
    let id = form_value(&page, "id");
    assert_eq!(token.len(), 32, "{token}");
    assert!(id.starts_with("dl_"), "{id}");
    assert!(
        page.contains(r#"name="confirm" value="yes" required"#),
        "{page}"
    );

    // The token with its first digit changed: as long, one character wrong.
    let first = if token.starts_with('0') { '1' } else { '0' };
    let wrong = format!("{first}{}", &token[1..]);
    let refused = [
        (format!("action=purge&id={id}&confirm=yes"), 403),
        (
            format!("token={wrong}&action=purge&id={id}&confirm=yes"),
            403,
        ),
        (format!("token={token}&action=purge&id={id}"), 400),
        (
            format!("token={token}&action=explode&id={id}&confirm=yes"),
            400,
        ),
        (
            format!("token={token}&action=purge&id=dl_9_9&confirm=yes"),
            404,
        ),
    ];
    for (form, status) in &refused {
        let (code, _, body) = http_with_body(addr, "POST", "/actions", form);
        assert_eq!(code, *status, "{form}: {body}");
    }
    let big = format!(
        "token={token}&action=purge&id={id}&confirm=yes&pad={}",
        "x".repeat(5000)
    );
    assert_eq!(http_with_body(addr, "POST", "/actions", &big).0, 413);
    assert_eq!(
        http_with_body(addr, "POST", "/", "a=b").0,
        413,
        "only /actions reads a body"
    );
    assert_eq!(
        stalled_form(addr),
        408,
        "a form that never arrives is given up"
    );
    assert_eq!(
        dead_letters(&sandbox),
        1,
        "nothing refused changed anything"
    );

    let form = format!("token={token}&action=purge&id={id}&confirm=yes");
    let (code, _, body) = http_with_body(addr, "POST", "/actions", &form);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&format!("purged {id}.")), "{body}");
    assert_eq!(dead_letters(&sandbox), 0);
    let (_, _, page) = http(addr, "GET", "/");
    assert!(
        page.contains(r#"<span id="dead-letter-count">0</span>"#),
        "{page}"
    );
    assert_eq!(get_json(addr, "/health").0, 200);
}

/// Off by default: no forms on the page, and `POST /actions` with a body gets 413 like
/// any request with a body.
#[test]
fn actions_are_off_by_default() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_for(REJECTED, 1);
    let cloud = MockCloudProcess::start(&sandbox, &["--reject-detector", REJECTED]);
    let reader = spawn_reader(&sandbox, &cloud.endpoint, &[]);
    let addr = reader.status_addr();
    wait_until(WAIT, "1 dead letter", || {
        get_json(addr, "/stats").1["worker"]["dead_lettered_total"] == 1
    });
    let (_, head, page) = http(addr, "GET", "/");
    assert!(!page.contains("<form"), "{page}");
    assert!(head.to_lowercase().contains("form-action 'none'"), "{head}");
    let (code, _, _) = http_with_body(addr, "POST", "/actions", "action=purge&confirm=yes");
    assert_eq!(code, 413);
    assert_eq!(http(addr, "POST", "/actions").0, 404);
    assert_eq!(dead_letters(&sandbox), 1);
}
