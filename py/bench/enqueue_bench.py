"""Enqueue from Python vs from Rust, in one run on one file system.

    python py/bench/enqueue_bench.py            # the escalation_queue wheel installed

It builds the Rust side (`py/examples/enqueue_latency.rs`, release) unless EQ_BENCH_RUST
names it, then interleaves runs (Rust, Python, Rust, Python, ...; EQ_BENCH_ROUNDS rounds,
default 3) because this machine's fdatasync latency drifts over minutes, and prints the
median of the rounds:

* sequential latency, p50 and p99, of EQ_BENCH_COUNT (default 2000) durable enqueues of a
  EQ_BENCH_IMAGE_BYTES (default 40960) inline image, one thread;
* throughput with 16 threads on one handle (group commit).

EQ_BENCH_DIR picks the file system (default: the system temp dir); EQ_BENCH_PYTHON_FIRST=1
runs the Python side first in each round.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import escalation_queue as eq

COUNT = int(os.environ.get("EQ_BENCH_COUNT", "2000"))
IMAGE_BYTES = int(os.environ.get("EQ_BENCH_IMAGE_BYTES", "40960"))
ROUNDS = int(os.environ.get("EQ_BENCH_ROUNDS", "3"))
# Which side runs first in each round (the order can favour one side on a drifting disk).
ORDER = ("python", "rust") if os.environ.get("EQ_BENCH_PYTHON_FIRST") == "1" else ("rust", "python")
THREADS = 16
ROOT = Path(__file__).resolve().parents[2]


def rust_binary() -> str:
    if os.environ.get("EQ_BENCH_RUST"):
        return os.environ["EQ_BENCH_RUST"]
    manifest = str(ROOT / "py" / "Cargo.toml")
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--example", "enqueue_latency", "--manifest-path", manifest],
        check=True,
    )
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--manifest-path", manifest],
        check=True,
        capture_output=True,
        text=True,
    )
    return str(Path(json.loads(meta.stdout)["target_directory"]) / "release" / "examples" / "enqueue_latency")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def image() -> bytes:
    return b"\xff\xd8\xff" + b"\xa5" * (IMAGE_BYTES - 3)


def run_rust(binary: str, base: str, threads: int) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory(dir=base) as d:
        out = subprocess.run([binary, d, str(COUNT), str(IMAGE_BYTES), str(threads)], check=True,
                             capture_output=True, text=True)
    result = json.loads(out.stdout)
    return [float(v) for v in result["latencies_us"]], float(result["wall_s"])


def run_python(base: str, threads: int) -> tuple[list[float], float]:
    img = image()
    with tempfile.TemporaryDirectory(dir=base) as d:
        with eq.EscalationQueue(d) as queue:
            per_thread = COUNT // threads
            results: list[list[float]] = [[] for _ in range(threads)]

            def work(slot: int) -> None:
                out = results[slot]
                enqueue = queue.enqueue
                for _ in range(per_thread):
                    t = time.perf_counter()
                    enqueue("det_bench", img)
                    out.append((time.perf_counter() - t) * 1e6)

            started = time.perf_counter()
            if threads == 1:
                work(0)
            else:
                pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
                for th in pool:
                    th.start()
                for th in pool:
                    th.join()
            wall = time.perf_counter() - started
    return [v for r in results for v in r], wall


def main() -> None:
    binary = rust_binary()
    base = os.environ.get("EQ_BENCH_DIR") or tempfile.gettempdir()
    seq = {"rust": [], "python": []}
    thr = {"rust": [], "python": []}
    for _ in range(ROUNDS):
        for side in ORDER:
            lat, _ = run_rust(binary, base, 1) if side == "rust" else run_python(base, 1)
            seq[side].append((percentile(lat, 50), percentile(lat, 99)))
        for side in ORDER:
            _, wall = run_rust(binary, base, THREADS) if side == "rust" else run_python(base, THREADS)
            thr[side].append(COUNT // THREADS * THREADS / wall)
    med = {s: (statistics.median(p[0] for p in seq[s]), statistics.median(p[1] for p in seq[s])) for s in seq}
    tput = {s: statistics.median(thr[s]) for s in thr}
    print(f"file system of {base}; {COUNT} enqueues of {IMAGE_BYTES} B, median of {ROUNDS} interleaved rounds")
    print("| | p50 µs | p99 µs | 16 threads, enqueues/s |")
    print("|---|---|---|---|")
    for side in ("rust", "python"):
        print(f"| {side} | {med[side][0]:.0f} | {med[side][1]:.0f} | {tput[side]:.0f} |")
    print(f"python/rust: p50 {med['python'][0] / med['rust'][0]:.2f}x, p99 {med['python'][1] / med['rust'][1]:.2f}x, "
          f"16-thread throughput {tput['python'] / tput['rust']:.2f}x")
    print("rounds:", json.dumps({"sequential_p50_p99_us": seq, "threads16_per_s": thr}))


if __name__ == "__main__":
    main()
