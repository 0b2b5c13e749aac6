"""Benchmarks in parallel lanes (``--smoke`` only): each in a forked child, its output printed whole when it ends.

Most of a smoke benchmark is waiting — for gunicorn, Celery workers and
beat to start and stop, for a backlog to drain — so two at a time overlap
well on two cores. The children are forked from a runner that has already
imported what the benchmarks import (the service, SQLAlchemy, psycopg: ~2 s
of CPU that each fresh process would spend again) and started the run's
PostgreSQL+PostGIS, which they share (each benchmark names its databases and
tables its own way). A full run never comes here: it measures one benchmark
at a time, undisturbed.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console

from bench.common import BenchPostgres

# What the benchmarks import on their first use of the service (bench.http_servers.in_process_app and the
# throwaway servers); the benchmark modules themselves are imported besides.
PRELOAD = ("smartsvc.app", "smartsvc.migrate", "tests.support.servers", "psycopg")


def run_lanes(console: Console, modules: Sequence[str], names: Sequence[str], lanes: int,
              child: Callable[[str, int], int]) -> list[str]:
    """Run ``child(name, postgres_port)`` for each of ``names`` (in that order), ``lanes`` children at a time.

    ``child`` runs in the forked process with its standard output and error going to a file of
    its own; its return value is the exit code. Returns the names whose child failed.
    """
    postgres = _start_postgres_while_importing([*PRELOAD, *modules])
    console.print(f"{lanes} lanes; PostgreSQL+PostGIS of the run on port {postgres.server.port}")
    fork = multiprocessing.get_context("fork")
    queue = list(names)
    running: dict[str, tuple[BaseProcess, Path]] = {}
    failed: list[str] = []
    logs = tempfile.TemporaryDirectory(prefix="smartsvc-bench-lanes-")
    try:
        while queue or running:
            while queue and len(running) < lanes:
                name = queue.pop(0)
                log = Path(logs.name) / f"{name}.log"
                # Flushed before the fork, so that nothing buffered here is printed again by the child.
                sys.stdout.flush()
                sys.stderr.flush()
                proc = fork.Process(target=_child, args=(child, name, postgres.server.port, log), name=f"bench-{name}")
                proc.start()
                running[name] = (proc, log)
            wait([proc.sentinel for proc, _ in running.values()])
            for name, (proc, log) in list(running.items()):
                if proc.exitcode is None:
                    continue
                del running[name]
                proc.join()
                sys.stdout.write(log.read_text(errors="replace"))
                sys.stdout.flush()
                if proc.exitcode != 0:
                    console.print(f"[red]{name} failed (exit {proc.exitcode})[/]")
                    failed.append(name)
    finally:
        for proc, _ in running.values():
            _interrupt(proc)
        postgres.stop()
        logs.cleanup()
    return failed


def _start_postgres_while_importing(modules: Sequence[str]) -> BenchPostgres:
    """Start PostgreSQL (mostly waiting on initdb and pg_ctl) in a thread while this one imports ``modules``.

    The thread has ended when this returns: nothing but the main thread is forked.
    """
    outcome: dict[str, Any] = {}

    def start() -> None:
        try:
            outcome["postgres"] = BenchPostgres()
        except BaseException as exc:  # re-raised in the main thread below
            outcome["error"] = exc

    starter = threading.Thread(target=start, name="bench-postgres")
    starter.start()
    try:
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001 — the child imports it again and reports the error as that benchmark's
                pass
    finally:
        starter.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["postgres"]


def _child(child: Callable[[str, int], int], name: str, postgres_port: int, log: Path) -> None:
    # A session of its own: an interrupted run reaches it once, through the runner (see _interrupt),
    # not a second time from the terminal while it is stopping its servers.
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    raise SystemExit(child(name, postgres_port))


def _interrupt(proc: BaseProcess) -> None:
    """Stop a child still running (the runner was interrupted): SIGINT, so that it stops its own servers."""
    try:
        os.kill(proc.pid, signal.SIGINT)  # type: ignore[arg-type]
    except ProcessLookupError:
        return
    proc.join(timeout=60)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
