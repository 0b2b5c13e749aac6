"""Throwaway servers for the integration tests: PostgreSQL + PostGIS, Redis, a Celery worker.

Each server is started from the Debian binaries into a fresh temporary
directory, listens on 127.0.0.1 on a free port, keeps nothing on disk that
outlives it and is stopped (and its directory removed) even when tests fail.
Nothing is ever skipped: a missing binary is a :class:`ServerUnavailable`
error telling to run ``make test``, which installs the Debian packages.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

INSTALL_HINT = (
    "run `make test`, which installs the Debian packages postgresql, "
    "postgresql-15-postgis-3 and redis-server"
)
REPO_ROOT = Path(__file__).resolve().parents[2]


class ServerUnavailable(RuntimeError):
    """A throwaway server could not be started; the message says why and what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:]


# --------------------------------------------------------------------------- PostgreSQL


def find_postgres_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb (``POSTGRES_BIN_DIR`` overrides)."""
    override = os.environ.get("POSTGRES_BIN_DIR")
    candidates = [Path(override)] if override else []
    candidates += sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise ServerUnavailable(f"PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin; {INSTALL_HINT}")


class PostgresServer:
    """A throwaway PostgreSQL cluster: trust auth, fsync off, PostGIS available.

    PostgreSQL refuses to run as root, so when the tests run as root the
    cluster belongs to the ``postgres`` OS user (``runuser``).
    """

    superuser = "postgres"
    host = "127.0.0.1"

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir
        self.base: Path | None = None
        self.port = 0
        self._started = False

    # -- lifecycle

    def __enter__(self) -> "PostgresServer":
        self.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stop()

    @property
    def data_dir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        assert self.base is not None
        return self.base / "postgres.log"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def _run(self, argv: list[str], what: str, timeout: float = 120) -> None:
        result = subprocess.run(self._as_owner(argv), capture_output=True, text=True, timeout=timeout,
                                cwd=self.base, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ServerUnavailable(
                f"{what} failed (exit {result.returncode}): {result.stderr.strip() or result.stdout.strip()}\n"
                f"{_tail(self.log_path)}"
            )

    def start(self) -> None:
        """initdb into a temporary directory and start the server (waits until it accepts connections)."""
        bin_dir = self.bin_dir or find_postgres_bin_dir()
        self.bin_dir = bin_dir
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            raise ServerUnavailable("running as root needs `runuser` to start PostgreSQL as user postgres")
        # As root the cluster belongs to 'postgres', which must reach the directory:
        # /tmp, not a TMPDIR that may sit inside a private home.
        self.base = Path(tempfile.mkdtemp(prefix="smartsvc-pg-", dir="/tmp" if os.geteuid() == 0 else None))
        try:
            if os.geteuid() == 0:
                try:
                    shutil.chown(self.base, user="postgres", group="postgres")
                except (LookupError, PermissionError) as exc:
                    raise ServerUnavailable(f"OS user 'postgres' is missing ({exc}); {INSTALL_HINT}") from None
            self._run([str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.superuser,
                       "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"], "initdb")
            last_error: Exception | None = None
            for _attempt in range(3):  # a free port may be taken between picking and binding
                self.port = free_port()
                options = (f"-c listen_addresses={self.host} -p {self.port} -k {self.base} "
                           "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                           "-c max_connections=300 -c shared_buffers=64MB")
                try:
                    self._run([str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path),
                               "-w", "-t", "60", "-o", options, "start"], "pg_ctl start")
                except ServerUnavailable as exc:
                    last_error = exc
                    continue
                self._started = True
                break
            else:
                raise ServerUnavailable(f"PostgreSQL did not start: {last_error}")
            self._check_postgis()
        except BaseException:
            self.stop()
            raise

    def _check_postgis(self) -> None:
        import psycopg

        self.create_database("smartsvc_postgis_check", template="template0")
        try:
            with psycopg.connect(self.dsn("smartsvc_postgis_check"), autocommit=True) as connection:
                connection.execute("CREATE EXTENSION postgis")
        except psycopg.Error as exc:
            raise ServerUnavailable(f"PostGIS is not available ({exc}); {INSTALL_HINT}") from None
        finally:
            self.drop_database("smartsvc_postgis_check")

    def stop(self) -> None:
        """Stop at once (``-m immediate``: nothing to keep) and remove the directory."""
        if self.base is None:
            return
        try:
            if self._started and self.bin_dir is not None:
                subprocess.run(self._as_owner([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir),
                                               "-m", "immediate", "-w", "-t", "30", "stop"]),
                               capture_output=True, timeout=60, cwd=self.base, stdin=subprocess.DEVNULL)
                self._kill_leftovers()
        finally:
            self._started = False
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def _kill_leftovers(self) -> None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # -- databases

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string (psycopg)."""
        return f"host={self.host} port={self.port} user={self.superuser} dbname={dbname}"

    def url(self, dbname: str) -> str:
        """The SQLAlchemy URL of ``dbname`` as the service expects it."""
        return f"postgresql+psycopg://{self.superuser}@{self.host}:{self.port}/{dbname}"

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True) as connection:
            connection.execute(sql)  # type: ignore[arg-type]

    def create_database(self, name: str, *, template: str | None = None) -> None:
        """A new database, copied from ``template`` when given (STRATEGY file_copy: fast with fsync off)."""
        clause = f' TEMPLATE "{template}" STRATEGY file_copy' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{clause}')

    def drop_database(self, name: str) -> None:
        """Drop a database even if connections are still open."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- Redis


class RedisServer:
    """A throwaway redis-server on 127.0.0.1 without persistence."""

    host = "127.0.0.1"

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary
        self.base: Path | None = None
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "RedisServer":
        self.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stop()

    @property
    def log_path(self) -> Path:
        assert self.base is not None
        return self.base / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def start(self, timeout: float = 20) -> None:
        binary = self.binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).is_file():
            raise ServerUnavailable(f"redis-server not found; {INSTALL_HINT}")
        self.binary = binary
        self.base = Path(tempfile.mkdtemp(prefix="smartsvc-redis-"))
        try:
            for _attempt in range(3):
                self.port = free_port()
                argv = [binary, "--bind", self.host, "--port", str(self.port), "--save", "",
                        "--appendonly", "no", "--dir", str(self.base), "--daemonize", "no",
                        "--protected-mode", "no", "--logfile", str(self.log_path), "--databases", "16"]
                self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL, start_new_session=True)
                if self._wait_ready(timeout):
                    return
                self._terminate()
            raise ServerUnavailable(f"redis-server did not start:\n{_tail(self.log_path)}")
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def flushall(self) -> None:
        """Empty every database (between tests)."""
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            sock.recv(64)

    def _terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        try:
            self._terminate()
        finally:
            if self.base is not None:
                shutil.rmtree(self.base, ignore_errors=True)
                self.base = None


# --------------------------------------------------------------------------- Celery worker


class WorkerProcess:
    """``python -m smartsvc worker`` in its own process group, output captured to a file."""

    READY_MARK = " ready."

    def __init__(self, env: Mapping[str, str], log_path: Path, concurrency: int = 2) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "WorkerProcess":
        self.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        """Start the worker and wait until Celery reports it ready."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSVC_")}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        # Temporary files of the pool (billiard's pymp-*) stay next to the log, not in /tmp.
        temp_dir = self.log_path.parent / "tmp"
        temp_dir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(temp_dir)
        with open(self.log_path, "wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "smartsvc", "worker", "--concurrency", str(self.concurrency)],
                cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerUnavailable(f"the Celery worker exited with {self.process.returncode}:\n{self.output()}")
            if self.READY_MARK in self.output():
                return
            time.sleep(0.1)
        self.stop()
        raise ServerUnavailable(f"the Celery worker was not ready within {timeout:.0f} s:\n{self.output()}")

    def output(self) -> str:
        """Everything the worker has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_output(self, text: str, timeout: float = 30) -> str:
        """Wait until ``text`` appears in the output; returns the line that has it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output().splitlines():
                if text in line:
                    return line
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the worker output within {timeout:.0f} s")

    def stop(self, grace: float = 2) -> None:
        """SIGTERM (warm shutdown), then SIGKILL the whole process group after ``grace`` seconds."""
        process, self.process = self.process, None
        if process is None:
            return
        try:
            pgid = os.getpgid(process.pid)
        except ProcessLookupError:
            pgid = None
        try:
            process.terminate()  # the main process stops its pool children itself
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        if pgid is not None:
            try:
                os.killpg(pgid, signal.SIGKILL)  # pool children that outlived the main process
            except ProcessLookupError:
                pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
