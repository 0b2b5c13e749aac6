"""The outbox relay groups due push messages into batch tasks (SQLite and PostgreSQL); other tasks go alone.

Each grouped message is still stamped sent on its own, so a batch the
broker lost is published again — without the messages completed meanwhile.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from smartsvc.db import Database
from smartsvc.models import OutboxMessage
from smartsvc.services import outbox
from smartsvc.services.delivery_batch import PUSH_BATCH_TASK
from smartsvc.services.suggestions import PUSH_TASK
from workers.tasks import outbox as relay_task


@pytest.fixture
def database(db_app) -> Database:
    database = db_app.extensions["smartsvc"].database
    database.outbox_notifier = None
    return database


class Broker:
    """What the relay handed over: ("one", task, payload) and ("group", [payloads])."""

    def __init__(self, fail_groups: bool = False) -> None:
        self.fail_groups = fail_groups
        self.sent: list[tuple[str, Any]] = []

    def one(self, message: OutboxMessage) -> None:
        self.sent.append(("one", message.task, dict(message.payload)))

    def group(self, messages: list[OutboxMessage]) -> None:
        if self.fail_groups:
            raise ConnectionError("broker unreachable")
        self.sent.append(("group", [(m.payload["suggestion_id"], m.id) for m in messages]))


def enqueue(database: Database, tasks: list[str]) -> list[int]:
    with database.unit_of_work() as uow:
        messages = [outbox.enqueue(uow, task, {"suggestion_id": f"s{n}"} if task == PUSH_TASK else {"n": n})
                    for n, task in enumerate(tasks)]
        uow.commit()
    return [m.id for m in messages]


def test_push_messages_are_grouped_in_order_and_other_tasks_go_alone(database):
    ids = enqueue(database, [PUSH_TASK, "other.task", PUSH_TASK, PUSH_TASK, PUSH_TASK, "other.task", PUSH_TASK])
    broker = Broker()
    assert outbox.relay_pending(database, broker.one, groups={PUSH_TASK: (2, broker.group)}) == 7
    groups = [entry[1] for entry in broker.sent if entry[0] == "group"]
    assert groups == [[("s0", ids[0]), ("s2", ids[2])], [("s3", ids[3]), ("s4", ids[4])], [("s6", ids[6])]]
    assert [entry[2] for entry in broker.sent if entry[0] == "one"] == [{"n": 1}, {"n": 5}]
    with database.session() as session:
        assert all(m.sent_at is not None and m.attempts == 1 for m in session.scalars(select(OutboxMessage)))
    assert outbox.relay_pending(database, broker.one, groups={PUSH_TASK: (2, broker.group)}) == 0


def test_a_lost_group_is_published_again_without_its_completed_messages(database):
    ids = enqueue(database, [PUSH_TASK] * 4)
    broker = Broker()
    outbox.relay_pending(database, broker.one, groups={PUSH_TASK: (10, broker.group)})
    with database.unit_of_work() as uow:
        outbox.complete(uow.session, ids[1])  # the batch task did that one before its worker died
        for message in uow.session.scalars(select(OutboxMessage)):
            message.sent_at -= timedelta(minutes=10)
        uow.commit()
    broker.sent.clear()
    assert outbox.relay_pending(database, broker.one, groups={PUSH_TASK: (10, broker.group)}) == 3
    assert broker.sent == [("group", [("s0", ids[0]), ("s2", ids[2]), ("s3", ids[3])])]


def test_a_refused_group_stays_unsent_for_the_next_run(database):
    enqueue(database, [PUSH_TASK] * 3)
    failing = Broker(fail_groups=True)
    assert outbox.relay_pending(database, failing.one, groups={PUSH_TASK: (2, failing.group)}) == 0
    with database.session() as session:
        rows = list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
    assert all(m.sent_at is None for m in rows) and rows[0].last_error == "broker unreachable"
    working = Broker()
    assert outbox.relay_pending(database, working.one, groups={PUSH_TASK: (2, working.group)}) == 3


def test_the_relay_task_publishes_a_batch_task_with_every_outbox_id(db_app, database, monkeypatch):
    ids = enqueue(database, [PUSH_TASK, PUSH_TASK, "other.task"])
    published: list[tuple[str, dict[str, Any], str]] = []

    class Celery:
        def send_task(self, name: str, kwargs: dict[str, Any], task_id: str) -> None:
            published.append((name, kwargs, task_id))

    monkeypatch.setattr(relay_task, "current_celery", Celery())
    with db_app.app_context():
        assert relay_task.relay.run() == 3
    assert published[0][0] == "other.task" and published[0][1] == {"n": 2, "outbox_id": ids[2]}
    name, kwargs, task_id = published[1]
    assert name == PUSH_BATCH_TASK
    assert kwargs == {"items": [{"suggestion_id": "s0", "outbox_id": ids[0]},
                                {"suggestion_id": "s1", "outbox_id": ids[1]}]}
    assert task_id != published[0][2]


def test_webhook_batches_are_published_to_a_queue_pushes_are_not_on(db_app, database, monkeypatch):
    """A partner's endpoint can hold a webhook task for its whole timeout: webhook batches go to a queue of
    their own (docs/webhooks.md: a worker of its own), so the workers taking pushes are never handed one."""
    from smartsvc.services.webhook_batch import DELIVER_BATCH_TASK
    from smartsvc.services.webhook_events import DELIVER_TASK, WEBHOOK_QUEUE
    from workers.celery_app import QUEUE

    with database.unit_of_work() as uow:
        outbox.enqueue(uow, PUSH_TASK, {"suggestion_id": "s0"})
        outbox.enqueue(uow, DELIVER_TASK, {"delivery_id": "d0"}, ordering_key="webhook:w0")
        uow.commit()
    router = db_app.extensions["celery"].amqp.router
    queues: dict[str, str] = {}

    class Celery:  # the routing the real app applies to what the relay publishes
        def send_task(self, name: str, kwargs: dict[str, Any], task_id: str, **options: Any) -> None:
            queues[name] = router.route(dict(options), name)["queue"].name

    monkeypatch.setattr(relay_task, "current_celery", Celery())
    with db_app.app_context():
        assert relay_task.relay.run() == 2
    assert queues == {PUSH_BATCH_TASK: QUEUE, DELIVER_BATCH_TASK: WEBHOOK_QUEUE}
    assert QUEUE != WEBHOOK_QUEUE
