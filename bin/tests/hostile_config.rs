//! Hostile and careless configuration, driven through the real binary: each test names the
//! probe finding it guards (`docs/RELIABILITY.md`, "The probe's findings"). The rule throughout: a wrong value is refused at
//! start with exit 2 and a message naming the key or variable, the value (never a secret)
//! and what is allowed; nothing is written anywhere else; nothing hangs or grows unbounded.

mod util;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use util::{wait_until, Daemon, MockCloudProcess, Sandbox, TOKEN};

fn image(sandbox: &Sandbox) -> String {
    let path = sandbox.file("img.jpg", b"\xff\xd8\xffjpeg");
    path.to_str().expect("utf-8").to_owned()
}

fn enqueue_args(image: &str) -> Vec<&str> {
    vec!["enqueue", "--detector-id", "det_1", "--image", image]
}

/// Probe F15: `ESCALATION_QUEUE_DIR` with a byte that is not UTF-8, or set but empty, was
/// silently ignored: the enqueue exited 0 and the record went to `~/.local/state`, where
/// the reader never looks. Now both are refused with exit 2 naming the variable, and no
/// queue is created anywhere.
#[test]
fn probe_f15_a_bad_queue_dir_variable_is_refused_not_replaced() {
    let sandbox = Sandbox::new();
    let image = image(&sandbox);
    let fallback = sandbox.root.path().join(".local/state/escalation-queue");
    let mut bad = sandbox.queue_dir().into_os_string().into_vec();
    bad.push(0xff);
    let mut cmd = sandbox.command(&enqueue_args(&image));
    cmd.env("ESCALATION_QUEUE_DIR", OsStr::from_bytes(&bad));
    sandbox
        .run_with(cmd, None)
        .expect_code(2)
        .expect_stderr(&["ESCALATION_QUEUE_DIR", "not valid UTF-8"]);
    let mut cmd = sandbox.command(&enqueue_args(&image));
    cmd.env("ESCALATION_QUEUE_DIR", "");
    sandbox
        .run_with(cmd, None)
        .expect_code(2)
        .expect_stderr(&["ESCALATION_QUEUE_DIR", "empty"]);
    let mut cmd = sandbox.command(&["status"]);
    cmd.env(
        "ESCALATION_QUEUE__WORKER__RETENTION_MS",
        OsStr::from_bytes(b"\xff"),
    );
    sandbox
        .run_with(cmd, None)
        .expect_code(2)
        .expect_stderr(&["ESCALATION_QUEUE__WORKER__RETENTION_MS", "not valid UTF-8"]);
    assert!(
        !fallback.exists(),
        "a record landed in {}",
        fallback.display()
    );
    assert!(!sandbox.queue_dir().exists());
}

/// Probe F18: `--set cloud.api_token=…` ran and delivered, so any local user saw the token
/// in `ps`; `--set cloud.proxy_url=http://u:pw@…` likewise. Both are refused before
/// anything runs, the message points at the environment variable or a 0600 file, and the
/// secret is not repeated.
#[test]
fn probe_f18_secrets_on_the_command_line_are_refused() {
    let sandbox = Sandbox::new();
    sandbox
        .run(&["drain", "--set", "cloud.api_token=SEKRITARGV"])
        .expect_code(2)
        .expect_stderr(&["cloud.api_token", "ps", "GROUNDLIGHT_API_TOKEN", "0600"]);
    let out = sandbox.run(&[
        "reader",
        "--set",
        "cloud.proxy_url=http://user:SEKRITPW@127.0.0.1:9",
    ]);
    out.expect_code(2)
        .expect_stderr(&["cloud.proxy_url", "ESCALATION_QUEUE__CLOUD__PROXY_URL"]);
    let out2 = sandbox.run(&[
        "reader",
        "--set",
        "worker.incidents.webhook.url=https://u:SEKRITHOOK@127.0.0.1:9/x",
    ]);
    out2.expect_code(2);
    for out in [&out, &out2] {
        assert!(!out.stderr.contains("SEKRIT"), "{}", out.stderr);
    }
    // The environment is the documented way, and it works.
    sandbox.enqueue_many(1);
    let mut cmd = sandbox.command(&["status"]);
    cmd.env("ESCALATION_QUEUE__CLOUD__API_TOKEN", "SEKRITENV");
    sandbox.run_with(cmd, None).expect_code(0);
}

/// Probe F19: `--endpoint http://user:SEKRITPW@…` was accepted, logged at INFO with the
/// password, and the credentials were never sent; an endpoint with a query string was
/// refused, but the error echoed its `token=…`. Both are refused with the secret redacted.
#[test]
fn probe_f19_endpoint_credentials_are_refused_and_queries_redacted() {
    let sandbox = Sandbox::new();
    for endpoint in [
        "http://user:SEKRITPW@127.0.0.1:9",
        "http://127.0.0.1:9/device-api?token=SEKRITQ",
    ] {
        let mut cmd = sandbox.command(&["drain", "--endpoint", endpoint]);
        cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
        let out = sandbox.run_with(cmd, None);
        out.expect_code(2)
            .expect_stderr(&["cloud.endpoint", "<redacted>"]);
        assert!(!out.stderr.contains("SEKRIT"), "{}", out.stderr);
    }
}

/// Probe F20: OPERATIONS.md says every invalid value is rejected at start with exit 2, but
/// these documented minimums were clamped silently (and the webhook URL failed only at the
/// first incident, as a WARN). Each is now refused, naming key, value and bound.
#[test]
fn probe_f20_documented_minimums_are_enforced_at_start() {
    let sandbox = Sandbox::new();
    let cases = [
        ("worker.backoff.delay_base_ms=0", "at least 1"),
        (
            "worker.backoff.delay_max_ms=10",
            "at least delay_base_ms (500)",
        ),
        ("worker.breaker.failure_threshold=0", "at least 1"),
        (
            "worker.breaker.cool_down_max_ms=10",
            "at least cool_down_base_ms (1000)",
        ),
        ("worker.incidents.jsonl_max_bytes=1", "at least 4096"),
        ("worker.incidents.spike.bucket_ms=0", "at least 1"),
        (
            "worker.incidents.webhook.url=notaurl",
            "http:// or https://",
        ),
        (
            "worker.incidents.webhook.url=ftp://x",
            "http:// or https://",
        ),
        ("worker.incidents.webhook.timeout_ms=0", "at least 1"),
    ];
    for (set, bound) in cases {
        let key = set.split('=').next().expect("key");
        let mut cmd = sandbox.command(&["reader", "--set", set]);
        cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
        if key.contains("webhook.timeout") {
            cmd.env(
                "ESCALATION_QUEUE__WORKER__INCIDENTS__WEBHOOK__URL",
                "http://127.0.0.1:9/",
            );
        }
        let out = sandbox.run_with(cmd, None);
        out.expect_code(2)
            .expect_stderr(&[key, bound, "from flag --set"]);
    }
}

/// Probe F22: `--config /dev/zero` grew to 2.3 GB in 4 s (OOM); a 50 MB one-line invalid
/// TOML file came back as a 100 MB error. Now only regular files of at most 1 MiB are read,
/// a FIFO with no writer does not hang, and a parser error is a bounded excerpt.
#[test]
fn probe_f22_config_reads_are_bounded() {
    let sandbox = Sandbox::new();
    let started = Instant::now();
    sandbox
        .run(&["status", "--config", "/dev/zero"])
        .expect_code(2)
        .expect_stderr(&["/dev/zero", "character device, not a regular file"]);
    let mut cmd = sandbox.command(&["status"]);
    cmd.env("ESCALATION_QUEUE_CONFIG", "/dev/zero");
    sandbox.run_with(cmd, None).expect_code(2);
    let fifo = sandbox.root.path().join("config.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    sandbox
        .run(&["status", "--config", fifo.to_str().expect("utf-8")])
        .expect_code(2)
        .expect_stderr(&["a FIFO"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    let huge = sandbox.file("huge.toml", &vec![b'a'; 50 << 20]);
    let out = sandbox.run(&["status", "--config", huge.to_str().expect("utf-8")]);
    out.expect_code(2).expect_stderr(&["at most 1048576"]);
    assert!(
        out.stderr.len() < 2048,
        "{} bytes of stderr",
        out.stderr.len()
    );
    let long_line = sandbox.file("long.toml", &vec![b'a'; 1 << 20]);
    let out = sandbox.run(&["status", "--config", long_line.to_str().expect("utf-8")]);
    out.expect_code(2).expect_stderr(&["not valid TOML"]);
    assert!(
        out.stderr.len() < 4096,
        "{} bytes of stderr",
        out.stderr.len()
    );
}

/// Probe F24: with the token in `GROUNDLIGHT_API_TOKEN`, every command warned "config file
/// holds cloud.api_token but is readable by others" about a 0644 file holding no token.
/// The warning now looks at the file the token came from: none for that file, one for a
/// 0644 file that does hold it.
#[test]
fn probe_f24_the_readable_config_warning_looks_at_the_file_holding_the_token() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(1);
    let plain = sandbox.file("plain.toml", b"[worker]\nretention_ms = 3600000\n");
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut cmd = sandbox.command(&["status", "--config", plain.to_str().expect("utf-8")]);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
    let out = sandbox.run_with(cmd, None);
    out.expect_code(0);
    assert!(!out.stderr.contains("readable by others"), "{}", out.stderr);

    let holding = sandbox.file("token.toml", b"[cloud]\napi_token = \"api_2filetoken\"\n");
    std::fs::set_permissions(&holding, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    sandbox
        .run(&["status", "--config", holding.to_str().expect("utf-8")])
        .expect_code(0)
        .expect_stderr(&["token.toml holds cloud.api_token but is readable by others"]);
    std::fs::set_permissions(&holding, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = sandbox.run(&["status", "--config", holding.to_str().expect("utf-8")]);
    assert!(!out.stderr.contains("readable by others"), "{}", out.stderr);
}

/// Probe F27: `--confidence-threshold -0.1` failed with "unexpected argument '-0' found"
/// instead of the range check; `--set foo.bar=1` blamed "the default"; a bad proxy said
/// "cloud.invalid proxy URL".
#[test]
fn probe_f27_negative_numbers_unknown_sections_and_bad_proxies_are_explained() {
    let sandbox = Sandbox::new();
    let image = image(&sandbox);
    let mut args = enqueue_args(&image);
    args.extend(["--confidence-threshold", "-0.1"]);
    sandbox
        .run(&args)
        .expect_code(2)
        .expect_stderr(&["confidence_threshold is -0.1", "0..=1"]);
    let mut args = enqueue_args(&image);
    args.extend(["--patience-time", "-5"]);
    sandbox.run(&args).expect_code(2).expect_stderr(&["-5"]);
    let out = sandbox.run(&["status", "--set", "foo.bar=1"]);
    out.expect_code(2)
        .expect_stderr(&["foo", "from flag --set foo.bar"]);
    assert!(!out.stderr.contains("the default"), "{}", out.stderr);
    let out = sandbox.run(&["status", "--set", "cloud.proxy_url=socks5://127.0.0.1:1"]);
    out.expect_code(2).expect_stderr(&[
        "cloud.proxy_url = <redacted> (from flag --set cloud.proxy_url)",
        "invalid proxy URL",
    ]);
    assert!(!out.stderr.contains("cloud.invalid"), "{}", out.stderr);
}

/// Probe F27: an error chain repeated the OS error three times (`…: File exists (os error
/// 17): …: File exists (os error 17): File exists (os error 17)`). Each cause shows once.
#[test]
fn probe_f27_an_error_chain_names_the_os_error_once() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.queue_dir()).expect("mkdir");
    sandbox.file("queue/wal", b"a file where the wal directory belongs");
    let image = image(&sandbox);
    let out = sandbox.run(&enqueue_args(&image));
    assert_ne!(out.code, Some(0));
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("error line");
    assert_eq!(line.matches("os error").count(), 1, "{line}");
}

/// Probe F27: more than `lanes_max` concurrent CLI enqueues failed at once with exit 4 (11
/// of 40). An enqueue now waits, bounded by `--lane-wait-ms` (default 10 s), for a lane to
/// free up, so 40 concurrent enqueues all succeed with 16 lanes; with every lane held
/// longer than the wait, it is still exit 4, after the wait and not before.
#[test]
fn probe_f27_concurrent_enqueues_wait_for_a_free_lane() {
    let sandbox = Sandbox::new();
    let image = image(&sandbox);
    let children: Vec<_> = (0..40)
        .map(|_| {
            let mut cmd = sandbox.command(&enqueue_args(&image));
            cmd.env("ESCALATION_QUEUE__QUEUE__LANES_MAX", "4");
            cmd.stdout(Stdio::null()).stderr(Stdio::piped());
            cmd.spawn().expect("spawn enqueue")
        })
        .collect();
    let mut failed = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        if !out.status.success() {
            failed.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 40 failed: {failed:?}",
        failed.len()
    );
    let mut cmd = sandbox.command(&["status", "--json"]);
    cmd.env("ESCALATION_QUEUE__QUEUE__LANES_MAX", "4");
    let status = sandbox.run_with(cmd, None);
    status.expect_code(0);
    assert_eq!(status.json()["pending_total"], 40, "{}", status.stdout);

    let options = escalation_queue::QueueOptions {
        lanes_max: 2,
        ..escalation_queue::QueueOptions::default()
    };
    let held: Vec<_> = (0..2)
        .map(|_| {
            escalation_queue::EscalationQueue::open_with(sandbox.queue_dir(), options.clone())
                .expect("hold a lane")
        })
        .collect();
    let run = |wait_ms: &str| {
        let mut args = enqueue_args(&image);
        args.extend(["--lane-wait-ms", wait_ms]);
        let mut cmd = sandbox.command(&args);
        cmd.env("ESCALATION_QUEUE__QUEUE__LANES_MAX", "2");
        cmd
    };
    let started = Instant::now();
    sandbox
        .run_with(run("300"), None)
        .expect_code(4)
        .expect_stderr(&["--lane-wait-ms 300"]);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let waiting = Daemon::start(run("20000"));
    std::thread::sleep(Duration::from_millis(300));
    drop(held);
    let mut waiting = waiting;
    assert_eq!(waiting.wait_exit(Duration::from_secs(20)), Some(0));
}

/// Probe F27: a 3xx did not show its `Location`, which is what explains an http→https
/// redirect. The dead-letter reason and the log now say where it pointed (credentials and
/// query redacted).
#[test]
fn probe_f27_a_redirect_names_its_location() {
    let sandbox = Sandbox::new();
    sandbox.enqueue_many(1);
    let server = OneAnswerServer::start(
        "HTTP/1.1 301 Moved Permanently\r\nLocation: https://u:pw@api.example/device-api/v1/image-queries?x=SEKRIT\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let endpoint = format!("http://{}", server.addr);
    let mut cmd = sandbox.command(&[
        "drain",
        "--endpoint",
        &endpoint,
        "--set",
        "worker.policy.unexpected_status=dead_letter",
    ]);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
    let out = sandbox.run_with(cmd, None);
    out.expect_code(1);
    let list = sandbox.run(&["dlq", "list", "--json"]);
    list.expect_code(0);
    let both = format!("{}{}", out.stderr, list.stdout);
    assert!(
        both.contains(
            "redirect to https://<redacted>@api.example/device-api/v1/image-queries?<redacted>"
        ),
        "{both}"
    );
    assert!(!both.contains("SEKRIT"), "{both}");
}

/// Probe F21: the incident webhook honoured `HTTP(S)_PROXY` while the cloud client ignored
/// it, and `cloud.proxy_url` did not apply to the webhook. One rule now serves both:
/// `cloud.proxy_url`, else the proxy variables, with `NO_PROXY` exemptions; the route is
/// logged at start. A real CONNECT proxy on loopback proves the cloud requests and the
/// webhook POST go through it, and that `NO_PROXY` bypasses it.
#[test]
fn probe_f21_cloud_and_webhook_share_one_proxy_rule() {
    let sandbox = Sandbox::new();
    let cloud = MockCloudProcess::start(&sandbox, &["--script", "400"]);
    let cloud_addr = cloud.endpoint.trim_start_matches("http://").to_owned();
    let cloud_addr = cloud_addr.split('/').next().expect("host:port").to_owned();
    let hook = OneAnswerServer::start("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
    let proxy = ConnectProxy::start();

    // 1. HTTP_PROXY from the environment: the reader's cloud requests and the webhook POST
    //    for the dead-lettered first item are tunnelled through the proxy.
    let ids = sandbox.enqueue_many(2);
    let mut cmd = sandbox.command(&[
        "reader",
        "--endpoint",
        &cloud.endpoint,
        "--status-addr",
        "127.0.0.1:0",
        "--set",
        &format!("worker.incidents.webhook.url=http://{}/hook", hook.addr),
    ]);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN)
        .env("HTTP_PROXY", format!("http://{}", proxy.addr));
    let reader = Daemon::start(cmd);
    reader.wait_stderr(Duration::from_secs(20), |l| {
        l.contains("cloud client ready") && l.contains("via proxy") && l.contains("HTTP_PROXY")
    });
    wait_until(
        Duration::from_secs(30),
        "webhook POST via the proxy",
        || proxy.targets().contains(&hook.addr.to_string()),
    );
    wait_until(Duration::from_secs(30), "the second item delivered", || {
        sandbox.status()["pending_total"] == 0
    });
    let targets = proxy.targets();
    assert!(targets.contains(&cloud_addr), "{targets:?}");
    drop(reader);
    assert!(hook.requests() >= 1);
    assert_eq!(ids.len(), 2);

    // 2. cloud.proxy_url from a config file (no environment proxy): the same route.
    sandbox.enqueue_many(1);
    let before = proxy.targets().len();
    let config = sandbox.file(
        "proxy.toml",
        format!("[cloud]\nproxy_url = \"http://{}\"\n", proxy.addr).as_bytes(),
    );
    let mut cmd = sandbox.command(&[
        "drain",
        "--endpoint",
        &cloud.endpoint,
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
    let out = sandbox.run_with(cmd, None);
    out.expect_code(0)
        .expect_stderr(&["via proxy", "from cloud.proxy_url"]);
    assert!(proxy.targets().len() > before, "{:?}", proxy.targets());

    // 3. NO_PROXY exempts the host: delivered directly, the proxy sees nothing.
    sandbox.enqueue_many(1);
    let before = proxy.targets().len();
    let mut cmd = sandbox.command(&["drain", "--endpoint", &cloud.endpoint]);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN)
        .env("HTTP_PROXY", format!("http://{}", proxy.addr))
        .env("NO_PROXY", "localhost,127.0.0.1");
    let out = sandbox.run_with(cmd, None);
    out.expect_code(0)
        .expect_stderr(&["direct (NO_PROXY entry \"127.0.0.1\" matches 127.0.0.1)"]);
    assert_eq!(proxy.targets().len(), before, "{:?}", proxy.targets());

    // 4. A proxy variable that is not a proxy URL is an error naming it, not "direct".
    let mut cmd = sandbox.command(&["drain", "--endpoint", &cloud.endpoint]);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN)
        .env("HTTP_PROXY", "socks5://127.0.0.1:1");
    sandbox
        .run_with(cmd, None)
        .expect_code(2)
        .expect_stderr(&["HTTP_PROXY"]);
    let summary = cloud.stop();
    assert!(
        summary["image_query_ids"].as_array().map_or(0, Vec::len) >= 3,
        "{summary}"
    );
}

/// An HTTP CONNECT proxy on loopback: records each tunnel's target and relays bytes.
struct ConnectProxy {
    addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
    _accept: JoinHandle<()>,
}

impl ConnectProxy {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&targets);
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || tunnel(client, &seen));
            }
        });
        Self {
            addr,
            targets,
            _accept: accept,
        }
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().expect("lock").clone()
    }
}

fn tunnel(client: TcpStream, seen: &Mutex<Vec<String>>) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(client.try_clone().expect("clone"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = request_line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        let _ = (&client).write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
        return;
    };
    seen.lock().expect("lock").push(target.to_owned());
    let Ok(upstream) = TcpStream::connect_timeout(
        &target.parse().expect("loopback target"),
        Duration::from_secs(5),
    ) else {
        let _ = (&client).write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return;
    };
    let _ = (&client).write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    let up = upstream.try_clone().expect("clone");
    let down = client.try_clone().expect("clone");
    let buffered = reader.buffer().to_vec();
    let forward = std::thread::spawn(move || {
        let mut up = up;
        let _ = up.write_all(&buffered);
        let _ = std::io::copy(&mut reader, &mut up);
        let _ = up.shutdown(Shutdown::Write);
    });
    let mut upstream = upstream;
    let mut down = down;
    let _ = std::io::copy(&mut upstream, &mut down);
    let _ = down.shutdown(Shutdown::Both);
    let _ = forward.join();
}

/// An HTTP server on loopback giving every request the same raw answer; counts requests.
struct OneAnswerServer {
    addr: SocketAddr,
    requests: Arc<Mutex<usize>>,
    _accept: JoinHandle<()>,
}

impl OneAnswerServer {
    fn start(answer: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(0));
        let count = Arc::clone(&requests);
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                read_request(&mut stream);
                *count.lock().expect("lock") += 1;
                let _ = stream.write_all(answer.as_bytes());
                let _ = stream.shutdown(Shutdown::Both);
            }
        });
        Self {
            addr,
            requests,
            _accept: accept,
        }
    }

    fn requests(&self) -> usize {
        *self.requests.lock().expect("lock")
    }
}

/// Reads the head and a `Content-Length` body of one request (bounded by the timeout).
fn read_request(stream: &mut TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
    }
    let mut body = vec![0; length.min(64 << 20)];
    let _ = reader.read_exact(&mut body);
}
