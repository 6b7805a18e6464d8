//! The worker: one synchronous thread that reads the main wal through the `worker` cursor
//! and, per record: decode → expire → dedupe → submit → classify → ack / retry /
//! dead-letter. The head item is retried in place (FIFO within a lane); it is also the
//! circuit breaker's probe. Acknowledgements are checkpointed every `checkpoint_acks_max`
//! acks or `checkpoint_interval_ms`, when idle, and on stop. See `docs/SEMANTICS.md`.

mod age;
mod alerts;
mod cloud;
mod config;
mod deliver;
mod lookup;
mod outcome;
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
use crate::dead_letter::{now_unix_ms, AttemptLog, DeadLetterSink};
use crate::dedupe::{DedupeSet, DuplicateOf, InFlight};
use crate::escalation::Escalation;
use crate::incidents::Incidents;
use crate::layout::{Error, QueueLayout, QueueOptions, WORKER_CURSOR};
use crate::retry::DeadLetterReason;
use crate::stats::{Stats, StatsSnapshot};
use crate::Destination;

use cloud::Cloud;
use deliver::{Delivery, Item};
use outcome::{Failure, Outcome};

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

/// What one `run` or `drain` did: the difference of the worker's [`Stats`] counters between
/// the run's start and its end (each event is counted once, there).
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

impl RunSummary {
    /// The run that took the counters from `start` to `end`.
    fn between(start: &StatsSnapshot, end: &StatsSnapshot) -> Self {
        Self {
            delivered: end.delivered.saturating_sub(start.delivered),
            delivered_duplicates: end
                .delivered_duplicates
                .saturating_sub(start.delivered_duplicates),
            dead_lettered: end
                .dead_lettered_total
                .saturating_sub(start.dead_lettered_total),
            expired: end.expired.saturating_sub(start.expired),
            duplicates: end.duplicates.saturating_sub(start.duplicates),
            attempts: end.attempts.saturating_sub(start.attempts),
            retried: end.retried.saturating_sub(start.retried),
            elapsed_ms: 0,
            ended: RunEnd::default(),
        }
    }
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
    reader: Reader,
    dedupe: DedupeSet,
    attempts: AttemptJournal,
    /// What every item's delivery shares: breaker, backoff, counters, incidents, config.
    cloud: Cloud,
    acks_since_checkpoint: u32,
    last_checkpoint: Instant,
    last_retention_sweep: Option<Instant>,
    /// The item being delivered, once attempted: what a stop leaves in flight.
    current: Option<InFlight>,
    /// The record being processed until it is acknowledged, with its lost-response flag:
    /// the reader does not hand a record out twice, so a run that ends before the ack
    /// (stop or error) leaves it here for the next run of this worker.
    held: Option<(Record, bool)>,
    /// When this worker first took the record being processed (its age when the writer's
    /// clock is not believed, `age.rs`).
    first_seen: Option<age::FirstSeen>,
}

impl Worker {
    /// Opens the queue at `queue_dir` for delivery: the main wal's `worker` cursor, the
    /// dedupe log, the incident log. Fails with `WorkerRunning` if another worker has it.
    pub fn open(
        queue_dir: impl Into<std::path::PathBuf>,
        options: &QueueOptions,
        config: WorkerConfig,
    ) -> Result<Self, Error> {
        options.validate()?;
        config.validate()?;
        let layout = QueueLayout::new(queue_dir);
        layout.create()?;
        let wal_dir = layout.wal_dir();
        let reader = match Reader::open(&wal_dir, WORKER_CURSOR, &options.wal_options()) {
            Err(WalError::CursorLocked { .. }) => {
                return Err(Error::WorkerRunning {
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
            .map_err(|e| Error::io("start incident webhook", incidents_path, e))?;
        tracing::info!(queue = %layout.root().display(), previous_run = ?dedupe.previous_run(), attempts = ?attempts.report(), "worker opened");
        Ok(Self {
            cloud: Cloud::new(config, incidents, DeadLetterSink::new(&layout, options)),
            attempts,
            layout,
            options: options.clone(),
            reader,
            dedupe,
            acks_since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            last_retention_sweep: None,
            current: None,
            held: None,
            first_seen: None,
        })
    }

    /// A handle that stops [`run`](Self::run) and [`drain`](Self::drain).
    pub fn stop_handle(&self) -> StopHandle {
        self.cloud.stop.clone()
    }

    /// The worker's counters and gauges, live.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.cloud.stats)
    }

    /// Counts into `stats` from now on: those of the worker this one replaces on the same
    /// queue (the daemon reopens the queue after a storage error), so counters shown by
    /// `/stats` and `/metrics` go on from where they were instead of restarting at zero.
    /// The gauges that describe one worker's state (circuit, auth pause) start afresh.
    pub fn continue_stats(&mut self, stats: Arc<Stats>) {
        stats.reset_worker_gauges();
        self.cloud.stats = stats;
    }

    /// The incident manager (recent incidents, counts).
    pub fn incidents(&self) -> Arc<Incidents> {
        Arc::clone(&self.cloud.incidents)
    }

    /// The queue directory.
    pub fn queue_dir(&self) -> &std::path::Path {
        self.layout.root()
    }

    /// Delivers until stopped.
    pub fn run(&mut self, destination: &dyn Destination) -> Result<RunSummary, Error> {
        self.run_mode(destination, Mode::UntilStopped)
    }

    /// Delivers until the queue is empty (every durable record finished) or stopped.
    pub fn drain(&mut self, destination: &dyn Destination) -> Result<RunSummary, Error> {
        self.run_mode(destination, Mode::UntilEmpty)
    }

    fn run_mode(&mut self, dest: &dyn Destination, mode: Mode) -> Result<RunSummary, Error> {
        let started = Instant::now();
        let counted_before = self.cloud.stats.snapshot();
        self.dedupe
            .mark_running(self.cloud.config.checkpoint_acks_max.saturating_add(1))?;
        self.maintain()?;
        let result = self.loop_items(dest, mode);
        // Whatever happened, make the acknowledgements durable; only then is the stop clean.
        let finished = self
            .checkpoint()
            .and_then(|()| self.dedupe.mark_stopped(self.current.take()));
        let ended = result?;
        finished?;
        let summary = RunSummary {
            ended,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ..RunSummary::between(&counted_before, &self.cloud.stats.snapshot())
        };
        tracing::info!(?summary, "worker run ended");
        Ok(summary)
    }

    fn loop_items(&mut self, dest: &dyn Destination, mode: Mode) -> Result<RunEnd, Error> {
        let poll = Duration::from_millis(self.cloud.config.idle_poll_ms);
        loop {
            if self.cloud.stop.is_stopped() {
                return Ok(RunEnd::Stopped);
            }
            if self.cloud.maintenance_due() {
                self.maintain()?;
            }
            if self.acks_since_checkpoint > 0
                && self.last_checkpoint.elapsed().as_millis()
                    >= u128::from(self.cloud.config.checkpoint_interval_ms)
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
                    self.cloud.report_wal_events(&mut self.reader);
                    Stats::set(&self.cloud.stats.oldest_pending_age_ms, 0);
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
            // Damage the reader stepped over to reach this record (and any other wal
            // event) becomes an incident before the record is delivered, so what an
            // operator reads is in the order it happened.
            self.cloud.report_wal_events(&mut self.reader);
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
    ) -> Result<bool, Error> {
        let record = &record;
        // Held until acknowledged: if this run ends early (stop or error), the next run of
        // this worker starts with it (the reader does not hand out a record twice).
        self.held = Some((record.clone(), possibly_submitted));
        let no_attempts = AttemptLog::default();
        let outcome = match Escalation::decode(&record.payload) {
            Err(e) => {
                let failure = Failure::undecodable(e.to_string());
                let reason = DeadLetterReason::Undecodable;
                self.cloud
                    .dead_letter(record, None, reason, failure, &no_attempts)
            }
            Ok(esc) => match esc.validate_with(&self.options.record_limits()) {
                Err(e) => {
                    // A path the reader may not open is not trusted because a writer
                    // recorded it: refused here, before any file is touched.
                    let failure = Failure::invalid(&e);
                    let reason = DeadLetterReason::Invalid;
                    self.cloud
                        .dead_letter(record, Some(&esc), reason, failure, &no_attempts)
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
    ) -> Result<Outcome, Error> {
        self.note_first_seen(record, esc);
        let age_ms = age::item_age_ms(self.first_seen, esc);
        if age_ms >= self.cloud.config.retention_ms {
            return Ok(self.cloud.expire(esc, age_ms));
        }
        if let Some(matched) = self.dedupe.contains(esc) {
            match matched {
                // Same image query id: the cloud already has exactly this one.
                DuplicateOf::ImageQueryId => {
                    tracing::info!(image_query_id = %esc.image_query_id, request_id = %esc.request_id, ?matched, "duplicate of a delivered escalation; skipped")
                }
                // Only the request id matches: an SDK retry of one edge request, or a
                // producer reusing request ids. Skipped by design, but never quietly.
                DuplicateOf::RequestId => {
                    tracing::warn!(image_query_id = %esc.image_query_id, request_id = %esc.request_id, detector_id = %esc.detector_id, "skipped: an escalation with this request id was already delivered (under another image query id); request ids must be unique per edge request")
                }
            }
            Stats::add(&self.cloud.stats.duplicates, 1);
            return Ok(Outcome::Duplicate);
        }
        let possibly_submitted =
            possibly_submitted || window::possibly_submitted(&self.attempts, record.id, esc);
        let outcome = Delivery {
            item: Item::new(self.cloud.config.budget, possibly_submitted),
            cloud: &mut self.cloud,
            reader: &mut self.reader,
            journal: &mut self.attempts,
            current: &mut self.current,
            limits: self.options.record_limits(),
            first_seen: self.first_seen,
            record,
            esc,
            dest,
        }
        .run()?;
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

    fn ack(&mut self, id: RecordId) -> Result<(), Error> {
        self.reader.ack(id)?;
        self.attempts.settled(id);
        self.held = None;
        self.current = None;
        self.acks_since_checkpoint += 1;
        if self.acks_since_checkpoint >= self.cloud.config.checkpoint_acks_max {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Dedupe ids first, then the cursor: after a crash between the two, redelivered
    /// records are recognised as duplicates instead of being submitted again.
    fn checkpoint(&mut self) -> Result<(), Error> {
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
                self.cloud
                    .raise_storage_failure("cursor checkpoint failed", &e);
                return Err(e.into());
            }
        }
        self.attempts.checkpointed();
        if self.acks_since_checkpoint > 0 {
            Stats::add(&self.cloud.stats.checkpoints, 1);
        }
        self.acks_since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    fn pending_total(&mut self) -> u64 {
        self.reader.pending().values().sum()
    }

    /// The gauges, wal events and threshold incidents (`Cloud::maintain`), then, when due,
    /// retention. Called between items only (no record delivered and unacknowledged).
    fn maintain(&mut self) -> Result<(), Error> {
        self.cloud.maintain(&mut self.reader);
        let sweep_every = Duration::from_millis(self.cloud.config.retention_sweep_interval_ms);
        let due = self
            .last_retention_sweep
            .is_none_or(|t| t.elapsed() >= sweep_every);
        if due {
            self.last_retention_sweep = Some(Instant::now());
            self.sweep_retention()?;
        }
        Ok(())
    }

    /// Deletes wal segments and dead letters older than the retention age.
    fn sweep_retention(&mut self) -> Result<(), Error> {
        self.checkpoint()?;
        let retention = Duration::from_millis(self.cloud.config.retention_ms);
        self.reader.expire_older_than(retention)?;
        self.cloud.report_wal_events(&mut self.reader);
        let dlq =
            crate::dead_letter::DeadLetterQueue::open(self.layout.root(), self.options.clone())?
                .with_retention_ms(self.cloud.config.retention_ms);
        match dlq.expire() {
            Ok(report) if !report.expired.is_empty() => {
                tracing::info!(
                    expired = report.expired.len(),
                    "dead letters past retention removed"
                )
            }
            Ok(_) => {}
            Err(Error::DeadLetterBusy { .. }) => {
                tracing::debug!("dead-letter queue busy; retention retried at the next sweep")
            }
            Err(e) => {
                tracing::warn!(error = %e, "dead-letter retention failed; retried at the next sweep")
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use super::*;
    use crate::client::{AttemptContext, Delivered, DeliveryError, ImageQuery, Lookup};
    use crate::escalation::ImageSource;
    use crate::retry::BackoffConfig;

    /// Answers 503 to the first attempt of every escalation and accepts the second.
    #[derive(Default)]
    struct FailsOnceEach {
        seen: Mutex<HashSet<String>>,
    }

    impl Destination for FailsOnceEach {
        fn name(&self) -> &str {
            "fails-once-each"
        }

        fn submit(&self, esc: &Escalation, _: AttemptContext) -> Result<Delivered, DeliveryError> {
            let mut seen = self.seen.lock().expect("lock");
            if seen.insert(esc.image_query_id.clone()) {
                return Err(DeliveryError::Http {
                    status: 503,
                    retry_after: None,
                    location: None,
                    body_excerpt: String::new(),
                });
            }
            let image_query: ImageQuery =
                serde_json::from_value(serde_json::json!({ "id": esc.image_query_id }))
                    .expect("image query");
            Ok(Delivered {
                image_query,
                status: 201,
                elapsed: Duration::ZERO,
            })
        }

        fn lookup(&self, _: &str) -> Result<Lookup, DeliveryError> {
            Ok(Lookup::NotFound)
        }
    }

    fn enqueue(root: &std::path::Path, n: usize) {
        let queue =
            escalation_queue_producer::EscalationQueue::open_with(root, QueueOptions::default())
                .expect("queue");
        for _ in 0..n {
            let esc = Escalation::new("det_summary", ImageSource::Inline(vec![0xff, 0xd8].into()));
            queue.enqueue(&esc).expect("enqueue");
        }
    }

    fn config() -> WorkerConfig {
        WorkerConfig {
            backoff: BackoffConfig {
                delay_base_ms: 1,
                delay_max_ms: 2,
                retry_after_max_ms: 10,
            },
            idle_poll_ms: 5,
            maintenance_interval_ms: 20,
            jitter_seed: Some(3),
            ..WorkerConfig::default()
        }
    }

    /// Story: a run's summary and the stats counted every event twice, in two places that
    /// could drift apart. The summary is now what the stats counted during that run: a
    /// second run, even one whose worker continues the first one's counters, reports its
    /// own items only, and each summary matches the change of the stats it ran with.
    #[test]
    fn each_run_summary_is_what_the_stats_counted_during_that_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("queue");
        let dest = FailsOnceEach::default();
        enqueue(&root, 2);
        let mut first = Worker::open(&root, &QueueOptions::default(), config()).expect("open");
        let summary = first.drain(&dest).expect("drain");
        let expected = (2, 4, 2, 0, 0, RunEnd::Empty);
        let got = |s: &RunSummary| {
            (
                s.delivered,
                s.attempts,
                s.retried,
                s.dead_lettered,
                s.duplicates,
                s.ended,
            )
        };
        assert_eq!(got(&summary), expected);
        let stats = first.stats();
        drop(first);

        enqueue(&root, 1);
        let mut second = Worker::open(&root, &QueueOptions::default(), config()).expect("open");
        second.continue_stats(Arc::clone(&stats));
        let summary = second.drain(&dest).expect("drain");
        assert_eq!(got(&summary), (1, 2, 1, 0, 0, RunEnd::Empty));
        let total = stats.snapshot();
        assert_eq!((total.delivered, total.attempts, total.retried), (3, 6, 3));
    }
}
