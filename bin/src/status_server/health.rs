//! `/health`: healthy, degraded or unhealthy, with the reasons.
//!
//! *Unhealthy* (HTTP 503) means delivery cannot make progress because of something local
//! that a restart or an operator must fix: the worker stopped on a storage error, or the
//! disk is below `queue.free_disk_bytes_min`. *Degraded* (HTTP 200) means delivery is
//! paused or slow for a reason outside the process — the cloud is unreachable (circuit
//! open), the token is rejected, the head of the queue is old, the disk is getting full, a
//! CRITICAL incident was raised recently — so restarting the reader would not help.

use std::path::Path;

use escalation_queue::worker::{CircuitState, Severity};
use serde::Serialize;

use super::state::{ReaderState, WalState};
use crate::render::bytes;
use escalation_queue::wal::clock::now_unix_ms;

/// The overall verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// All checks pass.
    Healthy,
    /// Delivery is paused or slow for an outside reason; the reader itself is fine.
    Degraded,
    /// Delivery cannot progress until something local is fixed.
    Unhealthy,
}

impl Status {
    /// The HTTP status `/health` answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Healthy | Self::Degraded => 200,
            Self::Unhealthy => 503,
        }
    }

    /// As a metric value: 0, 1, 2.
    pub fn level(self) -> u8 {
        self as u8
    }
}

/// The `/health` document.
#[derive(Clone, Debug, Serialize)]
pub struct Health {
    /// The verdict: the worst of the checks.
    pub status: Status,
    /// Why it is not healthy, one sentence per failed check.
    pub reasons: Vec<String>,
    /// What was checked.
    pub checks: Checks,
}

/// The individual checks.
#[derive(Clone, Debug, Serialize)]
pub struct Checks {
    /// The reader's hold on the queue.
    pub wal: WalState,
    /// `closed`, `open` or `half_open`.
    pub circuit: &'static str,
    /// Delivery paused because the token is rejected.
    pub paused_for_auth: bool,
    /// Age of the head of the queue (0 when idle).
    pub oldest_pending_age_ms: u64,
    /// Pending records.
    pub queue_depth: u64,
    /// The queue's file system, when it could be measured.
    pub disk: Option<Disk>,
    /// Titles of CRITICAL incidents within `status.critical_incident_degraded_ms`.
    pub recent_critical_incidents: Vec<String>,
}

/// Space on the queue's file system.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Disk {
    /// Bytes available to the reader.
    pub free_bytes: u64,
    /// Size of the file system.
    pub total_bytes: u64,
}

/// Free and total bytes of the file system holding `dir`.
pub fn disk_space(dir: &Path) -> std::io::Result<Disk> {
    let vfs = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(Disk {
        free_bytes: vfs.f_bavail.saturating_mul(vfs.f_frsize),
        total_bytes: vfs.f_blocks.saturating_mul(vfs.f_frsize),
    })
}

/// Runs every check.
pub fn evaluate(state: &ReaderState) -> Health {
    let snap = state.snapshot();
    let stats = snap.stats.snapshot();
    let limits = &state.thresholds;
    let mut verdict = Verdict::default();
    match &snap.wal {
        WalState::Running => {}
        WalState::Starting => verdict.degraded("the reader is starting".to_owned()),
        WalState::Stopping => verdict.degraded("the reader is stopping".to_owned()),
        WalState::Failed { error, .. } => verdict.unhealthy(format!(
            "delivery stopped on an error, the queue is being reopened: {error}"
        )),
    }
    let disk = match disk_space(state.queue_dir()) {
        Ok(disk) => {
            if disk.free_bytes < state.free_disk_bytes_min {
                verdict.unhealthy(format!(
                    "disk nearly full: {} free, the queue needs {} (queue.free_disk_bytes_min)",
                    bytes(disk.free_bytes),
                    bytes(state.free_disk_bytes_min)
                ));
            } else if disk.free_bytes < limits.disk_free_degraded_bytes {
                verdict.degraded(format!(
                    "disk getting full: {} free, below {} (status.disk_free_degraded_bytes)",
                    bytes(disk.free_bytes),
                    bytes(limits.disk_free_degraded_bytes)
                ));
            }
            Some(disk)
        }
        Err(e) => {
            verdict.degraded(format!("free disk space unknown: {e}"));
            None
        }
    };
    let circuit = snap.stats.circuit_state();
    if let Some(status) = stats.systemic_fault_status {
        verdict.degraded(format!(
            "the cloud answers HTTP {status} to escalation after escalation: delivery is paused as a systemic fault (check the endpoint)"
        ));
    } else if circuit != CircuitState::Closed {
        verdict.degraded(format!(
            "the cloud is unreachable: circuit breaker {}",
            circuit.as_str()
        ));
    }
    if stats.paused_for_auth {
        verdict.degraded("the cloud rejects the API token: delivery is paused".to_owned());
    }
    if stats.oldest_pending_age_ms >= limits.oldest_pending_degraded_ms {
        verdict.degraded(format!(
            "the oldest pending escalation is {} s old (status.oldest_pending_degraded_ms = {})",
            stats.oldest_pending_age_ms / 1000,
            limits.oldest_pending_degraded_ms
        ));
    }
    let recent_critical_incidents = recent_critical(&snap, limits.critical_incident_degraded_ms);
    for title in &recent_critical_incidents {
        verdict.degraded(format!("recent CRITICAL incident: {title}"));
    }
    Health {
        status: verdict.status,
        reasons: verdict.reasons,
        checks: Checks {
            wal: snap.wal,
            circuit: circuit.as_str(),
            paused_for_auth: stats.paused_for_auth,
            oldest_pending_age_ms: stats.oldest_pending_age_ms,
            queue_depth: stats.queue_depth,
            disk,
            recent_critical_incidents,
        },
    }
}

fn recent_critical(snap: &super::state::Snapshot, window_ms: u64) -> Vec<String> {
    let (Some(incidents), true) = (&snap.incidents, window_ms > 0) else {
        return Vec::new();
    };
    let since = now_unix_ms().saturating_sub(window_ms);
    incidents
        .recent()
        .into_iter()
        .filter(|i| i.severity == Severity::Critical && i.at_unix_ms >= since)
        .map(|i| i.title)
        .collect()
}

#[derive(Debug)]
struct Verdict {
    status: Status,
    reasons: Vec<String>,
}

impl Default for Verdict {
    fn default() -> Self {
        Self {
            status: Status::Healthy,
            reasons: Vec::new(),
        }
    }
}

impl Verdict {
    fn degraded(&mut self, reason: String) {
        self.status = self.status.max(Status::Degraded);
        self.reasons.push(reason);
    }

    fn unhealthy(&mut self, reason: String) {
        self.status = Status::Unhealthy;
        self.reasons.push(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StatusConfig;

    fn thresholds(disk_free_degraded_bytes: u64) -> StatusConfig {
        StatusConfig {
            enabled: true,
            addr: "127.0.0.1:0".parse().expect("addr"),
            oldest_pending_degraded_ms: 600_000,
            disk_free_degraded_bytes,
            critical_incident_degraded_ms: 900_000,
            actions_enabled: false,
        }
    }

    #[test]
    fn starting_is_degraded_and_a_failure_is_unhealthy() {
        let dir = tempfile::tempdir().expect("dir");
        let state = ReaderState::new(dir.path(), thresholds(0), 0);
        let health = evaluate(&state);
        assert_eq!(health.status, Status::Degraded, "{health:?}");
        state.set_failed(&"fdatasync failed");
        let health = evaluate(&state);
        assert_eq!(health.status, Status::Unhealthy);
        assert_eq!(health.status.http_status(), 503);
        assert!(health.reasons.iter().any(|r| r.contains("fdatasync")));
    }

    #[test]
    fn a_disk_below_the_queue_minimum_is_unhealthy() {
        let dir = tempfile::tempdir().expect("dir");
        let state = ReaderState::new(dir.path(), thresholds(0), u64::MAX);
        let health = evaluate(&state);
        assert_eq!(health.status, Status::Unhealthy);
        assert!(health
            .reasons
            .iter()
            .any(|r| r.contains("disk nearly full")));
        assert!(health.checks.disk.is_some());
    }
}
