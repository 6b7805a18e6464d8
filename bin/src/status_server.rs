//! The reader's status server: `GET /health`, `GET /stats` (JSON) and `GET /metrics`
//! (Prometheus text). Anything else gets 404, other methods 405. One thread, blocking
//! `tiny_http`; every answer is computed from in-memory state (plus one `statvfs`), so a
//! scrape never touches the queue's files.

mod health;
mod metrics;
mod state;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::registry::Registry;
use serde_json::json;
use tiny_http::{Header, Request, Response, Server};

pub use health::Health;
pub use state::ReaderState;

use health::evaluate;

use crate::exit::UsageError;

/// How often the server thread checks whether it should stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A running status server; [`stop`](Self::stop) or drop ends it.
#[derive(Debug)]
pub struct StatusServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StatusServer {
    /// Binds `addr` and serves `state`.
    pub fn start(addr: SocketAddr, state: Arc<ReaderState>) -> Result<Self, UsageError> {
        let server = Server::http(addr).map_err(|e| {
            UsageError::new(format!("cannot serve status on {addr} (status.addr): {e}"))
        })?;
        let bound = server.server_addr().to_ip().unwrap_or(addr);
        if !bound.ip().is_loopback() {
            tracing::warn!(addr = %bound, "the status server listens beyond loopback: anyone who can reach it sees queue statistics");
        }
        tracing::info!(addr = %bound, "status server listening (/health, /stats, /metrics)");
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopping);
        let registry = metrics::registry(Arc::clone(&state));
        let thread = std::thread::Builder::new()
            .name("status-server".into())
            .spawn(move || serve(&server, &state, &registry, &flag))
            .map_err(|e| UsageError::new(format!("cannot start the status server: {e}")))?;
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

fn serve(server: &Server, state: &ReaderState, registry: &Registry, stopping: &AtomicBool) {
    while !stopping.load(Ordering::Acquire) {
        match server.recv_timeout(POLL_INTERVAL) {
            Ok(Some(request)) => respond(request, state, registry),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "status server: receiving a request failed");
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

/// What one request gets: status, content type, body.
pub fn route(
    method: &str,
    path: &str,
    state: &ReaderState,
    registry: &Registry,
) -> (u16, &'static str, String) {
    const JSON: &str = "application/json";
    let path = path.split('?').next().unwrap_or("");
    if !matches!(path, "/health" | "/stats" | "/metrics") {
        let body =
            json!({ "error": format!("no such path {path}; try /health, /stats or /metrics") });
        return (404, JSON, body.to_string());
    }
    if method != "GET" && method != "HEAD" {
        let body = json!({ "error": format!("method {method} not allowed; use GET") });
        return (405, JSON, body.to_string());
    }
    match path {
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
            });
            (200, JSON, body.to_string())
        }
        _ => match metrics::encode(registry) {
            Ok(text) => (200, metrics::CONTENT_TYPE, text),
            Err(_) => (
                500,
                JSON,
                json!({ "error": "encoding metrics failed" }).to_string(),
            ),
        },
    }
}

fn respond(request: Request, state: &ReaderState, registry: &Registry) {
    let method = request.method().as_str().to_owned();
    let (status, content_type, body) = route(&method, request.url(), state, registry);
    let mut response = Response::from_string(body).with_status_code(status);
    if let Ok(header) = Header::from_bytes("Content-Type", content_type) {
        response.add_header(header);
    }
    if status == 405 {
        if let Ok(header) = Header::from_bytes("Allow", "GET, HEAD") {
            response.add_header(header);
        }
    }
    // tiny_http leaves the body out of answers to HEAD.
    if let Err(e) = request.respond(response) {
        tracing::debug!(error = %e, "status server: the client went away");
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
        };
        let state = Arc::new(ReaderState::new(dir.path(), thresholds, 0));
        (dir, state)
    }

    #[test]
    fn routes_answer_404_and_405_for_the_rest() {
        let (_dir, state) = state();
        let registry = metrics::registry(Arc::clone(&state));
        assert_eq!(route("GET", "/nope", &state, &registry).0, 404);
        assert_eq!(route("POST", "/health", &state, &registry).0, 405);
        assert_eq!(route("DELETE", "/metrics", &state, &registry).0, 405);
        let (status, _, body) = route("GET", "/stats?x=1", &state, &registry);
        assert_eq!(status, 200);
        let stats: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(stats["worker"]["delivered"], 0);
        let (status, content_type, _) = route("GET", "/metrics", &state, &registry);
        assert_eq!((status, content_type), (200, metrics::CONTENT_TYPE));
    }
}
