//! [`EscalationQueue`]: the producer crate's writer handle, plus the queue's dead letters.

use std::path::Path;

use escalation_queue_producer::EscalationQueue as Producer;
use escalation_queue_worker::{DeadLetterQueue, Escalation, QueueOptions};

use crate::{EnqueueReceipt, Result};

/// A handle for enqueueing escalations into one queue directory.
///
/// Each open handle claims one writer *lane* (its own sequence of segment files, locked
/// with `flock`), so any number of processes can enqueue into the same directory. Clone
/// the handle to share it between threads: clones share the lane, and concurrent enqueues
/// share one `fdatasync` (group commit). The lane is released when the last clone drops.
///
/// This is [`escalation_queue_producer::EscalationQueue`] (what a process that only
/// enqueues links, with no network dependency) with [`dead_letters`](Self::dead_letters)
/// added; every other method is that handle's.
#[derive(Clone, Debug)]
pub struct EscalationQueue {
    producer: Producer,
}

impl EscalationQueue {
    /// Opens (creating, mode 0700) the queue directory `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Producer::open(dir).map(Self::from)
    }

    /// Opens `dir` with `options` (every process of one queue must use the same
    /// `image_size_max_bytes`). Claims a lane; fails with a
    /// [`Locked`](crate::wal::ErrorKind::Locked) wal error when all are held.
    pub fn open_with(dir: impl AsRef<Path>, options: QueueOptions) -> Result<Self> {
        Producer::open_with(dir, options).map(Self::from)
    }

    /// Validates `escalation` and appends it; returns only once it is durable. See
    /// [`escalation_queue_producer::EscalationQueue::enqueue`] for the errors and
    /// `possibly_submitted`.
    pub fn enqueue(&self, escalation: &Escalation) -> Result<EnqueueReceipt> {
        self.producer.enqueue(escalation)
    }

    /// The lane this handle appends to.
    pub fn lane(&self) -> u16 {
        self.producer.lane()
    }

    /// The queue directory.
    pub fn queue_dir(&self) -> &Path {
        self.producer.queue_dir()
    }

    /// The options the queue was opened with.
    pub fn options(&self) -> &QueueOptions {
        self.producer.options()
    }

    /// The producer handle itself (for code written against the producer crate alone).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The queue's dead letters (list, replay, purge).
    pub fn dead_letters(&self) -> Result<DeadLetterQueue> {
        DeadLetterQueue::open(self.queue_dir(), self.options().clone())
    }
}

impl From<Producer> for EscalationQueue {
    fn from(producer: Producer) -> Self {
        Self { producer }
    }
}
