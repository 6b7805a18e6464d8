//! [`MockCloud`]: a real HTTP/1.1 server on loopback that stands in for the Groundlight API,
//! with scripted and random faults, for tests, demos and the `mock-cloud` command.
//!
//! It is hand-written on `std::net` (a thread per connection, keep-alive) so that resets,
//! dropped responses and refused connections happen exactly when a test asks for them.

mod api;
mod faults;
mod http;
mod record;

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use faults::{FaultAction, FaultPlan, OutageMode, RandomFaults};
pub use record::{MockOutcome, RecordedRequest, BODY_PREFIX_LEN_BYTES};

use api::Store;
use faults::FaultState;
use http::{ReadOutcome, Request, Response};
use record::Disposition;

/// How often blocked threads look at the shutdown flag.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Open connections served at once; further ones are reset.
const CONNECTIONS_MAX: usize = 256;

/// Settings of a [`MockCloud`].
#[derive(Clone, Debug)]
pub struct MockCloudConfig {
    /// Where to listen. Default `127.0.0.1:0` (any free port; see [`MockCloud::addr`]).
    pub bind_addr: SocketAddr,
    /// The token requests must carry in `x-api-token`.
    pub api_token: String,
    /// Faults applied from the start.
    pub faults: FaultPlan,
    /// Largest request body accepted (413 beyond). Default 32 MiB.
    pub body_size_max_bytes: usize,
    /// An idle keep-alive connection is closed after this. Default 30000.
    pub idle_timeout_ms: u64,
    /// Requests kept for [`MockCloud::requests`]; older ones are dropped. Default 100000.
    pub recorded_requests_max: usize,
    /// Detectors whose submissions get HTTP 400 (nothing is created). Default none.
    pub rejected_detectors: Vec<String>,
}

impl MockCloudConfig {
    /// The token `mock-cloud` accepts when none is given: shaped like a real one (its first
    /// 20 characters are `[A-Za-z0-9_]`), so the Groundlight SDK's format check passes.
    pub const DEFAULT_TOKEN: &'static str = "api_mockcloud_default_token_0000";

    /// Defaults with the given token.
    pub fn new(api_token: impl Into<String>) -> Self {
        Self {
            bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_token: api_token.into(),
            faults: FaultPlan::default(),
            body_size_max_bytes: 32 * 1024 * 1024,
            idle_timeout_ms: 30_000,
            recorded_requests_max: 100_000,
            rejected_detectors: Vec::new(),
        }
    }
}

struct State {
    token: String,
    store: Store,
    faults: FaultState,
    requests: std::collections::VecDeque<RecordedRequest>,
}

struct Shared {
    config: MockCloudConfig,
    state: Mutex<State>,
    stopping: AtomicBool,
    next_connection_id: AtomicU64,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn refusing(&self) -> bool {
        self.lock().faults.outage(Instant::now()) == Some(OutageMode::Refuse)
    }
}

/// The mock cloud server. Stops on [`shutdown`](Self::shutdown) or drop.
pub struct MockCloud {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockCloud")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockCloud {
    /// Binds and starts serving.
    pub fn start(config: MockCloudConfig) -> io::Result<Self> {
        let listener = bind_nonblocking(config.bind_addr)?;
        let addr = listener.local_addr()?;
        let state = State {
            token: config.api_token.clone(),
            store: Store::default(),
            faults: FaultState::new(config.faults.clone()),
            requests: std::collections::VecDeque::new(),
        };
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(state),
            stopping: AtomicBool::new(false),
            next_connection_id: AtomicU64::new(1),
            connections: Mutex::new(Vec::new()),
        });
        let for_thread = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name("mock-cloud-accept".into())
            .spawn(move || accept_loop(listener, addr, &for_thread))?;
        Ok(Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An endpoint for [`ClientConfig`](crate::ClientConfig): `http://ADDR/device-api`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/device-api", self.addr)
    }

    /// Every request so far (up to `recorded_requests_max`), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.iter().cloned().collect()
    }

    /// Ids of the image queries created, in creation order.
    pub fn image_query_ids(&self) -> Vec<String> {
        self.shared.lock().store.order.clone()
    }

    /// Scripts actions for the next requests, after any already queued.
    pub fn push_faults(&self, actions: impl IntoIterator<Item = FaultAction>) {
        self.shared.lock().faults.push(actions);
    }

    /// Replaces the random faults (`None` turns them off).
    pub fn set_random_faults(&self, random: Option<RandomFaults>) {
        self.shared.lock().faults.set_random(random);
    }

    /// Fails every request for `duration`.
    pub fn start_outage(&self, duration: Duration, mode: OutageMode) {
        self.shared
            .lock()
            .faults
            .start_outage(Instant::now(), duration, mode);
    }

    /// Ends an outage early.
    pub fn end_outage(&self) {
        self.shared.lock().faults.end_outage();
    }

    /// Changes the accepted token (token rotation).
    pub fn set_api_token(&self, token: impl Into<String>) {
        self.shared.lock().token = token.into();
    }

    /// Stops accepting, closes connections and joins every thread (bounded by the poll
    /// interval plus any injected delay in progress). Idempotent.
    pub fn shutdown(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let handles = std::mem::take(
            &mut *self
                .shared
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for handle in handles {
            let _ = handle.join();
        }
    }
}

impl Drop for MockCloud {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Accepts connections; during a `Refuse` outage the listener is closed so connects fail.
fn accept_loop(listener: TcpListener, addr: SocketAddr, shared: &Arc<Shared>) {
    let mut listener = Some(listener);
    let mut rebind_failures = 0_u64;
    while !shared.stopping() {
        let refusing = shared.refusing();
        if refusing && listener.is_some() {
            listener = None;
        } else if !refusing && listener.is_none() {
            match bind_nonblocking(addr) {
                Ok(rebound) => {
                    listener = Some(rebound);
                    rebind_failures = 0;
                }
                Err(e) => {
                    if rebind_failures == 0 {
                        tracing::warn!(%addr, error = %e, "mock cloud: rebinding after an outage failed; retrying");
                    }
                    rebind_failures += 1;
                }
            }
        }
        let Some(active) = &listener else {
            thread::sleep(POLL_INTERVAL / 4);
            continue;
        };
        match active.accept() {
            Ok((stream, _)) => spawn_connection(stream, shared),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL_INTERVAL / 4),
            Err(e) => {
                tracing::warn!(error = %e, "mock cloud: accept failed");
                thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

fn bind_nonblocking(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn spawn_connection(stream: TcpStream, shared: &Arc<Shared>) {
    let mut connections = shared
        .connections
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    connections.retain(|h| !h.is_finished());
    if connections.len() >= CONNECTIONS_MAX {
        tracing::warn!(
            max = CONNECTIONS_MAX,
            "mock cloud: too many connections, resetting one"
        );
        return reset(stream);
    }
    let id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
    let for_thread = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(format!("mock-cloud-conn-{id}"))
        .spawn(move || serve_connection(stream, id, &for_thread));
    match spawned {
        Ok(handle) => connections.push(handle),
        Err(e) => tracing::warn!(error = %e, "mock cloud: could not spawn a connection thread"),
    }
}

fn serve_connection(mut stream: TcpStream, connection_id: u64, shared: &Shared) {
    if stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(POLL_INTERVAL)))
        .is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    let idle_timeout = Duration::from_millis(shared.config.idle_timeout_ms);
    let mut buf = Vec::new();
    loop {
        let idle_deadline = Instant::now() + idle_timeout;
        let keep_waiting =
            |now: Instant| now < idle_deadline && !shared.stopping() && !shared.refusing();
        let outcome = http::read_request(
            &mut stream,
            &mut buf,
            shared.config.body_size_max_bytes,
            &keep_waiting,
        );
        let request = match outcome {
            Ok(ReadOutcome::Request(request)) => request,
            Ok(ReadOutcome::Reject { status, reason }) => {
                let _ = http::write_response(
                    &mut stream,
                    &Response::json(status, &serde_json::json!({ "detail": reason })),
                    false,
                );
                return;
            }
            Ok(ReadOutcome::Closed) if shared.refusing() => return reset(stream),
            Ok(ReadOutcome::Closed) | Err(_) => return,
        };
        if !respond(&mut stream, connection_id, request, shared) {
            return;
        }
    }
}

/// Applies the fault plan to one request; returns whether the connection stays open.
fn respond(stream: &mut TcpStream, connection_id: u64, request: Request, shared: &Shared) -> bool {
    let mut state = shared.lock();
    let action = state.faults.next_action(Instant::now());
    let token_matched = request.header("x-api-token") == Some(state.token.as_str());
    let (response, created) = match &action {
        FaultAction::Respond {
            status,
            retry_after,
        } => {
            let mut response =
                Response::json(*status, &serde_json::json!({ "detail": "injected fault" }));
            if let Some(value) = retry_after {
                response.headers.push(("Retry-After", value.clone()));
            }
            (Some(response), None)
        }
        FaultAction::Reset => (None, None),
        FaultAction::Pass | FaultAction::Delay { .. } | FaultAction::DropResponse => {
            let state = &mut *state;
            let rules = api::Rules {
                token: &state.token,
                rejected_detectors: &shared.config.rejected_detectors,
            };
            let handled = api::handle(&request, &rules, &mut state.store);
            (Some(handled.response), handled.created_id)
        }
    };
    let status = response.as_ref().map_or(0, |r| r.status);
    let outcome = match action {
        FaultAction::Reset => MockOutcome::Reset,
        FaultAction::DropResponse => MockOutcome::ResponseDropped { status },
        FaultAction::Delay { delay_ms } => MockOutcome::Responded { status, delay_ms },
        _ => MockOutcome::Responded {
            status,
            delay_ms: 0,
        },
    };
    let disposition = Disposition {
        connection_id,
        token_matched,
        outcome: outcome.clone(),
        created_image_query_id: created,
    };
    let requests_max = shared.config.recorded_requests_max;
    record::record(&mut state.requests, requests_max, &request, disposition);
    drop(state);
    match (outcome, response) {
        (MockOutcome::Responded { delay_ms, .. }, Some(response)) => {
            sleep_unless_stopping(Duration::from_millis(delay_ms), shared);
            http::write_response(stream, &response, request.keep_alive).is_ok()
                && request.keep_alive
        }
        (MockOutcome::ResponseDropped { .. }, _) => {
            let _ = stream.shutdown(Shutdown::Both);
            false
        }
        _ => {
            if let Ok(clone) = stream.try_clone() {
                reset(clone);
            }
            false
        }
    }
}

/// Closes with RST (SO_LINGER 0) instead of FIN, so the peer sees "connection reset".
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

fn sleep_unless_stopping(duration: Duration, shared: &Shared) {
    let deadline = Instant::now() + duration;
    while !shared.stopping() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        thread::sleep((deadline - now).min(POLL_INTERVAL));
    }
}
