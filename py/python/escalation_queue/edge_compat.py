"""A drop-in for Groundlight edge-endpoint's queue writer.

edge-endpoint writes escalations with ``QueueWriter()`` (one per uvicorn worker process)
and ``write_escalation_to_queue(writer, detector_id, image_bytes, submit_iq_params,
request_id)``, which must never raise: it is called synchronously before the route
answers. This module keeps those names and signatures over :class:`EscalationQueue`:

* the image is stored inline in the record (no ``images/`` files), durable on return;
* a failure is logged and counted on the writer (:attr:`QueueWriter.stats`), never raised;
* a client ``X-Request-Id`` that breaks the id rule (1 to 200 printable ASCII characters
  without spaces) is replaced by a stable digest (:func:`safe_request_id`), so the
  siblings of one SDK retry still share a request id and are delivered once;
* :func:`metrics_summary` has the keys of edge-endpoint's failed-escalations summary,
  computed from the dead letters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from . import EnqueueReceipt, EscalationQueue, EscalationQueueError, dead_letters

logger = logging.getLogger(__name__)

#: The queue directory: a new sub-directory of the volume edge-endpoint already mounts.
DEFAULT_QUEUE_BASE_DIR = "/opt/groundlight/queue/eq"

#: Prefix of a request id derived from one that breaks the id rule.
DERIVED_REQUEST_ID_PREFIX = "req_h"

_ID_LEN_MAX = 200


class SubmitIqParamsLike(Protocol):
    """What is read from ``submit_iq_params`` (edge-endpoint's ``SubmitImageQueryParams``).

    A mapping with these keys works too.
    """

    patience_time: float | None
    confidence_threshold: float | None
    human_review: str | None
    metadata: dict[str, Any] | None
    image_query_id: str


def _is_valid_id(value: str) -> bool:
    return 0 < len(value) <= _ID_LEN_MAX and all("!" <= c <= "~" for c in value)


def safe_request_id(request_id: str | None) -> str | None:
    """``request_id`` itself when it follows the id rule, else a stable stand-in.

    The stand-in is ``"req_h"`` + the first 32 hex digits of the SHA-256 of the id's UTF-8
    bytes: the same client id always maps to the same stand-in, so the retries of one
    request still dedupe. ``None`` and ``""`` give ``None`` (a fresh id is generated).
    """
    if request_id is None or request_id == "":
        return None
    if not isinstance(request_id, str):
        request_id = str(request_id)
    if _is_valid_id(request_id):
        return request_id
    digest = hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).hexdigest()
    return DERIVED_REQUEST_ID_PREFIX + digest[:32]


def _param(params: Any, name: str) -> Any:
    if params is None:
        return None
    if isinstance(params, Mapping):
        return params.get(name)
    return getattr(params, name, None)


class QueueWriter:
    """edge-endpoint's ``QueueWriter(base_dir)``: one per process, shared by its threads.

    Opening claims a writer lane of the queue in ``base_dir`` (created when missing) and
    raises if it cannot (e.g. :class:`~escalation_queue.NoFreeLane`): at start-up, where it
    is loud. Used in a ``fork()`` child, the writer opens a handle of its own there.
    ``options`` are :class:`~escalation_queue.EscalationQueue`'s keyword options.

    ``stats`` counts ``written`` and ``failed`` escalations, ``failed_by_kind`` per error
    kind, and keeps ``last_error`` (a string) for the status page.
    """

    def __init__(self, base_dir: str = DEFAULT_QUEUE_BASE_DIR, **options: Any) -> None:
        self.base_dir = str(base_dir)
        self._options = options
        self._lock = threading.Lock()
        self.queue = EscalationQueue(self.base_dir, **options)
        self._pid = os.getpid()
        self.stats: dict[str, Any] = {"written": 0, "failed": 0, "failed_by_kind": {}, "last_error": None}

    def _queue(self) -> EscalationQueue:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self.queue = EscalationQueue(self.base_dir, **self._options)
                    self._pid = os.getpid()
                    self.stats = {"written": 0, "failed": 0, "failed_by_kind": {}, "last_error": None}
        return self.queue

    def _count(self, error: BaseException | None) -> None:
        with self._lock:
            if error is None:
                self.stats["written"] += 1
                return
            kind = getattr(error, "kind", type(error).__name__)
            self.stats["failed"] += 1
            self.stats["failed_by_kind"][kind] = self.stats["failed_by_kind"].get(kind, 0) + 1
            self.stats["last_error"] = f"{type(error).__name__}: {error}"

    def close(self) -> None:
        """Releases the writer lane."""
        if self._pid == os.getpid():
            self.queue.close()


def write_escalation_to_queue(
    writer: QueueWriter,
    detector_id: str,
    image_bytes: bytes,
    submit_iq_params: SubmitIqParamsLike | Mapping[str, Any],
    request_id: str,
    *,
    possibly_submitted: bool = False,
) -> EnqueueReceipt | None:
    """Writes an escalation to the queue. On failure, logs an error and does NOT raise.

    Returns the receipt once the escalation is durable, or ``None`` when it could not be
    written (logged at ERROR, counted in ``writer.stats``). ``submit_iq_params`` is an
    object with the attributes ``patience_time``, ``confidence_threshold``,
    ``human_review``, ``metadata``, ``image_query_id`` (edge-endpoint's
    ``SubmitImageQueryParams``) or a mapping with those keys. Set ``possibly_submitted``
    when the caller's own synchronous submit of this image query failed after the request
    may have reached the cloud.
    """
    try:
        queue = writer._queue()
        metadata = _param(submit_iq_params, "metadata")
        receipt = queue.enqueue(
            detector_id,
            image_bytes,
            image_query_id=_param(submit_iq_params, "image_query_id") or None,
            request_id=safe_request_id(request_id),
            patience_time=_param(submit_iq_params, "patience_time"),
            confidence_threshold=_param(submit_iq_params, "confidence_threshold"),
            human_review=_param(submit_iq_params, "human_review"),
            metadata=dict(metadata) if metadata is not None else None,
            possibly_submitted=possibly_submitted,
        )
    except Exception as e:  # never raises: the route answers the client regardless
        try:
            writer._count(e)
        except Exception:
            pass
        how = "rejected" if isinstance(e, ValueError) else "failed"
        retry = " (retryable)" if isinstance(e, EscalationQueueError) and e.retryable else ""
        logger.error(
            f"Failed to write escalation to queue for detector {detector_id} with error {e}. "
            f"The escalation was {how}{retry}; it is not queued."
        )
        return None
    writer._count(None)
    return receipt


def metrics_summary(queue_dir: str = DEFAULT_QUEUE_BASE_DIR) -> dict[str, Any]:
    """edge-endpoint's failed-escalations summary, computed from the dead letters.

    The same four keys: ``activity_hour`` (the start of the last hour, UTC,
    ``%Y-%m-%d_%H``), ``last_failed_time`` (ISO time of the newest dead letter, or
    ``None``), ``failed_last_hour_total`` and ``failed_last_hour_by_exception`` (a JSON
    string, keys sorted: dead letters of the last hour per error class, e.g.
    ``{"bad_request": 2}``). Never raises: an unreadable queue gives the empty summary.
    """
    now = datetime.now(timezone.utc)
    cutoff = now - timedelta(hours=1)
    cutoff_ms = int(cutoff.timestamp() * 1000)
    try:
        letters = dead_letters(queue_dir) if os.path.isdir(queue_dir) else []
    except Exception as e:
        logger.error(f"Failed to read the dead letters of {queue_dir}: {e}")
        letters = []
    newest_ms: int | None = None
    by_class: dict[str, int] = {}
    for letter in letters:
        at_ms = int(letter["dead_lettered_at_unix_ms"])
        if newest_ms is None or at_ms > newest_ms:
            newest_ms = at_ms
        if at_ms >= cutoff_ms:
            error_class = letter.get("error_class") or "unknown"
            by_class[error_class] = by_class.get(error_class, 0) + 1
    last_failed_time = (
        datetime.fromtimestamp(newest_ms / 1000, tz=timezone.utc).isoformat() if newest_ms is not None else None
    )
    return {
        "activity_hour": cutoff.strftime("%Y-%m-%d_%H"),
        "last_failed_time": last_failed_time,
        "failed_last_hour_total": sum(by_class.values()),
        "failed_last_hour_by_exception": json.dumps(by_class, sort_keys=True),
    }
