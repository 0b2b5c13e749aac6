"""Serving the API with gunicorn, and running API + worker + beat together."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any, Callable

from gunicorn.app.base import BaseApplication


class _Gunicorn(BaseApplication):
    """gunicorn driven from code; each worker process builds its own app with ``factory``."""

    def __init__(self, options: dict[str, Any], factory: Callable[[], Any] | None = None) -> None:
        self._options = options
        self._factory = factory
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        if self._factory is not None:
            return self._factory()
        from ..app import create_app

        return create_app()


def preloaded_app_factory(master_app: Any) -> Callable[[], Any]:
    """The worker app factory for ``smartsvc api``, with the spot index built once, here, in the master.

    Called before gunicorn forks: the live parking layer's in-process index (when spot search uses
    one) is built now and every worker's fresh app starts from it, shared copy-on-write, instead of
    each worker — and each worker recycled after ``max_requests`` — reading the layer again (minutes
    at a million spots). The master's connections are closed first: each worker opens its own.
    """
    from ..services.spot_index import preload_spot_index

    container = master_app.extensions["smartsvc"]
    preloaded = preload_spot_index(container.spot_finder, container.database)  # closes its connections

    def factory() -> Any:
        from ..app import create_app

        from ..logging_setup import buffer_log_lines

        app = create_app(container.settings)  # the master's settings (read from the environment, key ensured)
        buffer_log_lines()  # one write per interval, not one per request (logging_setup.LineHandler)
        live_index = getattr(app.extensions["smartsvc"].spot_finder, "live_index", None)
        if preloaded is not None and live_index is not None:
            live_index.adopt(preloaded)
        return app

    return factory


def gunicorn_options(host: str, port: int, workers: int) -> dict[str, Any]:
    """How ``smartsvc api`` runs gunicorn (the benchmarks serve their reference app with the same)."""
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": 4,
        "timeout": 60,
        "graceful_timeout": 20,
        "accesslog": None,
        # Recycling bounds a slow leak; a recycled worker starts cold (its caches, the index pages it had
        # touched), and 10,000 requests were 10-20 s of a busy worker: benchmark 2 saw it mid-run.
        "max_requests": 200_000,
        "max_requests_jitter": 20_000,
    }


def serve_api(host: str, port: int, workers: int, factory: Callable[[], Any] | None = None) -> None:
    """Serve the API (or another app from ``factory``) with ``workers`` gunicorn processes (blocks)."""
    _Gunicorn(gunicorn_options(host, port, workers), factory).run()


def run_all(host: str, port: int) -> int:
    """Start API, worker and beat as child processes; stop all when one ends."""
    python = sys.executable
    commands = {
        "api": [python, "-m", "smartsvc", "api", "--host", host, "--port", str(port), "--workers", "2"],
        "worker": [python, "-m", "smartsvc", "worker", "--concurrency", "2"],
        "beat": [python, "-m", "smartsvc", "beat"],
    }
    children = {name: subprocess.Popen(argv) for name, argv in commands.items()}
    stopping = False

    def _stop(*_args: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    exit_code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                print(f"smartsvc {name} exited with {child.returncode}; stopping", file=sys.stderr)
                exit_code = child.returncode or 1
                stopping = True
        time.sleep(0.5)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return exit_code
