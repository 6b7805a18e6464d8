//! The worker: one synchronous thread that reads the main wal through the `worker` cursor
//! and, per record: decode → expire → dedupe → submit → classify → ack / retry /
//! dead-letter. The head item is retried in place (FIFO within a lane); it is also the
//! circuit breaker's probe. Acknowledgements are checkpointed every `checkpoint_acks_max`
//! acks or `checkpoint_interval_ms`, when idle, and on stop. See `docs/SEMANTICS.md`.

mod age;
mod alerts;
mod config;
mod deliver;
mod lookup;
mod stop;
mod systemic;
mod waits;
mod window;

use std::sync::Arc;
use std::time::{Duration, Instant};

use escalation_queue_wal::{Durability, Error as WalError, Reader, Record, RecordId};
use serde::Serialize;

pub use config::{WorkerConfig, BREAKER_COOL_DOWN_MAX_MS};
pub use stop::StopHandle;

use crate::attempts::{AttemptJournal, MarkerDurability, DEFAULT_SLOTS};
use crate::dead_letter::{now_unix_ms, DeadLetterSink};
use crate::dedupe::{DedupeSet, InFlight};
use crate::escalation::{Escalation, ValidationError};
use crate::incidents::{Incidents, SpikeDetector};
use crate::layout::{QueueError, QueueLayout, QueueOptions, WORKER_CURSOR};
use crate::retry::{Backoff, CircuitBreaker, DeadLetterReason, SystemicRejects};
use crate::stats::Stats;
use crate::Destination;

use deliver::{Failure, Outcome};

/// Why a run ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// A stop was requested.
    #[default]
    Stopped,
    /// `drain` found the queue empty.
    Empty,
}

/// What one `run` or `drain` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// Items the cloud accepted (duplicates included).
    pub delivered: u64,
    /// Of `delivered`: a 400 for a possibly submitted item that the cloud, asked, has.
    pub delivered_duplicates: u64,
    /// Items moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Items older than the retention age (and records retention deleted).
    pub expired: u64,
    /// Items skipped as already delivered (dedupe).
    pub duplicates: u64,
    /// Delivery attempts.
    pub attempts: u64,
    /// Attempts that ended in a retry.
    pub retried: u64,
    /// Wall time of the run.
    pub elapsed_ms: u64,
    /// Why it ended.
    pub ended: RunEnd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    UntilStopped,
    UntilEmpty,
}

/// The delivery worker. Open one per queue directory (a second gets `WorkerRunning`).
#[derive(Debug)]
pub struct Worker {
    layout: QueueLayout,
    options: QueueOptions,
    config: WorkerConfig,
    config_view: serde_json::Value,
    reader: Reader,
    dedupe: DedupeSet,
    dead_letters: DeadLetterSink,
    incidents: Arc<Incidents>,
    stats: Arc<Stats>,
    stop: StopHandle,
    breaker: CircuitBreaker,
    backoff: Backoff,
    systemic: SystemicRejects,
    attempts: AttemptJournal,
    spike: SpikeDetector,
    acks_since_checkpoint: u32,
    last_checkpoint: Instant,
    last_maintenance: Instant,
    last_retention_sweep: Option<Instant>,
    unreachable_since: Option<Instant>,
    /// The item being delivered, once attempted: what a stop leaves in flight.
    current: Option<InFlight>,
    /// The record being processed until it is acknowledged, with its lost-response flag:
    /// the reader does not hand a record out twice, so a run that ends before the ack
    /// (stop or error) leaves it here for the next run of this worker.
    held: Option<(Record, bool)>,
    /// When this worker first took the record being processed (its age when the writer's
    /// clock is not believed, `age.rs`).
    first_seen: Option<age::FirstSeen>,
    summary: RunSummary,
}

impl Worker {
    /// Opens the queue at `queue_dir` for delivery: the main wal's `worker` cursor, the
    /// dedupe log, the incident log. Fails with `WorkerRunning` if another worker has it.
    pub fn open(
        queue_dir: impl Into<std::path::PathBuf>,
        options: &QueueOptions,
        config: WorkerConfig,
    ) -> Result<Self, QueueError> {
        options.validate()?;
        config.validate()?;
        let layout = QueueLayout::new(queue_dir);
        layout.create()?;
        let wal_dir = layout.wal_dir();
        let reader = match Reader::open(&wal_dir, WORKER_CURSOR, &options.wal_options()) {
            Err(WalError::CursorLocked { .. }) => {
                return Err(QueueError::WorkerRunning {
                    path: layout.root().to_path_buf(),
                })
            }
            other => other?,
        };
        let dedupe = DedupeSet::open(layout.dedupe_path(), config.dedupe_items_max)?;
        let window = config
            .checkpoint_acks_max
            .saturating_add(1)
            .saturating_mul(4);
        let marker_durability = match options.durability {
            Durability::SyncEachAppend => MarkerDurability::Synced,
            _ => MarkerDurability::OsBuffered,
        };
        let attempts = AttemptJournal::open(
            layout.attempts_path(),
            DEFAULT_SLOTS.max(window),
            marker_durability,
        )?;
        let incidents_path = layout.incidents_path();
        let incidents = Incidents::new(config.incidents.clone(), Some(incidents_path.clone()))
            .map_err(|e| QueueError::io("start incident webhook", incidents_path, e))?;
        let backoff = match config.jitter_seed {
            Some(seed) => Backoff::with_seed(config.backoff, seed),
            None => Backoff::new(config.backoff),
        };
        tracing::info!(queue = %layout.root().display(), previous_run = ?dedupe.previous_run(), attempts = ?attempts.report(), "worker opened");
        Ok(Self {
            dead_letters: DeadLetterSink::new(&layout, options),
            attempts,
            config_view: config.incident_view(),
            breaker: CircuitBreaker::new(config.breaker),
            systemic: SystemicRejects::new(config.systemic_reject_threshold),
            spike: SpikeDetector::new(config.incidents.spike),
            layout,
            options: options.clone(),
            reader,
            dedupe,
            incidents: Arc::new(incidents),
            stats: Arc::new(Stats::default()),
            stop: StopHandle::default(),
            backoff,
            acks_since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            last_maintenance: Instant::now(),
            last_retention_sweep: None,
            unreachable_since: None,
            current: None,
            held: None,
            first_seen: None,
            summary: RunSummary::default(),
            config,
        })
    }

    /// A handle that stops [`run`](Self::run) and [`drain`](Self::drain).
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// The worker's counters and gauges, live.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Counts into `stats` from now on: those of the worker this one replaces on the same
    /// queue (the daemon reopens the queue after a storage error), so counters shown by
    /// `/stats` and `/metrics` go on from where they were instead of restarting at zero.
    /// The gauges that describe one worker's state (circuit, auth pause) start afresh.
    pub fn continue_stats(&mut self, stats: Arc<Stats>) {
        stats.reset_worker_gauges();
        self.stats = stats;
    }

    /// The incident manager (recent incidents, counts).
    pub fn incidents(&self) -> Arc<Incidents> {
        Arc::clone(&self.incidents)
    }

    /// The queue directory.
    pub fn queue_dir(&self) -> &std::path::Path {
        self.layout.root()
    }

    /// Delivers until stopped.
    pub fn run(&mut self, destination: &dyn Destination) -> Result<RunSummary, QueueError> {
        self.run_mode(destination, Mode::UntilStopped)
    }

    /// Delivers until the queue is empty (every durable record finished) or stopped.
    pub fn drain(&mut self, destination: &dyn Destination) -> Result<RunSummary, QueueError> {
        self.run_mode(destination, Mode::UntilEmpty)
    }

    fn run_mode(&mut self, dest: &dyn Destination, mode: Mode) -> Result<RunSummary, QueueError> {
        let started = Instant::now();
        self.summary = RunSummary::default();
        self.dedupe
            .mark_running(self.config.checkpoint_acks_max.saturating_add(1))?;
        self.maintain(true)?;
        let result = self.loop_items(dest, mode);
        // Whatever happened, make the acknowledgements durable; only then is the stop clean.
        let finished = self
            .checkpoint()
            .and_then(|()| self.dedupe.mark_stopped(self.current.take()));
        let ended = result?;
        finished?;
        self.summary.ended = ended;
        self.summary.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(summary = ?self.summary, "worker run ended");
        Ok(self.summary.clone())
    }

    fn loop_items(&mut self, dest: &dyn Destination, mode: Mode) -> Result<RunEnd, QueueError> {
        let poll = Duration::from_millis(self.config.idle_poll_ms);
        loop {
            if self.stop.is_stopped() {
                return Ok(RunEnd::Stopped);
            }
            self.maybe_maintain(true)?;
            if self.acks_since_checkpoint > 0
                && self.last_checkpoint.elapsed().as_millis()
                    >= u128::from(self.config.checkpoint_interval_ms)
            {
                self.checkpoint()?;
            }
            if let Some((record, lost)) = self.held.take() {
                if !self.process(record, lost, dest)? {
                    return Ok(RunEnd::Stopped);
                }
                continue;
            }
            let record = match self.reader.next()? {
                Some(record) => record,
                None => {
                    self.attempts.caught_up();
                    self.checkpoint()?;
                    self.report_wal_events();
                    Stats::set(&self.stats.oldest_pending_age_ms, 0);
                    if mode == Mode::UntilEmpty && self.pending_total() == 0 {
                        return Ok(RunEnd::Empty);
                    }
                    match self.reader.next_timeout(poll)? {
                        Some(record) => record,
                        None => continue,
                    }
                }
            };
            self.attempts.seen(record.id);
            if !self.process(record, false, dest)? {
                return Ok(RunEnd::Stopped);
            }
        }
    }

    /// Finishes one record; false when a stop left it in flight (not acknowledged, held
    /// for the next run). `possibly_submitted`: an attempt of this worker may have reached
    /// the cloud (the attempt journal and the record's flag are consulted too).
    fn process(
        &mut self,
        record: Record,
        possibly_submitted: bool,
        dest: &dyn Destination,
    ) -> Result<bool, QueueError> {
        let record = &record;
        // Held until acknowledged: if this run ends early (stop or error), the next run of
        // this worker starts with it (the reader does not hand out a record twice).
        self.held = Some((record.clone(), possibly_submitted));
        let outcome = match Escalation::decode(&record.payload) {
            Err(e) => {
                let failure = Failure::record("undecodable", e.to_string());
                let reason = DeadLetterReason::RecordUndecodable;
                self.dead_letter(record, None, reason, failure, &Default::default())?
            }
            Ok(esc) => match esc.validate_with(&self.options.record_limits()) {
                Err(e) => {
                    // A path the reader may not open is not trusted because a writer
                    // recorded it: refused here, before any file is touched.
                    let class = match e {
                        ValidationError::ImagePathRefused { .. } => "image_path_refused",
                        _ => "invalid",
                    };
                    let failure = Failure::record(class, e.to_string());
                    let reason = DeadLetterReason::RecordInvalid;
                    self.dead_letter(record, Some(&esc), reason, failure, &Default::default())?
                }
                Ok(()) => self.deliver_valid(record, &esc, dest, possibly_submitted)?,
            },
        };
        if outcome == Outcome::Stopped {
            let lost = possibly_submitted || self.current.is_some_and(|c| c.response_possibly_lost);
            self.held = Some((record.clone(), lost));
            return Ok(false);
        }
        self.ack(record.id)?;
        Ok(true)
    }

    fn deliver_valid(
        &mut self,
        record: &Record,
        esc: &Escalation,
        dest: &dyn Destination,
        possibly_submitted: bool,
    ) -> Result<Outcome, QueueError> {
        self.note_first_seen(record, esc);
        let age_ms = self.item_age_ms(esc);
        if age_ms >= self.config.retention_ms {
            return Ok(self.expire(esc, age_ms));
        }
        if let Some(matched) = self.dedupe.contains(esc) {
            match matched {
                // Same image query id: the cloud already has exactly this one.
                crate::dedupe::DuplicateOf::ImageQueryId => {
                    tracing::info!(image_query_id = %esc.image_query_id, request_id = %esc.request_id, ?matched, "duplicate of a delivered escalation; skipped")
                }
                // Only the request id matches: an SDK retry of one edge request, or a
                // producer reusing request ids. Skipped by design, but never quietly.
                crate::dedupe::DuplicateOf::RequestId => {
                    tracing::warn!(image_query_id = %esc.image_query_id, request_id = %esc.request_id, detector_id = %esc.detector_id, "skipped: an escalation with this request id was already delivered (under another image query id); request ids must be unique per edge request")
                }
            }
            Stats::add(&self.stats.duplicates, 1);
            self.summary.duplicates += 1;
            return Ok(Outcome::Duplicate);
        }
        let possibly_submitted =
            possibly_submitted || window::possibly_submitted(&self.attempts, record.id, esc);
        let outcome = self.deliver(record, esc, dest, possibly_submitted)?;
        if outcome == Outcome::Delivered {
            self.dedupe.insert(esc);
        }
        Ok(outcome)
    }

    /// Starts the held-time clock of `record` when it is new to this worker, and says once
    /// when its enqueue stamp is not believed.
    fn note_first_seen(&mut self, record: &Record, esc: &Escalation) {
        let (lane, seq) = (record.id.lane.0, record.id.seq.0);
        if self
            .first_seen
            .is_some_and(|f| (f.lane, f.seq) == (lane, seq))
        {
            return;
        }
        self.first_seen = Some(age::FirstSeen {
            lane,
            seq,
            at: Instant::now(),
        });
        let now_ms = now_unix_ms();
        if !age::stamp_is_plausible(esc.enqueued_at_unix_ms, now_ms) {
            tracing::warn!(image_query_id = %esc.image_query_id, enqueued_at_unix_ms = esc.enqueued_at_unix_ms, now_unix_ms = now_ms, "the escalation's enqueue time is before 2025 or ahead of this clock (a writer clock not set or set ahead); its age counts from now, when the reader took it");
        }
    }

    /// The item's age for expiry, budgets and gauges (`age.rs`).
    pub(super) fn item_age_ms(&self, esc: &Escalation) -> u64 {
        let held_ms = self.first_seen.map_or(0, |f| {
            u64::try_from(f.at.elapsed().as_millis()).unwrap_or(u64::MAX)
        });
        age::age_ms(esc, now_unix_ms(), held_ms)
    }

    fn expire(&mut self, esc: &Escalation, age_ms: u64) -> Outcome {
        tracing::warn!(image_query_id = %esc.image_query_id, request_id = %esc.request_id, detector_id = %esc.detector_id, age_ms, retention_ms = self.config.retention_ms, "escalation expired before delivery; dropped");
        Stats::add(&self.stats.expired, 1);
        self.summary.expired += 1;
        let draft = crate::incidents::IncidentDraft::new(
            crate::incidents::IncidentKind::Expired,
            "an escalation was older than the retention age before it could be delivered; dropped",
        )
        .tried(["delivery was retried until the retention age".to_owned()])
        .details(serde_json::json!({
            "image_query_id": esc.image_query_id,
            "detector_id": esc.detector_id,
            "age_ms": age_ms,
            "retention_ms": self.config.retention_ms,
            "enqueued_at_unix_ms": esc.enqueued_at_unix_ms,
        }));
        self.raise(draft);
        Outcome::Expired
    }

    fn ack(&mut self, id: RecordId) -> Result<(), QueueError> {
        self.reader.ack(id)?;
        self.attempts.settled(id);
        self.held = None;
        self.current = None;
        self.acks_since_checkpoint += 1;
        if self.acks_since_checkpoint >= self.config.checkpoint_acks_max {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Dedupe ids first, then the cursor: after a crash between the two, redelivered
    /// records are recognised as duplicates instead of being submitted again.
    fn checkpoint(&mut self) -> Result<(), QueueError> {
        self.dedupe.persist()?;
        match self.reader.checkpoint() {
            Ok(()) => {}
            Err(escalation_queue_wal::Error::CheckpointDeferred { path }) => {
                // A full disk, and the first checkpoint could not free enough: delivery
                // goes on (it is what frees the disk); the acknowledgements stay in memory
                // and the attempt markers are kept, as after a crash. Tried again at the
                // next checkpoint, which may release whole segments.
                tracing::debug!(path = %path.display(), "cursor checkpoint deferred for want of space");
                self.acks_since_checkpoint = 0;
                self.last_checkpoint = Instant::now();
                return Ok(());
            }
            Err(e) => {
                self.raise_storage_failure("cursor checkpoint failed", &e);
                return Err(e.into());
            }
        }
        self.attempts.checkpointed();
        if self.acks_since_checkpoint > 0 {
            Stats::add(&self.stats.checkpoints, 1);
        }
        self.acks_since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    fn pending_total(&mut self) -> u64 {
        self.reader.pending().values().sum()
    }

    fn maybe_maintain(&mut self, between_items: bool) -> Result<(), QueueError> {
        let interval = Duration::from_millis(self.config.maintenance_interval_ms);
        if self.last_maintenance.elapsed() >= interval {
            self.maintain(between_items)?;
        }
        Ok(())
    }

    /// Gauges, wal events, threshold incidents and, between items (no record delivered
    /// and unacknowledged), retention.
    fn maintain(&mut self, between_items: bool) -> Result<(), QueueError> {
        self.last_maintenance = Instant::now();
        let depth = self.pending_total();
        Stats::set(&self.stats.queue_depth, depth);
        self.stats.set_circuit_state(self.breaker.state());
        self.report_wal_events();
        self.check_thresholds();
        let sweep_every = Duration::from_millis(self.config.retention_sweep_interval_ms);
        let due = self
            .last_retention_sweep
            .is_none_or(|t| t.elapsed() >= sweep_every);
        if due && between_items {
            self.last_retention_sweep = Some(Instant::now());
            self.sweep_retention()?;
        }
        Ok(())
    }

    /// Deletes wal segments and dead letters older than the retention age.
    fn sweep_retention(&mut self) -> Result<(), QueueError> {
        self.checkpoint()?;
        let retention = Duration::from_millis(self.config.retention_ms);
        self.reader.expire_older_than(retention)?;
        self.report_wal_events();
        let dlq =
            crate::dead_letter::DeadLetterQueue::open(self.layout.root(), self.options.clone())?
                .with_retention_ms(self.config.retention_ms);
        match dlq.expire() {
            Ok(report) if !report.expired.is_empty() => {
                tracing::info!(
                    expired = report.expired.len(),
                    "dead letters past retention removed"
                )
            }
            Ok(_) => {}
            Err(QueueError::DeadLetterBusy { .. }) => {
                tracing::debug!("dead-letter queue busy; retention retried at the next sweep")
            }
            Err(e) => {
                tracing::warn!(error = %e, "dead-letter retention failed; retried at the next sweep")
            }
        }
        Ok(())
    }
}
