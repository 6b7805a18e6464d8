//! What the status server reports on: the reader's state, shared between the reader loop
//! (which swaps in a new worker after a reopen) and the server thread.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use escalation_queue::worker::Incidents;
use escalation_queue::{DeadLetterQueue, Stats, Worker};
use serde::Serialize;

use crate::config::StatusConfig;

/// The state of the reader's hold on the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WalState {
    /// Opening the queue.
    Starting,
    /// Delivering.
    Running,
    /// The worker stopped on an error; the queue is being reopened.
    Failed {
        /// The error.
        error: String,
        /// Since when, unix milliseconds.
        since_unix_ms: u64,
    },
    /// Stopping after a signal.
    Stopping,
}

/// The reader as the status server sees it.
#[derive(Debug)]
pub struct ReaderState {
    queue_dir: PathBuf,
    started: Instant,
    started_unix_ms: u64,
    /// Health thresholds.
    pub thresholds: StatusConfig,
    /// `queue.free_disk_bytes_min`: below it the queue refuses new segments.
    pub free_disk_bytes_min: u64,
    dead_letters: Option<DeadLetterQueue>,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    stats: Arc<Stats>,
    incidents: Option<Arc<Incidents>>,
    wal: WalState,
    restarts: u64,
}

/// A consistent copy of the mutable part.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The current worker's counters.
    pub stats: Arc<Stats>,
    /// The current worker's incidents.
    pub incidents: Option<Arc<Incidents>>,
    /// The hold on the queue.
    pub wal: WalState,
    /// Reopens after errors.
    pub restarts: u64,
}

impl ReaderState {
    /// A reader of `queue_dir` that is starting.
    pub fn new(queue_dir: &Path, thresholds: StatusConfig, free_disk_bytes_min: u64) -> Self {
        Self {
            queue_dir: queue_dir.to_path_buf(),
            started: Instant::now(),
            started_unix_ms: escalation_queue::wal::clock::now_unix_ms(),
            thresholds,
            free_disk_bytes_min,
            dead_letters: None,
            inner: Mutex::new(Inner {
                stats: Arc::new(Stats::default()),
                incidents: None,
                wal: WalState::Starting,
                restarts: 0,
            }),
        }
    }

    /// The queue's dead letters, listed read-only by the status page.
    #[must_use]
    pub fn with_dead_letters(mut self, dead_letters: DeadLetterQueue) -> Self {
        self.dead_letters = Some(dead_letters);
        self
    }

    /// The queue's dead letters, when the page may list them.
    pub fn dead_letters(&self) -> Option<&DeadLetterQueue> {
        self.dead_letters.as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The queue directory.
    pub fn queue_dir(&self) -> &Path {
        &self.queue_dir
    }

    /// Milliseconds since the reader started.
    pub fn uptime_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When the reader started, unix milliseconds.
    pub fn started_unix_ms(&self) -> u64 {
        self.started_unix_ms
    }

    /// `worker` is now delivering.
    pub fn set_running(&self, worker: &Worker) {
        let mut inner = self.lock();
        inner.stats = worker.stats();
        inner.incidents = Some(worker.incidents());
        inner.wal = WalState::Running;
    }

    /// The worker stopped on `error`.
    pub fn set_failed(&self, error: &dyn std::fmt::Display) {
        let mut inner = self.lock();
        let since_unix_ms = match &inner.wal {
            WalState::Failed { since_unix_ms, .. } => *since_unix_ms,
            _ => escalation_queue::wal::clock::now_unix_ms(),
        };
        inner.wal = WalState::Failed {
            error: error.to_string(),
            since_unix_ms,
        };
    }

    /// The queue was reopened after an error.
    pub fn count_restart(&self) {
        self.lock().restarts += 1;
    }

    /// Stopping after a signal.
    pub fn set_stopping(&self) {
        self.lock().wal = WalState::Stopping;
    }

    /// The worker's counters alone (what the page's history samples), without copying
    /// the rest of a [`Snapshot`].
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.lock().stats)
    }

    /// A consistent copy.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            stats: Arc::clone(&inner.stats),
            incidents: inner.incidents.clone(),
            wal: inner.wal.clone(),
            restarts: inner.restarts,
        }
    }
}
