"""Keyset pagination over time-ordered ids."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Generic, Sequence, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list and the id to continue after (None on the last page)."""

    items: Sequence[T]
    next_after: uuid.UUID | None


def keyset_page(
    session: Session,
    query: Select[Any],
    id_column: InstrumentedAttribute[uuid.UUID],
    *,
    limit: int,
    after: uuid.UUID | None,
    newest_first: bool = False,
) -> Page[Any]:
    """Run ``query`` ordered by id (descending with ``newest_first``), ``limit`` rows after ``after``."""
    if after is not None:
        query = query.where(id_column < after if newest_first else id_column > after)
    order = id_column.desc() if newest_first else id_column
    rows = list(session.scalars(query.order_by(order).limit(limit + 1)))
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_after = getattr(rows[-1], id_column.key) if has_more and rows else None
    return Page(items=rows, next_after=next_after)
