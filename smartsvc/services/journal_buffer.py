"""Spot searches for the journal, written in batches so the hot path of ``GET /v1/spots`` never writes.

A search is a touchpoint (TRUST.md), but one INSERT and commit per search
costs 0.1–1 ms on SQLite (p99 several ms at WAL checkpoints) and takes the
database's single write lock in every API process — more than the whole
search (BENCHMARKS.md, 2). So a search only appends to this process's
buffer (a list append under a lock); a background thread, started with the
first search and ending once the buffer is empty (or a write fails: the next
search starts another, which tries again), writes what is pending at
least every :data:`FLUSH_INTERVAL_S` in one short transaction (sooner when
:data:`BATCH_SIZE` are waiting). Reading the journal or the export first
writes this process's pending searches, so a user always sees their own.
A process that dies loses at most its last second of searches; at exit the
buffer is written. Searches of a user erased meanwhile are dropped at the
write (the users row is checked, and key-share locked, in the same
transaction), so the buffer never brings an erased user back.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import uuid
import weakref
from datetime import datetime, timezone
from typing import Any, NamedTuple

from sqlalchemy import insert, select

from ..db import Database
from ..models import Interaction, User
from .journal import SEARCHED

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
BATCH_SIZE = 500
# Beyond this many pending (the database is slow or down), the searching request writes them itself.
MAX_PENDING = 10_000
_VERSION_AND_VARIANT = (0x7 << 76) | (0b10 << 62)
# (user id, when, what, the real clock in ns for its id). For a search noted by add_search, "what" is its query
# and result count until the writer writes it out (search_data).
Pending = tuple[uuid.UUID, datetime, "dict[str, Any] | _NotedSearch", int]


class _NotedSearch(NamedTuple):
    query: Any
    results: int


def _uuid7_int_at(time_ns: int, rand: bytes) -> int:
    """A UUIDv7 (RFC 9562), as its 128-bit integer, for the clock reading ``time_ns`` (as
    :func:`smartsvc.ids.new_id` reads it): the journal orders touchpoints by id, so the id says when the
    search happened, not when it was written. (An integer: ``uuid.UUID`` checks its argument in Python,
    ~1.5 µs a search in the API process.)"""
    millis = (time_ns // 1_000_000) & ((1 << 48) - 1)
    value = int.from_bytes(rand, "big")
    return (millis << 80) | _VERSION_AND_VARIANT | ((value >> 62) & 0xFFF) << 64 | (value & ((1 << 62) - 1))


def _flush_at_exit(ref: "weakref.ref[SearchJournal]") -> None:
    journal = ref()
    if journal is None:
        return
    # At exit the log stream may be closed already (a test runner's capture): a failed write is then
    # logged where it can be, or not at all, instead of printing a "Logging error" traceback.
    raising, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        journal.flush()
    finally:
        logging.raiseExceptions = raising


class SearchJournal:
    """This process's spot searches not yet in the journal."""

    def __init__(self, *, background: bool = True) -> None:
        # background=False: written only by flush() (tests that decide when).
        self._background = background
        self._reset()
        self._exit_hook = False

    def _reset(self) -> None:
        # Also after a fork: the child starts empty (the parent writes its own pending searches).
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: list[Pending] = []
        self._thread: threading.Thread | None = None
        self._database: Database | None = None

    def add(self, database: Database, user_id: uuid.UUID, at: datetime, data: dict[str, Any]) -> None:
        """Note one search (``data``: plain JSON values); it reaches the journal within about a second."""
        self._append(database, (user_id, at, data, time.time_ns()))

    def add_search(self, database: Database, user_id: uuid.UUID, at: datetime, query: Any, results: int) -> None:
        """Note one spot search (``query``: a frozen :class:`.spot_query.SpotQuery`) that found ``results``.

        What the journal keeps of it (:func:`search_data`) is written out by the writer, a batch at a time:
        on the request, between other work, the same formatting costs several times more (BENCHMARKS.md, 2).
        """
        self._append(database, (user_id, at, _NotedSearch(query, results), time.time_ns()))

    def _append(self, database: Database, entry: Pending) -> None:
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            self._database = database
            self._pending.append(entry)
            pending = len(self._pending)
            if self._thread is None and self._background:
                self._start()
        if pending >= MAX_PENDING:
            self.flush()
        elif pending >= BATCH_SIZE:
            self._wake.set()

    def _start(self) -> None:
        if not self._exit_hook:
            atexit.register(_flush_at_exit, weakref.ref(self))
            self._exit_hook = True
        self._thread = threading.Thread(target=self._run, name="smartsvc-search-journal", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            written = self._flush()
            with self._lock:
                # Done, or the database failed: end here rather than retry forever in the background (a
                # database that is gone for good - a test's, a stopped server's - would keep the thread
                # alive); the next search starts a new thread, which tries again.
                if not self._pending or written is None:
                    self._thread = None
                    return

    def flush(self) -> int:
        """Write the pending searches now; how many were written (those of erased users are not)."""
        return self._flush() or 0

    def _flush(self) -> int | None:
        """:meth:`flush`; None when the database refused (the searches are kept for the next write)."""
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            batch, self._pending = self._pending, []
            database = self._database
        if not batch or database is None:
            return 0
        try:
            return write_searches(database, batch)
        except Exception:  # the database is unavailable: keep them for the next write, up to the cap
            log.exception("could not write spot searches to the journal", extra={"searches": len(batch)})
            with self._lock:
                room = max(MAX_PENDING - len(self._pending), 0)
                if room < len(batch):
                    log.error("spot searches dropped from the journal", extra={"searches": len(batch) - room})
                self._pending[:0] = batch[len(batch) - room:]
            return None

    def forget(self, user_id: uuid.UUID) -> None:
        """Drop the pending searches of ``user_id`` (erasure)."""
        with self._lock:
            self._pending = [entry for entry in self._pending if entry[0] != user_id]

    @property
    def pending(self) -> int:
        """How many searches wait to be written."""
        return len(self._pending)


def write_searches(database: Database, batch: list[Pending]) -> int:
    """One transaction: a ``spot.searched`` interaction per search of a user that still exists."""
    rand = os.urandom(10 * len(batch))  # one call: random bytes per id cost a system call each
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        users = list({entry[0] for entry in batch})
        existing: set[uuid.UUID] = set()
        for start in range(0, len(users), 500):
            # Key-share lock: an erasure waits for this transaction instead of racing it.
            existing.update(session.scalars(select(User.id).where(User.id.in_(users[start:start + 500]))
                                            .with_for_update(read=True, key_share=True)))
        ids, kept, last = [], [], 0
        for n, entry in enumerate(batch):
            # Increasing within the batch (searches of one millisecond keep their order), as new_id does.
            last = max(_uuid7_int_at(entry[3], rand[10 * n:10 * n + 10]), last + 1)
            if entry[0] in existing:
                ids.append(last)
                kept.append(entry)
        if kept:
            connection = session.connection()
            if connection.dialect.name == "sqlite":
                _insert_sqlite(connection, ids, kept)
            else:
                # A Core executemany on the table (psycopg pipelines it): the same rows as the ORM's bulk insert.
                connection.execute(insert(Interaction.__table__), [
                    {"id": uuid.UUID(int=row_id), "user_id": user_id, "kind": SEARCHED, "channel": "api",
                     "subject_type": None, "subject_id": None, "data": _data(data), "at": at}
                    for row_id, (user_id, at, data, _) in zip(ids, kept)])
        uow.commit()
    return len(kept)


def _data(data: dict[str, Any] | _NotedSearch) -> dict[str, Any]:
    """An entry's data as the journal keeps it (a search noted by :meth:`SearchJournal.add_search`)."""
    return search_data(data.query, data.results) if type(data) is _NotedSearch else data


# SQLite: rows per INSERT statement (8 parameters each; SQLite allows 32,766 per statement).
_SQLITE_ROWS_PER_INSERT = 200
_SQLITE_INSERT = ("INSERT INTO interactions (id, user_id, kind, channel, subject_type, subject_id, data, at) VALUES "
                  "(?, ?, ?, ?, NULL, NULL, ?, ?)")
_SQLITE_MORE_ROWS = ", (?, ?, ?, ?, NULL, NULL, ?, ?)"
_JSON = json.JSONEncoder()  # json.dumps' defaults, as SQLAlchemy's JSON type writes on SQLite


def _insert_sqlite(connection: Any, ids: list[int], kept: list[Pending]) -> None:
    """The rows as the table's column types would write them on SQLite, a few hundred per statement.

    This runs in every API process beside the requests it takes the GIL from. The Core executemany
    spent ~3/4 of its time in per-row bind processing, and the driver's executemany gives the GIL
    up and back for every row; here the values are written directly (UUIDs as 32 hex digits, JSON
    as ``json.dumps`` writes it, times as naive UTC ``YYYY-MM-DD HH:MM:SS.ffffff``) and one statement
    carries many rows. A unit test compares the rows with what the Core insert writes.
    """
    encode = _JSON.encode
    utc = timezone.utc
    values: list[Any] = []
    for row_id, (user_id, at, data, _) in zip(ids, kept):
        text = _search_json(data.query, data.results) if type(data) is _NotedSearch else encode(data)
        values += (f"{row_id:032x}", user_id.hex, SEARCHED, "api", text,
                   at.astimezone(utc).replace(tzinfo=None).isoformat(" ", "microseconds"))
    width = 6
    for start in range(0, len(ids), _SQLITE_ROWS_PER_INSERT):
        count = min(_SQLITE_ROWS_PER_INSERT, len(ids) - start)
        connection.exec_driver_sql(_SQLITE_INSERT + _SQLITE_MORE_ROWS * (count - 1),
                                   tuple(values[start * width:(start + count) * width]))


# A search's point is kept at ~110 m: the journal outlives the location retention period, and must not
# become a precise location history of its own.
SEARCH_POINT_DECIMALS = 3


def _search_json(query: Any, results: int) -> str:
    """``json.dumps(search_data(query, results))``, written directly: no dict, no encoder walking it (the
    writer runs beside the requests, in every API process; a unit test compares the two)."""
    return (f'{{"lat": {round(query.lat, SEARCH_POINT_DECIMALS)!r}, "lon": {round(query.lon, SEARCH_POINT_DECIMALS)!r}'
            f', "radius_m": {query.radius_m!r}, "product_id": "{query.product_id}", '
            f'"stay_from": "{query.at.isoformat()}", "duration_min": {query.duration_min!r}, '
            f'"results": {results!r}}}')


def search_data(query: Any, results: int) -> dict[str, Any]:
    """What the journal keeps of one search (``query``: a :class:`.spot_query.SpotQuery`)."""
    return {"lat": round(query.lat, SEARCH_POINT_DECIMALS), "lon": round(query.lon, SEARCH_POINT_DECIMALS),
            "radius_m": query.radius_m, "product_id": str(query.product_id), "stay_from": query.at.isoformat(),
            "duration_min": query.duration_min, "results": results}
