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

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use escalation_queue_producer::incidents::{
    Incident, IncidentContext, IncidentDraft, IncidentKind, IncidentLog, IncidentRecorder, Raised,
    Severity,
};
use escalation_queue_producer::incidents::{
    DEFAULT_DEDUPE_WINDOW_MS, DEFAULT_JSONL_MAX_BYTES, DEFAULT_RECENT_MAX,
};
pub use sink::WebhookConfig;
pub use spike::{Spike, SpikeConfig, SpikeDetector};

use sink::Webhook;

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
            dedupe_window_ms: DEFAULT_DEDUPE_WINDOW_MS,
            jsonl_max_bytes: DEFAULT_JSONL_MAX_BYTES,
            webhook: None,
            unreachable_alert_ms: 5 * 60_000,
            oldest_pending_alert_ms: 60 * 60_000,
            spike: SpikeConfig::default(),
            recent_max: DEFAULT_RECENT_MAX,
        }
    }
}

/// The incident manager: dedupe (an [`IncidentRecorder`]: the `tracing` log and
/// `incidents.jsonl`), then the webhook. Thread-safe.
#[derive(Debug)]
pub struct Incidents {
    config: IncidentConfig,
    recorder: IncidentRecorder,
    webhook: Option<Webhook>,
}

impl Incidents {
    /// A manager writing to `jsonl_path` (when given) and the configured webhook.
    pub fn new(config: IncidentConfig, jsonl_path: Option<PathBuf>) -> std::io::Result<Self> {
        let recorder = IncidentRecorder::new(
            config.dedupe_window_ms,
            config.jsonl_max_bytes,
            config.recent_max,
            jsonl_path,
        );
        let webhook = config.webhook.clone().map(Webhook::start).transpose()?;
        Ok(Self {
            config,
            recorder,
            webhook,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &IncidentConfig {
        &self.config
    }

    /// Raises `draft` at `now_unix_ms` with `context`, unless its key was raised within the
    /// dedupe window (then it is only counted); a new incident also goes to the webhook.
    pub fn raise(
        &self,
        draft: IncidentDraft,
        context: IncidentContext,
        now_unix_ms: u64,
    ) -> Raised {
        let raised = self.recorder.raise(draft, context, now_unix_ms);
        if let (Raised::New(incident), Some(webhook)) = (&raised, &self.webhook) {
            webhook.send(incident.as_ref().clone());
        }
        raised
    }

    /// The latest incidents raised (not repeats), oldest first.
    pub fn recent(&self) -> Vec<Incident> {
        self.recorder.recent()
    }

    /// Occurrences of `key` in its current window (0 if none).
    pub fn count_in_window(&self, key: &str) -> u64 {
        self.recorder.count_in_window(key)
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
