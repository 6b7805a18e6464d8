//! `reader` (the daemon) and `drain` (the batch run): open the worker on the queue and
//! deliver to the Groundlight API.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use escalation_queue::worker::RunEnd;
use escalation_queue::{Error, GroundlightClient, RunSummary, Worker};

use crate::config::{Config, Origin};
use crate::exit::{exit_for, Exit};
use crate::progress::{Fallback, Progress};
use crate::render::{count, duration_ms, error_chain};
use crate::shutdown::Shutdown;
use crate::status_server::{ReaderState, StatusServer};

use super::{print_json, writable_queue_dir};

/// First pause before reopening the queue after an error; it doubles up to the maximum.
const REOPEN_DELAY_MIN: Duration = Duration::from_secs(1);
const REOPEN_DELAY_MAX: Duration = Duration::from_secs(30);
/// Tries and pause while another process seems to hold the queue.
const LOCK_RETRIES: u32 = 5;
const LOCK_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// A run this long resets the reopen delay.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// `reader`: deliver until SIGTERM/SIGINT, serving the status endpoints meanwhile.
pub fn reader(config: &Config) -> anyhow::Result<ExitCode> {
    let client = GroundlightClient::new(config.client_config()?)?;
    let dir = writable_queue_dir(config)?;
    let shutdown = Shutdown::install().context("cannot install the signal handlers")?;
    // Bound before "reader started", so that a taken port is the last word (probe F27).
    let (state, server) = serve_status(dir, config, config.status.enabled)?;
    let outcome = match open_until_ready(dir, config, &state, &shutdown) {
        Ok(Some(worker)) => {
            tracing::info!(
                queue = %dir.display(),
                endpoint = %client.config().endpoint,
                "reader started; stop it with SIGTERM or SIGINT"
            );
            deliver_until_stopped(worker, &client, config, &state, &shutdown)
        }
        Ok(None) => Ok(Exit::Ok.into()),
        Err(e) => Err(e),
    };
    stop_serving(&state, server);
    outcome
}

/// Opens the worker for the daemon, retrying a queue that cannot be opened yet (an I/O
/// error, damage, a foreign file the worker cannot step over) with the reopen backoff,
/// each failure logged and shown by `/health`: a daemon that exits at once would be
/// restarted by its supervisor in a tight crash loop. Usage errors and a queue held by
/// another process (exit 2 and 4) still end the process. `None`: stopped by a signal.
fn open_until_ready(
    dir: &Path,
    config: &Config,
    state: &ReaderState,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<Worker>> {
    let mut delay = REOPEN_DELAY_MIN;
    loop {
        match open_worker(dir, config) {
            Ok(worker) => return Ok(Some(worker)),
            Err(e) if matches!(exit_for(&e), Exit::Locked | Exit::Usage) => return Err(e),
            Err(e) => {
                tracing::error!(error = %error_chain(&e), retry_in_ms = delay.as_millis() as u64, "opening the queue failed; retrying");
                state.set_failed(&error_chain(&e));
            }
        }
        if shutdown.sleep(delay) {
            return Ok(None);
        }
        delay = (delay * 2).min(REOPEN_DELAY_MAX);
    }
}

/// The reader's state, served on `status.addr` when `serve` is true.
fn serve_status(
    dir: &Path,
    config: &Config,
    serve: bool,
) -> anyhow::Result<(Arc<ReaderState>, Option<StatusServer>)> {
    let free_min = config.queue.free_disk_bytes_min;
    let mut state = ReaderState::new(dir, config.status.clone(), free_min);
    // The status page lists the dead letters (read-only); without them it says none.
    match escalation_queue::DeadLetterQueue::open(dir, config.queue.clone()) {
        Ok(queue) => {
            state = state.with_dead_letters(queue.with_retention_ms(config.worker.retention_ms))
        }
        Err(e) => tracing::warn!(error = %e, "the status page cannot list dead letters"),
    }
    let state = Arc::new(state);
    let server = match serve {
        true => Some(StatusServer::start(config.status.addr, Arc::clone(&state))?),
        false => None,
    };
    Ok((state, server))
}

fn stop_serving(state: &ReaderState, server: Option<StatusServer>) {
    state.set_stopping();
    if let Some(server) = server {
        server.stop();
    }
}

/// Runs the worker; after an error (a poisoned writer, an I/O failure) the queue is
/// reopened, which recovers it, after a pause that doubles while errors repeat.
fn deliver_until_stopped(
    mut worker: Worker,
    client: &GroundlightClient,
    config: &Config,
    state: &ReaderState,
    shutdown: &Shutdown,
) -> anyhow::Result<ExitCode> {
    let dir = worker.queue_dir().to_path_buf();
    // One set of counters for the daemon's life, across reopens.
    let stats = worker.stats();
    let mut delay = REOPEN_DELAY_MIN;
    loop {
        state.set_running(&worker);
        shutdown.attach(worker.stop_handle());
        let started = Instant::now();
        let result = worker.run(client);
        drop(worker); // releases the queue before any reopen
        match result {
            Ok(summary) => {
                log_summary("reader stopped", &summary);
                return Ok(Exit::Ok.into());
            }
            Err(e) if shutdown.is_requested() => {
                return Err(e).context("delivery failed while stopping");
            }
            Err(e) => {
                if started.elapsed() >= STABLE_RUN {
                    delay = REOPEN_DELAY_MIN;
                }
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "delivery stopped on an error; the queue will be reopened and recovered");
                state.set_failed(&e);
            }
        }
        worker = loop {
            if shutdown.sleep(delay) {
                return Ok(Exit::Ok.into());
            }
            delay = (delay * 2).min(REOPEN_DELAY_MAX);
            match open_worker(&dir, config) {
                Ok(mut worker) => {
                    worker.continue_stats(Arc::clone(&stats));
                    break worker;
                }
                Err(e) if exit_for(&e) == Exit::Locked => return Err(e),
                Err(e) => {
                    tracing::error!(error = %error_chain(&e), retry_in_ms = delay.as_millis() as u64, "reopening the queue failed");
                    state.set_failed(&error_chain(&e));
                }
            }
        };
        state.count_restart();
        tracing::info!("queue reopened; delivery resumes");
    }
}

/// `drain`: deliver until the queue is empty. Exit 0 if nothing was dead-lettered or
/// expired, 1 if something was or a signal stopped it first. Serves the status endpoints meanwhile when
/// an address is given (`--status-addr` or `status.addr`), so that a batch job can be
/// probed like the daemon.
pub fn drain(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let client = GroundlightClient::new(config.client_config()?)?;
    let dir = writable_queue_dir(config)?;
    let shutdown = Shutdown::install().context("cannot install the signal handlers")?;
    let mut worker = open_worker(dir, config)?;
    shutdown.attach(worker.stop_handle());
    let serve = config.status.enabled && config.origin("status.addr") != Origin::Default;
    let (state, server) = serve_status(dir, config, serve)?;
    state.set_running(&worker);
    tracing::info!(queue = %dir.display(), endpoint = %client.config().endpoint, "draining");
    // Best effort: the bar still works (growing as it goes) if the count fails.
    let expected = super::status::pending_total(dir, config).unwrap_or(0);
    let expected = Arc::new(AtomicU64::new(expected));
    let progress = Progress::start(worker.stats(), expected, Fallback::Quiet);
    let result = worker.drain(&client);
    // The worker's depth gauge lags; the last frame shows what is really left.
    let left = match &result {
        Ok(summary) if summary.ended == RunEnd::Empty => Some(0),
        _ => super::status::pending_total(dir, config).ok(),
    };
    progress.finish(left);
    stop_serving(&state, server);
    let summary = result.context("drain failed")?;
    if json {
        print_json(&summary)?;
    } else {
        println!(
            "drained in {}: {} delivered, {} dead-lettered, {} expired, {} skipped, {}",
            duration_ms(summary.elapsed_ms),
            summary.delivered,
            summary.dead_lettered,
            summary.expired,
            count(summary.duplicates, "duplicate"),
            count(summary.retried, "retry")
        );
    }
    if summary.dead_lettered > 0 {
        eprintln!(
            "{} dead-lettered: see `escalation-queue dlq list`",
            count(summary.dead_lettered, "escalation")
        );
        return Ok(Exit::WorkFailed.into());
    }
    if summary.expired > 0 {
        eprintln!(
            "{} expired undelivered (older than worker.retention_ms)",
            count(summary.expired, "escalation")
        );
        return Ok(Exit::WorkFailed.into());
    }
    if summary.ended == RunEnd::Stopped {
        eprintln!("drain interrupted before the queue was empty");
        return Ok(Exit::WorkFailed.into());
    }
    Ok(Exit::Ok.into())
}

/// Opens the worker. "Another worker is running" is retried for about a second first:
/// `status` and `inspect` probe the reader's lock by taking it for an instant, and a
/// reader starting in that instant must not give up.
fn open_worker(dir: &Path, config: &Config) -> anyhow::Result<Worker> {
    let mut tries_left = LOCK_RETRIES;
    loop {
        match Worker::open(dir, &config.queue, config.worker.clone()) {
            Err(Error::WorkerRunning { .. }) if tries_left > 0 => {
                tries_left -= 1;
                std::thread::sleep(LOCK_RETRY_PAUSE);
            }
            result => {
                return result.with_context(|| {
                    format!("cannot open the queue {} for delivery", dir.display())
                })
            }
        }
    }
}

fn log_summary(what: &str, s: &RunSummary) {
    tracing::info!(
        delivered = s.delivered,
        dead_lettered = s.dead_lettered,
        expired = s.expired,
        duplicates = s.duplicates,
        retried = s.retried,
        elapsed_ms = s.elapsed_ms,
        "{what}"
    );
}
