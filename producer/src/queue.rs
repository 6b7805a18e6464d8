//! [`EscalationQueue`]: the writer handle an edge-endpoint process holds.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::escalation::{Escalation, RecordLimits};
use crate::incidents::{IncidentContext, IncidentDraft, IncidentKind, IncidentRecorder};
use crate::layout::{QueueLayout, QueueOptions};
use escalation_queue_wal::clock::now_unix_ms;
use escalation_queue_wal::{Error as WalError, Writer};

/// A handle for enqueueing escalations into one queue directory.
///
/// Each open handle claims one writer *lane* (its own sequence of segment files, locked
/// with `flock`), so any number of processes can enqueue into the same directory. Clone
/// the handle to share it between threads: clones share the lane, and concurrent enqueues
/// share one `fdatasync` (group commit). The lane is released when the last clone drops.
#[derive(Clone, Debug)]
pub struct EscalationQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    layout: QueueLayout,
    options: QueueOptions,
    limits: RecordLimits,
    writer: Writer,
    incidents: IncidentRecorder,
}

/// Proof that an escalation is durable in the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnqueueReceipt {
    /// The lane it was appended to.
    pub lane: u16,
    /// Its sequence number in the lane.
    pub seq: u64,
    /// Its image query id.
    pub image_query_id: String,
    /// Its request id.
    pub request_id: String,
    /// Size of the stored record.
    pub record_len_bytes: usize,
}

impl EscalationQueue {
    /// Opens (creating, mode 0700) the queue directory `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, QueueOptions::default())
    }

    /// Opens `dir` with `options` (every process of one queue must use the same
    /// `image_size_max_bytes`). Claims a lane; fails with a [`Locked`](escalation_queue_wal::ErrorKind::Locked) wal error
    /// ([`Error::kind`](crate::Error::kind)) when all are held.
    pub fn open_with(dir: impl AsRef<Path>, options: QueueOptions) -> Result<Self> {
        options.validate()?;
        let layout = QueueLayout::new(dir.as_ref());
        layout.create()?;
        let writer = Writer::open(layout.wal_dir(), &options.wal_options())?;
        let incidents = IncidentRecorder::with_defaults(Some(layout.incidents_path()));
        Ok(Self {
            inner: Arc::new(Inner {
                limits: options.record_limits(),
                layout,
                options,
                writer,
                incidents,
            }),
        })
    }

    /// Validates `escalation` and appends it; returns only once it is durable (with the
    /// default durability). Errors, by [`Error::kind`](crate::Error::kind): `Invalid`
    /// (nothing written; do not retry), `Wal(QueueFull)` and `Wal(NoSpace)` (nothing
    /// written; retry later: [`Error::is_retryable`](crate::Error::is_retryable)),
    /// `Wal(Poisoned)` (open the queue again). Storage failures also raise a CRITICAL incident in
    /// `<queue_dir>/incidents.jsonl`.
    ///
    /// A producer that first submits synchronously itself and falls back to the queue sets
    /// [`Escalation::possibly_submitted`] when that submit failed *after* the request may
    /// have reached the cloud (read timeout, reset, 5xx), so the reader treats a 400 for it
    /// as a possible duplicate (`docs/SEMANTICS.md` §6):
    ///
    /// ```
    /// use escalation_queue_producer::{Escalation, EscalationQueue, ImageSource};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let queue = EscalationQueue::open(dir.path())?;
    /// let jpeg = b"\xff\xd8\xff\xe0 a small image".to_vec();
    /// let mut escalation = Escalation::new("det_123", ImageSource::Inline(jpeg.into()));
    /// // Our own POST for this image query timed out while waiting for the answer.
    /// escalation.possibly_submitted = true;
    /// queue.enqueue(&escalation)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The image is not copied: the record is encoded around it
    /// ([`Escalation::encode_parts`]) and a large record is written from those parts, so
    /// an enqueue holds the image once (probe F27, `docs/PERFORMANCE.md`).
    pub fn enqueue(&self, escalation: &Escalation) -> Result<EnqueueReceipt> {
        let record = escalation
            .encode_parts(&self.inner.limits)
            .map_err(Error::from)?;
        let id = match self.inner.writer.append_parts(&record.parts()) {
            Ok(id) => id,
            Err(e) => {
                self.report_failure(&e);
                return Err(e.into());
            }
        };
        Ok(EnqueueReceipt {
            lane: id.lane.0,
            seq: id.seq.0,
            image_query_id: escalation.image_query_id.clone(),
            request_id: escalation.request_id.clone(),
            record_len_bytes: record.len(),
        })
    }

    /// The lane this handle appends to.
    pub fn lane(&self) -> u16 {
        self.inner.writer.lane().0
    }

    /// The queue directory.
    pub fn queue_dir(&self) -> &Path {
        self.inner.layout.root()
    }

    /// The options the queue was opened with.
    pub fn options(&self) -> &QueueOptions {
        &self.inner.options
    }

    /// CRITICAL incidents for failures a human must see: poisoned writer, full disk.
    fn report_failure(&self, error: &WalError) {
        let (kind, title) = match error {
            WalError::Poisoned { .. } => (
                IncidentKind::WriterPoisoned,
                "a queue writer's sync failed; it accepts nothing until the queue is reopened",
            ),
            WalError::NoSpace { .. } | WalError::QueueFull { .. } => (
                IncidentKind::DiskFull,
                "escalations cannot be enqueued: the disk or the queue is full",
            ),
            WalError::Io { source, .. } if escalation_queue_wal::is_storage_full(source) => (
                IncidentKind::DiskFull,
                "escalations cannot be enqueued: the disk is full",
            ),
            _ => return,
        };
        let lane = self.lane();
        let draft = IncidentDraft::new(kind, title)
            .subject(format!("lane {lane}"))
            .error(error)
            .tried([
                "the enqueue was refused; the caller was told (nothing acknowledged was lost)"
                    .to_owned(),
            ])
            .details(serde_json::json!({ "lane": lane, "process_id": std::process::id() }));
        let context = IncidentContext {
            circuit_state: "unknown".into(),
            ..IncidentContext::default()
        };
        self.inner.incidents.raise(draft, context, now_unix_ms());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_is_shareable_between_threads() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<EscalationQueue>();
    }

    #[test]
    fn clones_share_one_lane_and_a_second_handle_gets_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = QueueOptions {
            segment_bytes: 1 << 20,
            image_size_max_bytes: 64 << 10,
            free_disk_bytes_min: 0,
            ..QueueOptions::default()
        };
        let a = EscalationQueue::open_with(dir.path(), options.clone()).expect("open");
        let b = EscalationQueue::open_with(dir.path(), options).expect("open again");
        assert_ne!(a.lane(), b.lane());
        let clone = a.clone();
        let esc = Escalation::new(
            "det_1",
            crate::escalation::ImageSource::Inline(vec![0xff, 0xd8].into()),
        );
        let first = a.enqueue(&esc).expect("enqueue");
        let second = std::thread::spawn(move || clone.enqueue(&esc).expect("enqueue"))
            .join()
            .expect("thread");
        assert_eq!((first.lane, second.lane), (a.lane(), a.lane()));
        assert_eq!(second.seq, first.seq + 1);
    }
}
