"""A crash-safe escalation queue for Groundlight image queries.

Open one :class:`EscalationQueue` per process (share it between threads) and call
:meth:`EscalationQueue.enqueue`: it returns an :class:`EnqueueReceipt` only once the
escalation is durable on disk. The reader process (``escalation-queue reader``) delivers
what is queued to the cloud. This package links the producer side only: no HTTP client,
no TLS.

>>> import escalation_queue, tempfile
>>> with escalation_queue.EscalationQueue(tempfile.mkdtemp()) as queue:
...     receipt = queue.enqueue("det_123", b"\\xff\\xd8\\xff\\xe0 a small image")
>>> receipt.image_query_id.startswith("iq_")
True
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from . import _native
from .errors import (
    CLASS_OF_KIND,
    CheckpointDeferred,
    Corruption,
    DiskFull,
    EncodeFailed,
    EscalationQueueError,
    ForkedHandle,
    InvalidEscalation,
    InvalidOptions,
    InvalidRecord,
    InvalidWalOptions,
    MalformedEntry,
    Misuse,
    NoFreeLane,
    NotRegularFile,
    QueueBusy,
    QueueClosed,
    QueueFull,
    QueueIoError,
    QueuePoisoned,
    SegmentIdsExhausted,
    StorageError,
    from_native,
)

__all__ = [
    "CLASS_OF_KIND",
    "DEAD_LETTER_RETENTION_MS",
    "ID_LEN_MAX_CHARS",
    "METADATA_SIZE_LIMIT_BYTES",
    "CheckpointDeferred",
    "Corruption",
    "DiskFull",
    "EncodeFailed",
    "EnqueueReceipt",
    "EscalationQueue",
    "EscalationQueueError",
    "ForkedHandle",
    "HumanReview",
    "InvalidEscalation",
    "InvalidOptions",
    "InvalidRecord",
    "InvalidWalOptions",
    "MalformedEntry",
    "Misuse",
    "NoFreeLane",
    "NotRegularFile",
    "QueueBusy",
    "QueueClosed",
    "QueueFull",
    "QueueIoError",
    "QueuePoisoned",
    "SegmentIdsExhausted",
    "StorageError",
    "dead_letters",
    "pending",
]

HumanReview = Literal["DEFAULT", "ALWAYS", "NEVER"]

#: ``len(json.dumps(metadata))`` may be at most this (the Groundlight SDK's limit).
METADATA_SIZE_LIMIT_BYTES: int = _native.METADATA_SIZE_LIMIT_BYTES
#: Longest id (detector, image query, request) accepted, in characters.
ID_LEN_MAX_CHARS: int = _native.ID_LEN_MAX_CHARS
#: Dead letters enqueued longer ago are hidden (the reader's default retention: 7 days).
DEAD_LETTER_RETENTION_MS: int = 7 * 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class EnqueueReceipt:
    """Proof that an escalation is durable in the queue."""

    #: The writer lane it was appended to.
    lane: int
    #: Its sequence number in the lane.
    seq: int
    #: Its image query id (the one given, or a fresh ``iq_…``).
    image_query_id: str
    #: Its request id (the one given, or a fresh ``req_uu…``).
    request_id: str
    #: Size of the stored record, in bytes.
    record_len_bytes: int


def _metadata_json(metadata: Mapping[str, Any] | None) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidEscalation(
            f"escalation rejected: metadata must be a mapping (a JSON object), got {type(metadata).__name__}",
            kind="invalid",
        )
    try:
        return json.dumps(dict(metadata), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidEscalation(f"escalation rejected: metadata is not JSON: {e}", kind="invalid") from None


class EscalationQueue:
    """A writer handle on one queue directory (created, mode 0700, when missing).

    Each open handle claims one writer *lane*, so any number of processes can enqueue
    into the same directory (up to ``lanes_max``). Share one handle between the threads
    of a process: concurrent enqueues share one ``fdatasync`` (group commit). Every
    process of one queue must use the same ``image_size_max_bytes``.

    A handle belongs to the process that opened it: after ``fork()`` the child gets
    :class:`ForkedHandle` from every call and must open its own.

    Options (``None`` keeps the default):

    * ``image_size_max_bytes``: largest image (default 16 MiB).
    * ``queue_bytes_max``: most bytes the queue may occupy; beyond it enqueue raises
      :class:`QueueFull` (default 8 GiB).
    * ``free_disk_bytes_min``: free space to leave on the file system; below it enqueue
      raises :class:`DiskFull` (default 64 MiB; 0 disables the check).
    * ``lanes_max``: open handles across processes (default 16).
    * ``segment_bytes``, ``allocation_step_bytes``: segment file sizing.
    """

    def __init__(
        self,
        queue_dir: str | os.PathLike[str],
        *,
        image_size_max_bytes: int | None = None,
        queue_bytes_max: int | None = None,
        free_disk_bytes_min: int | None = None,
        lanes_max: int | None = None,
        segment_bytes: int | None = None,
        allocation_step_bytes: int | None = None,
    ) -> None:
        self._image_size_max_bytes = image_size_max_bytes
        self._segment_bytes = segment_bytes
        try:
            self._native = _native.Queue(
                os.fspath(queue_dir),
                image_size_max_bytes=image_size_max_bytes,
                queue_bytes_max=queue_bytes_max,
                free_disk_bytes_min=free_disk_bytes_min,
                lanes_max=lanes_max,
                segment_bytes=segment_bytes,
                allocation_step_bytes=allocation_step_bytes,
            )
        except _native.NativeError as e:
            raise from_native(e) from None
        except OverflowError as e:
            raise InvalidOptions(f"an option is out of range: {e}", kind="config") from None

    def enqueue(
        self,
        detector_id: str,
        image: bytes,
        *,
        image_query_id: str | None = None,
        request_id: str | None = None,
        patience_time: float | None = None,
        confidence_threshold: float | None = None,
        human_review: HumanReview | None = None,
        metadata: Mapping[str, Any] | None = None,
        possibly_submitted: bool = False,
        enqueued_at_unix_ms: int | None = None,
    ) -> EnqueueReceipt:
        """Validates one escalation and appends it; returns once it is durable.

        ``image`` is the raw image (JPEG, PNG, GIF or WebP bytes). ``image_query_id`` and
        ``request_id`` default to fresh ids (``iq_…``, ``req_uu…``); ids are 1 to 200
        printable ASCII characters without spaces. ``patience_time`` is 0 or 0.001 to
        31,536,000 seconds; ``confidence_threshold`` is in 0..=1; ``human_review`` is
        ``"DEFAULT"``, ``"ALWAYS"`` or ``"NEVER"``; ``len(json.dumps(metadata))`` is at
        most 1024. Set ``possibly_submitted`` when your own submit of this image query
        failed after the request may have reached the cloud (a read timeout, a 5xx).

        The GIL is released while the record is appended and synced.

        Raises :class:`InvalidEscalation` (also a ``ValueError``; nothing was written,
        do not retry), :class:`QueueFull` / :class:`DiskFull` (``retryable``),
        :class:`QueuePoisoned` (reopen), :class:`QueueClosed`, :class:`ForkedHandle`.
        """
        if not isinstance(image, bytes):
            if isinstance(image, (bytearray, memoryview)):
                image = bytes(image)
            else:
                raise InvalidEscalation(
                    f"escalation rejected: image must be bytes, got {type(image).__name__}", kind="invalid"
                )
        if not isinstance(detector_id, str):
            raise InvalidEscalation(
                f"escalation rejected: detector_id must be a str, got {type(detector_id).__name__}", kind="invalid"
            )
        try:
            lane, seq, iq_id, req_id, size = self._native.enqueue(
                detector_id,
                image,
                image_query_id=image_query_id,
                request_id=request_id,
                patience_time=patience_time,
                confidence_threshold=confidence_threshold,
                human_review=human_review,
                metadata_json=_metadata_json(metadata),
                possibly_submitted=bool(possibly_submitted),
                enqueued_at_unix_ms=enqueued_at_unix_ms,
            )
        except _native.NativeError as e:
            raise from_native(e) from None
        except (TypeError, OverflowError) as e:
            raise InvalidEscalation(f"escalation rejected: {e}", kind="invalid") from None
        return EnqueueReceipt(lane, seq, iq_id, req_id, size)

    def close(self) -> None:
        """Releases the lane (after enqueues already running return). Idempotent."""
        try:
            self._native.close()
        except _native.NativeError as e:
            raise from_native(e) from None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return bool(self._native.closed)

    @property
    def lane(self) -> int:
        """The writer lane this handle appends to."""
        try:
            return int(self._native.lane)
        except _native.NativeError as e:
            raise from_native(e) from None

    @property
    def queue_dir(self) -> str:
        """The queue directory."""
        return os.fspath(self._native.queue_dir)

    def pending(self, limit: int = 0) -> list[dict[str, Any]]:
        """Records not yet delivered (see :func:`pending`); read-only."""
        try:
            return json.loads(self._native.pending(limit))
        except _native.NativeError as e:
            raise from_native(e) from None

    def dead_letters(self, retention_ms: int = DEAD_LETTER_RETENTION_MS) -> list[dict[str, Any]]:
        """Dead letters (see :func:`dead_letters`); read-only."""
        try:
            return json.loads(self._native.dead_letters(retention_ms))
        except _native.NativeError as e:
            raise from_native(e) from None

    def __enter__(self) -> EscalationQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<EscalationQueue {self.queue_dir!r} {state}>"


def pending(
    queue_dir: str | os.PathLike[str],
    *,
    limit: int = 0,
    image_size_max_bytes: int | None = None,
    segment_bytes: int | None = None,
) -> list[dict[str, Any]]:
    """The records of ``queue_dir`` not yet delivered, oldest first per lane.

    Read-only: takes no lane and no lock, consumes nothing (what ``escalation-queue
    inspect`` lists). Each dict has ``lane``, ``seq``, ``detector_id``,
    ``image_query_id``, ``request_id``, ``image_size_bytes``, ``patience_time``,
    ``confidence_threshold``, ``human_review``, ``metadata``, ``possibly_submitted``,
    ``enqueued_at_unix_ms``, ``size_bytes``, ``wal_time_unix_ms`` and ``decode_error``
    (set, with the rest ``None``, for a record that does not decode). ``limit`` 0 lists all.
    """
    try:
        return json.loads(
            _native.pending(
                os.fspath(queue_dir),
                image_size_max_bytes=image_size_max_bytes,
                segment_bytes=segment_bytes,
                limit=limit,
            )
        )
    except _native.NativeError as e:
        raise from_native(e) from None


def dead_letters(
    queue_dir: str | os.PathLike[str],
    *,
    retention_ms: int = DEAD_LETTER_RETENTION_MS,
    image_size_max_bytes: int | None = None,
) -> list[dict[str, Any]]:
    """The dead letters of ``queue_dir`` enqueued less than ``retention_ms`` ago.

    Oldest first, one per id, each the dict ``escalation-queue dlq list --json`` prints:
    ``id``, ``origin_lane``, ``origin_seq``, ``enqueued_at_unix_ms``,
    ``dead_lettered_at_unix_ms``, ``detector_id``, ``image_query_id``, ``request_id``,
    ``cause`` (e.g. ``{"rejected": {"class": "bad_request", "status": 400}}`` or
    ``"undecodable"``), ``error_class``, ``http_status``, ``error``,
    ``response_excerpt``, ``attempts``, ``attempts_total``, ``record_len_bytes``.
    Read-only: safe while the reader runs.
    """
    try:
        return json.loads(
            _native.dead_letters(os.fspath(queue_dir), retention_ms, image_size_max_bytes=image_size_max_bytes)
        )
    except _native.NativeError as e:
        raise from_native(e) from None
