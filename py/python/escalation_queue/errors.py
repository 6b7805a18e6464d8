"""The exceptions of ``escalation_queue``: one class per kind of the Rust error.

Every exception is an :class:`EscalationQueueError` with three attributes:

``kind``
    The Rust error kind it comes from (``"invalid"``, ``"wal.queue_full"``, ...), the
    key of :data:`CLASS_OF_KIND`.
``retryable``
    True when the same call may succeed later without a fix (the queue or the disk is
    full): back off and retry. False otherwise: fix the input, reopen the queue, or ask a
    human.
``message``
    The Rust error's message (it names the field, the value and what is allowed).
"""

from __future__ import annotations


class EscalationQueueError(Exception):
    """Base class of every error this package raises."""

    kind: str = "unknown"

    def __init__(self, message: str, *, kind: str | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind if kind is not None else type(self).kind
        self.retryable = retryable


class InvalidEscalation(EscalationQueueError, ValueError):
    """The escalation breaks a rule (kind ``invalid``); nothing was enqueued. Do not retry."""

    kind = "invalid"


class EncodeFailed(EscalationQueueError):
    """The escalation could not be encoded (kind ``encode``)."""

    kind = "encode"


class InvalidOptions(EscalationQueueError, ValueError):
    """An option of the queue is out of range (kind ``config``)."""

    kind = "config"


class QueueBusy(EscalationQueueError):
    """Another process holds the queue: the worker cursor or the dead-letter queue (kind ``locked``)."""

    kind = "locked"


class QueueIoError(EscalationQueueError):
    """A queue file outside the write-ahead log could not be used (kind ``io``)."""

    kind = "io"


class MalformedEntry(EscalationQueueError):
    """A stored dead-letter entry is malformed (kind ``malformed``)."""

    kind = "malformed"


class StorageError(EscalationQueueError):
    """A file-system call of the write-ahead log failed (kinds ``wal.io``, ``wal.sync``).

    ``sync`` is True when the failed call was a sync: the handle is then poisoned.
    """

    kind = "wal.io"

    @property
    def sync(self) -> bool:
        return self.kind == "wal.sync"


class NotRegularFile(EscalationQueueError):
    """A file named like a queue file is not a regular file (kind ``wal.not_regular_file``)."""

    kind = "wal.not_regular_file"


class QueuePoisoned(EscalationQueueError):
    """An earlier sync failed; this handle acknowledges nothing more (kind ``wal.poisoned``).

    Open the queue again to recover.
    """

    kind = "wal.poisoned"


class QueueClosed(EscalationQueueError):
    """The handle was closed (kind ``wal.closed``); open a new one."""

    kind = "wal.closed"


class QueueFull(EscalationQueueError):
    """The queue holds ``queue_bytes_max`` already (kind ``wal.queue_full``); retryable."""

    kind = "wal.queue_full"


class DiskFull(EscalationQueueError):
    """The file system is short of space (kind ``wal.no_space``); retryable."""

    kind = "wal.no_space"


class SegmentIdsExhausted(EscalationQueueError):
    """A lane has no segment ids left (kind ``wal.segment_ids_exhausted``)."""

    kind = "wal.segment_ids_exhausted"


class InvalidRecord(EscalationQueueError):
    """The encoded record is empty or too large for the wal (kind ``wal.invalid_record``)."""

    kind = "wal.invalid_record"


class NoFreeLane(EscalationQueueError):
    """Every writer lane is held by another open handle (kind ``wal.locked``).

    Close a handle or raise ``lanes_max``.
    """

    kind = "wal.locked"


class InvalidWalOptions(InvalidOptions):
    """An option of the write-ahead log is invalid (kind ``wal.config``)."""

    kind = "wal.config"


class Misuse(EscalationQueueError):
    """The call does not fit the handle's state (kind ``wal.misuse``)."""

    kind = "wal.misuse"


class CheckpointDeferred(EscalationQueueError):
    """The first checkpoint was deferred for lack of space (kind ``wal.checkpoint_deferred``)."""

    kind = "wal.checkpoint_deferred"


class Corruption(EscalationQueueError):
    """Stored bytes failed verification (kind ``wal.corruption``)."""

    kind = "wal.corruption"


class ForkedHandle(EscalationQueueError):
    """The handle was opened by another process: this is a ``fork()`` child (kind ``forked``).

    Open a new :class:`~escalation_queue.EscalationQueue` in the child.
    """

    kind = "forked"


#: The class raised for each kind the Rust side reports.
CLASS_OF_KIND: dict[str, type[EscalationQueueError]] = {
    cls.kind: cls
    for cls in (
        InvalidEscalation,
        EncodeFailed,
        InvalidOptions,
        QueueBusy,
        QueueIoError,
        MalformedEntry,
        StorageError,
        NotRegularFile,
        QueuePoisoned,
        QueueClosed,
        QueueFull,
        DiskFull,
        SegmentIdsExhausted,
        InvalidRecord,
        NoFreeLane,
        InvalidWalOptions,
        Misuse,
        CheckpointDeferred,
        Corruption,
        ForkedHandle,
    )
}
CLASS_OF_KIND["wal.sync"] = StorageError


def from_native(error: BaseException) -> EscalationQueueError:
    """The public exception for a ``_native.NativeError(kind, message, retryable)``."""
    kind, message, retryable = error.args
    cls = CLASS_OF_KIND.get(kind, EscalationQueueError)
    return cls(message, kind=kind, retryable=bool(retryable))
