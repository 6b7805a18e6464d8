"""Shared fixtures: the `escalation-queue` binary (ESCALATION_QUEUE_BIN), a queue directory,
reading a queue back the way an operator does (`inspect --json`, `dlq list --json`), and a
mock cloud on 127.0.0.1.

With CI=true a missing binary fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 16  # 4 KiB that sniff as a JPEG
MOCK_TOKEN = "mock-token"


def _binary() -> str:
    path = os.environ.get("ESCALATION_QUEUE_BIN")
    if path and os.access(path, os.X_OK):
        return path
    message = "ESCALATION_QUEUE_BIN must name the escalation-queue binary (.ci/run builds it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def binary() -> str:
    return _binary()


@pytest.fixture
def queue_dir(tmp_path: Path) -> Path:
    return tmp_path / "queue"


def run(binary: str, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{binary} {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def inspect(binary: str, queue_dir: Path) -> list[dict]:
    """The pending records as `escalation-queue inspect --json` lists them."""
    out = run(binary, "inspect", "--queue-dir", str(queue_dir), "--json", "--limit", "0")
    report = json.loads(out.stdout)
    assert report["unlisted"] == [], report
    return report["records"]


def dlq_list(binary: str, queue_dir: Path) -> list[dict]:
    """The dead letters as `escalation-queue dlq list --json` prints them."""
    return json.loads(run(binary, "dlq", "list", "--queue-dir", str(queue_dir), "--json").stdout)


class MockCloud:
    def __init__(self, binary: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [binary, "mock-cloud", "--listen", "127.0.0.1:0", "--token", MOCK_TOKEN, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line
        self.endpoint = line.split()[-1]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def mock_cloud(binary: str):
    clouds: list[MockCloud] = []

    def start(*args: str) -> MockCloud:
        cloud = MockCloud(binary, *args)
        clouds.append(cloud)
        return cloud

    yield start
    for cloud in clouds:
        cloud.stop()


def drain(binary: str, queue_dir: Path, cloud: MockCloud) -> dict:
    """Delivers everything with `escalation-queue drain --json`; returns its summary."""
    out = run(
        binary,
        "drain",
        "--queue-dir",
        str(queue_dir),
        "--endpoint",
        cloud.endpoint,
        "--status-addr",
        "127.0.0.1:0",
        "--json",
        check=False,
        env={"GROUNDLIGHT_API_TOKEN": MOCK_TOKEN},
    )
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)
