"""Durability and concurrency the way the edge-endpoint runs it: a writer process killed
with SIGKILL mid-stream loses nothing it acknowledged; 8 spawned processes (uvicorn
workers) share one queue; 16 threads share one handle; a fork() child cannot use its
parent's handle."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import escalation_queue as eq
from conftest import JPEG, inspect

WRITER = textwrap.dedent(
    """
    import sys
    import escalation_queue as eq
    queue = eq.EscalationQueue(sys.argv[1])
    image = bytes(range(256)) * 64
    n = 0
    while True:
        receipt = queue.enqueue("det_kill", image, request_id=f"req_kill_{n}")
        print(receipt.image_query_id, flush=True)  # acknowledged: durable from here on
        n += 1
    """
)


def test_every_acknowledged_enqueue_survives_kill_9_of_the_writer(binary, queue_dir):
    """A child enqueues in a loop and prints each image query id after enqueue returns;
    SIGKILL lands mid-stream. Every printed id is listed by `escalation-queue inspect`."""
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(queue_dir)], stdout=subprocess.PIPE, text=True)
    acknowledged = []
    try:
        while len(acknowledged) < 300:
            line = child.stdout.readline()
            assert line, f"the writer exited early with {child.poll()}"
            acknowledged.append(line.strip())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read()
        child.wait()
    acknowledged += rest.split()  # lines printed before the kill landed are acknowledged too
    assert child.returncode == -signal.SIGKILL
    listed = {r["image_query_id"] for r in inspect(binary, queue_dir)}
    missing = [iq for iq in acknowledged if iq not in listed]
    assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged escalations lost"
    # The next writer recovers the lane and appends after what survived.
    with eq.EscalationQueue(queue_dir) as queue:
        queue.enqueue("det_kill", JPEG)
    assert len(inspect(binary, queue_dir)) >= len(acknowledged) + 1


def _spawned_writer(queue_dir: str, worker: int, count: int, barrier, results) -> None:
    with eq.EscalationQueue(queue_dir) as queue:
        barrier.wait(timeout=60)  # all 8 hold a handle at once, as uvicorn workers do
        ids = [queue.enqueue(f"det_w{worker}", JPEG).image_query_id for _ in range(count)]
        results.put((queue.lane, ids))


def test_eight_spawned_processes_share_one_queue_on_distinct_lanes(binary, queue_dir):
    """8 uvicorn-like worker processes (spawn, one handle each, all open at once) enqueue
    concurrently: each gets its own lane and every escalation is listed once."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_spawned_writer, args=(str(queue_dir), w, 25, barrier, results)) for w in range(8)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    lanes = [lane for lane, _ in got]
    assert len(set(lanes)) == 8
    expected = [iq for _, ids in got for iq in ids]
    listed = [r["image_query_id"] for r in inspect(binary, queue_dir)]
    assert sorted(listed) == sorted(expected) and len(listed) == 200


def test_sixteen_threads_share_one_handle(binary, queue_dir):
    """16 threads on one handle: one lane, every escalation listed once, and the sequence
    numbers are exactly 0..N-1 (no two appends got the same slot)."""
    errors: list[BaseException] = []
    receipts: list[eq.EnqueueReceipt] = []
    lock = threading.Lock()
    with eq.EscalationQueue(queue_dir) as queue:
        start = threading.Barrier(16)

        def work(t: int) -> None:
            try:
                start.wait()
                for _ in range(40):
                    r = queue.enqueue(f"det_t{t}", JPEG)
                    with lock:
                        receipts.append(r)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        lane = queue.lane
    assert errors == []
    assert {r.lane for r in receipts} == {lane}
    assert sorted(r.seq for r in receipts) == list(range(640))
    listed = {r["image_query_id"] for r in inspect(binary, queue_dir)}
    assert listed == {r.image_query_id for r in receipts}


def test_the_gil_is_released_while_an_enqueue_syncs(queue_dir):
    """While one thread enqueues large images (copy, write, fdatasync), another Python
    thread keeps running: with the GIL held it would get only the gaps between calls."""
    image = b"\xff\xd8" + os.urandom(8 << 20)
    with eq.EscalationQueue(queue_dir, free_disk_bytes_min=0) as queue:
        queue.enqueue("det_1", image)  # allocate the segment first
        inside = 0.0
        done = threading.Event()
        ticks = 0

        def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1

        old = sys.getswitchinterval()
        sys.setswitchinterval(1.0)  # with the GIL held by enqueue, the ticker would starve
        try:
            t = threading.Thread(target=ticker)
            t.start()
            time.sleep(0.01)
            before = ticks
            started = time.perf_counter()
            for _ in range(3):
                queue.enqueue("det_1", image)
            inside = time.perf_counter() - started
            during = ticks - before
            done.set()
            t.join()
        finally:
            sys.setswitchinterval(old)
    assert inside > 0
    assert during > 1000, f"the ticker ran {during} times during {inside:.3f} s of enqueue"


def test_a_fork_child_gets_forked_handle_and_the_parent_keeps_writing(binary, queue_dir):
    """A handle inherited through fork() refuses every call in the child (ForkedHandle),
    the child's exit leaves the parent's lane alone, and the parent keeps enqueueing."""
    queue = eq.EscalationQueue(queue_dir)
    first = queue.enqueue("det_parent", JPEG)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        outcome = "no error"
        try:
            queue.enqueue("det_child", JPEG)
        except eq.ForkedHandle as e:
            outcome = f"ForkedHandle {e.kind} {e.retryable} {e}"
        except BaseException as e:  # noqa: BLE001
            outcome = f"other {type(e).__name__} {e}"
        try:
            queue.close()
        except eq.ForkedHandle:
            outcome += " | close refused"
        os.write(write_end, outcome.encode())
        del queue  # dropping it in the child must not touch the parent's lane
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        outcome = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert outcome.startswith("ForkedHandle forked False"), outcome
    assert f"opened by process {os.getpid()}" in outcome and "open a new EscalationQueue" in outcome
    assert outcome.endswith("| close refused")
    second = queue.enqueue("det_parent", JPEG)
    assert (second.lane, second.seq) == (first.lane, first.seq + 1)
    queue.close()
    listed = [(r["detector_id"], r["seq"]) for r in inspect(binary, queue_dir)]
    assert listed == [("det_parent", 0), ("det_parent", 1)]
