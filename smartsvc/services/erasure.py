"""Erasure (TRUST.md "Erasure and retention"): ``DELETE /v1/me`` removes every trace of the user.

Two steps, both found by walking the SQLAlchemy metadata, so that a table
added later is covered without a change here:

1. the request (:func:`request_erasure`), one transaction under the user's
   lock: every row that references ``users.id`` by a foreign key — and,
   recursively, every row that references such a row (push attempts of the
   user's suggestions, attempts of their webhook deliveries, ...) — then the
   user row itself. The token dies at once (its user is gone), pending pushes
   and partner deliveries are gone with their rows (a task already queued for
   one finds nothing to send), and an erasure message is queued;
2. the task (:func:`finish_erasure`), idempotent, in bounded batches: rows
   that hold the user's id without a foreign key — columns named
   ``user_id``, keys such as ``principal``/``ordering_key``/``subject`` equal
   to ``"user:<id>"``, and the short-lived tables in :data:`TEXT_SWEPT_TABLES`
   whose text or JSON mentions the id (an idempotent response naming the
   user, an outbox payload) — and the lines of the push log
   (``var/pushes.jsonl``) that name the user, rewritten in place under the
   file lock the log provider appends under. Its own outbox message holds
   the id too and goes in its last batch.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import JSON, Column, ColumnElement, String, Table, Text, cast, delete, or_, select
from sqlalchemy.orm import Session

from ..db import Database
from ..errors import NotFound
from ..models import Base, User
from . import outbox
from .suggestions import lock_user

try:  # POSIX: the log provider appends under an exclusive flock
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

ERASE_TASK = "smartsvc.erasure.erase"
BATCH = 1000
# Columns holding a principal or subject key: "user:<id>" names the user.
KEY_COLUMNS = ("principal", "ordering_key", "subject")
# Working tables whose every text/JSON column is searched for the id (small: purged after hours or days).
TEXT_SWEPT_TABLES = ("idempotency_records", "outbox_messages")


@dataclass(frozen=True)
class ErasureReport:
    """Rows deleted per table by the task, and push log lines removed."""

    rows: dict[str, int]
    push_log_lines: int


def _users() -> Table:
    return User.__table__  # type: ignore[return-value]


def _references(table: Table, target: Table) -> Iterator[tuple[Column[Any], Column[Any]]]:
    """(column of ``table``, column of ``target`` it references) for each single-column foreign key."""
    for fk in table.foreign_keys:
        if fk.column.table is target and fk.parent.table is table:
            yield fk.parent, fk.column


def _delete_dependents(session: Session, target: Table, condition: ColumnElement[bool], path: tuple[Table, ...],
                       counts: dict[str, int]) -> None:
    """Delete, children first, every row of every table that references the rows of ``target`` under ``condition``."""
    for table in Base.metadata.sorted_tables:
        if table in path:
            continue  # a cycle (or a self-reference): its rows go with the table's own delete
        for column, referenced in _references(table, target):
            child_condition = column.in_(select(referenced).where(condition))
            _delete_dependents(session, table, child_condition, path + (table,), counts)
            result = session.execute(delete(table).where(child_condition))
            counts[table.name] = counts.get(table.name, 0) + int(getattr(result, "rowcount", 0) or 0)


def request_erasure(database: Database, user_id: uuid.UUID) -> dict[str, int]:
    """Delete the user and every row referencing them, and queue the rest (:data:`ERASE_TASK`); rows per table.

    One transaction: either all of it or nothing. 404 when the user is gone already.
    """
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        if lock_user(session, user_id) is None:
            raise NotFound(f"user {user_id} does not exist")
        users = _users()
        counts: dict[str, int] = {}
        condition = users.c.id == user_id
        _delete_dependents(session, users, condition, (users,), counts)
        session.execute(delete(users).where(condition))
        session.expunge_all()
        outbox.enqueue(uow, ERASE_TASK, {"user_id": str(user_id)}, user_id=user_id)
        uow.commit()
    return counts


def _text_of(column: Column[Any]) -> ColumnElement[Any] | None:
    """The column as text for a substring search, or None when it holds neither text nor JSON."""
    if isinstance(column.type, String):
        return column
    if isinstance(column.type, JSON):
        return cast(column, Text)
    return None


def residue_conditions(table: Table, user_id: uuid.UUID) -> list[ColumnElement[bool]]:
    """What in ``table`` names the user without a foreign key (empty: nothing to look for there)."""
    conditions: list[ColumnElement[bool]] = []
    key = f"user:{user_id}"
    for column in table.columns:
        if column.name == "user_id" and not column.foreign_keys:
            conditions.append(column == user_id)
        elif column.name in KEY_COLUMNS and isinstance(column.type, String):
            conditions.append(column == key)
    if table.name in TEXT_SWEPT_TABLES:
        for column in table.columns:
            text = _text_of(column)
            if text is not None:
                conditions.append(text.contains(str(user_id), autoescape=True))
    return conditions


def _delete_in_batches(database: Database, table: Table, condition: ColumnElement[bool], batch: int) -> int:
    """Delete the matching rows, ``batch`` at a time, one transaction each; how many."""
    key = list(table.primary_key.columns)
    deleted = 0
    while True:
        with database.unit_of_work() as uow:
            session = uow.session
            assert session is not None
            if len(key) == 1:
                chosen = select(key[0]).where(condition).limit(batch).scalar_subquery()
                result = session.execute(delete(table).where(key[0].in_(chosen)))
            else:
                result = session.execute(delete(table).where(condition))
            count = int(getattr(result, "rowcount", 0) or 0)
            uow.commit()
        deleted += count
        if len(key) != 1 or count < batch:
            return deleted


def scrub_push_log(path: Path, needle: str) -> int:
    """Rewrite the push log without the lines containing ``needle``, under the log provider's lock; lines removed.

    Rewritten in place (not renamed): a provider waiting for the lock
    appends to the same file once it is released.
    """
    if not path.exists():
        return 0
    marker = needle.encode()
    removed = 0
    with open(path, "r+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with tempfile.TemporaryFile(dir=path.parent) as kept:
            for line in handle:
                if marker in line:
                    removed += 1
                else:
                    kept.write(line)
            if removed:
                kept.seek(0)
                handle.seek(0)
                shutil.copyfileobj(kept, handle)
                handle.truncate()
                handle.flush()
                os.fsync(handle.fileno())
    return removed


def finish_erasure(database: Database, user_id: uuid.UUID, outbox_id: int | None = None, *,
                   batch: int = BATCH, push_log: Path | None = None) -> ErasureReport:
    """Remove what still names the user after :func:`request_erasure` (see the module docstring).

    Idempotent: run again it finds nothing. A user who still exists (the
    request did not commit, or a message forged for a live user) is not
    touched: only the request deletes users.
    """
    with database.session() as session:
        if session.get(User, user_id) is not None:
            log.warning("erasure task for a user who still exists: ignored")
            with database.unit_of_work() as uow:
                assert uow.session is not None
                outbox.complete(uow.session, outbox_id)
                uow.commit()
            return ErasureReport({}, 0)
    log_path = push_log if push_log is not None else database.settings.pushes_log_path
    lines = scrub_push_log(log_path, str(user_id))
    rows: dict[str, int] = {}
    # The outbox last: this task's own message (it names the user) goes with it, and only once all is done.
    tables = sorted(Base.metadata.sorted_tables, key=lambda t: t.name == "outbox_messages")
    for table in tables:
        conditions = residue_conditions(table, user_id)
        if conditions:
            rows[table.name] = _delete_in_batches(database, table, or_(*conditions), batch)
    log.info("user erased", extra={"rows": sum(rows.values()), "push_log_lines": lines})
    return ErasureReport(rows, lines)
