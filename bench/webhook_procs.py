"""Benchmark 7's child processes: the loopback receiver and the service's worker and beat, with their CPU time.

:class:`Sink` runs :mod:`bench.webhook_sink` and reads back what it recorded; :class:`Service` runs one
``smartsvc worker`` or ``smartsvc beat`` in its own process group; :func:`wait_for` polls for a condition.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, python


class Sink:
    """The receiver (:mod:`bench.webhook_sink`) in a child process."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port, self.log_path = port, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([python(), "-m", "bench.webhook_sink", str(self.port)], cwd=REPO_ROOT,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_for(lambda: f"ready {self.port}" in self.log_path.read_text(errors="replace"), 30,
                  f"the webhook sink did not start: {self.log_path}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url("/count"), timeout=10) as response:
            return json.loads(response.read())

    def dump(self, path: Path) -> list[dict[str, Any]]:
        """Every recorded request since the last dump (then forgotten by the sink)."""
        request = urllib.request.Request(self.url("/dump"), data=str(path).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            json.loads(response.read())
        with open(path, encoding="utf-8") as lines:
            return [json.loads(line) for line in lines]

    def cpu_s(self) -> float:
        return _cpu_s(self.proc.pid) if self.proc is not None else 0.0

    def stop(self) -> None:
        _stop(self.proc)


class Service:
    """One ``smartsvc worker`` or ``smartsvc beat`` process in its own process group."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, ready_mark: str | None) -> None:
        self.argv, self.env, self.log_path, self.ready_mark = argv, env, log_path, ready_mark
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        env = dict(self.env, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([python(), "-m", "smartsvc", *self.argv], cwd=REPO_ROOT, env=env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self, timeout: float = 120) -> None:
        if self.ready_mark is not None:
            def ready() -> bool:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.argv} exited: {self.log_path.read_text(errors='replace')[-3000:]}")
                return self.ready_mark in self.log_path.read_text(errors="replace")

            wait_for(ready, timeout, f"{self.argv} was not ready: {self.log_path}")

    def cpu_s(self) -> float:
        """CPU seconds of the process and its children (the prefork pool)."""
        if self.proc is None:
            return 0.0
        return _cpu_s(self.proc.pid) + sum(_cpu_s(child) for child in _children(self.proc.pid))

    def stop(self) -> None:
        # A worker: Celery's cold shutdown (SIGQUIT); the benchmark's data is thrown away anyway.
        _stop(self.proc, signal.SIGQUIT if self.argv[0] == "worker" else signal.SIGTERM)


def wait_for(check: Any, timeout: float, message: str) -> None:
    """Poll ``check`` until true; after ``timeout`` raise ``message`` (an empty message: just return)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    if message:
        raise RuntimeError(message)


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    # Not Celery's warm shutdown's full wait: a send to the hanging endpoint would hold it for the 15 s timeout.
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
