"""The package's API as a Python caller uses it: enqueue, the receipt, read-only views,
close and the context manager, and one exception class per Rust error kind."""

from __future__ import annotations

import json

import pytest

import escalation_queue as eq
from conftest import JPEG, inspect


def test_an_enqueue_is_read_back_by_the_binary_with_every_field(binary, queue_dir):
    """What Python enqueues is what the reader will send: the binary lists it, and
    pending() shows every field as given."""
    metadata = {"edge_result": {"confidence": 0.97, "label": 0, "rois": None, "text": None}, "is_edge_audit": True}
    with eq.EscalationQueue(queue_dir) as queue:
        receipt = queue.enqueue(
            "det_2UOxalD1gegjk4TnyLbtGggiJ8p",
            JPEG,
            image_query_id="iq_fixed1",
            request_id="req_uufixed1",
            patience_time=30.0,
            confidence_threshold=0.9,
            human_review="ALWAYS",
            metadata=metadata,
            possibly_submitted=True,
            enqueued_at_unix_ms=1_700_000_000_000,
        )
        assert isinstance(receipt, eq.EnqueueReceipt)
        assert (receipt.image_query_id, receipt.request_id) == ("iq_fixed1", "req_uufixed1")
        assert (receipt.lane, receipt.seq) == (queue.lane, 0)
        [mine] = queue.pending()
    assert mine["detector_id"] == "det_2UOxalD1gegjk4TnyLbtGggiJ8p"
    assert mine["image_size_bytes"] == len(JPEG)
    assert (mine["patience_time"], mine["confidence_threshold"], mine["human_review"]) == (30.0, 0.9, "ALWAYS")
    assert mine["metadata"] == metadata
    assert mine["possibly_submitted"] is True
    assert mine["enqueued_at_unix_ms"] == 1_700_000_000_000
    assert mine["size_bytes"] == receipt.record_len_bytes
    [listed] = inspect(binary, queue_dir)
    assert (listed["image_query_id"], listed["request_id"], listed["possibly_submitted"]) == (
        "iq_fixed1",
        "req_uufixed1",
        True,
    )
    assert eq.pending(queue_dir) == [mine]


def test_fresh_ids_are_generated_and_sequence_numbers_grow(queue_dir):
    with eq.EscalationQueue(queue_dir) as queue:
        receipts = [queue.enqueue("det_1", JPEG) for _ in range(3)]
    assert [r.seq for r in receipts] == [0, 1, 2]
    assert all(r.image_query_id.startswith("iq_") and r.request_id.startswith("req_uu") for r in receipts)
    assert len({r.image_query_id for r in receipts}) == 3


def test_a_closed_handle_raises_queue_closed_and_frees_its_lane(queue_dir):
    """close() releases the lane: with lanes_max=1 a second handle opens only after it."""
    first = eq.EscalationQueue(queue_dir, lanes_max=1)
    with pytest.raises(eq.NoFreeLane) as busy:
        eq.EscalationQueue(queue_dir, lanes_max=1)
    assert busy.value.kind == "wal.locked" and not busy.value.retryable
    first.close()
    first.close()  # twice is allowed
    assert first.closed
    with pytest.raises(eq.QueueClosed) as closed:
        first.enqueue("det_1", JPEG)
    assert closed.value.kind == "wal.closed"
    with eq.EscalationQueue(queue_dir, lanes_max=1) as second:
        second.enqueue("det_1", JPEG)
    assert second.closed


def test_a_full_queue_raises_queue_full_which_is_retryable(queue_dir):
    """queue_bytes_max reached: QueueFull, retryable, and nothing half-written."""
    step = 64 << 10
    with eq.EscalationQueue(
        queue_dir,
        queue_bytes_max=512 << 10,
        segment_bytes=256 << 10,
        allocation_step_bytes=step,
        image_size_max_bytes=48 << 10,
        free_disk_bytes_min=0,
    ) as queue:
        accepted = 0
        with pytest.raises(eq.QueueFull) as full:
            for _ in range(100):
                queue.enqueue("det_1", JPEG * 10)
                accepted += 1
        assert full.value.retryable and full.value.kind == "wal.queue_full"
        assert "queue_bytes_max" in str(full.value) or "full" in str(full.value)
        assert len(queue.pending()) == accepted > 0


def test_options_out_of_range_raise_invalid_options_a_value_error(queue_dir):
    with pytest.raises(eq.InvalidOptions) as bad:
        eq.EscalationQueue(queue_dir, lanes_max=0)
    assert isinstance(bad.value, ValueError)
    assert "lanes_max" in str(bad.value)
    assert not bad.value.retryable


def test_every_kind_has_its_own_class_and_retryable_matches_rust():
    """The mapping is one class per kind: no two kinds share a class except the two
    spellings of the wal's I/O kind (a plain call and a sync)."""
    classes = [cls for kind, cls in eq.CLASS_OF_KIND.items() if kind != "wal.sync"]
    assert len(set(classes)) == len(classes)
    assert eq.CLASS_OF_KIND["wal.sync"] is eq.StorageError
    assert issubclass(eq.InvalidEscalation, ValueError)
    assert all(issubclass(cls, eq.EscalationQueueError) for cls in classes)
    from escalation_queue import _native
    from escalation_queue.errors import from_native

    full = from_native(_native.NativeError("wal.no_space", "disk is full", True))
    assert type(full) is eq.DiskFull and full.retryable
    unknown = from_native(_native.NativeError("wal.something_new", "m", False))
    assert type(unknown) is eq.EscalationQueueError and unknown.kind == "wal.something_new"


LONG = "x" * 201
VALIDATION_CASES = [
    # (what, call kwargs, words the message must hold)
    ("empty detector_id", dict(detector_id=""), ["detector_id is empty"]),
    ("detector_id too long", dict(detector_id=LONG), ["detector_id", "201 characters"]),
    ("space in detector_id", dict(detector_id="det 1"), ["detector_id", "' '"]),
    ("non-ASCII detector_id", dict(detector_id="dét_1"), ["detector_id", "'é'"]),
    ("empty image_query_id", dict(image_query_id=""), ["image_query_id is empty"]),
    ("image_query_id too long", dict(image_query_id=LONG), ["image_query_id", "201 characters"]),
    ("control character in image_query_id", dict(image_query_id="iq_\n"), ["image_query_id"]),
    ("empty request_id", dict(request_id=""), ["request_id is empty"]),
    ("request_id too long", dict(request_id=LONG), ["request_id", "201 characters"]),
    ("space in request_id", dict(request_id="has space"), ["request_id", "' '"]),
    ("confidence above 1", dict(confidence_threshold=1.5), ["confidence_threshold is 1.5"]),
    ("negative confidence", dict(confidence_threshold=-0.1), ["confidence_threshold"]),
    ("NaN confidence", dict(confidence_threshold=float("nan")), ["confidence_threshold"]),
    ("negative patience", dict(patience_time=-1.0), ["patience_time"]),
    ("patience below 1 ms", dict(patience_time=0.0001), ["patience_time"]),
    ("patience above a year", dict(patience_time=31_536_001.0), ["patience_time"]),
    ("infinite patience", dict(patience_time=float("inf")), ["patience_time"]),
    ("unknown human_review", dict(human_review="SOMETIMES"), ["human_review", "SOMETIMES"]),
    ("metadata over 1024", dict(metadata={"k": "v" * 1020}), ["metadata is 1029 characters", "1024"]),
    ("metadata not JSON", dict(metadata={"k": object()}), ["metadata"]),
    ("metadata NaN", dict(metadata={"k": float("nan")}), ["metadata"]),
    ("metadata not a mapping", dict(metadata=[1, 2]), ["metadata"]),
    ("empty image", dict(image=b""), ["image is empty"]),
    ("image too large", dict(image=b"\xff" * 1025), ["image is 1025 bytes", "1024"]),
    ("image not bytes", dict(image="not bytes"), ["image must be bytes"]),
]


@pytest.mark.parametrize("what,kwargs,words", VALIDATION_CASES, ids=[c[0] for c in VALIDATION_CASES])
def test_every_validation_rule_raises_invalid_escalation_and_writes_nothing(queue_dir, what, kwargs, words):
    """Each rule of docs/SEMANTICS.md refuses with InvalidEscalation (a ValueError, not
    retryable) whose message names the field, and nothing is written."""
    kwargs = dict(kwargs)
    detector_id = kwargs.pop("detector_id", "det_1")
    image = kwargs.pop("image", b"\xff\xd8\xff")
    with eq.EscalationQueue(queue_dir, image_size_max_bytes=1024) as queue:
        with pytest.raises(eq.InvalidEscalation) as rejected:
            queue.enqueue(detector_id, image, **kwargs)
        assert queue.pending() == []
    error = rejected.value
    assert isinstance(error, ValueError)
    assert error.kind == "invalid" and error.retryable is False
    for word in words:
        assert word in str(error), (word, str(error))


def test_the_edges_of_the_rules_are_accepted(queue_dir):
    """What the edge-endpoint sends at the limits goes in: patience 0, threshold 0 and 1,
    metadata of exactly 1024 json.dumps characters, 200-character ids, a max-size image."""
    metadata = {"k": "v" * 1015}
    assert len(json.dumps(metadata)) == 1024
    with eq.EscalationQueue(queue_dir, image_size_max_bytes=1024) as queue:
        queue.enqueue("det_1", b"\xff" * 1024, patience_time=0, confidence_threshold=0.0)
        queue.enqueue("d" * 200, b"\xff", image_query_id="i" * 200, request_id="r" * 200, confidence_threshold=1)
        queue.enqueue("det_1", b"\xff", metadata=metadata, patience_time=0.001, human_review="NEVER")
        queue.enqueue("det_1", bytearray(b"\xff\xd8"), patience_time=31_536_000)
        assert len(queue.pending()) == 4


def test_dead_letters_of_a_queue_without_any_are_empty(queue_dir):
    with eq.EscalationQueue(queue_dir) as queue:
        assert queue.dead_letters() == []
    assert eq.dead_letters(queue_dir) == []
