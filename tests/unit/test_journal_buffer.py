"""Spot searches reach the journal in batches, never for a user erased meanwhile, and never twice."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, insert, select

from smartsvc.db import Database
from smartsvc.migrate import upgrade
from smartsvc.models import Interaction, User
from smartsvc.services.journal_buffer import SearchJournal
from smartsvc.timeutil import utcnow
from tests.support.factories import make_settings


@pytest.fixture
def database(tmp_path):
    database = Database(make_settings(tmp_path))
    upgrade(database)
    yield database
    database.dispose()


def new_user(database: Database, name: str) -> uuid.UUID:
    with database.unit_of_work() as uow:
        user = User(external_id=name, time_zone="UTC")
        uow.session.add(user)
        uow.commit()
        return user.id


def journal_of(database: Database, user_id: uuid.UUID) -> list[Interaction]:
    with database.session() as session:
        return list(session.scalars(select(Interaction).where(Interaction.user_id == user_id)
                                    .order_by(Interaction.id)))


def test_searches_are_written_once_in_order_with_their_time_and_channel(database):
    alice = new_user(database, "alice")
    searches = SearchJournal(background=False)
    first = utcnow() - timedelta(seconds=3)
    noted_ms = []
    for n in range(3):
        noted_ms.append(time.time_ns() // 1_000_000)
        searches.add(database, alice, first + timedelta(seconds=n), {"results": n})
    assert searches.flush() == 3
    assert searches.flush() == 0  # written once
    rows = journal_of(database, alice)
    assert [(r.kind, r.channel, r.data["results"], r.at) for r in rows] == [
        ("spot.searched", "api", n, first + timedelta(seconds=n)) for n in range(3)]
    # UUIDv7 ids that say when each search was noted (the journal orders touchpoints by id).
    assert [(r.id.version, r.id.variant) for r in rows] == [(7, uuid.RFC_4122)] * 3
    assert all(0 <= (r.id.int >> 80) - ms <= 50 for r, ms in zip(rows, noted_ms))


def test_the_background_writer_writes_without_being_asked(database):
    alice = new_user(database, "alice")
    searches = SearchJournal()
    searches.add(database, alice, utcnow(), {"results": 1})
    for _ in range(200):  # polled, not timed: the writer runs about every second
        if journal_of(database, alice):
            break
        time.sleep(0.05)
    assert [r.kind for r in journal_of(database, alice)] == ["spot.searched"]
    assert searches.pending == 0


def test_searches_of_an_erased_user_are_dropped_and_others_kept(database):
    alice, bob = new_user(database, "alice"), new_user(database, "bob")
    searches = SearchJournal(background=False)
    searches.add(database, alice, utcnow(), {"results": 1})
    searches.add(database, bob, utcnow(), {"results": 2})
    with database.unit_of_work() as uow:
        uow.session.execute(delete(User).where(User.id == alice))
        uow.commit()
    assert searches.flush() == 1
    assert journal_of(database, alice) == []
    assert [r.data["results"] for r in journal_of(database, bob)] == [2]


def test_forget_drops_a_users_pending_searches(database):
    alice, bob = new_user(database, "alice"), new_user(database, "bob")
    searches = SearchJournal(background=False)
    searches.add(database, alice, utcnow(), {"results": 1})
    searches.add(database, bob, utcnow(), {"results": 2})
    searches.forget(alice)
    searches.flush()
    assert journal_of(database, alice) == [] and len(journal_of(database, bob)) == 1


def test_a_writer_whose_database_fails_ends_and_keeps_the_searches_for_the_next_try(database, tmp_path, caplog):
    alice = new_user(database, "alice")
    searches = SearchJournal()
    # A database that refuses every write (no schema): the background writer must not retry forever.
    broken = Database(make_settings(tmp_path / "broken"))
    searches.add(broken, alice, utcnow(), {"results": 1})
    thread = searches._thread
    assert thread is not None
    thread.join(timeout=30)
    assert not thread.is_alive()  # it tried once and ended
    assert searches.pending == 1  # nothing lost
    assert "could not write spot searches" in caplog.text

    searches.add(database, alice, utcnow(), {"results": 2})  # the next search starts a writer again
    for _ in range(200):
        if len(journal_of(database, alice)) == 2:
            break
        time.sleep(0.05)
    assert sorted(r.data["results"] for r in journal_of(database, alice)) == [1, 2]
    broken.dispose()


def test_on_sqlite_the_rows_are_stored_as_the_column_types_store_them(database):
    """The SQLite writer skips SQLAlchemy's bind processing: its text must be what the Core insert writes."""
    alice = new_user(database, "alice")
    searches = SearchJournal(background=False)
    stay = datetime(2026, 11, 23, 9, 0, tzinfo=timezone(timedelta(hours=1)))  # not UTC, no microseconds
    data = [{"lat": 52.52, "lon": 13.405, "radius_m": 300, "stay_from": stay.isoformat(), "results": 3,
             "note": "Straße \"Nord\""}, {"results": 0, "duration_min": 90.5, "product_id": None}]
    searches.add(database, alice, stay, data[0])
    searches.add(database, alice, stay + timedelta(microseconds=12), data[1])
    assert searches.flush() == 2
    written = journal_of(database, alice)
    with database.unit_of_work() as uow:
        uow.session.connection().execute(insert(Interaction.__table__), [
            {"id": uuid.uuid4(), "user_id": row.user_id, "kind": row.kind, "channel": row.channel,
             "subject_type": None, "subject_id": None, "data": row.data, "at": row.at} for row in written])
        uow.commit()
    with database.session() as session:
        raw = session.connection().exec_driver_sql(
            "SELECT id, user_id, kind, channel, subject_type, subject_id, data, at FROM interactions"
            " ORDER BY rowid").fetchall()
    fast, core = raw[:2], raw[2:]
    assert [tuple(r[1:]) for r in fast] == [tuple(r[1:]) for r in core]
    assert [r[0] for r in fast] == [row.id.hex for row in written]
    assert [(row.data, row.at) for row in written] == [(data[0], stay), (data[1], stay + timedelta(microseconds=12))]


def test_a_batch_larger_than_one_statement_is_written_whole_and_in_order(database):
    alice = new_user(database, "alice")
    searches = SearchJournal(background=False)
    first = utcnow() - timedelta(minutes=10)
    for n in range(450):
        searches.add(database, alice, first + timedelta(seconds=n), {"results": n})
    assert searches.flush() == 450
    rows = journal_of(database, alice)
    assert [r.data["results"] for r in rows] == list(range(450))
    assert [r.at for r in rows] == [first + timedelta(seconds=n) for n in range(450)]


def test_a_noted_search_is_written_as_the_journal_keeps_a_search(database):
    """A search noted with its query is written out by the writer: the same data a search has in the journal."""
    from smartsvc.services.journal_buffer import search_data
    from smartsvc.services.spot_query import SpotQuery

    alice = new_user(database, "alice")
    searches = SearchJournal(background=False)
    query = SpotQuery(lat=52.520008, lon=13.404954, radius_m=300.0, product_id=uuid.uuid4(),
                      at=datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc), duration_min=60, limit=20)
    at = utcnow()
    searches.add_search(database, alice, at, query, 7)
    assert searches.flush() == 1

    (row,) = journal_of(database, alice)
    assert row.at == at and row.kind == "spot.searched"
    assert row.data == search_data(query, 7) == {
        "lat": 52.52, "lon": 13.405, "radius_m": 300.0, "product_id": str(query.product_id),
        "stay_from": "2026-11-23T09:00:00+00:00", "duration_min": 60, "results": 7}


@pytest.mark.parametrize("query", [
    dict(lat=52.520008, lon=13.404954, radius_m=300.0, duration_min=60, at=datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)),
    dict(lat=-0.0005, lon=-179.9999, radius_m=0.5, duration_min=10080,
         at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=-9, minutes=-30)))),
    dict(lat=90, lon=180, radius_m=5000, duration_min=1, at=datetime(2026, 6, 1, 0, 0)),
    dict(lat=1e-7, lon=123.4565, radius_m=299.99999999999994, duration_min=45, at=datetime(2026, 3, 29, 2, 30)),
])
def test_a_noted_search_is_written_on_sqlite_as_json_dumps_writes_its_data(query):
    from smartsvc.services.journal_buffer import _search_json, search_data
    from smartsvc.services.spot_query import SpotQuery

    spot_query = SpotQuery(product_id=uuid.uuid4(), limit=20, **query)
    for results in (0, 7, 100):
        assert _search_json(spot_query, results) == json.dumps(search_data(spot_query, results))


def test_closing_the_container_writes_the_searches_it_still_holds(tmp_path):
    from smartsvc.bootstrap import build_container

    container = build_container(make_settings(tmp_path))
    upgrade(container.database)
    container.search_journal = SearchJournal(background=False)  # nothing writes them but the close
    alice = new_user(container.database, "alice")
    container.search_journal.add(container.database, alice, utcnow(), {"results": 2})

    container.close()

    assert [row.data for row in journal_of(container.database, alice)] == [{"results": 2}]
    container.close()  # idempotent
    container.database.dispose()
