//! Hostile clients against the reader's status server, through the real binary.
//!
//! The first status server (tiny_http) could be ended by one request: a `Content-Length` of
//! 99999999999 made it allocate that much to drain the body, and the reader aborted
//! (probe F1). Idle or half-sent connections each took a thread and a descriptor without
//! limit, until `accept` failed with EMFILE and the server stopped for good, and the worker
//! itself failed with "Too many open files" (probe F2). These tests run the reader with
//! `ulimit -n 256` against the mock cloud, attack its status port with raw TCP clients,
//! and check that the reader stays alive, keeps delivering, keeps its descriptors and
//! threads bounded, and answers `/health` again once the attack ends.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use util::{get_json, wait_until, Daemon, MockCloudProcess, Sandbox, BIN, TOKEN};

const WAIT: Duration = Duration::from_secs(30);
/// The reader's descriptor limit in these tests: low, like the probe's.
const FD_LIMIT: u32 = 256;
/// The connection limit the server derives from [`FD_LIMIT`] (an eighth).
const CONNECTIONS_MAX: usize = 32;
/// The server's time for a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a raw client saw.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// An HTTP status line.
    Status(u16),
    /// Closed or reset without a status line.
    Closed,
}

/// The reader under `ulimit -n FD_LIMIT`, status server on a free loopback port.
fn reader_with_fd_limit(sandbox: &Sandbox, endpoint: &str) -> Daemon {
    let script = format!("ulimit -n {FD_LIMIT} && exec \"$0\" \"$@\"");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script, BIN])
        .args([
            "reader",
            "--endpoint",
            endpoint,
            "--status-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--log-format",
            "json",
            "--set",
            "status.disk_free_degraded_bytes=0",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", sandbox.root.path())
        .env("ESCALATION_QUEUE_DIR", sandbox.queue_dir())
        .env("GROUNDLIGHT_API_TOKEN", TOKEN)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    Daemon::start(cmd)
}

/// Sends `request` (ignoring write errors: the server may close early) and reads the
/// answer's status line, for at most 10 s.
fn send(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = stream.write_all(request);
    read_status(&mut stream)
}

fn read_status(stream: &mut TcpStream) -> Reply {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("no answer within the read timeout")
            }
            Err(_) => break,
        }
    }
    let line = String::from_utf8_lossy(&head);
    match line.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
        Some(code) if line.starts_with("HTTP/1.") => Reply::Status(code),
        _ => Reply::Closed,
    }
}

/// Whether the reader's process is still running.
#[track_caller]
fn assert_alive(reader: &Daemon, after: &str) {
    let alive = std::path::Path::new(&format!("/proc/{}", reader.pid())).exists()
        && !proc_status(reader.pid()).contains("State:\tZ");
    assert!(
        alive,
        "the reader died after {after}:\n{}",
        reader.stderr_text()
    );
}

fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

fn threads(pid: u32) -> usize {
    proc_status(pid)
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads in /proc/PID/status")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

fn delivered(addr: SocketAddr) -> u64 {
    get_json(addr, "/stats").1["worker"]["delivered"]
        .as_u64()
        .unwrap_or(0)
}

/// `/health` answers (any status) on a fresh connection.
fn health_answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let sent = stream.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_ok();
    sent && matches!(read_status(&mut stream), Reply::Status(200 | 503))
}

/// Lets this test process open the thousands of client sockets the attack needs: the
/// soft limit up to at least 4,096 (raising the hard limit too where allowed, as root).
fn raise_own_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let wanted = hard.clamp(4_096, 65_536);
    let raised = Rlimit {
        current: Some(wanted),
        maximum: Some(hard.max(wanted)),
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        return wanted;
    }
    let soft = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, soft).expect("raise RLIMIT_NOFILE to the hard limit");
    hard
}

/// Every class of malformed or abusive request from the probe and its neighbours, each
/// on its own connection, while escalations are delivered: huge, negative, garbage and
/// conflicting `Content-Length`, chunked bodies, junk `Transfer-Encoding`, oversized and
/// too many headers, binary junk and other protocols. Each gets an HTTP error (or the
/// connection closed) and never a crash (probe F1); the reader then delivers the rest and
/// `/health` still answers.
#[test]
fn malformed_requests_get_errors_and_the_reader_keeps_delivering() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(10);
    let cloud = MockCloudProcess::start(&sandbox, &[]);
    let reader = reader_with_fd_limit(&sandbox, &cloud.endpoint);
    let addr = reader.status_addr();
    wait_until(WAIT, "10 deliveries", || delivered(addr) >= 10);

    let big_header = format!(
        "GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let many_headers = format!(
        "GET /health HTTP/1.1\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let body_refused = [Reply::Status(413), Reply::Closed];
    let bad_request = [Reply::Status(400), Reply::Status(413), Reply::Closed];
    let too_large = [Reply::Status(431), Reply::Closed];
    let cases: Vec<(&str, Vec<u8>, &[Reply])> = vec![
        (
            "huge Content-Length, no body sent",
            b"GET /health HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n".to_vec(),
            &[Reply::Status(413)],
        ),
        (
            "huge Content-Length, one byte (the probe's curl)",
            b"POST /health HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\nx".to_vec(),
            &body_refused,
        ),
        (
            "huge Content-Length on /metrics",
            b"GET /metrics HTTP/1.0\r\nContent-Length: 99999999999\r\n\r\n".to_vec(),
            &[Reply::Status(413)],
        ),
        (
            "Content-Length past u64",
            b"GET /health HTTP/1.1\r\nContent-Length: 999999999999999999999999\r\n\r\n".to_vec(),
            &bad_request,
        ),
        (
            "negative Content-Length",
            b"GET /health HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
            &bad_request,
        ),
        (
            "garbage Content-Length",
            b"GET /health HTTP/1.1\r\nContent-Length: lots\r\n\r\n".to_vec(),
            &bad_request,
        ),
        (
            "conflicting Content-Lengths",
            b"GET /health HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
            &bad_request,
        ),
        (
            "Content-Length and chunked",
            b"POST /health HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
            &bad_request,
        ),
        (
            "junk Transfer-Encoding",
            b"POST /health HTTP/1.1\r\nTransfer-Encoding: zstd, rot13\r\n\r\n".to_vec(),
            &bad_request,
        ),
        (
            "chunked with a huge chunk size",
            b"POST /stats HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n"
                .to_vec(),
            &body_refused,
        ),
        (
            "Expect: 100-continue with a body",
            b"POST /health HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n"
                .to_vec(),
            &[Reply::Status(413)],
        ),
        ("a 64 KiB header", big_header.into_bytes(), &too_large),
        ("200 headers", many_headers.into_bytes(), &too_large),
        (
            "binary junk",
            (0..=255u8).cycle().take(4096).collect(),
            &bad_request,
        ),
        (
            "an HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            &bad_request,
        ),
        ("HTTP/0.9", b"GET /health\r\n\r\n".to_vec(), &bad_request),
        ("a bare newline storm", b"\r\n".repeat(20_000), &too_large),
        (
            "a non-UTF-8 path",
            b"GET /\xff\xfe HTTP/1.1\r\n\r\n".to_vec(),
            &[Reply::Status(400), Reply::Status(404), Reply::Closed],
        ),
        (
            "an absolute URI",
            b"GET http://evil.invalid/health HTTP/1.1\r\n\r\n".to_vec(),
            &[Reply::Status(200)],
        ),
        (
            "an unknown method",
            b"BREW /health HTTP/1.1\r\n\r\n".to_vec(),
            &[Reply::Status(405)],
        ),
    ];
    for (what, request, allowed) in &cases {
        let reply = send(addr, request);
        let answers = health_answers(addr);
        assert_alive(&reader, what);
        assert!(answers, "/health did not answer after {what}");
        assert!(
            allowed.contains(&reply),
            "{what}: got {reply:?}, expected one of {allowed:?}"
        );
    }

    // A chunked body that never ends: the server answers without reading it and closes,
    // so the client's writes fail long before 64 MiB.
    let mut flood = TcpStream::connect(addr).expect("connect");
    flood
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = flood.write_all(b"POST /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000)).into_bytes();
    let (mut sent, started) = (0usize, Instant::now());
    while sent < 64 << 20 && started.elapsed() < Duration::from_secs(10) {
        match flood.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        sent < 64 << 20,
        "the server read a 64 MiB chunked body it should refuse"
    );
    assert_alive(&reader, "a chunked flood");

    sandbox.enqueue_many(10);
    wait_until(WAIT, "delivery after the attack", || delivered(addr) >= 20);
    assert!(health_answers(addr), "/health after the attack");
    let (_, stats) = get_json(addr, "/stats");
    let counters = &stats["status_server"]["counters"];
    assert!(
        counters["bodies_refused_total"].as_u64().unwrap_or(0) >= 5,
        "{stats:#}"
    );
    assert_eq!(counters["panics_total"], 0, "{stats:#}");
    assert_eq!(stats["reader"]["restarts"], 0, "{stats:#}");
}

/// Thousands of idle and half-sent connections and a slowloris trickle (probe F2): the
/// server keeps at most `connections_max` open and closes the rest at once, so the
/// reader's descriptors and threads stay bounded, delivery (which opens new lanes'
/// files meanwhile) never runs out of descriptors, the stalled ones are closed after the
/// header timeout, and `/health` answers again once the attack stops.
#[test]
fn idle_connection_floods_leave_the_worker_its_descriptors() {
    let own_limit = raise_own_fd_limit();
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(5);
    let cloud = MockCloudProcess::start(&sandbox, &[]);
    let reader = reader_with_fd_limit(&sandbox, &cloud.endpoint);
    let addr = reader.status_addr();
    wait_until(WAIT, "5 deliveries", || delivered(addr) >= 5);
    let (threads_before, fds_before) = (threads(reader.pid()), open_fds(reader.pid()));

    // Slowloris: a header byte every 400 ms, fewer connections than the limit, so that
    // /health still answers meanwhile; the server cuts them at the header timeout.
    let mut slow: Vec<TcpStream> = (0..CONNECTIONS_MAX / 2)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let trickle_started = Instant::now();
    let header = b"GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = vec![false; slow.len()];
    for byte in header.iter().cycle() {
        if trickle_started.elapsed() > HEADER_TIMEOUT + Duration::from_secs(3)
            || cut.iter().all(|c| *c)
        {
            break;
        }
        for (stream, cut) in slow.iter_mut().zip(cut.iter_mut()) {
            *cut |= stream.write_all(&[*byte]).is_err();
        }
        std::thread::sleep(Duration::from_millis(400));
        if trickle_started.elapsed() < Duration::from_secs(2) {
            assert!(
                health_answers(addr),
                "/health during a slowloris below the limit"
            );
        }
    }
    for stream in &mut slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut buf = [0u8; 1];
        assert!(
            !matches!(stream.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock),
            "a slowloris connection still open {:?} after it started",
            trickle_started.elapsed()
        );
    }
    drop(slow);
    assert_alive(&reader, "a slowloris");

    // The flood: 2,000 connections, each with half a request, held open, while new
    // escalations arrive through a new lane.
    let wanted = 2_000.min(
        usize::try_from(own_limit)
            .unwrap_or(2_000)
            .saturating_sub(200),
    );
    let flood_started = Instant::now();
    let mut held = Vec::with_capacity(wanted);
    let (mut fds_max, mut threads_max) = (0, 0);
    for i in 0..wanted {
        if flood_started.elapsed() > Duration::from_secs(10) {
            break;
        }
        if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n");
            held.push(stream);
        }
        if i % 200 == 0 {
            fds_max = fds_max.max(open_fds(reader.pid()));
            threads_max = threads_max.max(threads(reader.pid()));
        }
    }
    let connected = held.len();
    assert!(
        connected >= wanted / 2,
        "only {connected} of {wanted} connections were made"
    );
    sandbox.enqueue_many(10);
    wait_until(WAIT, "delivery during the flood", || {
        fds_max = fds_max.max(open_fds(reader.pid()));
        threads_max = threads_max.max(threads(reader.pid()));
        sandbox.status()["pending_total"] == 0
    });
    assert_alive(&reader, "2,000 idle connections");
    assert!(
        fds_max <= fds_before + CONNECTIONS_MAX + 8,
        "the reader held {fds_max} descriptors under the flood ({fds_before} before)"
    );
    assert!(
        threads_max <= threads_before + 2,
        "the reader ran {threads_max} threads under the flood ({threads_before} before)"
    );

    // The attack ends when the attacker's connections time out on the server side (those
    // it kept) or were closed at once (the rest); /health answers within the timeout.
    wait_until(
        HEADER_TIMEOUT + Duration::from_secs(5),
        "/health after the flood",
        || health_answers(addr),
    );
    drop(held);
    assert!(delivered(addr) >= 15);
    let (_, stats) = get_json(addr, "/stats");
    assert_eq!(
        stats["status_server"]["limits"]["connections_max"],
        CONNECTIONS_MAX
    );
    let counters = &stats["status_server"]["counters"];
    assert!(
        counters["connections_refused_total"].as_u64().unwrap_or(0) >= connected as u64 / 2,
        "{stats:#}"
    );
    assert_eq!(
        stats["reader"]["restarts"], 0,
        "the worker failed under the flood: {stats:#}"
    );
    println!(
        "flood: {connected} connections; reader fds {fds_before} -> max {fds_max}, threads {threads_before} -> max {threads_max}; counters {counters}"
    );
    let logs = reader.stderr_text();
    assert!(
        !logs.contains("Too many open files"),
        "descriptors ran out:\n{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
}

/// HTTP/1.1 keep-alive still works (two requests on one connection, `HEAD` without a
/// body), and an idle keep-alive connection is closed after the header timeout rather
/// than held for ever (probe F2).
#[test]
fn keep_alive_works_and_idle_connections_are_closed() {
    let sandbox = Sandbox::new();
    let cloud = MockCloudProcess::start(&sandbox, &[]);
    let reader = reader_with_fd_limit(&sandbox, &cloud.endpoint);
    let addr = reader.status_addr();
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(HEADER_TIMEOUT * 3))
        .expect("timeout");
    stream
        .write_all(
            b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /stats HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .expect("send");
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let started = Instant::now();
    let closed_after = loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break started.elapsed(),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    };
    let text = String::from_utf8_lossy(&seen);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    let head_answer = text.split("HTTP/1.1 200").nth(1).expect("first answer");
    assert!(
        !head_answer.contains("\"status\""),
        "HEAD got a body: {text}"
    );
    assert!(
        closed_after >= HEADER_TIMEOUT - Duration::from_millis(500)
            && closed_after < HEADER_TIMEOUT + Duration::from_secs(3),
        "idle keep-alive closed after {closed_after:?}"
    );
    assert!(text.contains("\"status_server\""), "{text}");
    assert_alive(&reader, "keep-alive");
}

/// With the status port taken, the reader used to log "reader started" and then exit 2
/// (probe F27). Now it fails before saying it started, naming the address and what to do.
#[test]
fn a_taken_status_port_fails_before_the_reader_says_it_started() {
    let sandbox = Sandbox::new();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let mut cmd = sandbox.command(&[
        "reader",
        "--endpoint",
        "http://127.0.0.1:9",
        "--status-addr",
        &addr,
    ]);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
    let out = sandbox.run_with(cmd, None);
    out.expect_code(2).expect_stderr(&[
        &addr,
        "status.addr",
        "--status-addr",
        "status.enabled=false",
    ]);
    assert!(!out.stderr.contains("reader started"), "{}", out.stderr);
}
