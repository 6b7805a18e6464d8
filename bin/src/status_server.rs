//! The reader's status server: `GET /` (the HTML status page), `GET /health`, `GET /stats`
//! (JSON) and `GET /metrics` (Prometheus text). Anything else gets 404, other methods 405,
//! a request with a body 413. Every answer is computed from in-memory state (plus one
//! `statvfs`), so a scrape never touches the queue's files; only the page lists the dead
//! letters, read-only and cached (see `page`). The network side (`serve`) is hyper's HTTP/1 server on
//! a single-threaded tokio runtime in one thread, with every client-controlled cost
//! bounded and panics caught, so that no client can end the reader or take the worker's
//! file descriptors.

mod actions;
mod health;
mod history;
mod metrics;
mod page;
mod serve;
mod state;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus_client::registry::Registry;
use serde_json::json;

pub use health::Health;
pub use state::ReaderState;

use health::evaluate;
use serve::{Counters, Limits};

use crate::exit::UsageError;

const JSON: &str = "application/json";

/// What a request is answered from.
#[derive(Debug)]
pub struct App {
    state: Arc<ReaderState>,
    registry: Registry,
    limits: Limits,
    counters: Counters,
    page: page::PageState,
    /// The CSRF token of the page's forms, when `status.actions_enabled`.
    csrf_token: Option<String>,
}

impl App {
    fn new(state: Arc<ReaderState>, limits: Limits) -> Self {
        let csrf_token = match state.thresholds.actions_enabled {
            true => actions::new_token(),
            false => None,
        };
        match (state.thresholds.actions_enabled, &csrf_token) {
            (true, Some(_)) => tracing::warn!(
                "status.actions_enabled: the status page offers replay and purge of dead letters"
            ),
            (true, None) => tracing::error!(
                "status.actions_enabled, but no CSRF token could be made (/dev/urandom): the page stays read-only"
            ),
            (false, _) => {}
        }
        Self {
            registry: metrics::registry(Arc::clone(&state)),
            state,
            limits,
            counters: Counters::default(),
            page: page::PageState::default(),
            csrf_token,
        }
    }
}

/// A running status server; [`stop`](Self::stop) or drop ends it.
#[derive(Debug)]
pub struct StatusServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StatusServer {
    /// Binds `addr` and serves `state`. Binding happens here, before the caller goes on,
    /// so an address in use is a clear error at start-up.
    pub fn start(addr: SocketAddr, state: Arc<ReaderState>) -> Result<Self, UsageError> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            UsageError::new(format!(
                "cannot serve status on {addr} (status.addr): {e}; if another process listens there, \
                 choose another address with --status-addr or turn the server off with --set status.enabled=false"
            ))
        })?;
        let bound = listener.local_addr().unwrap_or(addr);
        if !bound.ip().is_loopback() {
            tracing::warn!(addr = %bound, "the status server listens beyond loopback: anyone who can reach it sees queue statistics");
        }
        let limits = Limits::for_this_process();
        let app = Arc::new(App::new(state, limits));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = serve::spawn(listener, app, Arc::clone(&stopping))
            .map_err(|e| UsageError::new(format!("cannot start the status server: {e}")))?;
        tracing::info!(
            addr = %bound,
            connections_max = limits.connections_max,
            "status server listening (/, /health, /stats, /metrics)"
        );
        Ok(Self {
            addr: bound,
            stopping,
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What one request gets: status, content type, body. `target` is the path with its
/// query, if any.
fn route(method: &str, target: &str, app: &App) -> (u16, &'static str, String) {
    let state = &app.state;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !matches!(path, "/" | "/health" | "/stats" | "/metrics") {
        let body = json!({
            "error": format!("no such path {path}; try / (the status page), /health, /stats or /metrics")
        });
        return (404, JSON, body.to_string());
    }
    if method != "GET" && method != "HEAD" {
        let body = json!({ "error": format!("method {method} not allowed; use GET") });
        return (405, JSON, body.to_string());
    }
    match path {
        "/" => (
            200,
            page::CONTENT_TYPE,
            page::render(state, &app.page, query, app.csrf_token.as_deref()),
        ),
        "/health" => {
            let health = evaluate(state);
            (health.status.http_status(), JSON, to_json(&health))
        }
        "/stats" => {
            let snap = state.snapshot();
            let body = json!({
                "queue_dir": state.queue_dir(),
                "started_at_unix_ms": state.started_unix_ms(),
                "uptime_ms": state.uptime_ms(),
                "reader": { "wal": snap.wal, "restarts": snap.restarts },
                "health": evaluate(state).status,
                "worker": snap.stats.snapshot(),
                "status_server": {
                    "limits": app.limits,
                    "counters": app.counters.snapshot(),
                },
            });
            (200, JSON, body.to_string())
        }
        _ => match metrics::encode(&app.registry) {
            Ok(text) => (200, metrics::CONTENT_TYPE, text),
            Err(_) => (
                500,
                JSON,
                json!({ "error": "encoding metrics failed" }).to_string(),
            ),
        },
    }
}

/// The answer to `POST /actions` with `body` (already read, at most
/// [`actions::BODY_BYTES_MAX`]); 404 when actions are off.
fn route_action(body: &[u8], app: &App) -> (u16, &'static str, String) {
    match &app.csrf_token {
        Some(token) => {
            let (status, html) = actions::handle(&app.state, token, body);
            app.page.forget_dead_letters();
            (status, page::CONTENT_TYPE, html)
        }
        None => (
            404,
            JSON,
            json!({ "error": "no such path; actions are off (status.actions_enabled)" })
                .to_string(),
        ),
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| json!({ "error": e.to_string() }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StatusConfig;

    fn state() -> (tempfile::TempDir, Arc<ReaderState>) {
        let dir = tempfile::tempdir().expect("dir");
        let thresholds = StatusConfig {
            enabled: true,
            addr: "127.0.0.1:0".parse().expect("addr"),
            oldest_pending_degraded_ms: 600_000,
            disk_free_degraded_bytes: 0,
            critical_incident_degraded_ms: 0,
            actions_enabled: false,
        };
        let state = Arc::new(ReaderState::new(dir.path(), thresholds, 0));
        (dir, state)
    }

    fn app() -> (tempfile::TempDir, App) {
        let (dir, state) = state();
        (dir, App::new(state, Limits::for_fd_limit(Some(1024))))
    }

    #[test]
    fn routes_answer_404_and_405_for_the_rest() {
        let (_dir, app) = app();
        assert_eq!(route("GET", "/nope", &app).0, 404);
        assert_eq!(route("POST", "/", &app).0, 405);
        let (status, content_type, body) = route("GET", "/?page=2", &app);
        assert_eq!((status, content_type), (200, page::CONTENT_TYPE));
        assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
        assert_eq!(route("POST", "/health", &app).0, 405);
        assert_eq!(route("DELETE", "/metrics", &app).0, 405);
        let (status, _, body) = route("GET", "/stats?x=1", &app);
        assert_eq!(status, 200);
        let stats: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(stats["worker"]["delivered"], 0);
        assert_eq!(stats["status_server"]["limits"]["connections_max"], 64);
        assert_eq!(stats["status_server"]["counters"]["panics_total"], 0);
        let (status, content_type, _) = route("GET", "/metrics", &app);
        assert_eq!((status, content_type), (200, metrics::CONTENT_TYPE));
    }

    /// A panic while answering a request becomes a 500 and a counted, logged error; it
    /// never unwinds into the server loop, let alone the reader (probe F1: the status
    /// server must never take the reader down).
    #[test]
    fn a_panic_while_answering_is_a_500_not_a_crash() {
        let (_dir, app) = app();
        let (status, content_type, body) = serve::guarded(&app, || panic!("a bug in a route"));
        assert_eq!((status, content_type), (500, JSON));
        assert!(body.contains("internal error"), "{body}");
        assert_eq!(app.counters.snapshot().panics_total, 1);
        assert_eq!(route("GET", "/health", &app).0, 200);
    }

    /// Whatever a client puts in the request line, routing answers one of its statuses
    /// and never panics (hyper parses the bytes; this is the part of parsing that is ours).
    #[test]
    fn any_method_and_path_gets_a_defined_answer() {
        let (_dir, app) = app();
        let paths = [
            "",
            "?",
            "/health?",
            "//health",
            "/health/../stats",
            "/%00",
            "/\u{202e}",
            "*",
        ];
        let methods = ["GET", "HEAD", "PUT", "get", "CONNECT", "X-CUSTOM"];
        for path in paths {
            for method in methods {
                let (status, _, _) = route(method, path, &app);
                assert!(
                    [200, 404, 405, 503].contains(&status),
                    "{method} {path}: {status}"
                );
            }
        }
    }
}
