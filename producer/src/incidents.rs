//! Incidents: what happened, how urgent, with full context; written to the `tracing` log
//! and the bounded `incidents.jsonl`, deduplicated by key within a window.
//!
//! This is the part of human escalation a producer needs (a writer that is poisoned or
//! finds the disk full raises a CRITICAL incident). The worker's manager
//! (`escalation_queue_worker::Incidents`) adds the webhook, the thresholds and the spike
//! detector on top of the same [`IncidentRecorder`], so every process of a queue writes
//! the same lines and shares the same windows (seeded from the log, by any process).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

/// Default dedupe window: a repeat of a key within 15 minutes is counted, not raised.
pub const DEFAULT_DEDUPE_WINDOW_MS: u64 = 15 * 60_000;
/// Default size at which `incidents.jsonl` is rotated: 1 MiB.
pub const DEFAULT_JSONL_MAX_BYTES: u64 = 1 << 20;
/// Default number of incidents kept in memory for [`IncidentRecorder::recent`].
pub const DEFAULT_RECENT_MAX: usize = 256;

/// How urgently a human must look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Log for review.
    Low,
    /// Look within the hour.
    Medium,
    /// Look within 15 minutes.
    High,
    /// Now: data or delivery is at risk.
    Critical,
}

/// What happened. Each kind has a fixed severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IncidentKind {
    /// The wal found damaged durable bytes, a sequence gap or a cursor past the end.
    Corruption,
    /// A sync failed; the writer acknowledges nothing more until reopened.
    WriterPoisoned,
    /// The disk or the queue's byte limit is full.
    DiskFull,
    /// The cloud rejected the API token (401/403); delivery is paused.
    AuthFailure,
    /// The same non-retryable answer for one escalation after another (e.g. 404 for all:
    /// a wrong endpoint path); delivery is paused instead of dead-lettering the queue.
    SystemicRejection,
    /// No answer from the cloud for longer than the threshold.
    CloudUnreachable,
    /// Failures per minute above the spike factor × the moving baseline.
    ErrorRateSpike,
    /// The head of the queue is older than the threshold.
    BacklogTooOld,
    /// An item was moved to the dead-letter queue.
    DeadLettered,
    /// An item grew older than the retention age before it could be delivered: dropped.
    Expired,
    /// An item was delivered after retryable failures.
    TransientRecovered,
}

impl IncidentKind {
    /// The kind's severity.
    pub fn severity(self) -> Severity {
        match self {
            Self::Corruption
            | Self::WriterPoisoned
            | Self::DiskFull
            | Self::AuthFailure
            | Self::SystemicRejection => Severity::Critical,
            Self::CloudUnreachable | Self::ErrorRateSpike | Self::BacklogTooOld => Severity::High,
            Self::DeadLettered | Self::Expired => Severity::Medium,
            Self::TransientRecovered => Severity::Low,
        }
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Corruption => "corruption",
            Self::WriterPoisoned => "writer_poisoned",
            Self::DiskFull => "disk_full",
            Self::AuthFailure => "auth_failure",
            Self::SystemicRejection => "systemic_rejection",
            Self::CloudUnreachable => "cloud_unreachable",
            Self::ErrorRateSpike => "error_rate_spike",
            Self::BacklogTooOld => "backlog_too_old",
            Self::DeadLettered => "dead_lettered",
            Self::Expired => "expired",
            Self::TransientRecovered => "transient_recovered",
        }
    }
}

impl fmt::Display for IncidentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of the system when an incident was raised.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentContext {
    /// Records waiting in the wal.
    pub queue_depth: u64,
    /// Age of the head item, in milliseconds.
    pub oldest_pending_age_ms: u64,
    /// `closed`, `open` or `half_open` (`unknown` outside the worker).
    pub circuit_state: String,
    /// Whether delivery is paused for auth.
    pub paused_for_auth: bool,
    /// The configuration that matters (policy, backoff, breaker, budgets, thresholds).
    pub config: serde_json::Value,
}

/// What a caller reports; [`IncidentRecorder::raise`] adds the id, time and context.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentDraft {
    /// What happened.
    pub kind: IncidentKind,
    /// Distinguishes incidents of one kind that must not be merged (e.g. the segment of a
    /// corruption, the reason of a dead letter). Empty merges all of the kind.
    pub subject: String,
    /// One line for a human.
    pub title: String,
    /// The error, when there is one.
    pub error: Option<String>,
    /// What was tried before escalating.
    pub tried: Vec<String>,
    /// Kind-specific details (ids, attempts, thresholds).
    pub details: serde_json::Value,
}

impl IncidentDraft {
    /// A draft with no subject, error, history or details.
    pub fn new(kind: IncidentKind, title: impl Into<String>) -> Self {
        Self {
            kind,
            subject: String::new(),
            title: title.into(),
            error: None,
            tried: Vec::new(),
            details: serde_json::Value::Null,
        }
    }

    /// Sets the subject.
    #[must_use]
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// Sets the error.
    #[must_use]
    pub fn error(mut self, error: impl fmt::Display) -> Self {
        self.error = Some(error.to_string());
        self
    }

    /// Adds what was tried.
    #[must_use]
    pub fn tried(mut self, tried: impl IntoIterator<Item = String>) -> Self {
        self.tried.extend(tried);
        self
    }

    /// Sets the details.
    #[must_use]
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// The dedupe key: the kind, then `:subject` when there is one.
    pub fn key(&self) -> String {
        if self.subject.is_empty() {
            self.kind.as_str().to_owned()
        } else {
            format!("{}:{}", self.kind, self.subject)
        }
    }
}

/// One incident as written to the sinks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `inc_<unix ms>_<n>`.
    pub id: String,
    /// The dedupe key: kind, then `:subject` when there is one.
    pub key: String,
    /// What happened.
    pub kind: IncidentKind,
    /// How urgent.
    pub severity: Severity,
    /// One line for a human.
    pub title: String,
    /// The error.
    pub error: Option<String>,
    /// What was tried.
    pub tried: Vec<String>,
    /// The state of the system.
    pub context: IncidentContext,
    /// Kind-specific details.
    pub details: serde_json::Value,
    /// When it was raised, unix milliseconds.
    pub at_unix_ms: u64,
    /// Repeats of this key suppressed in the previous dedupe window.
    pub repeats_suppressed: u64,
}

/// The bounded incident file: one JSON object per line. When a line would take the file
/// past `max_bytes`, the file is renamed to `<name>.1` (replacing an older one) and a new
/// file is started, so at most about twice `max_bytes` is kept. Several processes may
/// append (each line is one `write` in append mode).
#[derive(Clone, Debug)]
pub struct IncidentLog {
    path: PathBuf,
    max_bytes: u64,
}

impl IncidentLog {
    /// A log at `path`, rotated at `max_bytes` (minimum 4 KiB).
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            path: path.into(),
            max_bytes: max_bytes.max(4096),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one incident as a line and syncs it (incidents are rare; a CRITICAL one
    /// should survive the crash that may follow it).
    pub fn append(&self, incident: &Incident) -> io::Result<()> {
        let mut line = serde_json::to_vec(incident).map_err(io::Error::other)?;
        line.push(b'\n');
        let len = fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if len > 0 && len + line.len() as u64 > self.max_bytes {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            fs::rename(&self.path, &old)?;
        }
        let mut file = crate::layout::open_file(
            OpenOptions::new().create(true).append(true).mode(0o600),
            &self.path,
        )?;
        file.write_all(&line)?;
        file.sync_data()
    }

    /// Every incident in the file (and its rotated predecessor), oldest first. Lines that
    /// do not parse (a torn last line) are skipped.
    pub fn read_all(&self) -> io::Result<Vec<Incident>> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        let mut out = Vec::new();
        for path in [PathBuf::from(old), self.path.clone()] {
            let text = match crate::layout::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
        }
        Ok(out)
    }
}

/// What [`IncidentRecorder::raise`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Raised {
    /// A new incident, sent to every sink.
    New(Box<Incident>),
    /// A repeat within the window: only counted.
    Repeat {
        /// Occurrences in the current window, this one included.
        count: u64,
    },
}

#[derive(Debug, Default)]
struct State {
    /// Whether the windows were seeded from the incident log (done at the first raise).
    seeded: bool,
    windows: HashMap<String, Window>,
    recent: VecDeque<Incident>,
    next_id: u64,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    opened_ms: u64,
    count: u64,
}

/// Dedupe, then the `tracing` log and the incident file. Thread-safe.
#[derive(Debug)]
pub struct IncidentRecorder {
    dedupe_window_ms: u64,
    jsonl_max_bytes: u64,
    recent_max: usize,
    log: Option<IncidentLog>,
    state: Mutex<State>,
}

impl IncidentRecorder {
    /// A recorder writing to `jsonl_path` (when given): repeats of a key within
    /// `dedupe_window_ms` are counted, the file rotates at `jsonl_max_bytes`, and the
    /// latest `recent_max` incidents are kept in memory.
    pub fn new(
        dedupe_window_ms: u64,
        jsonl_max_bytes: u64,
        recent_max: usize,
        jsonl_path: Option<PathBuf>,
    ) -> Self {
        Self {
            dedupe_window_ms,
            jsonl_max_bytes,
            recent_max,
            log: jsonl_path.map(|p| IncidentLog::new(p, jsonl_max_bytes)),
            state: Mutex::new(State::default()),
        }
    }

    /// A recorder with the default window, rotation size and memory.
    pub fn with_defaults(jsonl_path: Option<PathBuf>) -> Self {
        Self::new(
            DEFAULT_DEDUPE_WINDOW_MS,
            DEFAULT_JSONL_MAX_BYTES,
            DEFAULT_RECENT_MAX,
            jsonl_path,
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Raises `draft` at `now_unix_ms` with `context`, unless its key was raised within the
    /// dedupe window (then it is only counted).
    pub fn raise(
        &self,
        draft: IncidentDraft,
        context: IncidentContext,
        now_unix_ms: u64,
    ) -> Raised {
        let key = draft.key();
        let mut state = self.lock();
        if !state.seeded {
            state.seeded = true;
            self.seed_from_log(&mut state, now_unix_ms);
        }
        let window_ms = self.dedupe_window_ms;
        let previous = state.windows.get(&key).copied();
        if let Some(w) = previous {
            if now_unix_ms.saturating_sub(w.opened_ms) < window_ms {
                let count = w.count + 1;
                state.windows.insert(key, Window { count, ..w });
                return Raised::Repeat { count };
            }
        }
        if state.windows.len() >= 4096 {
            state
                .windows
                .retain(|_, w| now_unix_ms.saturating_sub(w.opened_ms) < window_ms);
        }
        let window = Window {
            opened_ms: now_unix_ms,
            count: 1,
        };
        state.windows.insert(key.clone(), window);
        state.next_id += 1;
        let incident = Incident {
            id: format!("inc_{now_unix_ms}_{}", state.next_id),
            key,
            kind: draft.kind,
            severity: draft.kind.severity(),
            title: draft.title,
            error: draft.error,
            tried: draft.tried,
            context,
            details: draft.details,
            at_unix_ms: now_unix_ms,
            repeats_suppressed: previous.map_or(0, |w| w.count.saturating_sub(1)),
        };
        state.recent.push_back(incident.clone());
        while state.recent.len() > self.recent_max.max(1) {
            state.recent.pop_front();
        }
        drop(state);
        self.emit(&incident);
        Raised::New(Box::new(incident))
    }

    /// Opens a window for each key the log holds an incident of, raised within the dedupe
    /// window before `now_unix_ms` (a stamp after it, from a clock that was ahead, is
    /// ignored). A log larger than its rotation bound allows is not read (logged).
    fn seed_from_log(&self, state: &mut State, now_unix_ms: u64) {
        let Some(log) = &self.log else { return };
        let bound = self.jsonl_max_bytes.max(4096).saturating_add(64 << 10);
        let mut rotated = log.path().as_os_str().to_owned();
        rotated.push(".1");
        let too_large = [log.path(), Path::new(&rotated)]
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > bound));
        if let Some(path) = too_large {
            tracing::warn!(path = %path.display(), bound_bytes = bound, "incident log larger than its rotation bound; not read, so incidents raised before this start may be raised again");
            return;
        }
        let incidents = match log.read_all() {
            Ok(incidents) => incidents,
            Err(e) => {
                tracing::warn!(path = %log.path().display(), error = %e, "incident log unreadable; incidents raised before this start may be raised again");
                return;
            }
        };
        let window_ms = self.dedupe_window_ms;
        for incident in incidents {
            let at = incident.at_unix_ms;
            if at > now_unix_ms || now_unix_ms - at >= window_ms {
                continue;
            }
            let window = state.windows.entry(incident.key).or_insert(Window {
                opened_ms: at,
                count: 0,
            });
            if at >= window.opened_ms {
                *window = Window {
                    opened_ms: at,
                    count: 1,
                };
            }
        }
    }

    fn emit(&self, incident: &Incident) {
        let (key, title) = (incident.key.as_str(), incident.title.as_str());
        let error = incident.error.as_deref().unwrap_or("");
        let context = &incident.context;
        match incident.severity {
            // The state, not the configuration (it is in incidents.jsonl and /stats).
            Severity::Critical | Severity::High => {
                tracing::error!(severity = ?incident.severity, key, error, queue_depth = context.queue_depth, oldest_pending_age_ms = context.oldest_pending_age_ms, circuit_state = %context.circuit_state, paused_for_auth = context.paused_for_auth, "incident: {title}")
            }
            Severity::Medium => {
                tracing::warn!(severity = ?incident.severity, key, error, "incident: {title}")
            }
            Severity::Low => {
                tracing::info!(severity = ?incident.severity, key, error, "incident: {title}")
            }
        }
        if let Some(log) = &self.log {
            if let Err(e) = log.append(incident) {
                tracing::warn!(path = %log.path().display(), error = %e, "incident log could not be written");
            }
        }
    }

    /// The latest incidents raised (not repeats), oldest first.
    pub fn recent(&self) -> Vec<Incident> {
        self.lock().recent.iter().cloned().collect()
    }

    /// Occurrences of `key` in its current window (0 if none).
    pub fn count_in_window(&self, key: &str) -> u64 {
        self.lock().windows.get(key).map_or(0, |w| w.count)
    }
}
