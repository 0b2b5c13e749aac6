"""Integration fixtures: throwaway PostgreSQL + PostGIS and Redis servers, apps on both databases.

The servers start once per test session, and only when a test asks for
them. A server that cannot start is an error (never a skip) telling to run
``make test``. Every PostgreSQL test gets a database of its own, copied from
a template migrated once, and dropped afterwards.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask

from smartsvc.config import Settings
from smartsvc.db import Database
from smartsvc.migrate import upgrade
from tests.support.factories import make_app, make_settings
from tests.support.servers import PostgresServer, RedisServer, ServerUnavailable

# Template databases made once per session.
POSTGIS_TEMPLATE = "smartsvc_tpl_postgis"  # PostGIS enabled, nothing else
MIGRATED_TEMPLATE = "smartsvc_tpl_migrated"  # migrated to head

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

_names = itertools.count(1)


def unique_name(prefix: str) -> str:
    """A database name unique in this session."""
    return f"{prefix}_{os.getpid()}_{next(_names)}"


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL + PostGIS cluster for the whole session."""
    server = PostgresServer()
    try:
        server.start()
    except ServerUnavailable as exc:
        pytest.fail(f"cannot start the throwaway PostgreSQL server: {exc}", pytrace=False)
    try:
        server.create_database(POSTGIS_TEMPLATE, template="template0")
        server.execute("CREATE EXTENSION postgis", POSTGIS_TEMPLATE)
        server.create_database(MIGRATED_TEMPLATE, template=POSTGIS_TEMPLATE)
        migrate(server.url(MIGRATED_TEMPLATE))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A throwaway redis-server for the whole session."""
    server = RedisServer()
    try:
        server.start()
    except ServerUnavailable as exc:
        pytest.fail(f"cannot start the throwaway Redis server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def migrate(url: str) -> None:
    """Migrate the database at ``url`` to head and close every connection to it."""
    database = Database(Settings(database_url=url))
    try:
        upgrade(database)
    finally:
        database.engine.dispose()


class PostgresDatabases:
    """Creates fresh databases on the session server and drops them at teardown."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.created: list[str] = []

    def new(self, *, template: str | None = MIGRATED_TEMPLATE, prefix: str = "test") -> str:
        """The URL of a new database: migrated (default), PostGIS only, or ``template0`` (empty)."""
        name = unique_name(prefix)
        self.server.create_database(name, template=template)
        self.created.append(name)
        return self.server.url(name)

    def drop_all(self) -> None:
        for name in reversed(self.created):
            self.server.drop_database(name)
        self.created.clear()


@pytest.fixture
def postgres_databases(postgres_server: PostgresServer) -> Iterator[PostgresDatabases]:
    """Make fresh PostgreSQL databases for one test (dropped after it)."""
    databases = PostgresDatabases(postgres_server)
    try:
        yield databases
    finally:
        databases.drop_all()


@pytest.fixture
def postgres_url(postgres_databases: PostgresDatabases) -> str:
    """A fresh PostgreSQL database migrated to head, for this test only."""
    return postgres_databases.new()


# --------------------------------------------------------------------------- apps on both databases


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgres``: tests using it run on both."""
    return request.param


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database of ``backend`` for this test."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'smartsvc.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def db_settings(database_url: str, tmp_path: Path) -> Settings:
    """Test settings on ``database_url`` (filesystem broker under tmp_path)."""
    return make_settings(tmp_path / "var", database_url=database_url)


@pytest.fixture
def db_app(db_settings: Settings) -> Iterator[Flask]:
    """A migrated app on SQLite and on PostgreSQL (parametrized)."""
    app = make_app(db_settings)
    try:
        yield app
    finally:
        close_app(app)


@pytest.fixture
def db_client(db_app: Flask) -> Any:
    """Flask test client of :func:`db_app`."""
    return db_app.test_client()


def close_app(app: Flask) -> None:
    """Close what the app holds: its container (searches not yet journaled, push connections, the database
    pool) and its broker connections."""
    app.extensions["smartsvc"].close()
    celery = app.extensions.get("celery")
    if celery is not None:
        celery.close()


# --------------------------------------------------------------------------- reporting


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Attach the output of worker processes (``item.worker_logs``) to a failure report."""
    report = yield
    if report.failed:
        for path in getattr(item, "worker_logs", []):
            try:
                text = Path(path).read_text(errors="replace")
            except OSError as exc:
                text = f"(cannot read {path}: {exc})"
            report.sections.append((f"worker output {path} (last 20000 characters)", text[-20000:]))
    return report
