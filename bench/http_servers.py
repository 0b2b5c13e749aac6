"""Serving the service (and references) for the HTTP benchmarks: settings, child servers, wrk.

Shared by benchmark 2 (:mod:`bench.bench_http`), benchmark 4 and the A/B tool
(:mod:`bench.ab_http`): the service's environment and in-process app, a
gunicorn server in a child process with its log, plain GETs, and one ``wrk``
run with its latency percentiles.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from bench.common import REPO_ROOT, python

WRK_LUA = Path(__file__).with_name("wrk_rotate.lua")


def service_env(var_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of our service: this process's, without its SMARTSVC_*, plus the benchmark's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSVC_")}
    env.update({
        "SMARTSVC_VAR_DIR": str(var_dir),
        # No run comes near it: the limiter still counts every request, as in production.
        "SMARTSVC_RATE_LIMIT": "100000000/minute",
        "SMARTSVC_ACCESS_TOKEN_TTL_S": "86400",
    })
    env.update({f"SMARTSVC_{k.upper()}": v for k, v in settings.items()})
    return env


def in_process_app(env: dict[str, str]) -> Any:
    """The service's app in this process, on the same settings as the server (quiet logs), schema migrated."""
    from smartsvc.app import create_app
    from smartsvc.migrate import upgrade

    app = create_app(environ={**{k: v for k, v in env.items() if k.startswith("SMARTSVC_")},
                              "SMARTSVC_LOG_LEVEL": "WARNING"})
    upgrade(app.extensions["smartsvc"].database)
    return app


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    from tests.support.servers import free_port

    return free_port()


class Server:
    """A gunicorn server in a child process (its own process group), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, port: int,
                 cwd: Path = REPO_ROOT) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.port = port
        self.cwd = cwd  # ``python -m`` runs the code of this checkout (bench/ab_http.py compares two)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str, timeout: float = 120) -> float:
        """Start and wait until ``ready_path`` answers 200; seconds it took."""
        self.launch()
        return self.wait_ready(ready_path, timeout)

    def launch(self) -> None:
        self._launched = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, ready_path: str, timeout: float = 120) -> float:
        """Wait until ``ready_path`` answers 200; seconds since the launch."""
        assert self.proc is not None
        t0 = self._launched
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base + ready_path, timeout=5) as response:
                    if response.status == 200:
                        return time.perf_counter() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, graceful: bool = True) -> None:
        """SIGTERM (gunicorn's graceful shutdown) and wait for it; SIGKILL after 40 s. See :meth:`begin_stop`."""
        self.begin_stop(graceful)
        self.wait_stopped()

    def begin_stop(self, graceful: bool = True) -> None:
        """SIGTERM, without waiting: the server shuts down (a second or two) while the caller goes on.

        ``graceful=False``: SIGKILL, for a smoke run's servers once measured — the processes' own
        shutdown (a second of CPU for each gunicorn master and worker) is not what it measures.
        """
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait_stopped(self) -> None:
        """Wait for the shutdown :meth:`begin_stop` began; SIGKILL after 40 s."""
        proc = self.proc
        if proc is None:
            return
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, limit: int = 4000) -> str:
        return self.log_text()[-limit:]

    def index_builds(self) -> list[dict[str, Any]]:
        """The service's ``spot_index_built`` log events so far (one per build, with pid and seconds)."""
        events = []
        for line in self.log_text().splitlines():
            if '"spot_index_built"' not in line:
                continue
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: the leaves of the server's process tree."""
        assert self.proc is not None
        rows = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True, check=True).stdout.splitlines()
        parents = [tuple(map(int, row.split())) for row in rows[1:]]
        tree, grown = {self.proc.pid}, True
        while grown:
            grown = False
            for pid, ppid in parents:
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grown = True
        return [pid for pid in tree if not any(ppid == pid for _, ppid in parents)]

    def worker_boots(self) -> int:
        """gunicorn workers started so far (the first N, and every one recycled after max_requests)."""
        return self.log_text().count("Booting worker with pid")


def stop_all(servers: Sequence[Server], graceful: bool = True) -> None:
    """Stop several servers at once: each shuts down while the others do (see :meth:`Server.begin_stop`)."""
    for server in servers:
        server.begin_stop(graceful)
    for server in servers:
        server.wait_stopped()


def get(base: str, path: str, token: str | None, timeout: float = 60) -> tuple[int, bytes]:
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def warm_requests(server: Server, paths: list[str], token: str | None, count: int) -> None:
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda p: get(server.base, p, token)[0], paths[:count]))
    bad = [s for s in statuses if s != 200]
    if bad:
        raise RuntimeError(f"{server.name}: warm-up answered {bad[:5]}")


def run_wrk(server: Server, paths_file: Path, token: str | None, connections: int, duration_s: float,
            threads: int) -> dict[str, Any]:
    """One wrk run; requests/s and latency percentiles in ms."""
    argv = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency",
            "--timeout", "10s", "-s", str(WRK_LUA), server.base, "--", str(paths_file), token or ""]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 120,
                            stdin=subprocess.DEVNULL, cwd=REPO_ROOT)
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    raw = json.loads(line[len("BENCH_JSON "):])
    seconds = raw["duration_us"] / 1e6
    errors = {k[len("errors_"):]: raw[k] for k in raw if k.startswith("errors_")}
    return {
        "requests": raw["requests"],
        "seconds": round(seconds, 3),
        "rps": raw["requests"] / seconds if seconds else 0.0,
        "bytes_per_response": raw["bytes"] / raw["requests"] if raw["requests"] else 0.0,
        "errors": errors,
        **{f"{q}_ms": raw[f"{q}_us"] / 1000.0 for q in ("p50", "p75", "p90", "p99", "p999", "max", "mean")},
    }


def api_argv(port: int, workers: int) -> list[str]:
    """``smartsvc api`` as deployed (gunicorn gthread), on ``port`` with ``workers`` processes."""
    return [python(), "-m", "smartsvc", "api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
