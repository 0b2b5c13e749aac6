"""Database engines, sessions and the unit of work.

Nothing here connects at import time: :func:`create_engine_for` builds an
engine from settings, :class:`Database` holds it with its session factory,
and :class:`UnitOfWork` owns one transaction — nothing is written unless
``commit()`` is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, QueuePool

from .config import Settings
from .models.outbox import number_outbox_messages


def _configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, busy timeout and ``BEGIN IMMEDIATE`` for writers.

    pysqlite's own transaction handling is switched off so that SQLAlchemy
    emits BEGIN itself; a unit of work that will write asks for
    ``BEGIN IMMEDIATE`` so two processes never deadlock upgrading a read
    lock to a write lock.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        # A bulk write (the importer, smartsvc.services.layers) raised this connection's page cache
        # for its transaction: back to what it was before the connection is used again.
        size = record.info.pop("sqlite_cache_size", None) if record is not None else None
        if size is not None and dbapi_connection is not None:
            dbapi_connection.execute(f"PRAGMA cache_size={int(size)}")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get("sqlite_write"):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


def create_engine_for(settings: Settings) -> Engine:
    """Build the engine for ``settings.database_url`` (SQLite or PostgreSQL)."""
    url = settings.database_url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        if not path or path == ":memory:" or "mode=memory" in url:
            engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})
        else:
            # Connections are kept open: opening one (file, WAL index, schema, the PRAGMAs above) costs
            # ~1 ms, against ~10 µs for a query on an open one — three times per API request.
            # A pooled connection is used by one thread at a time, so ``check_same_thread`` is off;
            # a forked process (Celery's pool) calls ``Database.dispose`` before using its own.
            engine = create_engine(url, poolclass=QueuePool, pool_size=8, max_overflow=32,
                                   connect_args={"timeout": 30, "check_same_thread": False})
        _configure_sqlite(engine)
        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    _configure_postgres(engine)
    return engine


def _configure_postgres(engine: Engine) -> None:
    from psycopg.types.array import ListBinaryDumper

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Lists (the ``= ANY(array)`` and ``unnest`` parameters of the bulk statements) go in binary: psycopg's
        # text format quotes every element with a regex and writes each timestamp as ISO text, ~1-3 µs an
        # element; binary is ~0.2 µs. A batch of 200 pushes sends ~30 arrays of 200 (BENCHMARKS.md, 6).
        dbapi_connection.adapters.register_dumper(list, ListBinaryDumper)


class Database:
    """An engine and the session factory bound to it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = create_engine_for(settings)
        self._write_engine = self.engine.execution_options(sqlite_write=True)
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)
        for sessions in (self._read_sessions, self._write_sessions):
            event.listen(sessions, "before_flush", number_outbox_messages)
        # Called after a commit that wrote outbox rows (wakes the relay).
        self.outbox_notifier: Any = None

    def session(self, *, write: bool = False) -> Session:
        """A new session; ``write=True`` takes the write lock up front on SQLite."""
        return (self._write_sessions if write else self._read_sessions)()

    def unit_of_work(self, *, write: bool = True) -> "UnitOfWork":
        """A unit of work around one transaction."""
        return UnitOfWork(self, write=write, outbox_notifier=self.outbox_notifier)

    def dispose(self) -> None:
        """Close pooled connections (after fork, at shutdown)."""
        self.engine.dispose(close=False)


class UnitOfWork:
    """One transaction: ``with db.unit_of_work() as uow: ...; uow.commit()``.

    Leaving the block without ``commit()`` rolls everything back, so a use
    case that fails half-way writes nothing.
    """

    def __init__(self, database: Database, *, write: bool = True, outbox_notifier: Any = None) -> None:
        self._database = database
        self._write = write
        self.outbox_notifier = outbox_notifier
        self.session: Session | None = None
        self._after_commit: list[Any] = []

    @property
    def database(self) -> Database:
        """The database this transaction runs on (its settings included)."""
        return self._database

    def __enter__(self) -> "UnitOfWork":
        self.session = self._database.session(write=self._write)
        self._after_commit = []
        return self

    def __exit__(self, *exc_info: Any) -> None:
        assert self.session is not None
        try:
            self.session.rollback()
        finally:
            self.session.close()

    def commit(self) -> None:
        """Commit, then run the callbacks registered with :meth:`after_commit`."""
        assert self.session is not None
        self.session.commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def after_commit(self, callback: Any) -> None:
        """Run ``callback()`` once this unit of work has committed (best effort)."""
        if callback not in self._after_commit:
            self._after_commit.append(callback)
