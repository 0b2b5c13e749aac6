"""The transactional outbox and idempotency records."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint, inspect, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, created_column, id_column


class OutboxMessage(Base):
    """Work that must follow a commit, written in the same transaction.

    The relay publishes unsent rows to Celery and stamps ``sent_at``; a crash
    between commit and publish only delays the work, never loses it.
    """

    __tablename__ = "outbox_messages"
    __table_args__ = (
        Index("ix_outbox_unsent", "sent_at", "id"),
        Index("ix_outbox_incomplete", "completed_at", "sent_at"),
    )

    # An integer sequence keeps the commit order for the relay.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    task: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Messages with the same key are handled in order (e.g. "user:<id>").
    ordering_key: Mapped[str | None] = mapped_column(String(100), index=True)
    # Whose data the message carries, so erasure can find it.
    user_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = created_column()
    available_at: Mapped[datetime] = created_column()
    sent_at: Mapped[datetime | None] = mapped_column()
    # Set by the task in the transaction of its effect; a sent message not
    # completed in time is published again (brokers can lose messages).
    completed_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


_NEXT_IDS = text("SELECT nextval(pg_get_serial_sequence('outbox_messages', 'id')) FROM generate_series(1, :n)")


def number_outbox_messages(session: Session, _flush_context: Any, _instances: Any) -> None:
    """Before a flush on PostgreSQL: give new outbox messages their ids from the sequence, in one statement.

    Without ids, SQLAlchemy inserts them as one ``INSERT … RETURNING`` with ~10 parameters a row, which
    psycopg parses anew every time (it caches no statement over 50 parameters): 5.3 ms of CPU for 200
    rows (BENCHMARKS.md, 7). With ids, they are one prepared ``INSERT`` run for every row (executemany).
    The ids follow the order the messages were added, as the database would have given them.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    new = [obj for obj in session.new if isinstance(obj, OutboxMessage) and obj.id is None]
    if len(new) < 2:
        return  # one row: its INSERT … RETURNING is as cheap
    new.sort(key=lambda obj: inspect(obj).insert_order)  # the order of session.new is not promised
    ids = sorted(session.execute(_NEXT_IDS, {"n": len(new)}).scalars())
    for obj, number in zip(new, ids):
        obj.id = number


class IdempotencyRecord(Base):
    """The first response to a POST with an ``Idempotency-Key`` (kept 24 h)."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("principal", "key", name="uq_idempotency_principal_key"),)

    id: Mapped[uuid.UUID] = id_column()
    principal: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any]] = mapped_column()
    user_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = created_column()
