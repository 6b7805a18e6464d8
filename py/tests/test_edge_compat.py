"""escalation_queue.edge_compat driven the way edge-endpoint's routes drive it: one
QueueWriter per worker process, write_escalation_to_queue(writer, detector_id,
image_bytes, submit_iq_params, request_id) from the four call sites of post_image_query,
never raising; and metrics_summary() from the dead letters."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import escalation_queue as eq
from conftest import JPEG, dlq_list, drain, inspect
from escalation_queue.edge_compat import (
    DEFAULT_QUEUE_BASE_DIR,
    QueueWriter,
    metrics_summary,
    safe_request_id,
    write_escalation_to_queue,
)


@dataclass
class SubmitImageQueryParams:
    """The fields of edge-endpoint's pydantic model of the same name."""

    patience_time: float | None
    confidence_threshold: float | None
    human_review: str | None
    metadata: dict[str, Any] | None
    image_query_id: str


def edge_metadata(is_edge_audit: bool) -> dict[str, Any]:
    """What generate_metadata_dict returns for one inference."""
    return {
        "edge_result": {"confidence": 0.97, "label": 0, "rois": None, "text": None},
        "is_edge_audit": is_edge_audit,
    }


def test_the_default_queue_dir_and_signature_match_the_edge_endpoint():
    import inspect as pyinspect

    assert DEFAULT_QUEUE_BASE_DIR == "/opt/groundlight/queue/eq"
    params = list(pyinspect.signature(write_escalation_to_queue).parameters)
    assert params[:5] == ["writer", "detector_id", "image_bytes", "submit_iq_params", "request_id"]
    assert list(pyinspect.signature(QueueWriter).parameters)[0] == "base_dir"


def test_the_four_call_sites_of_post_image_query_are_queued_as_given(binary, queue_dir):
    """want_async, confident-and-audited, low-confidence and sync-cloud escalations, with
    pydantic-like params objects and a plain mapping, all land in the queue with their
    fields; the function returns the receipt."""
    writer = QueueWriter(str(queue_dir))
    calls = [
        # want_async=True: a fresh iq id, no metadata
        ("det_a", SubmitImageQueryParams(None, None, None, None, "iq_async1"), "req_uuasync1"),
        # confident and audited: the edge IQ's id, audit metadata
        ("det_b", SubmitImageQueryParams(30.0, 0.9, "DEFAULT", edge_metadata(True), "iq_audit1"), "req_uuaudit1"),
        # low confidence, patience 0 (the route allows ge=0)
        ("det_c", {"patience_time": 0.0, "confidence_threshold": 0.75, "human_review": "ALWAYS",
                   "metadata": edge_metadata(False), "image_query_id": "iq_low1"}, "req_uulow1"),
        # sync cloud escalation that failed: {"edge_result": None} when there was no inference
        ("det_d", SubmitImageQueryParams(None, 1.0, "NEVER", {"edge_result": None}, "iq_sync1"), "req_uusync1"),
    ]
    receipts = [
        write_escalation_to_queue(writer=writer, detector_id=d, image_bytes=JPEG, submit_iq_params=p, request_id=r)
        for d, p, r in calls
    ]
    assert all(isinstance(r, eq.EnqueueReceipt) for r in receipts)
    assert writer.stats["written"] == 4 and writer.stats["failed"] == 0
    pending = {r["image_query_id"]: r for r in eq.pending(queue_dir)}
    assert pending["iq_audit1"]["metadata"] == edge_metadata(True)
    assert pending["iq_low1"]["patience_time"] == 0.0
    assert pending["iq_low1"]["human_review"] == "ALWAYS"
    assert pending["iq_sync1"]["metadata"] == {"edge_result": None}
    assert pending["iq_async1"]["metadata"] is None
    assert pending["iq_async1"]["image_size_bytes"] == len(JPEG)
    listed = {(r["detector_id"], r["image_query_id"], r["request_id"]) for r in inspect(binary, queue_dir)}
    assert listed == {(d, _iq(p), r) for d, p, r in calls}
    writer.close()


def _iq(params: Any) -> str:
    return params["image_query_id"] if isinstance(params, dict) else params.image_query_id


def test_an_invalid_escalation_is_logged_and_counted_not_raised(queue_dir, caplog):
    """The route answers the client whatever happens: a rule broken (metadata over the
    SDK's 1024 characters, a bad human_review, a broken image_query_id) is an ERROR log
    and a count, and the function returns None."""
    writer = QueueWriter(str(queue_dir))
    bad = [
        SubmitImageQueryParams(None, None, None, {"k": "v" * 1020}, "iq_big"),
        SubmitImageQueryParams(None, None, "SOMETIMES", None, "iq_hr"),
        SubmitImageQueryParams(None, 2.0, None, None, "iq_ct"),
        SubmitImageQueryParams(None, None, None, None, "iq has space"),
    ]
    with caplog.at_level(logging.ERROR, logger="escalation_queue.edge_compat"):
        results = [write_escalation_to_queue(writer, "det_1", JPEG, p, "req_uu1") for p in bad]
        assert write_escalation_to_queue(writer, "det_1", "not bytes", bad[0], "req_uu1") is None
        assert write_escalation_to_queue(writer, "det_1", JPEG, None, "req_uu1") is not None
    assert results == [None] * 4
    assert writer.stats["failed"] == 5 and writer.stats["failed_by_kind"] == {"invalid": 5}
    assert writer.stats["written"] == 1
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5
    assert all(m.startswith("Failed to write escalation to queue for detector det_1 with error") for m in messages)
    assert "metadata is 1029 characters" in messages[0] and "rejected" in messages[0]
    assert len(eq.pending(queue_dir)) == 1


def test_a_closed_or_broken_writer_is_logged_not_raised(queue_dir, caplog):
    writer = QueueWriter(str(queue_dir))
    writer.close()
    params = SubmitImageQueryParams(None, None, None, None, "iq_1")
    with caplog.at_level(logging.ERROR, logger="escalation_queue.edge_compat"):
        assert write_escalation_to_queue(writer, "det_1", JPEG, params, "req_uu1") is None
        assert write_escalation_to_queue(None, "det_1", JPEG, params, "req_uu1") is None
    assert writer.stats["failed_by_kind"] == {"wal.closed": 1}
    assert len(caplog.records) == 2


def test_an_odd_client_request_id_is_mapped_stably_and_its_retries_dedupe(binary, queue_dir, mock_cloud):
    """An X-Request-Id with spaces, non-ASCII or over 200 characters would be refused; it
    is mapped to req_h<sha256 prefix> instead. The same client id maps to the same id, so
    two escalations of one SDK retry are delivered once."""
    odd = ["has space", "ünïcode", "x" * 500]
    mapped = [safe_request_id(r) for r in odd]
    assert all(m.startswith("req_h") and len(m) == 37 for m in mapped)
    assert mapped == [safe_request_id(r) for r in odd]  # stable
    assert len(set(mapped)) == 3
    assert safe_request_id("req_uu0123") == "req_uu0123"
    assert safe_request_id(None) is None and safe_request_id("") is None
    writer = QueueWriter(str(queue_dir))
    for attempt in range(2):  # the SDK retried: same request id, same image query id
        params = SubmitImageQueryParams(None, None, None, None, "iq_retry1")
        receipt = write_escalation_to_queue(writer, "det_1", JPEG, params, "client id with spaces")
        assert receipt is not None and receipt.request_id == safe_request_id("client id with spaces")
    writer.close()
    cloud = mock_cloud()
    summary = drain(binary, queue_dir, cloud)
    assert summary["delivered"] == 1, summary
    assert inspect(binary, queue_dir) == []


def test_a_fork_child_writer_opens_its_own_lane(binary, queue_dir):
    """QueueWriter used in a fork() child (gunicorn --preload, multiprocessing fork) opens
    a handle of its own there instead of sharing the parent's lane; nothing is lost."""
    writer = QueueWriter(str(queue_dir))
    parent = write_escalation_to_queue(writer, "det_p", JPEG, {"image_query_id": "iq_parent"}, "req_uup")
    pid = os.fork()
    if pid == 0:
        r = write_escalation_to_queue(writer, "det_c", JPEG, {"image_query_id": "iq_child"}, "req_uuc")
        os._exit(0 if r is not None and r.lane != parent.lane else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert write_escalation_to_queue(writer, "det_p", JPEG, {"image_query_id": "iq_parent2"}, "req_uup2")
    writer.close()
    assert {r["image_query_id"] for r in inspect(binary, queue_dir)} == {"iq_parent", "iq_child", "iq_parent2"}


def test_possibly_submitted_is_set_when_the_sync_call_may_have_reached_the_cloud(queue_dir):
    """safe_escalate_with_queue_write: the SDK call timed out after sending, so the
    queued copy says the cloud may hold it already."""
    writer = QueueWriter(str(queue_dir))
    params = SubmitImageQueryParams(None, None, None, {"edge_result": None}, "iq_sync2")
    assert write_escalation_to_queue(writer, "det_1", JPEG, params, "req_uu2", possibly_submitted=True)
    [record] = eq.pending(queue_dir)
    assert record["possibly_submitted"] is True
    writer.close()


def test_metrics_summary_of_an_empty_queue_has_the_edge_endpoint_keys(tmp_path):
    now = datetime.now(timezone.utc)
    for missing_ok in (tmp_path / "nothing-here", tmp_path):
        summary = metrics_summary(str(missing_ok))
        assert list(summary) == ["activity_hour", "last_failed_time", "failed_last_hour_total",
                                 "failed_last_hour_by_exception"]
        assert summary["last_failed_time"] is None and summary["failed_last_hour_total"] == 0
        assert summary["failed_last_hour_by_exception"] == "{}"
        assert summary["activity_hour"] in {
            (now - timedelta(hours=1, minutes=m)).strftime("%Y-%m-%d_%H") for m in (0, 1)
        }


def test_dead_letters_and_metrics_summary_come_from_what_the_reader_dead_lettered(binary, queue_dir, mock_cloud):
    """The cloud answers 400 for one detector: the reader dead-letters those escalations.
    dead_letters() lists exactly what `escalation-queue dlq list --json` lists (so the
    package reads the worker's entry layout right), and metrics_summary() counts them
    in the last hour by error class, as a JSON string."""
    writer = QueueWriter(str(queue_dir))
    for n in range(3):
        write_escalation_to_queue(writer, "det_bad", JPEG, {"image_query_id": f"iq_bad{n}"}, f"req_uubad{n}")
    write_escalation_to_queue(writer, "det_good", JPEG, {"image_query_id": "iq_good"}, "req_uugood")
    writer.close()
    cloud = mock_cloud("--reject-detector", "det_bad")
    summary = drain(binary, queue_dir, cloud)
    assert (summary["delivered"], summary["dead_lettered"]) == (1, 3), summary
    ours = eq.dead_letters(queue_dir)
    assert ours == dlq_list(binary, queue_dir)
    assert [d["image_query_id"] for d in ours] == ["iq_bad0", "iq_bad1", "iq_bad2"]
    assert ours[0]["cause"] == {"rejected": {"class": "bad_request", "status": 400}}
    metrics = metrics_summary(str(queue_dir))
    assert metrics["failed_last_hour_total"] == 3
    assert json.loads(metrics["failed_last_hour_by_exception"]) == {"bad_request": 3}
    newest = max(d["dead_lettered_at_unix_ms"] for d in ours)
    assert metrics["last_failed_time"] == datetime.fromtimestamp(newest / 1000, tz=timezone.utc).isoformat()
    # A retention shorter than their age hides them, as `dlq list` does.
    assert eq.dead_letters(queue_dir, retention_ms=0) == []
