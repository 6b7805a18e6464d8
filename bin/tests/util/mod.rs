//! Helpers for running the real `escalation-queue` binary in temporary directories: one
//! command to completion ([`Sandbox::run`]), or a long-running one ([`Daemon`]) whose output
//! is collected and which is always killed when the test ends. Every wait is bounded.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_escalation-queue");

/// The token tests share between the mock cloud and the reader.
pub const TOKEN: &str = "api_2testtokenSECRETxyz";

/// Longest any single command may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A temporary home with a queue directory inside; commands run with a clean environment.
pub struct Sandbox {
    pub root: tempfile::TempDir,
}

/// A finished command.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code; output:\n{self:#?}"
        );
        self
    }

    /// Asserts that stderr mentions every one of `needles`.
    #[track_caller]
    pub fn expect_stderr(&self, needles: &[&str]) -> &Self {
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr lacks {needle:?}:\n{}",
                self.stderr
            );
        }
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            root: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// `<root>/queue`.
    pub fn queue_dir(&self) -> PathBuf {
        self.root.path().join("queue")
    }

    /// The binary with a clean environment: `HOME` in the sandbox, the queue directory set
    /// through `ESCALATION_QUEUE_DIR`, nothing else of ours inherited.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root.path())
            .env("ESCALATION_QUEUE_DIR", self.queue_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `args` to completion (bounded by [`COMMAND_TIMEOUT`]).
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.run_with(self.command(args), None)
    }

    /// Runs `cmd`, feeding `stdin` if given.
    pub fn run_with(&self, mut cmd: Command, stdin: Option<&[u8]>) -> Outcome {
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("spawn the binary");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input).expect("write stdin");
        }
        let stdout = drain(child.stdout.take().expect("stdout"));
        let stderr = drain(child.stderr.take().expect("stderr"));
        let status = wait_bounded(&mut child, COMMAND_TIMEOUT);
        Outcome {
            code: status.and_then(|s| s.code()),
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        }
    }

    /// Starts `args` in the background.
    pub fn spawn(&self, args: &[&str]) -> Daemon {
        Daemon::start(self.command(args))
    }

    /// Enqueues `n` escalations through the library (fast setup); returns their image
    /// query ids.
    pub fn enqueue_many(&self, n: usize) -> Vec<String> {
        let queue = escalation_queue::EscalationQueue::open(self.queue_dir()).expect("open");
        (0..n)
            .map(|i| {
                let image = format!("test image {i}").into_bytes();
                let esc = escalation_queue::Escalation::new(
                    "det_test",
                    escalation_queue::ImageSource::Inline(image.into()),
                );
                queue.enqueue(&esc).expect("enqueue").image_query_id
            })
            .collect()
    }

    /// `status --json`.
    pub fn status(&self) -> Value {
        let out = self.run(&["status", "--json"]);
        out.expect_code(0);
        out.json()
    }

    /// Writes `text` to `<root>/name` and returns the path.
    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.root.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// Waits up to `timeout`; kills the child if it is still running then.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A background process whose stdout and stderr lines are collected. Killed on drop.
pub struct Daemon {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Daemon {
    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawn the binary");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().expect("stdout"), Arc::clone(&stdout)),
            collect(child.stderr.take().expect("stderr"), Arc::clone(&stderr)),
        ];
        Self {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().expect("lock").clone()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// The first stdout line satisfying `pred`, waiting up to `timeout`.
    #[track_caller]
    pub fn wait_stdout(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line(&self.stdout, timeout, pred)
    }

    /// The first stderr line satisfying `pred`, waiting up to `timeout`.
    #[track_caller]
    pub fn wait_stderr(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line(&self.stderr, timeout, pred)
    }

    #[track_caller]
    fn wait_line(
        &self,
        lines: &Mutex<Vec<String>>,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = lines.lock().expect("lock").iter().find(|l| pred(l)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no matching line within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                self.stdout_lines().join("\n"),
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address of the status server, from the reader's JSON log line.
    #[track_caller]
    pub fn status_addr(&self) -> SocketAddr {
        let line = self.wait_stderr(Duration::from_secs(20), |l| {
            l.contains("status server listening")
        });
        let event: Value = serde_json::from_str(&line).expect("JSON log line (--log-format json)");
        event["addr"]
            .as_str()
            .expect("addr field")
            .parse()
            .expect("socket address")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// SIGKILL, like a power cut for the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit; its exit code.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "process still running after {timeout:?}; stderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn collect(pipe: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            lines.lock().expect("lock").push(line);
        }
    })
}

/// A `mock-cloud` process on a free loopback port.
pub struct MockCloudProcess {
    pub daemon: Daemon,
    pub endpoint: String,
}

impl MockCloudProcess {
    /// Starts `mock-cloud` with the shared token and `faults` flags.
    pub fn start(sandbox: &Sandbox, faults: &[&str]) -> Self {
        let mut args = vec!["mock-cloud", "--listen", "127.0.0.1:0", "--token", TOKEN];
        args.extend_from_slice(faults);
        let daemon = sandbox.spawn(&args);
        let line = daemon.wait_stdout(Duration::from_secs(20), |l| l.starts_with("listening on "));
        let endpoint = line.trim_start_matches("listening on ").trim().to_owned();
        Self { daemon, endpoint }
    }

    /// Stops it (SIGTERM) and returns its summary: requests and created image query ids.
    pub fn stop(mut self) -> Value {
        self.daemon.terminate();
        assert_eq!(self.daemon.wait_exit(Duration::from_secs(10)), Some(0));
        let lines = self.daemon.stdout_lines();
        let last = lines.last().expect("summary line");
        serde_json::from_str(last).expect("summary JSON")
    }
}

/// Runs the reader against `endpoint` with JSON logs and a status server on a free port.
pub fn spawn_reader(sandbox: &Sandbox, endpoint: &str, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "reader",
        "--endpoint",
        endpoint,
        "--status-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ];
    args.extend_from_slice(extra);
    let mut cmd = sandbox.command(&args);
    cmd.env("GROUNDLIGHT_API_TOKEN", TOKEN);
    Daemon::start(cmd)
}

/// One HTTP/1.0 request; returns the status code, the headers and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to status");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// `GET path` as JSON.
pub fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, _, body) = http(addr, "GET", path);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, json)
}

/// Polls `check` every 50 ms until it returns true, for at most `timeout`.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `GET path` on `addr` every 50 ms until `check` holds for its JSON document, for
/// at most `timeout`, and returns that document; on timeout the last document is shown.
/// For what the reader reports on its own cadence (a wal event becomes an incident when
/// the worker next takes the wal's events, after the deliveries around it are counted):
/// reading once right after observing a delivery could read too early.
#[track_caller]
pub fn wait_for_json(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, doc) = get_json(addr, path);
        if check(&doc) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last {path}: {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `tool` is on `PATH`. A test that needs a missing tool says `SKIPPED` and
/// returns, except under CI (`CI=true`), where CI must run every test: there the missing
/// tool fails the test (`.ci/run` installs what the tests need).
#[track_caller]
pub fn tool_or_skip(tool: &str, why: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    if !found {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "CI=true but `{tool}` is not installed ({why})");
        println!("SKIPPED: `{tool}` is not installed ({why})");
    }
    found
}

/// Runs `cmd` (the binary and its arguments, none with spaces) on a pseudo-terminal
/// through util-linux `script`, with `sandbox`'s environment plus `env`; returns
/// everything the terminal showed and the exit code.
pub fn run_on_terminal(sandbox: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    assert!(args.iter().all(|a| !a.contains([' ', '\'', '"'])));
    let line = std::iter::once(BIN)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["--quiet", "--return", "--command", &line, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", sandbox.root.path())
        .env("ESCALATION_QUEUE_DIR", sandbox.queue_dir())
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        cmd.env(key, value);
    }
    sandbox.run_with(cmd, None)
}

impl Sandbox {
    /// Enqueues `n` escalations for `detector_id`; returns their image query ids.
    pub fn enqueue_for(&self, detector_id: &str, n: usize) -> Vec<String> {
        let queue = escalation_queue::EscalationQueue::open(self.queue_dir()).expect("open");
        (0..n)
            .map(|i| {
                let image = format!("image {i} for {detector_id}").into_bytes();
                let esc = escalation_queue::Escalation::new(
                    detector_id,
                    escalation_queue::ImageSource::Inline(image.into()),
                );
                queue.enqueue(&esc).expect("enqueue").image_query_id
            })
            .collect()
    }
}

/// One HTTP/1.0 request with a urlencoded `body`; returns the status code, the headers
/// and the body of the answer.
pub fn http_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String, String) {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to status");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, rest) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), rest.to_owned())
}
