"""The transactional outbox: enqueue with the data, relay after commit.

Delivery is at-least-once from end to end, whatever the broker does:
1. a use case adds an :class:`OutboxMessage` in its own transaction;
2. the relay publishes unsent rows in order and stamps ``sent_at``;
3. the task does its work and calls :func:`complete` in the same
   transaction as its effect;
4. a message sent but not completed within ``redeliver_after`` (the broker
   lost it, the worker was killed) is published again, up to
   ``max_attempts`` times. Tasks are idempotent, so a repeat is harmless.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping, Sequence

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ..db import Database, UnitOfWork
from ..models import OutboxMessage
from ..timeutil import utcnow
from .bulk import among, chunks, insert_rows

log = logging.getLogger(__name__)


def enqueue(
    uow: UnitOfWork,
    task: str,
    payload: dict[str, Any],
    *,
    ordering_key: str | None = None,
    user_id: uuid.UUID | None = None,
) -> OutboxMessage:
    """Add a message to the outbox in the caller's transaction.

    The work runs only if the transaction commits; after the commit the
    relay is woken up so the work starts at once rather than at the next
    scheduled relay run.
    """
    assert uow.session is not None
    message = OutboxMessage(task=task, payload=payload, ordering_key=ordering_key, user_id=user_id)
    uow.session.add(message)
    if uow.outbox_notifier is not None:
        uow.after_commit(uow.outbox_notifier)
    return message


def enqueue_rows(uow: UnitOfWork, task: str, messages: Sequence[Mapping[str, Any]]) -> None:
    """Add many messages of ``task`` in the caller's transaction, in one statement (as :func:`enqueue`, without
    ORM objects): each mapping gives ``payload`` and may give ``ordering_key``, ``user_id``, ``available_at``.
    Their ids follow their order."""
    assert uow.session is not None
    if not messages:
        return
    now = utcnow()
    insert_rows(uow.session, OutboxMessage.__table__, [
        {"task": task, "payload": m["payload"], "ordering_key": m.get("ordering_key"), "user_id": m.get("user_id"),
         "created_at": now, "available_at": m.get("available_at") or now, "attempts": 0} for m in messages])
    if uow.outbox_notifier is not None:
        uow.after_commit(uow.outbox_notifier)


def complete(session: Session, outbox_id: int | None) -> None:
    """Mark a message done, in the transaction of the task's effect."""
    if outbox_id is None:
        return
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == outbox_id, OutboxMessage.completed_at.is_(None))
        .values(completed_at=utcnow())
    )


def complete_many(session: Session, outbox_ids: Iterable[int | None]) -> None:
    """Mark these messages done (as :func:`complete`, for a batch), in the transaction of the tasks' effects."""
    ids = sorted({i for i in outbox_ids if i is not None})
    now = utcnow()
    for chunk in chunks(ids):
        # By id alone, keeping a completion already there. With "completed_at IS NULL" in the WHERE,
        # PostgreSQL's estimate (few messages are ever incomplete) chose the index of incomplete messages, and
        # during a burst each batch walked every incomplete message of it: 34 -> 11 us a push (BENCHMARKS.md, 6).
        session.execute(update(OutboxMessage)
                        .where(among(session, OutboxMessage.id, chunk))
                        .values(completed_at=func.coalesce(OutboxMessage.completed_at, now))
                        .execution_options(synchronize_session=False))


def extend_lease(session: Session, outbox_id: int | None) -> None:
    """Tell the relay a long task is still working on a message (not lost).

    A message sent but not completed is published again after
    ``redeliver_after``; a task that runs longer (a large import) calls this
    in each of its transactions so that it is not redelivered while alive.
    """
    if outbox_id is None:
        return
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == outbox_id, OutboxMessage.completed_at.is_(None),
               OutboxMessage.sent_at.is_not(None))
        .values(sent_at=utcnow())
    )


Publisher = Callable[[OutboxMessage], None]
# A relay run sweeps again while its sweeps are full, for at most this long (then the next run goes on).
RELAY_BUDGET_S = 10.0
# Publishes several messages of one task as one broker message (e.g. a batch of pushes).
GroupPublisher = Callable[[list[OutboxMessage]], None]


def relay_pending(
    database: Database,
    publish: Publisher,
    *,
    batch_size: int = 500,
    redeliver_after: timedelta = timedelta(minutes=5),
    max_attempts: int = 10,
    groups: Mapping[str, tuple[int, GroupPublisher]] | None = None,
) -> int:
    """Publish due outbox rows in commit order and stamp them sent.

    Due: never sent, or sent longer than ``redeliver_after`` ago and still
    not completed. Rows are locked (``FOR UPDATE SKIP LOCKED`` on
    PostgreSQL, the write lock on SQLite) so concurrent relays do not
    publish the same row. ``groups`` maps a task to (most messages per
    group, its group publisher): its due messages are published together,
    in commit order, once a group is full or the sweep ends, and each is
    still stamped (and later completed) on its own, so a lost group is
    published again like a lost message. The first failed publish ends the
    sweep, leaving the rest for the next run. Returns the number of
    messages published.
    """
    groups = groups or {}
    published = 0
    with database.unit_of_work(write=True) as uow:
        session = uow.session
        assert session is not None
        now = utcnow()
        due = or_(
            OutboxMessage.sent_at.is_(None),
            and_(
                OutboxMessage.completed_at.is_(None),
                OutboxMessage.sent_at < now - redeliver_after,
                OutboxMessage.attempts < max_attempts,
            ),
        )
        query = (
            select(OutboxMessage)
            .where(due, OutboxMessage.available_at <= now)
            .order_by(OutboxMessage.id)
            .limit(batch_size)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        pending: dict[str, list[OutboxMessage]] = {task: [] for task in groups}

        def flush(task: str) -> bool:
            nonlocal published
            messages, pending[task] = pending[task], []
            if messages and not _publish(session, lambda: groups[task][1](messages), messages, now):
                return False
            published += len(messages)
            return True

        ok = True
        for message in session.scalars(query):
            if message.sent_at is not None:
                log.warning("outbox redelivery", extra={"outbox_id": message.id, "task": message.task,
                                                        "attempts": message.attempts})
            if message.task in pending:
                pending[message.task].append(message)
                if len(pending[message.task]) >= groups[message.task][0] and not flush(message.task):
                    ok = False
                    break
                continue
            if not _publish(session, lambda: publish(message), [message], now):
                ok = False
                break
            published += 1
        if ok:
            for task in pending:
                if not flush(task):
                    break
        uow.commit()
    if published:
        log.info("outbox relayed", extra={"published": published})
    return published


def relay_all(database: Database, publish: Publisher, *, batch_size: int = 500, budget_s: float = RELAY_BUDGET_S,
              **options: Any) -> int:
    """:func:`relay_pending` again while its sweep was full (more may be due), within ``budget_s``; how many
    messages were published.

    A relay woken by a commit would otherwise publish one sweep and leave the rest of a backlog to the next
    scheduled run: 500 messages every ``SMARTSVC_OUTBOX_RELAY_INTERVAL_S`` (BENCHMARKS.md, 7)."""
    deadline = time.monotonic() + budget_s
    total = 0
    while True:
        published = relay_pending(database, publish, batch_size=batch_size, **options)
        total += published
        if published < batch_size or time.monotonic() >= deadline:
            return total


def _publish(session: Session, send: Callable[[], None], messages: list[OutboxMessage], now: datetime) -> bool:
    """Publish, then stamp ``messages`` sent; False (and the error kept) when the broker refused."""
    try:
        send()
    except Exception as exc:  # broker down: keep the rows (and the order) for the next run
        log.warning("outbox publish failed", extra={"outbox_id": messages[0].id, "error": str(exc)})
        for message in messages:
            message.last_error = str(exc)[:2000]
        return False
    _stamp_sent(session, messages, now)
    return True


def _stamp_sent(session: Session, messages: list[OutboxMessage], now: datetime) -> None:
    """``messages`` sent at ``now``, one more attempt each: a statement per chunk of ids. The ORM's flush wrote
    one UPDATE a message, half of the relay's work for the webhook deliveries of benchmark 7."""
    table = OutboxMessage.__table__
    for chunk in chunks([message.id for message in messages]):
        session.execute(update(table).where(among(session, table.c.id, chunk))
                        .values(sent_at=now, attempts=table.c.attempts + 1))
    for message in messages:
        set_committed_value(message, "sent_at", now)
        set_committed_value(message, "attempts", message.attempts + 1)


def purge_completed(database: Database, older_than: timedelta) -> int:
    """Delete completed messages older than ``older_than``; returns how many."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        result = session.execute(
            delete(OutboxMessage).where(
                OutboxMessage.completed_at.is_not(None),
                OutboxMessage.completed_at < utcnow() - older_than,
            )
        )
        uow.commit()
    return int(getattr(result, "rowcount", 0) or 0)
