"""Statements over many ids: ``IN`` lists cut at :data:`MAX_IN` ids, and on PostgreSQL ``= ANY(array)``
instead (one parameter), because psycopg parses — and cannot cache — a statement with hundreds of
placeholders each time."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from sqlalchemy import any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

MAX_IN = 500  # ids per IN list: well within every driver's parameter limit


def chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    """``values`` in slices of at most :data:`MAX_IN`."""
    for lo in range(0, len(values), MAX_IN):
        yield values[lo:lo + MAX_IN]


def among(session: Session, column: Any, values: Sequence[Any]) -> Any:
    """``column IN values``; on PostgreSQL ``= ANY(array)``: one parameter, so psycopg need not parse (and
    cannot cache) a statement with hundreds of placeholders each time."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(list(values))
