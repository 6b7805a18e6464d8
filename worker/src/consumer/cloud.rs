//! What every item's delivery shares: the circuit breaker, the backoff, the systemic
//! rejection rule, the error-rate spike detector, the outage clock, the counters and the
//! incidents, the dead-letter sink and the stop. One item's attempts (`deliver.rs`) act on
//! it; so does the worker's loop between items.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use escalation_queue_wal::{Error as WalError, Event, Reader, Record};

use super::alerts;
use super::outcome::{Failure, Outcome};
use super::stop::StopHandle;
use crate::client::DeliveryError;
use crate::dead_letter::{
    now_unix_ms, AttemptLog, DeadLetter, DeadLetterId, DeadLetterInfo, DeadLetterSink,
};
use crate::escalation::Escalation;
use crate::incidents::{IncidentContext, IncidentDraft, Incidents, Raised, SpikeDetector};
use crate::retry::{
    Backoff, CircuitBreaker, CircuitState, DeadLetterReason, RejectVerdict, RejectedItem,
    SystemicRejects, Wait, WaitCause,
};
use crate::stats::Stats;
use crate::WorkerConfig;

/// The shared delivery state (see the module docs).
#[derive(Debug)]
pub(super) struct Cloud {
    pub(super) config: WorkerConfig,
    config_view: serde_json::Value,
    pub(super) stats: Arc<Stats>,
    pub(super) incidents: Arc<Incidents>,
    pub(super) stop: StopHandle,
    pub(super) breaker: CircuitBreaker,
    pub(super) backoff: Backoff,
    systemic: SystemicRejects,
    spike: SpikeDetector,
    dead_letters: DeadLetterSink,
    unreachable_since: Option<Instant>,
    last_maintenance: Instant,
}

impl Cloud {
    pub(super) fn new(
        config: WorkerConfig,
        incidents: Incidents,
        dead_letters: DeadLetterSink,
    ) -> Self {
        let backoff = match config.jitter_seed {
            Some(seed) => Backoff::with_seed(config.backoff, seed),
            None => Backoff::new(config.backoff),
        };
        Self {
            config_view: config.incident_view(),
            breaker: CircuitBreaker::new(config.breaker),
            systemic: SystemicRejects::new(config.systemic_reject_threshold),
            spike: SpikeDetector::new(config.incidents.spike),
            stats: Arc::new(Stats::default()),
            incidents: Arc::new(incidents),
            stop: StopHandle::default(),
            backoff,
            dead_letters,
            unreachable_since: None,
            last_maintenance: Instant::now(),
            config,
        }
    }

    /// The system state attached to every incident.
    fn context(&self) -> IncidentContext {
        IncidentContext {
            queue_depth: self.stats.queue_depth.load(Relaxed),
            oldest_pending_age_ms: self.stats.oldest_pending_age_ms.load(Relaxed),
            circuit_state: self.breaker.state().as_str().to_owned(),
            paused_for_auth: self.stats.paused_for_auth.load(Relaxed),
            config: self.config_view.clone(),
        }
    }

    /// Raises `draft` with the system state; counts it when it is new.
    pub(super) fn raise(&self, draft: IncidentDraft) {
        let raised = self.incidents.raise(draft, self.context(), now_unix_ms());
        if matches!(raised, Raised::New(_)) {
            Stats::add(&self.stats.incidents, 1);
        }
    }

    /// Whether `maintenance_interval_ms` has passed since the last [`maintain`](Self::maintain).
    pub(super) fn maintenance_due(&self) -> bool {
        let interval = Duration::from_millis(self.config.maintenance_interval_ms);
        self.last_maintenance.elapsed() >= interval
    }

    /// [`maintain`](Self::maintain) when it is due.
    pub(super) fn maybe_maintain(&mut self, reader: &mut Reader) {
        if self.maintenance_due() {
            self.maintain(reader);
        }
    }

    /// Gauges, wal events and threshold incidents.
    pub(super) fn maintain(&mut self, reader: &mut Reader) {
        self.last_maintenance = Instant::now();
        let depth: u64 = reader.pending().values().sum();
        Stats::set(&self.stats.queue_depth, depth);
        self.stats.set_circuit_state(self.breaker.state());
        self.report_wal_events(reader);
        let age_ms = self.stats.oldest_pending_age_ms.load(Relaxed);
        if let Some(draft) = alerts::backlog_too_old(age_ms, &self.config) {
            self.raise(draft);
        }
    }

    /// Reports what the wal found (`alerts::wal_event`); records deleted by retention are
    /// counted as expired.
    pub(super) fn report_wal_events(&mut self, reader: &mut Reader) {
        for event in reader.take_events() {
            if let Event::Expired { records, .. } = &event {
                Stats::add(&self.stats.expired, *records);
            }
            if let Some(draft) = alerts::wal_event(&event) {
                self.raise(draft);
            }
        }
    }

    /// The worker's cursor could not be checkpointed.
    pub(super) fn raise_storage_failure(&self, title: &str, error: &WalError) {
        self.raise(alerts::storage_failure(title, error));
    }

    /// The cause of a wait for an open circuit: a systemic fault keeps it open too.
    pub(super) fn open_circuit_cause(&self) -> WaitCause {
        match self.systemic.fault() {
            Some(_) => WaitCause::SystemicFault,
            None => WaitCause::Breaker,
        }
    }

    /// The cloud answered (anything but a retryable failure).
    pub(super) fn on_answered(&mut self) {
        if self.breaker.state() != CircuitState::Closed {
            tracing::info!("the cloud answers again: circuit breaker closed");
        }
        self.breaker.record_success();
        self.unreachable_since = None;
        self.stats.set_circuit_state(self.breaker.state());
    }

    /// A retryable failure: the breaker, the retry count and the outage alert.
    pub(super) fn on_retryable_failure(&mut self, error: &DeliveryError) {
        let now = Instant::now();
        let before = self.breaker.state();
        self.breaker.record_failure(now);
        if before != self.breaker.state() && self.breaker.state() == CircuitState::Open {
            tracing::info!(error = %error, "cloud unreachable: circuit breaker opened; the head item probes it");
        }
        self.stats.set_circuit_state(self.breaker.state());
        Stats::add(&self.stats.retried, 1);
        let since = *self.unreachable_since.get_or_insert(now);
        let threshold = Duration::from_millis(self.config.incidents.unreachable_alert_ms);
        if now.duration_since(since) >= threshold {
            let failures = self.breaker.consecutive_failures();
            self.raise(alerts::unreachable(since, error, failures, &self.config));
        }
    }

    /// Counts a failed request in the error-rate spike detector.
    pub(super) fn count_failure(&mut self, error: &DeliveryError) {
        if let Some(spike) = self.spike.record_failure(now_unix_ms()) {
            self.raise(alerts::spike(spike, error, &self.config));
        }
    }

    /// The cloud has `esc` (`duplicate`: by an earlier attempt), `latency_ms` after its
    /// enqueue, after the attempts in `log`; `recovered` when some failed retryably.
    pub(super) fn on_delivered(
        &mut self,
        esc: &Escalation,
        duplicate: bool,
        log: &AttemptLog,
        recovered: bool,
        latency_ms: u64,
    ) {
        if let Some(status) = self.systemic.on_accepted() {
            self.systemic_fault_ended(status, None);
        }
        Stats::add(&self.stats.delivered, 1);
        if duplicate {
            Stats::add(&self.stats.delivered_duplicates, 1);
            tracing::info!(image_query_id = %esc.image_query_id, "HTTP 400, and the cloud has this image query: delivered by an earlier attempt");
        }
        self.stats.delivery_latency.observe_ms(latency_ms);
        tracing::info!(
            image_query_id = %esc.image_query_id,
            detector_id = %esc.detector_id,
            request_id = %esc.request_id,
            attempts = log.total(),
            latency_ms,
            duplicate,
            "escalation delivered"
        );
        if self.stats.paused_for_auth.swap(false, Relaxed) {
            tracing::warn!("the cloud accepts the API token again; delivery resumed");
        }
        if recovered {
            self.raise(alerts::recovered(esc, log));
        }
    }

    /// The token was rejected: the auth pause begins (or goes on) and is reported.
    pub(super) fn pause_for_auth(&mut self, esc: &Escalation, error: &DeliveryError) -> Wait {
        if !self.stats.paused_for_auth.swap(true, Relaxed) {
            tracing::error!(status = ?error.http_status(), "the cloud rejected the API token; delivery paused, retrying the head item every {} ms", self.config.auth_retry_interval_ms);
        }
        self.raise(alerts::auth_failure(esc, error, &self.config));
        let pause = Duration::from_millis(self.config.auth_retry_interval_ms);
        Wait::new(pause, WaitCause::AuthPause)
    }

    /// `esc` is older than the retention age: dropped, counted and reported.
    pub(super) fn expire(&mut self, esc: &Escalation, age_ms: u64) -> Outcome {
        tracing::warn!(image_query_id = %esc.image_query_id, request_id = %esc.request_id, detector_id = %esc.detector_id, age_ms, retention_ms = self.config.retention_ms, "escalation expired before delivery; dropped");
        Stats::add(&self.stats.expired, 1);
        self.raise(alerts::expired(esc, age_ms, &self.config));
        Outcome::Expired
    }

    /// Appends the dead letter (retrying until it is durable or a stop comes), then counts
    /// and reports it.
    pub(super) fn dead_letter(
        &mut self,
        record: &Record,
        esc: Option<&Escalation>,
        reason: DeadLetterReason,
        failure: Failure,
        log: &AttemptLog,
    ) -> Outcome {
        let info = DeadLetterInfo {
            id: DeadLetterId::for_record(record.id.lane.0, record.id.seq.0),
            origin_lane: record.id.lane.0,
            origin_seq: record.id.seq.0,
            enqueued_at_unix_ms: esc.map_or(record.time_ns / 1_000_000, |e| e.enqueued_at_unix_ms),
            dead_lettered_at_unix_ms: now_unix_ms(),
            detector_id: esc.map(|e| e.detector_id.clone()),
            image_query_id: esc.map(|e| e.image_query_id.clone()),
            request_id: esc.map(|e| e.request_id.clone()),
            cause: reason,
            error_class: failure.class,
            http_status: failure.status,
            error: failure.error,
            response_excerpt: failure.excerpt,
            attempts: log.records(),
            attempts_total: log.total(),
            record_len_bytes: record.payload.len() as u64,
        };
        let entry = DeadLetter {
            info,
            record: record.payload.clone(),
        };
        while let Err(e) = self.dead_letters.append(&entry) {
            self.raise(alerts::dead_letter_write_failure(&e, &self.config));
            let wait = Duration::from_millis(self.config.dead_letter_retry_ms);
            if self.stop.sleep(wait) {
                return Outcome::Stopped;
            }
        }
        self.stats.count_dead_letter(&reason);
        self.raise(alerts::dead_lettered(&entry));
        Outcome::DeadLettered(reason)
    }

    /// Applies the systemic rule to a rejection the policy would dead-letter for `reason`:
    /// the wait before the head item probes again when the item is held instead (delivery
    /// paused), `None` when it is to be dead-lettered.
    pub(super) fn systemic_hold(
        &mut self,
        record: &Record,
        esc: &Escalation,
        reason: &DeadLetterReason,
        error: &DeliveryError,
    ) -> Option<Wait> {
        let DeadLetterReason::Rejected {
            status: Some(status),
            ..
        } = *reason
        else {
            return None;
        };
        let item = RejectedItem {
            dead_letter_id: DeadLetterId::for_record(record.id.lane.0, record.id.seq.0).to_string(),
            detector_id: esc.detector_id.clone(),
        };
        let before = self.systemic.fault();
        let tripped_now = match self.systemic.on_rejected(status, item) {
            RejectVerdict::DeadLetter => {
                if let Some(old) = before {
                    self.systemic_fault_ended(old, Some(status));
                }
                return None;
            }
            RejectVerdict::Hold { tripped_now } => tripped_now,
        };
        let now = Instant::now();
        self.breaker.trip(now);
        self.stats.set_circuit_state(self.breaker.state());
        self.stats.systemic_fault_status.store(status, Relaxed);
        Stats::add(&self.stats.retried, 1);
        if tripped_now {
            let run = self.systemic.run();
            let draft = super::systemic::rejection_run(run, status, esc, error, &self.config);
            self.raise(draft);
        }
        let probe_in = self.breaker.probe_in(now).unwrap_or_default();
        Some(Wait::new(probe_in, WaitCause::SystemicFault))
    }

    fn systemic_fault_ended(&mut self, status: u16, now_answered: Option<u16>) {
        self.stats.systemic_fault_status.store(0, Relaxed);
        tracing::warn!(
            status,
            now_answered,
            "the cloud no longer answers HTTP {status} to everything: systemic fault over, delivery resumed"
        );
    }
}
