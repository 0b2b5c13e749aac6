"""Structured logging: one JSON object per line, with the request id.

The request id comes from the ``X-Request-Id`` header when the caller sends
a sane one, otherwise it is generated; it is returned in the response
header and in every problem document, so a user's report can be matched to
the log lines of their request.
"""

from __future__ import annotations

import atexit
import contextvars
import hashlib
import hmac
import json
import logging
import math
import os
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "smartsvc_request_id", default=None
)

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# Log fields that name a user. Process logs cannot be rewritten when a user is erased (TRUST.md), so a user
# appears in them only under a keyed pseudonym: stable across processes, useless without the secret key.
_USER_FIELDS = ("principal", "user_id")
_USER_PREFIX = "user:"
_PSEUDONYMS_MAX = 10_000
# json.dumps(..., default=str) builds an encoder per call; a line is encoded by this one.
_encode_entry = json.JSONEncoder(default=str).encode


def user_pseudonym(key: str, user_id: object) -> str:
    """``user~`` and 16 hex digits of HMAC-SHA256(key, user id): the name a user has in the logs.

    An operator holding the key can compute it from a user id to find a
    user's requests; once the user is erased, nothing links it back.
    """
    digest = hmac.new(key.encode("utf-8"), str(user_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return "user~" + digest[:16]


class PseudonymFilter(logging.Filter):
    """Replaces user ids in the ``principal`` and ``user_id`` fields by :func:`user_pseudonym`."""

    def __init__(self, key: str) -> None:
        super().__init__()
        # The keyed hash's key schedule done once: each record copies it (same digest as user_pseudonym).
        self._hmac = hmac.new(key.encode("utf-8"), digestmod=hashlib.sha256)
        # A process logs the same few users over and over (an API worker: its callers); bounded, emptied when full.
        self._known: dict[str, str] = {}

    def _pseudonym(self, user_id: str) -> str:
        known = self._known.get(user_id)
        if known is not None:
            return known
        mac = self._hmac.copy()
        mac.update(user_id.encode("utf-8"))
        if len(self._known) >= _PSEUDONYMS_MAX:
            self._known.clear()
        known = self._known[user_id] = "user~" + mac.hexdigest()[:16]
        return known

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        for field in _USER_FIELDS:
            value = fields.get(field)
            if value is None:
                continue
            text = str(value)
            if field == "principal":
                if text.startswith(_USER_PREFIX):
                    fields[field] = self._pseudonym(text[len(_USER_PREFIX):])
            else:
                fields[field] = self._pseudonym(text)
        return True


class _SecondStamps(threading.local):
    """The last second formatted by this thread, so a line's time costs a lookup (one request logs once)."""

    second = None
    text = ""


_STAMPS = _SecondStamps()


def utc_timestamp_ms(created: float) -> str:
    """``created`` (``time.time()``) as ``datetime.fromtimestamp(created, timezone.utc).isoformat(timespec=
    "milliseconds")`` writes it, e.g. ``2026-11-24T09:00:00.123+00:00``.

    The microseconds are rounded half-even and carried into the second as ``fromtimestamp`` does; the date
    and time of day are formatted once per second.
    """
    fraction, whole = math.modf(created)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole += 1.0
        micros -= 1_000_000
    elif micros < 0:  # before 1970
        whole -= 1.0
        micros += 1_000_000
    stamps = _STAMPS
    if stamps.second != whole:
        stamps.text = datetime.fromtimestamp(whole, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        stamps.second = whole
    return f"{stamps.text}.{micros // 1000:03d}+00:00"


# A record formatted later than logged (LineHandler.buffer_lines) carries the request id of where it was logged.
_REQUEST_ID_FIELD = "_request_id"


def _request_id_of(record: logging.LogRecord) -> str | None:
    fields = record.__dict__
    return fields[_REQUEST_ID_FIELD] if _REQUEST_ID_FIELD in fields else request_id_var.get()


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with its ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": utc_timestamp_ms(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = _request_id_of(record)
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _encode_entry(entry)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, still carrying the request id."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = _request_id_of(record)
        return f"{line} [{request_id}]" if request_id else line


class LineHandler(logging.StreamHandler):
    """A stream handler that formats a record before taking its lock: only the write is serialised.

    ``logging.Handler.handle`` formats under the handler's lock, so with
    several request threads each waits for the others' JSON encoding, not
    just their writes. Lines are written whole, one per record, as before.

    With :meth:`buffer_lines` (the API's gunicorn workers), records below
    WARNING are kept and written together every ``interval_s`` by a
    background thread instead of one write per record: a write gives the
    GIL up, and under load a request thread then waits for the other
    threads to give it back (BENCHMARKS.md, 2). They are also filtered and
    formatted there, together: one request's access line formatted alone
    costs two to three times what it costs in a run of them (the code and
    data it needs are no longer in the processor's caches), ~15 µs a
    request. What formatting later would change is fixed when the record is
    kept: its message (``msg % args``) and the request id. WARNING and above,
    and records carrying an exception, are formatted at once and written
    after what is kept, so the order stays; what is kept is written at exit
    too (a killed process loses at most ``interval_s`` of lines below
    WARNING).
    """

    _kept: list[logging.LogRecord] | None = None
    _flusher_pid: int | None = None

    def buffer_lines(self, interval_s: float = 0.1) -> None:
        """Keep records below WARNING; filter, format and write them every ``interval_s`` from a background thread."""
        with self.lock:  # type: ignore[union-attr]
            if self._kept is None:
                self._kept = []
                # Serialises taking the kept records out and writing them, so that the lines keep their order
                # while request threads keep adding to the (briefly locked) list.
                self._write_lock = threading.Lock()
                atexit.register(self.write_kept)
            self._interval_s = interval_s

    def handle(self, record: logging.LogRecord) -> Any:
        """Keep the record (below WARNING, buffering), or filter and format it outside the lock, then write."""
        buffering = self._kept is not None
        if buffering and record.levelno < logging.WARNING and not record.exc_info:
            if record.args:
                try:
                    record.msg, record.args = record.getMessage(), None
                except Exception:  # arguments that do not fit the message: reported, as logging's own handlers do
                    self.handleError(record)
                    return False
            record.__dict__[_REQUEST_ID_FIELD] = request_id_var.get()
            with self.lock:  # type: ignore[union-attr]
                # Read under the lock: the writer swaps the list for an empty one when it takes the records.
                self._kept.append(record)  # type: ignore[union-attr]
                if self._flusher_pid != os.getpid():  # none yet, or inherited across a fork (threads are not)
                    self._start_flusher()
            return True
        line = self._line(record)
        if line is None:
            return False
        if not buffering:
            with self.lock:  # type: ignore[union-attr]
                self._write(line, record)
            return True
        with self._write_lock:
            self._write(self._take_kept() + line, record)
        return True

    def _line(self, record: logging.LogRecord) -> str | None:
        """The record's line, or None when a filter refuses it (or formatting failed: reported)."""
        passed = self.filter(record)
        if not passed:
            return None
        if isinstance(passed, logging.LogRecord):  # Python 3.12+: a filter may hand back a replacement
            record = passed
        try:
            return self.format(record) + self.terminator
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return None

    def _take_kept(self) -> str:
        """The kept records' lines, in order, emptying the list (under the write lock)."""
        with self.lock:  # type: ignore[union-attr]
            records = self._kept
            if not records:
                return ""
            self._kept = []
        lines = (self._line(record) for record in records)
        return "".join(line for line in lines if line is not None)

    def write_kept(self) -> None:
        """Write the records kept so far (the flusher does every interval; also at exit)."""
        if self._kept is None:
            return
        with self._write_lock:
            text = self._take_kept()
            if text:
                self._write(text, None)

    def _write(self, text: str, record: logging.LogRecord | None) -> None:
        try:
            stream = self.stream
            stream.write(text)
            if stream and hasattr(stream, "flush"):
                stream.flush()
        except RecursionError:
            raise
        except Exception:
            if record is not None:
                self.handleError(record)

    def close(self) -> None:
        """Write what is kept and stop the flusher (a handler replaced by :func:`configure_logging`)."""
        self.write_kept()
        self._flusher_pid = None
        super().close()

    def _at_fork_reinit(self) -> None:
        # logging calls this in a forked child for the handler's own lock; the write lock may have been held
        # by the parent's flusher at the fork.
        super()._at_fork_reinit()  # type: ignore[misc]
        if self._kept is not None:
            self._write_lock = threading.Lock()

    def _start_flusher(self) -> None:
        self._flusher_pid = os.getpid()
        threading.Thread(target=self._flush_every_interval, name="smartsvc-log-lines", daemon=True).start()

    def _flush_every_interval(self) -> None:
        pid = os.getpid()
        while self._flusher_pid == pid:
            time.sleep(self._interval_s)
            self.write_kept()


def buffer_log_lines(interval_s: float = 0.1) -> None:
    """Make the installed handler (:func:`configure_logging`) keep lines below WARNING, written every
    ``interval_s`` (see :class:`LineHandler`). Called by each API worker process."""
    for name in ("smartsvc", "workers", "geodata"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, LineHandler):
                handler.buffer_lines(interval_s)


def configure_logging(level: str = "INFO", json_lines: bool = True, pseudonym_key: str = "") -> None:
    """Install one stderr handler on the ``smartsvc`` and ``workers`` loggers.

    Idempotent, so every process (API, worker, CLI) can call it at start.
    With ``pseudonym_key`` (the service's secret key), user ids in log fields
    are written as :func:`user_pseudonym`.
    """
    # No formatter of ours writes where a call came from or the thread's name: a record then skips the
    # stack walk and the thread look-ups (the "Optimization" table of the logging documentation).
    # processName stays: Celery's worker lines show it.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    handler = LineHandler(sys.stderr)
    if pseudonym_key:
        handler.addFilter(PseudonymFilter(pseudonym_key))
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("smartsvc", "workers", "geodata"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if getattr(old, "_smartsvc", False):
                logger.removeHandler(old)
                old.close()
        handler._smartsvc = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
