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
import uuid
from datetime import timedelta
from typing import Any, Callable

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from ..db import Database, UnitOfWork
from ..models import OutboxMessage
from ..timeutil import utcnow

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


def complete(session: Session, outbox_id: int | None) -> None:
    """Mark a message done, in the transaction of the task's effect."""
    if outbox_id is None:
        return
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == outbox_id, OutboxMessage.completed_at.is_(None))
        .values(completed_at=utcnow())
    )


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


def relay_pending(
    database: Database,
    publish: Publisher,
    *,
    batch_size: int = 500,
    redeliver_after: timedelta = timedelta(minutes=5),
    max_attempts: int = 10,
) -> int:
    """Publish due outbox rows in commit order and stamp them sent.

    Due: never sent, or sent longer than ``redeliver_after`` ago and still
    not completed. Rows are locked (``FOR UPDATE SKIP LOCKED`` on
    PostgreSQL, the write lock on SQLite) so concurrent relays do not
    publish the same row. Returns the number of messages published.
    """
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
        for message in session.scalars(query):
            if message.sent_at is not None:
                log.warning("outbox redelivery", extra={"outbox_id": message.id, "task": message.task,
                                                        "attempts": message.attempts})
            try:
                publish(message)
            except Exception as exc:  # broker down: keep the row (and the order) for the next run
                log.warning("outbox publish failed", extra={"outbox_id": message.id, "error": str(exc)})
                message.last_error = str(exc)[:2000]
                break
            message.sent_at = now
            message.attempts += 1
            published += 1
        uow.commit()
    if published:
        log.info("outbox relayed", extra={"published": published})
    return published


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
