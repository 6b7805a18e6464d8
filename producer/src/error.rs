//! The one error type of opening a queue and enqueueing (re-exported by `escalation-queue`).

use std::path::PathBuf;

use crate::escalation::ValidationError;
use crate::layout::QueueError;
use escalation_queue_wal::{Error as WalError, ErrorKind as WalErrorKind};

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong opening a queue or enqueueing. The variants an enqueuer
/// must act on are spelled out; the rest is in [`Error::Queue`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The escalation breaks a rule (the message names the field, the value and what is
    /// allowed); nothing was enqueued. Do not retry.
    #[error("escalation rejected: {0}")]
    Invalid(#[from] ValidationError),
    /// The queue holds its configured maximum already; nothing was enqueued. Retry later,
    /// or apply the overflow policy (the reader frees space as it delivers).
    #[error("queue is full: {queue_bytes} bytes on disk, limit {queue_bytes_max} (queue_bytes_max); nothing was enqueued")]
    QueueFull {
        /// Bytes the queue occupies.
        queue_bytes: u64,
        /// The limit.
        queue_bytes_max: u64,
    },
    /// The file system is short of space; nothing was enqueued. Retry later.
    #[error("disk is full: {available_bytes} bytes free for {path}, {needed_bytes} needed; nothing was enqueued")]
    DiskFull {
        /// The queue's wal directory.
        path: PathBuf,
        /// Bytes available.
        available_bytes: u64,
        /// Bytes needed.
        needed_bytes: u64,
    },
    /// A sync failed earlier, so this handle acknowledges nothing more (the kernel may have
    /// dropped data). Open the queue again to recover.
    #[error("this queue handle is poisoned by an earlier failed sync; open the queue again to recover: {0}")]
    Poisoned(#[source] WalError),
    /// Every writer lane is held by another open handle.
    #[error(
        "all {lanes_max} writer lanes of {path} are in use; close a handle or raise lanes_max"
    )]
    NoFreeLane {
        /// The wal directory.
        path: PathBuf,
        /// The configured lanes.
        lanes_max: u16,
    },
    /// Anything else: storage I/O (with the file), configuration, dead-letter and worker
    /// errors.
    #[error(transparent)]
    Queue(QueueError),
}

/// What kind of failure an [`Error`] or a [`QueueError`] is: the wal's kinds for what the
/// write-ahead log reported, and the queue's own. Retry loops and exit codes decide on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The escalation breaks a rule.
    Invalid,
    /// The escalation could not be encoded.
    Encode,
    /// An option is out of range.
    Config,
    /// Another process holds the queue (the worker cursor, the dead-letter queue).
    Locked,
    /// A file outside the wal could not be used.
    Io,
    /// A stored dead-letter entry is malformed.
    Malformed,
    /// The write-ahead log failed; its kind.
    Wal(WalErrorKind),
}

impl ErrorKind {
    /// True when the same call may succeed later without a fix (queue or disk full).
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Wal(kind) if kind.is_retryable())
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::QueueFull { .. } => ErrorKind::Wal(WalErrorKind::QueueFull),
            Self::DiskFull { .. } => ErrorKind::Wal(WalErrorKind::NoSpace),
            Self::Poisoned(wal) => ErrorKind::Wal(wal.kind()),
            Self::NoFreeLane { .. } => ErrorKind::Wal(WalErrorKind::Locked),
            Self::Queue(queue) => queue.kind(),
        }
    }

    /// True when the same call may succeed later without a fix (queue or disk full).
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

impl QueueError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::Encode(_) => ErrorKind::Encode,
            Self::Wal(wal) => ErrorKind::Wal(wal.kind()),
            Self::Io { .. } => ErrorKind::Io,
            Self::WorkerRunning { .. } | Self::DeadLetterBusy { .. } => ErrorKind::Locked,
            Self::DeadLetterMalformed(_) => ErrorKind::Malformed,
            Self::Config { .. } => ErrorKind::Config,
        }
    }
}

impl From<QueueError> for Error {
    fn from(error: QueueError) -> Self {
        match error {
            QueueError::Invalid(invalid) => Self::Invalid(invalid),
            QueueError::Wal(wal) => wal.into(),
            other => Self::Queue(other),
        }
    }
}

impl From<WalError> for Error {
    fn from(error: WalError) -> Self {
        match error {
            WalError::QueueFull {
                queue_bytes,
                queue_bytes_max,
            } => Self::QueueFull {
                queue_bytes,
                queue_bytes_max,
            },
            WalError::NoSpace {
                path,
                available_bytes,
                needed_bytes,
            } => Self::DiskFull {
                path,
                available_bytes,
                needed_bytes,
            },
            WalError::NoFreeLane { path, lanes_max } => Self::NoFreeLane { path, lanes_max },
            e @ WalError::Poisoned { .. } => Self::Poisoned(e),
            other => Self::Queue(QueueError::Wal(other)),
        }
    }
}
