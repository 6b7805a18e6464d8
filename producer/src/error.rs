//! The one error type of the producer side: opening a queue, enqueueing, and the
//! queue-level operations the worker crate builds on (its cursor, the dead-letter queue).
//! Failures of the write-ahead log are carried whole in [`Error::Wal`], never re-declared:
//! what kind of failure it is comes from [`Error::kind`], which wraps the wal's own
//! [`ErrorKind`](escalation_queue_wal::ErrorKind).

use std::io;
use std::path::PathBuf;

use crate::escalation::{EncodeError, ValidationError};
use escalation_queue_wal::{Error as WalError, ErrorKind as WalErrorKind};

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong opening a queue, enqueueing, or in the queue-level
/// operations of the worker and the dead-letter queue. Decide on [`Error::kind`]:
/// `Wal(QueueFull)` and `Wal(NoSpace)` mean nothing was written and a later call may
/// succeed ([`Error::is_retryable`]); `Wal(Poisoned)` means this handle acknowledges
/// nothing more (open the queue again); `Wal(Locked)` on open means every writer lane is
/// held.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The escalation breaks a rule (the message names the field, the value and what is
    /// allowed); nothing was enqueued. Do not retry.
    #[error("escalation rejected: {0}")]
    Invalid(#[from] ValidationError),
    /// The escalation could not be encoded.
    #[error("escalation could not be encoded: {0}")]
    Encode(#[source] EncodeError),
    /// The write-ahead log failed; its message names the file and why, its
    /// [`kind`](escalation_queue_wal::Error::kind) what to do.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A file outside the wal (dedupe log, attempt journal, incident log) could not be
    /// used.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another worker holds the queue's `worker` cursor.
    #[error("another worker is already running on {path} (one worker per queue)")]
    WorkerRunning {
        /// The queue directory.
        path: PathBuf,
    },
    /// Another replay, purge or retention pass holds the dead-letter queue.
    #[error("another dead-letter operation (replay, purge or retention) is running on {path}; retry when it ends")]
    DeadLetterBusy {
        /// The dead-letter directory.
        path: PathBuf,
    },
    /// A stored dead-letter entry could not be decoded or encoded.
    #[error(transparent)]
    DeadLetterMalformed(#[from] MalformedEntry),
    /// An option is out of range.
    #[error("invalid option {key} = {value}: {allowed}")]
    Config {
        /// The option.
        key: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
}

/// A stored dead-letter entry that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("dead-letter entry is malformed: {0}")]
pub struct MalformedEntry(String);

impl MalformedEntry {
    /// What is wrong with the entry.
    #[doc(hidden)]
    pub fn new(what: impl Into<String>) -> Self {
        Self(what.into())
    }
}

/// What kind of failure an [`Error`] is: the wal's kinds for what the write-ahead log
/// reported, and the queue's own. Retry loops and exit codes decide on it.
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
    #[doc(hidden)]
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        tracing::error!(op, path = %path.display(), error = %source, "queue file-system call failed");
        Self::Io { op, path, source }
    }

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

    /// True when the same call may succeed later without operator action (the queue is
    /// full or the disk is short of space): back off and retry.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// The wal's error, when the write-ahead log failed.
    pub fn as_wal(&self) -> Option<&WalError> {
        match self {
            Self::Wal(wal) => Some(wal),
            _ => None,
        }
    }
}

impl From<EncodeError> for Error {
    fn from(error: EncodeError) -> Self {
        match error {
            EncodeError::Invalid(invalid) => Self::Invalid(invalid),
            other => Self::Encode(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Story: a wal failure is carried whole, so its kind, its message (naming the file)
    /// and its retry advice reach the caller unchanged, whichever layer reports it.
    #[test]
    fn a_wal_failure_keeps_its_kind_and_message() {
        let full = Error::from(WalError::QueueFull {
            queue_bytes: 10,
            queue_bytes_max: 8,
        });
        assert_eq!(full.kind(), ErrorKind::Wal(WalErrorKind::QueueFull));
        assert!(full.is_retryable());
        assert!(full.to_string().starts_with("queue is full"), "{full}");
        let lanes = Error::from(WalError::NoFreeLane {
            path: PathBuf::from("/q/wal"),
            lanes_max: 4,
        });
        assert_eq!(lanes.kind(), ErrorKind::Wal(WalErrorKind::Locked));
        assert!(!lanes.is_retryable());
        assert!(lanes.to_string().contains("/q/wal"), "{lanes}");
        let invalid = Error::Config {
            key: "k",
            value: "v".into(),
            allowed: "a".into(),
        };
        assert_eq!(invalid.kind(), ErrorKind::Config);
        assert!(invalid.as_wal().is_none());
    }
}
