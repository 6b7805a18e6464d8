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

A class names its kind in its header (``class QueueFull(EscalationQueueError,
kind="wal.queue_full")``); the base class sets ``kind`` from it and records the class in
:data:`CLASS_OF_KIND`, so the table and the classes cannot disagree.
"""

from __future__ import annotations

#: The class raised for each kind the Rust side reports (filled in as the classes below
#: are defined).
CLASS_OF_KIND: dict[str, type[EscalationQueueError]] = {}


class EscalationQueueError(Exception):
    """Base class of every error this package raises."""

    kind: str = "unknown"

    def __init_subclass__(
        cls, *, kind: str | None = None, aliases: tuple[str, ...] = (), **rest: object
    ) -> None:
        """Records the subclass as the class of ``kind`` and of each of ``aliases`` (a
        subclass without ``kind`` keeps its base's and is recorded nowhere)."""
        super().__init_subclass__(**rest)
        if kind is None:
            return
        cls.kind = kind
        for each in (kind, *aliases):
            if each in CLASS_OF_KIND:
                raise TypeError(f"kind {each!r} has two classes: {CLASS_OF_KIND[each]} and {cls}")
            CLASS_OF_KIND[each] = cls

    def __init__(self, message: str, *, kind: str | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind if kind is not None else type(self).kind
        self.retryable = retryable


class InvalidEscalation(EscalationQueueError, ValueError, kind="invalid"):
    """The escalation breaks a rule (kind ``invalid``); nothing was enqueued. Do not retry."""


class EncodeFailed(EscalationQueueError, kind="encode"):
    """The escalation could not be encoded (kind ``encode``)."""


class InvalidOptions(EscalationQueueError, ValueError, kind="config"):
    """An option of the queue is out of range (kind ``config``)."""


class QueueBusy(EscalationQueueError, kind="locked"):
    """Another process holds the queue: the worker cursor or the dead-letter queue (kind ``locked``)."""


class QueueIoError(EscalationQueueError, kind="io"):
    """A queue file outside the write-ahead log could not be used (kind ``io``)."""


class MalformedEntry(EscalationQueueError, kind="malformed"):
    """A stored dead-letter entry is malformed (kind ``malformed``)."""


class StorageError(EscalationQueueError, kind="wal.io", aliases=("wal.sync",)):
    """A file-system call of the write-ahead log failed (kinds ``wal.io``, ``wal.sync``).

    ``sync`` is True when the failed call was a sync: the handle is then poisoned.
    """

    @property
    def sync(self) -> bool:
        return self.kind == "wal.sync"


class NotRegularFile(EscalationQueueError, kind="wal.not_regular_file"):
    """A file named like a queue file is not a regular file (kind ``wal.not_regular_file``)."""


class QueuePoisoned(EscalationQueueError, kind="wal.poisoned"):
    """An earlier sync failed; this handle acknowledges nothing more (kind ``wal.poisoned``).

    Open the queue again to recover.
    """


class QueueClosed(EscalationQueueError, kind="wal.closed"):
    """The handle was closed (kind ``wal.closed``); open a new one."""


class QueueFull(EscalationQueueError, kind="wal.queue_full"):
    """The queue holds ``queue_bytes_max`` already (kind ``wal.queue_full``); retryable."""


class DiskFull(EscalationQueueError, kind="wal.no_space"):
    """The file system is short of space (kind ``wal.no_space``); retryable."""


class SegmentIdsExhausted(EscalationQueueError, kind="wal.segment_ids_exhausted"):
    """A lane has no segment ids left (kind ``wal.segment_ids_exhausted``)."""


class InvalidRecord(EscalationQueueError, kind="wal.invalid_record"):
    """The encoded record is empty or too large for the wal (kind ``wal.invalid_record``)."""


class NoFreeLane(EscalationQueueError, kind="wal.locked"):
    """Every writer lane is held by another open handle (kind ``wal.locked``).

    Close a handle or raise ``lanes_max``.
    """


class InvalidWalOptions(InvalidOptions, kind="wal.config"):
    """An option of the write-ahead log is invalid (kind ``wal.config``)."""


class Misuse(EscalationQueueError, kind="wal.misuse"):
    """The call does not fit the handle's state (kind ``wal.misuse``)."""


class CheckpointDeferred(EscalationQueueError, kind="wal.checkpoint_deferred"):
    """The first checkpoint was deferred for lack of space (kind ``wal.checkpoint_deferred``)."""


class Corruption(EscalationQueueError, kind="wal.corruption"):
    """Stored bytes failed verification (kind ``wal.corruption``)."""


class ForkedHandle(EscalationQueueError, kind="forked"):
    """The handle was opened by another process: this is a ``fork()`` child (kind ``forked``).

    Open a new :class:`~escalation_queue.EscalationQueue` in the child.
    """


def from_native(error: BaseException) -> EscalationQueueError:
    """The public exception for a ``_native.NativeError(kind, message, retryable)``."""
    kind, message, retryable = error.args
    cls = CLASS_OF_KIND.get(kind, EscalationQueueError)
    return cls(message, kind=kind, retryable=bool(retryable))
