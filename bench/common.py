"""What every benchmark shares: the run context, timing summaries, machine facts,
a throwaway PostgreSQL+PostGIS (tests/support/servers.py), measured child processes.

A benchmark module (``bench/bench_*.py``) exposes:

- ``NAME`` (the JSON file name and the ``--only`` name) and ``TITLE``;
- ``run(ctx: Context) -> dict``: measures and returns a JSON-able dict with
  at least ``params``, ``results``, ``ratios`` and ``targets``;
- ``tables(result: dict) -> list[rich.table.Table]``: what to print.

It is registered in :data:`bench.run.BENCHMARKS`; the runner adds the
machine facts, times the whole run and writes ``bench/results/<NAME>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from rich.console import Console

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"


# --------------------------------------------------------------------------- statistics


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p99, mean and min of latencies given in seconds, in milliseconds."""
    a = np.asarray(seconds, dtype=float) * 1000.0
    if a.size == 0:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan"), "min_ms": float("nan")}
    return {
        "n": int(a.size),
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "min_ms": float(a.min()),
    }


def timed(fn: Callable[..., Any], args_list: Iterable[tuple[Any, ...]]) -> tuple[list[float], list[Any]]:
    """Call ``fn(*args)`` for each args tuple; per-call seconds and the return values."""
    clock = time.perf_counter
    times: list[float] = []
    out: list[Any] = []
    for args in args_list:
        t = clock()
        r = fn(*args)
        times.append(clock() - t)
        out.append(r)
    return times, out


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or None when either is missing or zero."""
    if not numerator or not denominator or numerator != numerator or denominator != denominator:
        return None
    return float(numerator) / float(denominator)


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    """Cores, memory, CPU model and software versions: say what the numbers were measured on."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu_model"] = platform.processor() or None
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(var):
            info.setdefault("env", {})[var] = os.environ[var]
    return info


# --------------------------------------------------------------------------- child processes


@dataclass
class Measured:
    """A finished child process: exit code, output, wall time and its own peak RSS."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    max_rss_bytes: int


def run_measured(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                 timeout: float = 1800) -> Measured:
    """Run ``argv`` and measure it alone: wall time and its own peak RSS (see ``bench/_measure.py``)."""
    with tempfile.TemporaryDirectory(prefix="smartsvc-measure-") as tmp:
        result_path = Path(tmp) / "result.json"
        with open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err:
            helper = [sys.executable, "-S", str(Path(__file__).with_name("_measure.py")), str(result_path)]
            # Own process group, so that a timeout stops the command as well as the helper.
            proc = subprocess.Popen([*helper, *argv], stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                    cwd=cwd or REPO_ROOT, start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
                raise RuntimeError(f"{argv[0]} did not finish within {timeout:.0f} s") from None
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        try:
            result = json.loads(result_path.read_text())
        except (OSError, ValueError):
            return Measured(-1, stdout, stderr or "the measuring helper wrote no result", 0.0, 0)
    return Measured(result["returncode"], stdout, stderr, result["wall_s"], result["max_rss_bytes"])


def peak_rss_bytes() -> int:
    """This process's peak RSS so far (VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def rss_bytes() -> int:
    """This process's current RSS (VmRSS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_ticks(pid: int | None = None) -> float:
    """CPU seconds used so far: by process ``pid`` (user + system), or busy seconds of the whole machine."""
    hz = os.sysconf("SC_CLK_TCK")
    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / hz
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in cpu]
    return (sum(values) - values[3] - values[4]) / hz  # all but idle and iowait


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` and its children, the live ones and those it has reaped.

    A server that forks a process per connection (PostgreSQL) is measured whole: a backend that exits
    between two readings moves its time from the live children into the parent's reaped-children fields.
    """
    hz = os.sysconf("SC_CLK_TCK")

    def fields(stat: Path) -> list[str]:
        return stat.read_text().rsplit(")", 1)[1].split()

    while True:
        before = fields(Path(f"/proc/{pid}/stat"))
        total = sum(int(v) for v in before[11:15])  # utime, stime, cutime, cstime
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                child = fields(stat)
            except OSError:  # gone meanwhile: reaped (seen below) or not a child
                continue
            if int(child[1]) == pid:
                total += int(child[11]) + int(child[12])
        # A child reaped during the walk is in neither place: walk again. (An exited child not yet reaped
        # is still listed, with its times.)
        if fields(Path(f"/proc/{pid}/stat"))[13:15] == before[13:15]:
            return total / hz


# --------------------------------------------------------------------------- PostgreSQL


class BenchPostgres:
    """One throwaway PostgreSQL+PostGIS for the whole run, with a ``bench`` database (PostGIS enabled).

    Started on first use from the Debian binaries by the test suite's
    :class:`tests.support.servers.PostgresServer` (``make bench`` installs them).
    With ``port``, the one another process of this run started (a smoke lane's
    parent, see :func:`bench.lanes.run_lanes`) is used as it is and never stopped here.
    """

    DATABASE = "bench"
    # PostGIS created once (CREATE EXTENSION postgis costs the server ~1 s of CPU); every database of the
    # run is a copy. Nothing connects to it, so that copies can be made at any time.
    TEMPLATE = "bench_postgis"

    def __init__(self, port: int | None = None) -> None:
        from tests.support.servers import PostgresServer

        self.server = PostgresServer()
        self.owned = port is None
        if port is not None:
            self.server.port = port
            return
        self.server.start()
        try:
            self.server.create_database(self.TEMPLATE, template="template0")
            self.server.execute("CREATE EXTENSION postgis", self.TEMPLATE)
            self.create_database(self.DATABASE)
            # Benchmark settings: more memory for index builds and sorts than the test defaults.
            self.server.execute("ALTER SYSTEM SET maintenance_work_mem = '512MB'")
            self.server.execute("ALTER SYSTEM SET work_mem = '64MB'")
            self.server.execute("SELECT pg_reload_conf()")
        except BaseException:
            self.server.stop()
            raise

    def create_database(self, name: str) -> None:
        """A new, empty database with PostGIS enabled (a copy of :attr:`TEMPLATE`)."""
        self.server.create_database(name, template=self.TEMPLATE)

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.DATABASE)

    def ogr_dsn(self) -> str:
        """The database as GDAL's PostgreSQL driver names it."""
        s = self.server
        return f"PG:host={s.host} port={s.port} user={s.superuser} dbname={self.DATABASE}"

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True)

    def versions(self) -> dict[str, str]:
        with self.connect() as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]
            postgis = conn.execute("SELECT postgis_lib_version()").fetchone()[0]
        return {"postgresql": pg, "postgis": postgis}

    def cpu_s(self) -> float | None:
        """CPU seconds the server (postmaster and every backend) has used so far; None for a server another
        process started (a smoke lane's: its data directory is not known here)."""
        if self.server.base is None:
            return None
        pid = int((self.server.data_dir / "postmaster.pid").read_text().split()[0])
        return tree_cpu_s(pid)

    def stop(self) -> None:
        if self.owned:
            self.server.stop()


# --------------------------------------------------------------------------- tools


def tool_path(name: str) -> str | None:
    return shutil.which(name)


def ensure_debian_tools(console: Console, tools: dict[str, str]) -> None:
    """Install what the benchmarks run but is missing, with ``make bench-sysdeps`` (the Makefile is the one list).

    ``tools`` maps a program (e.g. ``ogr2ogr``) to the Debian package that has it.
    """
    from tests.support.servers import ServerUnavailable, find_postgres_bin_dir

    missing = [pkg for prog, pkg in tools.items() if tool_path(prog) is None]
    try:
        find_postgres_bin_dir()
    except ServerUnavailable:
        missing.append("postgresql")
    if not missing:
        return
    console.print(f"[yellow]missing {', '.join(missing)}: running `make bench-sysdeps`[/]")
    result = subprocess.run(["make", "--no-print-directory", "bench-sysdeps"], cwd=REPO_ROOT,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`make bench-sysdeps` failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                           f"{result.stderr[-3000:]}")


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """What a benchmark gets from the runner."""

    smoke: bool
    out_dir: Path
    console: Console
    options: dict[str, Any] = field(default_factory=dict)
    postgres_port: int | None = None  # the run's PostgreSQL when another process started it (smoke lanes)
    _postgres: BenchPostgres | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def log(self, message: str) -> None:
        self.console.log(message)

    def postgres(self) -> BenchPostgres:
        """The run's PostgreSQL+PostGIS, started on first use."""
        if self._postgres is None and self.postgres_port is not None:
            self._postgres = BenchPostgres(self.postgres_port)
        if self._postgres is None:
            t = time.perf_counter()
            self._postgres = BenchPostgres()
            self.log(f"PostgreSQL+PostGIS up on port {self._postgres.server.port} in {time.perf_counter() - t:.1f} s")
        return self._postgres

    @property
    def tmp(self) -> Path:
        """A temporary directory for the run (large files go here; removed at the end)."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="smartsvc-bench-")
        return Path(self._tmp.name)

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (``.tmp`` then rename) so a killed run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def python() -> str:
    """The interpreter running the benchmarks (for child processes)."""
    return sys.executable
