"""The transactional outbox relay on SQLite and PostgreSQL, with a fake publisher.

``relay_pending`` publishes due rows in commit order, stops at the first
publish failure (keeping the rest for the next run), republishes messages
sent but not completed in time (at most ``max_attempts`` times) and never
publishes one message twice from concurrent relays.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update

from smartsvc.db import Database
from smartsvc.models import OutboxMessage
from smartsvc.services import outbox
from smartsvc.timeutil import utcnow


class FakePublisher:
    """Records what would go to the broker; can fail on chosen messages."""

    def __init__(self, fail_on: set[int] | None = None, delay_s: float = 0.0) -> None:
        self.fail_on = fail_on or set()
        self.delay_s = delay_s
        self.published: list[tuple[int, str, dict[str, Any], int]] = []
        self._lock = threading.Lock()

    def __call__(self, message: OutboxMessage) -> None:
        if message.payload.get("n") in self.fail_on:
            raise ConnectionError("broker unreachable")
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            self.published.append((message.id, message.task, dict(message.payload), message.attempts))

    @property
    def numbers(self) -> list[int]:
        return [payload["n"] for _id, _task, payload, _attempts in self.published]

    def clear(self) -> None:
        self.published.clear()


@pytest.fixture
def database(db_app) -> Database:
    """The app's database without the relay wake-up (nothing goes to a broker)."""
    database = db_app.extensions["smartsvc"].database
    database.outbox_notifier = None
    return database


def enqueue(database: Database, numbers: range | list[int], task: str = "test.task") -> list[int]:
    """Commit one message per number in one transaction; returns their ids."""
    with database.unit_of_work() as uow:
        messages = [outbox.enqueue(uow, task, {"n": n}, ordering_key="user:1") for n in numbers]
        uow.commit()
    return [m.id for m in messages]


def rows(database: Database) -> list[OutboxMessage]:
    with database.session() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def shift(database: Database, column: str, by: timedelta, ids: list[int] | None = None) -> None:
    """Move a timestamp column of messages into the past (as if time had passed)."""
    with database.unit_of_work() as uow:
        assert uow.session is not None
        for message in uow.session.scalars(select(OutboxMessage)):
            if (ids is None or message.id in ids) and getattr(message, column) is not None:
                setattr(message, column, getattr(message, column) - by)
        uow.commit()


def complete(database: Database, ids: list[int]) -> None:
    with database.unit_of_work() as uow:
        assert uow.session is not None
        for outbox_id in ids:
            outbox.complete(uow.session, outbox_id)
        uow.commit()


def test_commit_order_is_kept(database):
    first = enqueue(database, range(0, 5))
    second = enqueue(database, range(5, 8), task="other.task")
    assert first + second == sorted(first + second)
    publisher = FakePublisher()

    assert outbox.relay_pending(database, publisher) == 8
    assert publisher.numbers == list(range(8))
    assert [task for _id, task, _p, _a in publisher.published] == ["test.task"] * 5 + ["other.task"] * 3
    assert [attempts for *_rest, attempts in publisher.published] == [0] * 8  # attempts before this one
    stored = rows(database)
    assert all(m.sent_at is not None and m.attempts == 1 and m.completed_at is None for m in stored)

    publisher.clear()
    assert outbox.relay_pending(database, publisher) == 0  # sent and not yet overdue
    assert publisher.published == []


def test_batches_keep_the_order(database):
    enqueue(database, range(7))
    publisher = FakePublisher()
    counts = [outbox.relay_pending(database, publisher, batch_size=3) for _ in range(4)]
    assert counts == [3, 3, 1, 0]
    assert publisher.numbers == list(range(7))


def test_a_publish_failure_stops_the_batch_and_keeps_the_rest(database):
    enqueue(database, range(5))
    failing = FakePublisher(fail_on={2})
    assert outbox.relay_pending(database, failing) == 2
    assert failing.numbers == [0, 1]
    stored = rows(database)
    assert [m.sent_at is not None for m in stored] == [True, True, False, False, False]
    assert [m.attempts for m in stored] == [1, 1, 0, 0, 0]
    assert stored[2].last_error == "broker unreachable"

    assert outbox.relay_pending(database, failing) == 0  # still failing: nothing jumps the queue
    assert failing.numbers == [0, 1]

    working = FakePublisher()
    assert outbox.relay_pending(database, working) == 3
    assert working.numbers == [2, 3, 4]
    assert all(m.sent_at is not None for m in rows(database))


def test_sent_but_not_completed_messages_are_redelivered(database):
    ids = enqueue(database, range(4))
    publisher = FakePublisher()
    assert outbox.relay_pending(database, publisher) == 4
    complete(database, ids[:2])  # the tasks of 0 and 1 did their work

    publisher.clear()
    shift(database, "sent_at", timedelta(minutes=4))
    assert outbox.relay_pending(database, publisher) == 0  # not overdue yet (5 minutes)

    shift(database, "sent_at", timedelta(minutes=2))
    assert outbox.relay_pending(database, publisher) == 2
    assert publisher.numbers == [2, 3]  # completed ones are never sent again
    assert [attempts for *_rest, attempts in publisher.published] == [1, 1]
    stored = rows(database)
    assert [m.attempts for m in stored] == [1, 1, 2, 2]
    assert all(m.sent_at > utcnow() - timedelta(minutes=1) for m in stored[2:])

    publisher.clear()
    assert outbox.relay_pending(database, publisher, redeliver_after=timedelta(hours=1)) == 0
    complete(database, ids[2:])
    shift(database, "sent_at", timedelta(hours=2))
    assert outbox.relay_pending(database, publisher) == 0


def test_max_attempts_stops_redelivery(database):
    enqueue(database, range(2))
    publisher = FakePublisher()
    counts = []
    for _ in range(5):
        shift(database, "sent_at", timedelta(minutes=10))
        counts.append(outbox.relay_pending(database, publisher, max_attempts=3))
    assert counts == [2, 2, 2, 0, 0]
    assert [m.attempts for m in rows(database)] == [3, 3]
    assert publisher.numbers == [0, 1] * 3


def test_messages_not_yet_available_wait(database):
    enqueue(database, [0])
    ids = enqueue(database, [1])
    with database.unit_of_work() as uow:
        assert uow.session is not None
        uow.session.execute(update(OutboxMessage).where(OutboxMessage.id == ids[0])
                            .values(available_at=utcnow() + timedelta(minutes=1)))
        uow.commit()
    publisher = FakePublisher()
    assert outbox.relay_pending(database, publisher) == 1
    assert publisher.numbers == [0]
    shift(database, "available_at", timedelta(minutes=2), ids)
    assert outbox.relay_pending(database, publisher) == 1
    assert publisher.numbers == [0, 1]


def test_purge_completed(database):
    ids = enqueue(database, range(4))
    outbox.relay_pending(database, FakePublisher())
    complete(database, ids[:3])
    shift(database, "completed_at", timedelta(days=8), ids[:2])

    assert outbox.purge_completed(database, timedelta(days=7)) == 2
    assert [m.payload["n"] for m in rows(database)] == [2, 3]  # recent and incomplete ones stay
    assert outbox.purge_completed(database, timedelta(days=7)) == 0
    assert outbox.purge_completed(database, timedelta(0)) == 1
    assert [m.payload["n"] for m in rows(database)] == [3]


def test_completing_a_batch_again_keeps_each_first_completion_time(database):
    ids = enqueue(database, range(4))
    complete(database, ids[:2])
    shift(database, "completed_at", timedelta(hours=1), ids[:2])
    first = {m.id: m.completed_at for m in rows(database) if m.completed_at is not None}
    with database.unit_of_work() as uow:
        outbox.complete_many(uow.session, [*ids, None, ids[0]])  # a rerun of the batch, with a repeat and a None
        uow.commit()
    stored = {m.id: m.completed_at for m in rows(database)}
    assert {i: stored[i] for i in ids[:2]} == first  # an hour ago, not now
    assert all(stored[i] is not None and stored[i] > first[ids[0]] for i in ids[2:])


def test_concurrent_relays_publish_each_message_once(database):
    enqueue(database, range(20))
    publisher = FakePublisher(delay_s=0.01)
    barrier = threading.Barrier(3)
    results: list[int] = []
    errors: list[BaseException] = []

    def relay() -> None:
        barrier.wait()
        try:
            results.append(outbox.relay_pending(database, publisher))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=relay) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sum(results) == 20
    assert sorted(publisher.numbers) == list(range(20))
    assert [m.attempts for m in rows(database)] == [1] * 20


def test_many_messages_keep_their_order_in_statements_psycopg_can_cache(database):
    statements: list[tuple[str, Any, bool]] = []  # the INSERTs of outbox rows, as the cursor gets them

    def record(_conn, _cursor, statement, parameters, _context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO OUTBOX_MESSAGES"):
            statements.append((statement, parameters, executemany))

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        ids = enqueue(database, range(200))
    finally:
        event.remove(database.engine, "before_cursor_execute", record)

    assert ids == sorted(ids) and len(set(ids)) == 200  # numbered in the order they were added
    publisher = FakePublisher()
    outbox.relay_pending(database, publisher)
    assert publisher.numbers == list(range(200))
    # psycopg parses a statement with more than 50 parameters anew on every execution (BENCHMARKS.md, 7):
    # one row's parameters per execution, never one statement for all the rows.
    per_row = [len(row) for _s, parameters, _many in statements for row in _parameter_sets(parameters)]
    assert per_row and max(per_row) <= 50


def _parameter_sets(parameters: Any) -> list[Any]:
    """The parameter sets of one cursor execution: a list of them (executemany) or one."""
    if isinstance(parameters, (list, tuple)) and parameters and isinstance(parameters[0], (dict, list, tuple)):
        return list(parameters)
    return [parameters]


def test_messages_added_in_one_statement_are_relayed_in_their_order_when_available(database):
    later = utcnow() + timedelta(minutes=10)
    woken: list[str] = []
    with database.unit_of_work() as uow:
        uow.outbox_notifier = lambda: woken.append("relay")
        outbox.enqueue_rows(uow, "test.task", [
            {"payload": {"n": n}, "ordering_key": "user:1", "available_at": later if n % 50 == 7 else None}
            for n in range(200)])
        uow.commit()
    assert woken == ["relay"]  # the commit wakes the relay, as for enqueue

    stored = rows(database)
    assert [m.payload["n"] for m in stored] == list(range(200))  # ids in the order given
    assert {m.task for m in stored} == {"test.task"} and {m.attempts for m in stored} == {0}
    publisher = FakePublisher()
    outbox.relay_pending(database, publisher)
    assert publisher.numbers == [n for n in range(200) if n % 50 != 7]  # the others wait for their time


def test_one_relay_run_publishes_a_backlog_larger_than_its_sweep(database):
    enqueue(database, range(1_250))
    publisher = FakePublisher()
    assert outbox.relay_all(database, publisher, batch_size=500) == 1_250  # three sweeps: 500, 500, 250
    assert publisher.numbers == list(range(1_250))
    assert outbox.relay_all(database, publisher, batch_size=500) == 0  # nothing left: one empty sweep


def test_a_relay_run_stops_sweeping_when_the_broker_fails(database):
    enqueue(database, range(1_200))
    publisher = FakePublisher(fail_on={700})
    assert outbox.relay_all(database, publisher, batch_size=500) == 700  # the second sweep ends at the failure
    assert publisher.numbers == list(range(700))
