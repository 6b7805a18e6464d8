//! Human escalation: incidents with a severity, full context, and deduplication.
//!
//! | severity | kinds |
//! |---|---|
//! | CRITICAL | corruption detected, writer poisoned, disk full, auth failure, systemic rejection |
//! | HIGH | cloud unreachable longer than a threshold, error-rate spike, oldest item too old |
//! | MEDIUM | an item dead-lettered, an item expired undelivered |
//! | LOW | transient errors recovered |
//!
//! Every incident goes to the `tracing` log, to the bounded `incidents.jsonl`, and to the
//! optional webhook. A repeat of the same key within the dedupe window only increments a
//! count; the next incident of that key after the window says how many were suppressed.
//! The windows survive restarts: before its first incident a manager reads the keys raised
//! within the window from `incidents.jsonl` (by any process of the queue), so a reader
//! restarted after a crash does not alert again for what it alerted before.

mod sink;
mod spike;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

pub use sink::{IncidentLog, WebhookConfig};
pub use spike::{Spike, SpikeConfig, SpikeDetector};

use sink::Webhook;

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

/// What a caller reports; [`Incidents::raise`] adds the id, time and context.
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

    fn key(&self) -> String {
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

/// Incident settings and thresholds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IncidentConfig {
    /// A repeat of a key within this window is counted, not raised. Default 900000 (15 min).
    pub dedupe_window_ms: u64,
    /// `incidents.jsonl` is rotated at this size. Default 1 MiB; minimum 4 KiB.
    pub jsonl_max_bytes: u64,
    /// Optional webhook.
    pub webhook: Option<WebhookConfig>,
    /// HIGH when the cloud has not answered for this long. Default 300000 (5 min).
    pub unreachable_alert_ms: u64,
    /// HIGH when the head item is older than this. Default 3600000 (1 h).
    pub oldest_pending_alert_ms: u64,
    /// The error-rate spike detector.
    pub spike: SpikeConfig,
    /// Incidents kept in memory for [`Incidents::recent`]. Default 256.
    pub recent_max: usize,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        Self {
            dedupe_window_ms: 15 * 60_000,
            jsonl_max_bytes: 1 << 20,
            webhook: None,
            unreachable_alert_ms: 5 * 60_000,
            oldest_pending_alert_ms: 60 * 60_000,
            spike: SpikeConfig::default(),
            recent_max: 256,
        }
    }
}

/// What [`Incidents::raise`] did.
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

/// The incident manager: dedupe, then every sink. Thread-safe.
#[derive(Debug)]
pub struct Incidents {
    config: IncidentConfig,
    log: Option<IncidentLog>,
    webhook: Option<Webhook>,
    state: Mutex<State>,
}

impl Incidents {
    /// A manager writing to `jsonl_path` (when given) and the configured webhook.
    pub fn new(config: IncidentConfig, jsonl_path: Option<PathBuf>) -> std::io::Result<Self> {
        let log = jsonl_path.map(|p| IncidentLog::new(p, config.jsonl_max_bytes));
        let webhook = config.webhook.clone().map(Webhook::start).transpose()?;
        Ok(Self {
            config,
            log,
            webhook,
            state: Mutex::new(State::default()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &IncidentConfig {
        &self.config
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
        let window_ms = self.config.dedupe_window_ms;
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
        while state.recent.len() > self.config.recent_max.max(1) {
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
        let bound = self
            .config
            .jsonl_max_bytes
            .max(4096)
            .saturating_add(64 << 10);
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
        let window_ms = self.config.dedupe_window_ms;
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
        if let Some(webhook) = &self.webhook {
            webhook.send(incident.clone());
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

    /// Incidents the webhook dropped (queue full or rate limit).
    pub fn webhook_dropped(&self) -> u64 {
        self.webhook.as_ref().map_or(0, Webhook::dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> IncidentDraft {
        IncidentDraft::new(IncidentKind::DeadLettered, "an item was dead-lettered")
            .subject("bad_request")
            .error("HTTP 400")
    }

    #[test]
    fn repeats_within_the_window_are_counted_not_raised() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("incidents.jsonl");
        let config = IncidentConfig {
            dedupe_window_ms: 1000,
            ..IncidentConfig::default()
        };
        let incidents = Incidents::new(config, Some(path.clone())).expect("incidents");
        let ctx = IncidentContext::default();
        assert!(matches!(
            incidents.raise(draft(), ctx.clone(), 0),
            Raised::New(_)
        ));
        assert_eq!(
            incidents.raise(draft(), ctx.clone(), 500),
            Raised::Repeat { count: 2 }
        );
        assert_eq!(
            incidents.raise(draft(), ctx.clone(), 999),
            Raised::Repeat { count: 3 }
        );
        let Raised::New(again) = incidents.raise(draft(), ctx, 1000) else {
            panic!("a new window raises again");
        };
        assert_eq!(again.repeats_suppressed, 2);
        assert_eq!(again.severity, Severity::Medium);
        assert_eq!(again.key, "dead_lettered:bad_request");
        let logged = IncidentLog::new(&path, 1 << 20).read_all().expect("read");
        assert_eq!(logged.len(), 2);
        assert_eq!(logged[1], *again);
    }

    /// Story (probe F25): dedupe windows lived in the process, so each restart raised again
    /// what the last one had. A new manager on the same log counts a key raised within the
    /// window as a repeat; a key older than the window, or stamped in the future by a clock
    /// that was ahead, raises again.
    #[test]
    fn windows_survive_a_restart_through_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("incidents.jsonl");
        let config = IncidentConfig {
            dedupe_window_ms: 1000,
            ..IncidentConfig::default()
        };
        let ctx = IncidentContext::default();
        let before = Incidents::new(config.clone(), Some(path.clone())).expect("incidents");
        assert!(matches!(
            before.raise(draft(), ctx.clone(), 10_000),
            Raised::New(_)
        ));
        let future = IncidentDraft::new(IncidentKind::BacklogTooOld, "old");
        assert!(matches!(
            before.raise(future.clone(), ctx.clone(), 50_000),
            Raised::New(_)
        ));
        drop(before);

        let after = Incidents::new(config, Some(path.clone())).expect("incidents");
        assert_eq!(
            after.raise(draft(), ctx.clone(), 10_500),
            Raised::Repeat { count: 2 }
        );
        assert!(matches!(
            after.raise(future, ctx.clone(), 10_600),
            Raised::New(_)
        ));
        assert!(matches!(after.raise(draft(), ctx, 11_000), Raised::New(_)));
    }

    #[test]
    fn the_log_rotates_and_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("incidents.jsonl");
        let config = IncidentConfig {
            dedupe_window_ms: 0,
            jsonl_max_bytes: 4096,
            ..IncidentConfig::default()
        };
        let incidents = Incidents::new(config, Some(path.clone())).expect("incidents");
        for i in 0..200 {
            incidents.raise(draft(), IncidentContext::default(), i);
        }
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        assert!(size(&path) <= 4096);
        assert!(size(&dir.path().join("incidents.jsonl.1")) <= 4096);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
