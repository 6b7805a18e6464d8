//! The dead-letter queue: a wal of its own (`<queue_dir>/dead-letter/`) holding every item
//! the worker gave up on, with the original record bytes and the context of the failure.
//!
//! The worker appends (through a [`DeadLetterSink`]; so does `import-legacy`, for failures
//! of another queue, through [`DeadLetterQueue::sink`]). Operators [`list`](DeadLetterQueue::list) (read-only, safe
//! while the worker runs), [`replay`](DeadLetterQueue::replay) entries back into the main
//! queue and [`purge`](DeadLetterQueue::purge) them; retention
//! ([`expire`](DeadLetterQueue::expire)) drops entries enqueued longer ago than the
//! retention age. The wal is a FIFO with a cursor, so changes are made by a *rewrite pass*:
//! under the `dlq` cursor (one pass at a time) every entry is read; replayed records are
//! appended to the main wal, survivors appended again to the dead-letter wal, and only then
//! is everything read acknowledged and checkpointed. A crash in between duplicates (an entry
//! replayed twice, or a survivor kept twice) but never loses; duplicate ids are merged.

use std::collections::HashSet;
use std::path::PathBuf;

use bytes::Bytes;
use escalation_queue_wal::{Error as WalError, Options, Reader, RecordId, Writer};

pub use escalation_queue_producer::dead_letter::{
    AttemptLog, AttemptRecord, DeadLetter, DeadLetterId, DeadLetterInfo, ATTEMPTS_KEPT_MAX,
    DEAD_LETTER_ID_PREFIX, ENTRY_FORMAT_VERSION, MESSAGE_MAX_BYTES,
};
pub use escalation_queue_producer::MalformedEntry;

pub(crate) use escalation_queue_producer::dead_letter::bounded;

use crate::layout::{create_private_dir, Error, QueueLayout, QueueOptions, DEAD_LETTER_CURSOR};
use crate::retry::{DeadLetterReason, DEFAULT_AGE_MAX_MS};

/// Which entries an operation applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Every entry.
    All,
    /// Every entry whose record can be delivered: all but those dead-lettered as
    /// undecodable, which would only be dead-lettered again under new ids.
    AllDecodable,
    /// Entries whose dead-letter id or image query id is this.
    Id(String),
}

impl Selector {
    fn matches(&self, info: Option<&DeadLetterInfo>) -> bool {
        match (self, info) {
            (Self::All, _) => true,
            (Self::AllDecodable, Some(info)) => info.cause != DeadLetterReason::Undecodable,
            (Self::AllDecodable, None) => false,
            (Self::Id(id), Some(info)) => {
                info.id.as_str() == id || info.image_query_id.as_deref() == Some(id)
            }
            (Self::Id(_), None) => false,
        }
    }
}

/// What a rewrite pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadLetterReport {
    /// Entries put back into the main queue.
    pub replayed: Vec<DeadLetterId>,
    /// Entries deleted on request.
    pub purged: Vec<DeadLetterId>,
    /// Entries deleted by retention.
    pub expired: Vec<DeadLetterId>,
    /// Extra copies of an id merged away (left by a crash during an earlier pass).
    pub duplicates_merged: u64,
    /// Entries left in the dead-letter queue.
    pub kept: u64,
}

/// What happens to one entry in a rewrite pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Keep,
    Replay,
    Purge,
    Expire,
    Merge,
}

/// Operator access to a queue's dead letters.
#[derive(Clone, Debug)]
pub struct DeadLetterQueue {
    layout: QueueLayout,
    options: QueueOptions,
    retention_ms: u64,
}

impl DeadLetterQueue {
    /// Access to the dead letters of `queue_dir`, with the default 7-day retention.
    pub fn open(queue_dir: impl Into<PathBuf>, options: QueueOptions) -> Result<Self, Error> {
        options.validate()?;
        Ok(Self {
            layout: QueueLayout::new(queue_dir),
            options,
            retention_ms: DEFAULT_AGE_MAX_MS,
        })
    }

    /// Sets the retention age: entries enqueued longer ago are hidden and expired.
    #[must_use]
    pub fn with_retention_ms(mut self, retention_ms: u64) -> Self {
        self.retention_ms = retention_ms;
        self
    }

    fn wal_options(&self) -> Options {
        self.options.dead_letter_wal_options()
    }

    /// Every dead letter within the retention age, oldest first, one per id. Read-only:
    /// safe while the worker and other tools run (the producer's
    /// [`dead_letter::list`](escalation_queue_producer::dead_letter::list)).
    pub fn list(&self) -> Result<Vec<DeadLetter>, Error> {
        escalation_queue_producer::dead_letter::list(
            self.layout.root(),
            &self.options,
            self.retention_ms,
        )
    }

    /// Puts the selected entries back into the main queue (as new records: attempts start
    /// again) and removes them from the dead-letter queue.
    pub fn replay(&self, selector: &Selector) -> Result<DeadLetterReport, Error> {
        self.rewrite(|info| match selector.matches(Some(info)) {
            true => Fate::Replay,
            false => Fate::Keep,
        })
    }

    /// Deletes the selected entries.
    pub fn purge(&self, selector: &Selector) -> Result<DeadLetterReport, Error> {
        self.rewrite(|info| match selector.matches(Some(info)) {
            true => Fate::Purge,
            false => Fate::Keep,
        })
    }

    /// An appender of dead letters that do not come from a worker delivery (an imported
    /// failure, say): build the entry ([`DeadLetter`], its id from [`DeadLetterId::new`])
    /// and [`append`](DeadLetterSink::append) it. It may run while the worker runs (each
    /// holds a lane of its own) and during a rewrite pass (what it appends after the pass
    /// read is left alone). The dead-letter wal is opened on the first append.
    pub fn sink(&self) -> DeadLetterSink {
        DeadLetterSink::new(&self.layout, &self.options)
    }

    /// Deletes entries enqueued longer ago than the retention age.
    pub fn expire(&self) -> Result<DeadLetterReport, Error> {
        self.rewrite(|_| Fate::Keep)
    }

    /// The rewrite pass (see the module docs). `decide` is asked for entries within
    /// retention that are the first of their id.
    fn rewrite(
        &self,
        mut decide: impl FnMut(&DeadLetterInfo) -> Fate,
    ) -> Result<DeadLetterReport, Error> {
        let dir = self.layout.dead_letter_dir();
        create_private_dir(self.layout.root())?;
        let opts = self.wal_options();
        let mut reader = match Reader::open(&dir, DEAD_LETTER_CURSOR, &opts) {
            Err(WalError::CursorLocked { .. }) => return Err(Error::DeadLetterBusy { path: dir }),
            other => other?,
        };
        let now_ms = now_unix_ms();
        let mut seen = HashSet::new();
        let mut read: Vec<(RecordId, Bytes, Fate, Option<DeadLetterId>)> = Vec::new();
        while let Some(record) = reader.next()? {
            let (fate, id) = match DeadLetter::decode(&record.payload) {
                Ok(e) if e.info.expired(now_ms, self.retention_ms) => {
                    (Fate::Expire, Some(e.info.id))
                }
                Ok(e) if !seen.insert(e.info.id.clone()) => (Fate::Merge, Some(e.info.id)),
                Ok(e) => (decide(&e.info), Some(e.info.id)),
                // Never drop what cannot be read: an operator may still need it.
                Err(_) => (Fate::Keep, None),
            };
            read.push((record.id, record.payload, fate, id));
        }
        let mut report = DeadLetterReport::default();
        if read.iter().all(|(_, _, fate, _)| *fate == Fate::Keep) {
            report.kept = read.len() as u64;
            return Ok(report);
        }
        self.replay_records(&read)?;
        self.keep_records(&read)?;
        for (id, _, fate, dl_id) in &read {
            reader.ack(*id)?;
            let dl_id = dl_id.clone();
            match (fate, dl_id) {
                (Fate::Keep, _) => report.kept += 1,
                (Fate::Merge, _) => report.duplicates_merged += 1,
                (Fate::Replay, Some(d)) => report.replayed.push(d),
                (Fate::Purge, Some(d)) => report.purged.push(d),
                (Fate::Expire, Some(d)) => report.expired.push(d),
                _ => {}
            }
        }
        reader.checkpoint()?;
        tracing::info!(
            replayed = report.replayed.len(),
            purged = report.purged.len(),
            expired = report.expired.len(),
            kept = report.kept,
            "dead-letter queue rewritten"
        );
        Ok(report)
    }

    fn replay_records(
        &self,
        read: &[(RecordId, Bytes, Fate, Option<DeadLetterId>)],
    ) -> Result<(), Error> {
        let mut writer = None;
        for (_, stored, fate, _) in read {
            if *fate != Fate::Replay {
                continue;
            }
            let entry = DeadLetter::decode(stored)?;
            let writer = match &mut writer {
                Some(w) => w,
                None => writer.insert(Writer::open(
                    self.layout.wal_dir(),
                    &self.options.wal_options(),
                )?),
            };
            writer.append(&entry.record)?;
        }
        Ok(())
    }

    fn keep_records(
        &self,
        read: &[(RecordId, Bytes, Fate, Option<DeadLetterId>)],
    ) -> Result<(), Error> {
        let mut writer = None;
        for (_, stored, fate, _) in read {
            if *fate != Fate::Keep {
                continue;
            }
            let writer = match &mut writer {
                Some(w) => w,
                None => writer.insert(Writer::open(
                    self.layout.dead_letter_dir(),
                    &self.wal_options(),
                )?),
            };
            writer.append(stored)?;
        }
        Ok(())
    }
}

/// Appends entries to the dead-letter wal (one lane, opened on first use): the worker's
/// side, and [`DeadLetterQueue::sink`]'s.
#[derive(Debug)]
pub struct DeadLetterSink {
    dir: PathBuf,
    options: Options,
    writer: Option<Writer>,
}

impl DeadLetterSink {
    pub(crate) fn new(layout: &QueueLayout, options: &QueueOptions) -> Self {
        Self {
            dir: layout.dead_letter_dir(),
            options: options.dead_letter_wal_options(),
            writer: None,
        }
    }

    /// Appends `entry`; returns once it is durable. Fails with
    /// [`Error::DeadLetterMalformed`] for an entry that could not be read back (its
    /// `record_len_bytes` is not its record's length), with [`Error::Wal`] when the wal
    /// refuses it (too large for [`QueueOptions::dead_letter_bytes_max`], disk full); after
    /// a poisoned lane the next append reopens it.
    pub fn append(&mut self, entry: &DeadLetter) -> Result<(), Error> {
        let stored = entry.encode()?;
        let writer = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(Writer::open(&self.dir, &self.options)?),
        };
        match writer.append(&stored) {
            Ok(_) => Ok(()),
            Err(e) => {
                if matches!(e, WalError::Poisoned { .. }) {
                    // Reopening recovers the lane; the next append may then succeed.
                    self.writer = None;
                }
                Err(e.into())
            }
        }
    }
}

/// Current unix time in milliseconds, from the wal's clock.
pub(crate) use escalation_queue_wal::clock::now_unix_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::ErrorClass;

    fn imported(id: &str, record: &'static [u8]) -> DeadLetter {
        DeadLetter {
            info: DeadLetterInfo {
                id: DeadLetterId::new(id).expect("a valid id"),
                origin_lane: 0,
                origin_seq: 0,
                enqueued_at_unix_ms: now_unix_ms(),
                dead_lettered_at_unix_ms: now_unix_ms(),
                detector_id: Some("det_1".into()),
                image_query_id: Some("iq_imported".into()),
                request_id: None,
                cause: DeadLetterReason::Rejected {
                    class: ErrorClass::ImageUnavailable,
                    status: None,
                },
                error_class: ErrorClass::ImageUnavailable.to_string(),
                http_status: None,
                error: "image gone".into(),
                response_excerpt: String::new(),
                attempts: Vec::new(),
                attempts_total: 0,
                record_len_bytes: record.len() as u64,
            },
            record: Bytes::from_static(record),
        }
    }

    /// Story: `import-legacy` adds failures of another queue as dead letters, with ids of
    /// its own, through the public appender: `dlq list` shows them (one per id), a replay
    /// puts the record back into the main queue, and an entry that could not be read back
    /// is refused before anything is written.
    #[test]
    fn a_dead_letter_not_from_a_delivery_is_appended_listed_and_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dlq = DeadLetterQueue::open(dir.path(), QueueOptions::default()).expect("open");
        let mut sink = dlq.sink();
        sink.append(&imported("dl_legacy_a", b"{\"line\": 1}"))
            .expect("append");
        sink.append(&imported("dl_legacy_a", b"{\"line\": 1}"))
            .expect("append a copy");
        let mut off = imported("dl_legacy_b", b"xyz");
        off.info.record_len_bytes = 2;
        let err = sink.append(&off).expect_err("length off");
        assert!(matches!(err, Error::DeadLetterMalformed(_)), "{err}");

        let listed = dlq.list().expect("list");
        assert_eq!(listed.len(), 1, "{listed:?}");
        let mut expected = imported("dl_legacy_a", b"{\"line\": 1}");
        // Made a moment apart: the times are the listed entry's.
        expected.info.enqueued_at_unix_ms = listed[0].info.enqueued_at_unix_ms;
        expected.info.dead_lettered_at_unix_ms = listed[0].info.dead_lettered_at_unix_ms;
        assert_eq!(listed[0], expected);

        let report = dlq
            .replay(&Selector::Id("dl_legacy_a".into()))
            .expect("replay");
        assert_eq!(
            report.replayed,
            vec![DeadLetterId::new("dl_legacy_a").expect("id")]
        );
        assert_eq!(report.duplicates_merged, 1);
        assert!(dlq.list().expect("list").is_empty());
        let layout = QueueLayout::new(dir.path());
        let mut main = Reader::browse(
            layout.wal_dir(),
            crate::layout::WORKER_CURSOR,
            &QueueOptions::default().wal_options(),
        )
        .expect("main wal");
        let record = main.next().expect("read").expect("the replayed record");
        assert_eq!(&record.payload[..], b"{\"line\": 1}");
    }
}
