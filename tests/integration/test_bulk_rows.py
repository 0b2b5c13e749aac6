"""Many rows written with one statement (``services/bulk.py``), on SQLite and PostgreSQL.

The webhook batches insert and update 200 rows at a time; on PostgreSQL the
rows travel as one array per column. What is read back must be exactly what
was given, whatever the column type (UUID, text, integer, time, JSON, NULL).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterator

import pytest
from sqlalchemy import bindparam, event, select
from sqlalchemy.exc import DBAPIError

from smartsvc.db import Database
from smartsvc.ids import new_id
from smartsvc.models import SharingLedgerEntry, User, WebhookAttempt, WebhookDelivery
from smartsvc.services.bulk import Matching, among, insert_rows, update_rows
from smartsvc.timeutil import utcnow
from tests.integration.conftest import close_app
from tests.support.factories import make_app
from tests.support.webhook_world import WebhookWorld, webhook_settings, webhook_world


@pytest.fixture
def world(database_url, tmp_path) -> Iterator[WebhookWorld]:
    """An app on ``database_url`` whose webhooks may name a local address (none is ever sent here)."""
    app = make_app(webhook_settings(tmp_path / "var", database_url=database_url))
    try:
        yield webhook_world(app)
    finally:
        close_app(app)


@pytest.fixture
def database(world) -> Database:
    return world.database


def endpoint_with_deliveries(world: WebhookWorld, count: int) -> list[WebhookDelivery]:
    """``count`` pending deliveries to one endpoint (never sent: nothing listens at its address)."""
    world.register("http://127.0.0.1:9/hook", ["suggestion.created"])
    for n in range(count):
        world.suggest(world.user(f"user{n}"))
    with world.database.session() as session:
        deliveries = list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))
    assert len(deliveries) == count
    return deliveries


def ledger_rows(user_id: Any, count: int) -> list[dict[str, Any]]:
    now = utcnow()
    return [{"id": new_id(), "user_id": user_id, "at": now - timedelta(seconds=i), "channel": "webhook",
             "recipient": f"Partner {i} (hooks.example)", "recipient_id": None if i % 3 else str(i),
             "recipient_owner": "partner", "event_type": "suggestion.created",
             "fields": [f"data.field_{i}", "data.user"] if i % 2 else [], "reference_id": f"ref-{i}"}
            for i in range(count)]


@contextmanager
def statements_of(database: Database, table: str) -> Iterator[list[tuple[str, bool]]]:
    """(statement, executemany) of every statement naming ``table`` run inside the block."""
    seen: list[tuple[str, bool]] = []

    def record(_conn, _cursor, statement, _parameters, _context, executemany):
        if table in statement:
            seen.append((statement, executemany))

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(database.engine, "before_cursor_execute", record)


def test_inserted_rows_read_back_exactly_in_one_statement_on_postgresql(world, database, backend):
    deliveries = endpoint_with_deliveries(world, 1)
    user_id = deliveries[0].user_id
    assert user_id is not None
    rows = ledger_rows(user_id, 120)
    with statements_of(database, "sharing_ledger") as seen, database.unit_of_work() as uow:
        insert_rows(uow.session, SharingLedgerEntry.__table__, rows)
        uow.commit()

    with database.session() as session:
        stored = {r.id: r for r in session.scalars(select(SharingLedgerEntry))}
    assert set(stored) == {row["id"] for row in rows}
    for row in rows:
        got = stored[row["id"]]
        assert {name: getattr(got, name) for name in row} == row
    if backend == "postgres":
        assert [many for _s, many in seen] == [False]  # one statement for the 120 rows


def test_each_row_gets_its_own_values_and_all_get_the_common_ones(world, database, backend):
    deliveries = endpoint_with_deliveries(world, 12)
    now = utcnow()
    chosen = deliveries[::2]  # the others must stay as they were
    claim_id = new_id()
    rows = [{"id": d.id, "attempts": 10 + i, "last_status_code": None if i % 4 == 0 else 200 + i}
            for i, d in enumerate(chosen)]
    with statements_of(database, "webhook_deliveries") as seen, database.unit_of_work() as uow:
        update_rows(uow.session, WebhookDelivery.__table__, "id", rows,
                    {"sending_since": now, "claim_id": claim_id, "waiting_since": None})
        uow.commit()

    with database.session() as session:
        stored = {d.id: d for d in session.scalars(select(WebhookDelivery))}
    for i, delivery in enumerate(chosen):
        got = stored[delivery.id]
        assert (got.attempts, got.last_status_code) == (rows[i]["attempts"], rows[i]["last_status_code"])
        assert (got.sending_since, got.claim_id, got.waiting_since) == (now, claim_id, None)
    for delivery in deliveries[1::2]:
        got = stored[delivery.id]
        assert (got.attempts, got.sending_since, got.claim_id) == (delivery.attempts, None, None)
    if backend == "postgres":
        assert [many for _s, many in seen] == [False]


def test_nothing_to_write_runs_no_statement(database):
    with statements_of(database, "webhook_attempts") as seen, database.unit_of_work() as uow:
        insert_rows(uow.session, WebhookAttempt.__table__, [])
        update_rows(uow.session, WebhookAttempt.__table__, "id", [], {"status": "failed"})
        uow.commit()
    assert seen == []


def test_rows_without_a_column_the_model_defaults_in_python_are_refused_before_any_statement(world, database):
    deliveries = endpoint_with_deliveries(world, 1)
    row = {"id": new_id(), "delivery_id": deliveries[0].id, "number": 1, "status": "sending"}  # no started_at
    with statements_of(database, "webhook_attempts") as seen, database.unit_of_work() as uow:
        with pytest.raises(ValueError, match="started_at"):
            insert_rows(uow.session, WebhookAttempt.__table__, [row])
    assert seen == []


# Texts an array in PostgreSQL's text format must quote or escape; in binary they travel as they are.
AWKWARD_TEXTS = ["NULL", "null", "", " padded ", 'say "hi"', "back\\slash", "a,b", "{braces}", "Straße 🚗", "x" * 300]


def test_awkward_values_go_through_the_array_parameters_unchanged(world, database, backend):
    deliveries = endpoint_with_deliveries(world, 1)
    user_id = deliveries[0].user_id
    rows = ledger_rows(user_id, len(AWKWARD_TEXTS))
    for row, text in zip(rows, AWKWARD_TEXTS):
        row.update(recipient=text, recipient_id=None, reference_id=None)  # whole columns of NULL too
    with database.unit_of_work() as uow:
        insert_rows(uow.session, SharingLedgerEntry.__table__, rows)
        uow.commit()

    with database.session() as session:
        found = {r.recipient: r for r in session.scalars(select(SharingLedgerEntry).where(
            among(session, SharingLedgerEntry.recipient, AWKWARD_TEXTS)))}
        by_id = {r.id for r in session.scalars(select(SharingLedgerEntry).where(
            among(session, SharingLedgerEntry.id, [row["id"] for row in rows])))}
    assert sorted(found) == sorted(AWKWARD_TEXTS)
    assert by_id == {row["id"] for row in rows}
    for row in rows:
        got = found[row["recipient"]]
        assert {name: getattr(got, name) for name in row} == row


def test_a_value_longer_than_its_column_is_neither_cut_nor_matched_by_its_beginning(world, database, backend):
    deliveries = endpoint_with_deliveries(world, 1)
    rows = ledger_rows(deliveries[0].user_id, 1)
    rows[0]["recipient"] = "x" * 300  # the column's length
    with database.unit_of_work() as uow:
        insert_rows(uow.session, SharingLedgerEntry.__table__, rows)
        uow.commit()
    with database.session() as session:
        assert list(session.scalars(select(SharingLedgerEntry.id).where(
            among(session, SharingLedgerEntry.recipient, ["x" * 301])))) == []
    if backend == "postgres":  # SQLite keeps any length (the models' lengths are checked before)
        longer = ledger_rows(deliveries[0].user_id, 1)
        longer[0]["recipient"] = "y" * 301
        with pytest.raises(DBAPIError, match="too long"), database.unit_of_work() as uow:
            insert_rows(uow.session, SharingLedgerEntry.__table__, longer)


@pytest.mark.postgres
def test_lists_travel_in_binary_on_postgresql(postgres_url, tmp_path):
    """The bulk statements' arrays: psycopg's text format quotes every element and writes each time as
    ISO text, several times the CPU (BENCHMARKS.md, 6)."""
    from psycopg.adapt import PyFormat
    from psycopg.types.array import ListBinaryDumper

    from smartsvc.config import load_settings

    database = Database(load_settings({"SMARTSVC_DATABASE_URL": postgres_url,
                                       "SMARTSVC_VAR_DIR": str(tmp_path / "var")}))
    try:
        with database.engine.connect() as connection:
            dumper = connection.connection.dbapi_connection.adapters.get_dumper(list, PyFormat.AUTO)
        assert issubclass(dumper, ListBinaryDumper)
    finally:
        database.dispose()


def many_users_with_ledger_rows(database: Database, users: int, rows_each: int) -> list[Any]:
    """``users`` users (written directly, as a burst would leave them), each with ``rows_each`` ledger rows."""
    now = utcnow()
    user_ids = [new_id() for _ in range(users)]
    with database.unit_of_work() as uow:
        insert_rows(uow.session, User.__table__, [
            {"id": user_id, "external_id": f"ledger-{n}", "time_zone": "UTC", "max_pushes_per_day": 5,
             "token_generation": 0, "created_at": now, "updated_at": now} for n, user_id in enumerate(user_ids)])
        insert_rows(uow.session, SharingLedgerEntry.__table__,
                    [row for user_id in user_ids for row in ledger_rows(user_id, rows_each)])
        uow.commit()
    return user_ids


def test_matching_reads_each_value_s_rows_once_with_its_where_parameters(world, database, backend):
    user_ids = many_users_with_ledger_rows(database, 5, 4)
    matching = Matching([SharingLedgerEntry.id, SharingLedgerEntry.user_id], SharingLedgerEntry.user_id,
                        SharingLedgerEntry.recipient_id == bindparam("recipient_id"))
    wanted = [user_ids[0], user_ids[3], user_ids[0], new_id()]  # a repeat, and a user with no rows
    with database.session() as session:
        found = session.execute(matching.statement(session), matching.parameters(wanted, recipient_id="0")).all()
        expected = session.execute(select(SharingLedgerEntry.id, SharingLedgerEntry.user_id).where(
            SharingLedgerEntry.user_id.in_(wanted), SharingLedgerEntry.recipient_id == "0")).all()
    assert len(found) == 2  # ledger_rows gives recipient_id "0" to the first row of each user
    assert sorted(found) == sorted(expected)


@pytest.mark.postgres
def test_matching_looks_up_each_value_in_the_index_of_a_young_table(postgres_url, tmp_path):
    """A table never analysed, a few thousand rows: ``user_id = ANY(200 ids)`` read all of it (BENCHMARKS.md,
    6); each value is an index look-up instead."""
    from smartsvc.config import load_settings

    database = Database(load_settings({"SMARTSVC_DATABASE_URL": postgres_url,
                                       "SMARTSVC_VAR_DIR": str(tmp_path / "var")}))
    try:
        user_ids = many_users_with_ledger_rows(database, 400, 8)
        matching = Matching([SharingLedgerEntry.id], SharingLedgerEntry.user_id)
        with database.session() as session:
            compiled = matching.statement(session).compile(dialect=session.get_bind().dialect)
            cursor = session.connection().connection.dbapi_connection.cursor()
            cursor.execute(f"EXPLAIN {compiled}", {**compiled.params, **matching.parameters(user_ids[100:300])})
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "ix_sharing_ledger_user_id_id" in plan and "Seq Scan on sharing_ledger" not in plan, plan
    finally:
        database.dispose()
