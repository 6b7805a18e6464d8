//! The status server's network side: one thread running a single-threaded tokio runtime
//! with hyper's HTTP/1 server. Everything a client can make it spend is bounded: open
//! connections (the excess are accepted and closed at once), header bytes and count, the
//! time to send a request head (which is also the keep-alive idle time), and the whole
//! life of a connection. Request bodies are never read, except the status page's small
//! form (`POST /actions`, at most 4 KiB, only when `status.actions_enabled`). A panic anywhere in here is
//! caught; the server logs it and starts again, and the reader's worker never sees it.

use std::convert::Infallible;
use std::io;
use std::net::TcpListener as StdListener;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{
    HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};

use super::{actions, page, route, route_action, App, JSON};

/// How often the accept loop checks whether it should stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Pause after `accept` fails for want of descriptors or memory; doubles up to the max.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Pause before serving again after a panic or a failure to start the runtime.
const RESTART_PAUSE: Duration = Duration::from_secs(1);
/// At most one warning per this interval about refused connections or accept errors.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// What one client may cost.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Limits {
    /// Open connections at most; see [`Limits::for_fd_limit`].
    pub connections_max: usize,
    /// Time to send a complete request head, counted from the connection's start or the
    /// end of the previous response (so it is also the keep-alive idle timeout).
    pub header_timeout_ms: u64,
    /// A connection is closed this long after it was accepted, whatever it is doing
    /// (a client that does not read its response, endless keep-alive).
    pub connection_deadline_ms: u64,
    /// hyper's read buffer per connection (the request head must fit).
    pub buffer_bytes_max: usize,
    /// Bytes of request head (request line and headers) at most; more gets 431.
    pub header_bytes_max: usize,
    /// Header fields at most; more gets 431.
    pub headers_max: usize,
}

impl Limits {
    /// Connections when descriptors are plentiful.
    pub const CONNECTIONS_MAX: usize = 64;
    /// Connections however few descriptors there are.
    pub const CONNECTIONS_MIN: usize = 4;

    /// The limits for a process allowed `fd_limit` open descriptors: connections are an
    /// eighth of them, between [`CONNECTIONS_MIN`](Self::CONNECTIONS_MIN) and
    /// [`CONNECTIONS_MAX`](Self::CONNECTIONS_MAX), so that the worker (segments, locks,
    /// the dead-letter log, its own HTTP client) always keeps the rest.
    pub fn for_fd_limit(fd_limit: Option<u64>) -> Self {
        let eighth = fd_limit.map_or(u64::MAX, |n| n / 8);
        let connections_max = usize::try_from(eighth)
            .unwrap_or(usize::MAX)
            .clamp(Self::CONNECTIONS_MIN, Self::CONNECTIONS_MAX);
        Self {
            connections_max,
            header_timeout_ms: 5_000,
            connection_deadline_ms: 30_000,
            buffer_bytes_max: 16 * 1024,
            header_bytes_max: 8 * 1024,
            headers_max: 32,
        }
    }

    /// The limits for this process's `RLIMIT_NOFILE` (soft limit).
    pub fn for_this_process() -> Self {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        Self::for_fd_limit(limit.current)
    }
}

/// What the server has refused or survived, shown in `/stats`.
#[derive(Debug, Default)]
pub struct Counters {
    open: AtomicUsize,
    refused: AtomicU64,
    bodies_refused: AtomicU64,
    accept_errors: AtomicU64,
    panics: AtomicU64,
}

/// A copy of [`Counters`] for `/stats`.
#[derive(Debug, Serialize)]
pub struct CountersSnapshot {
    /// Connections open now.
    pub connections_open: usize,
    /// Connections accepted and closed at once because `connections_max` were open.
    pub connections_refused_total: u64,
    /// Requests that announced a body (answered 413, connection closed).
    pub bodies_refused_total: u64,
    /// `accept` failures (out of descriptors or memory), each followed by a pause.
    pub accept_errors_total: u64,
    /// Panics caught inside the server.
    pub panics_total: u64,
}

impl Counters {
    /// A consistent-enough copy (each counter read once).
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            connections_open: self.open.load(Ordering::Relaxed),
            connections_refused_total: self.refused.load(Ordering::Relaxed),
            bodies_refused_total: self.bodies_refused.load(Ordering::Relaxed),
            accept_errors_total: self.accept_errors.load(Ordering::Relaxed),
            panics_total: self.panics.load(Ordering::Relaxed),
        }
    }

    /// Counts a caught panic.
    pub fn count_panic(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }
}

/// One of `connections_max` places; freed on drop, even when the connection's task
/// panics or the runtime is dropped.
struct Slot(Arc<App>);

impl Slot {
    fn take(app: &Arc<App>) -> Option<Self> {
        let open = &app.counters.open;
        let max = app.limits.connections_max;
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Self(Arc::clone(app)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.counters.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts the server thread on `listener`. It serves until `stopping` is set.
pub fn spawn(
    listener: StdListener,
    app: Arc<App>,
    stopping: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("status-server".into())
        .spawn(move || supervise(&app, &stopping, || serve(&listener, &app, &stopping)))
}

/// Runs `serve` until it returns `Ok` (stopped); after a panic or an error (a runtime
/// that would not start for want of descriptors), logs it, pauses and runs it again.
fn supervise(app: &App, stopping: &AtomicBool, mut serve: impl FnMut() -> io::Result<()>) {
    while !stopping.load(Ordering::Acquire) {
        let run = catch_unwind(AssertUnwindSafe(&mut serve));
        let failure = match run {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("{e}"),
            Err(panic) => {
                app.counters.count_panic();
                format!("panic: {}", panic_message(panic.as_ref()))
            }
        };
        tracing::error!(error = %failure, retry_in_ms = RESTART_PAUSE.as_millis() as u64, "the status server failed; it restarts (delivery is not affected)");
        std::thread::sleep(RESTART_PAUSE);
    }
}

/// One life of the runtime: accepts until `stopping`. Dropping the runtime at the end
/// closes every connection still open.
fn serve(listener: &StdListener, app: &Arc<App>, stopping: &AtomicBool) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start its runtime: {e}")))?;
    let listener = listener
        .try_clone()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot reuse its socket: {e}")))?;
    runtime.block_on(async {
        let listener = TcpListener::from_std(listener)?;
        accept_loop(&listener, app, stopping).await;
        Ok(())
    })
}

async fn accept_loop(listener: &TcpListener, app: &Arc<App>, stopping: &AtomicBool) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut refused_warned = Throttle::default();
    let mut errors_warned = Throttle::default();
    while !stopping.load(Ordering::Acquire) {
        // The status page's per-minute history is fed here, whether or not anyone looks.
        let stats = app.state.stats();
        app.page
            .history
            .tick(escalation_queue::wal::clock::now_unix_ms(), &stats);
        let Ok(accepted) = tokio::time::timeout(POLL_INTERVAL, listener.accept()).await else {
            continue;
        };
        match accepted {
            Ok((stream, _peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                match Slot::take(app) {
                    Some(slot) => {
                        tokio::spawn(connection(stream, slot));
                    }
                    None => {
                        // Closing at once costs the descriptor for an instant only.
                        drop(stream);
                        let refused = app.counters.refused.fetch_add(1, Ordering::Relaxed) + 1;
                        if refused_warned.ready() {
                            tracing::warn!(connections_max = app.limits.connections_max, refused_total = refused, "status server: too many connections open; closing new ones until some end");
                        }
                    }
                }
            }
            Err(e) if out_of_resources(&e) => {
                let total = app.counters.accept_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if errors_warned.ready() {
                    tracing::warn!(error = %e, accept_errors_total = total, pause_ms = backoff.as_millis() as u64, "status server: cannot accept a connection; pausing (delivery keeps its descriptors)");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
            // A client that reset before we accepted it, and the like.
            Err(e) => tracing::debug!(error = %e, "status server: accept failed"),
        }
    }
}

/// Errors after which `accept` fails again at once unless we wait.
fn out_of_resources(e: &io::Error) -> bool {
    use rustix::io::Errno;
    e.raw_os_error().is_some_and(|code| {
        let errno = Errno::from_raw_os_error(code);
        [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM].contains(&errno)
    })
}

/// Serves one connection, at most `connection_deadline_ms` long.
async fn connection(stream: TcpStream, slot: Slot) {
    let app = Arc::clone(&slot.0);
    let limits = app.limits;
    let _ = stream.set_nodelay(true);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms))
        .max_buf_size(limits.buffer_bytes_max)
        .max_header_size(limits.header_bytes_max)
        .max_headers(limits.headers_max)
        .keep_alive(true);
    let service = service_fn(move |request: Request<Incoming>| {
        let app = Arc::clone(&app);
        async move {
            let response = match is_action(&request, &app) {
                true => respond_action(request, &app).await,
                false => respond(&request, &app),
            };
            Ok::<_, Infallible>(response)
        }
    });
    let serving = builder.serve_connection(TokioIo::new(stream), service);
    let deadline = Duration::from_millis(limits.connection_deadline_ms);
    match tokio::time::timeout(deadline, serving).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "status server: connection ended on an error"),
        Err(_) => tracing::debug!("status server: connection closed at its deadline"),
    }
    drop(slot);
}

/// The answer to one request. A request that announces a body gets 413 and the
/// connection is closed: the body is never read, so nothing is sized by a client's
/// `Content-Length` (hyper itself answers 400 to a malformed one).
pub fn respond(request: &Request<Incoming>, app: &App) -> Response<Full<Bytes>> {
    if !request.body().is_end_stream() {
        app.counters.bodies_refused.fetch_add(1, Ordering::Relaxed);
        let body =
            r#"{"error":"request bodies are not accepted; send GET or HEAD without a body"}"#;
        let mut response = build(413, JSON, body.to_owned());
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let method = request.method().as_str();
    let uri = request.uri();
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let (status, content_type, body) = guarded(app, || route(method, target, app));
    let mut response = build(status, content_type, body);
    if content_type == page::CONTENT_TYPE {
        page_headers(&mut response, app);
    }
    if status == 405 {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}

/// Whether `request` is the one kind whose body is read: `POST /actions` with a
/// `Content-Length` of at most [`actions::BODY_BYTES_MAX`], when actions are enabled.
fn is_action(request: &Request<Incoming>, app: &App) -> bool {
    let length = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    app.csrf_token.is_some()
        && request.method() == hyper::Method::POST
        && request.uri().path() == actions::PATH
        && length.is_some_and(|n| n <= actions::BODY_BYTES_MAX)
}

/// `POST /actions`: reads the announced body (at most [`actions::BODY_BYTES_MAX`], within
/// the head timeout), then answers it. The connection is closed afterwards.
async fn respond_action(request: Request<Incoming>, app: &Arc<App>) -> Response<Full<Bytes>> {
    let limit = Duration::from_millis(app.limits.header_timeout_ms);
    let body = Limited::new(request.into_body(), actions::BODY_BYTES_MAX);
    let (status, content_type, text) = match tokio::time::timeout(limit, body.collect()).await {
        Ok(Ok(collected)) => guarded(app, || route_action(&collected.to_bytes(), app)),
        Ok(Err(_)) => (
            413,
            JSON,
            r#"{"error":"the form is larger than 4 KiB or was cut off"}"#.to_owned(),
        ),
        Err(_) => (
            408,
            JSON,
            r#"{"error":"the form did not arrive in time"}"#.to_owned(),
        ),
    };
    let mut response = build(status, content_type, text);
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    if content_type == page::CONTENT_TYPE {
        page_headers(&mut response, app);
    }
    response
}

/// A second wall behind escaping: the page runs no script and loads nothing; its forms
/// (when actions are on) post to itself only.
fn page_headers(response: &mut Response<Full<Bytes>>, app: &App) {
    let policy = match app.csrf_token.is_some() {
        true => "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        false => "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'",
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// `answer()`, or 500 if it panics (counted and logged; the server goes on).
pub fn guarded(
    app: &App,
    answer: impl FnOnce() -> (u16, &'static str, String),
) -> (u16, &'static str, String) {
    catch_unwind(AssertUnwindSafe(answer)).unwrap_or_else(|panic| {
        app.counters.count_panic();
        let message = panic_message(panic.as_ref());
        tracing::error!(error = %message, "status server: answering a request panicked; answered 500");
        let body = r#"{"error":"internal error in the status server; see the reader's log"}"#;
        (500, JSON, body.to_owned())
    })
}

fn build(status: u16, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// True at most once per [`WARN_INTERVAL`].
#[derive(Default)]
struct Throttle(Option<Instant>);

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        let ready = self
            .0
            .is_none_or(|last| now.duration_since(last) >= WARN_INTERVAL);
        if ready {
            self.0 = Some(now);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection limit leaves the worker most descriptors (probe F2): an eighth of
    /// `RLIMIT_NOFILE`, never more than 64 nor fewer than 4.
    #[test]
    fn connections_are_an_eighth_of_the_descriptors_within_bounds() {
        let max = |n| Limits::for_fd_limit(n).connections_max;
        assert_eq!(max(Some(256)), 32);
        assert_eq!(max(Some(1024)), 64);
        assert_eq!(max(Some(1_048_576)), 64);
        assert_eq!(max(Some(20)), 4);
        assert_eq!(max(None), 64);
    }

    /// A panic that escapes the server loop itself is caught, counted and logged, and the
    /// server runs again (probe F1: nothing in the status server may end the reader).
    #[test]
    fn the_server_is_restarted_after_a_panic() {
        let dir = tempfile::tempdir().expect("dir");
        let state = Arc::new(crate::status_server::ReaderState::new(
            dir.path(),
            crate::config::StatusConfig {
                enabled: true,
                addr: "127.0.0.1:0".parse().expect("addr"),
                oldest_pending_degraded_ms: 1,
                disk_free_degraded_bytes: 0,
                critical_incident_degraded_ms: 0,
                actions_enabled: false,
            },
            0,
        ));
        let app = App::new(state, Limits::for_fd_limit(None));
        let mut runs = 0;
        supervise(&app, &AtomicBool::new(false), || {
            runs += 1;
            match runs {
                1 => panic!("a bug in the accept loop"),
                2 => Err(io::Error::other("no descriptors for the runtime")),
                _ => Ok(()),
            }
        });
        assert_eq!(runs, 3);
        assert_eq!(app.counters.snapshot().panics_total, 1);
    }

    #[test]
    fn only_descriptor_and_memory_errors_pause_the_acceptor() {
        for code in [
            libc_code(rustix::io::Errno::MFILE),
            libc_code(rustix::io::Errno::NFILE),
        ] {
            assert!(out_of_resources(&io::Error::from_raw_os_error(code)));
        }
        let aborted = io::Error::from_raw_os_error(libc_code(rustix::io::Errno::CONNABORTED));
        assert!(!out_of_resources(&aborted));
        assert!(!out_of_resources(&io::Error::other("x")));
    }

    fn libc_code(errno: rustix::io::Errno) -> i32 {
        errno.raw_os_error()
    }
}
