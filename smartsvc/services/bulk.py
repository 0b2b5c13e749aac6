"""Statements over many rows: ``IN`` lists cut at :data:`MAX_IN` ids, and on PostgreSQL ``= ANY(array)``
instead (one parameter), because psycopg parses — and cannot cache — a statement with hundreds of
placeholders each time; inserts and per-row updates of many rows as one statement over arrays."""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import JSON, Select, String, Table, Text, any_, bindparam, cast, func, insert, select, true, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

MAX_IN = 500  # ids per IN list: well within every driver's parameter limit


def chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    """``values`` in slices of at most :data:`MAX_IN`."""
    for lo in range(0, len(values), MAX_IN):
        yield values[lo:lo + MAX_IN]


def _array_of(column_type: Any) -> ARRAY:
    """The array type for values of ``column_type``. Unsized for strings: a cast to ``VARCHAR(n)[]`` cuts longer
    values without a word, so an over-long value would match a row it only begins like, or be stored cut."""
    if isinstance(column_type, String) and type(column_type) in (String, Text) and column_type.length is not None:
        column_type = type(column_type)()
    return ARRAY(column_type)


def among(session: Session, column: Any, values: Sequence[Any]) -> Any:
    """``column IN values``; on PostgreSQL ``= ANY(array)``: one parameter, so psycopg need not parse (and
    cannot cache) a statement with hundreds of placeholders each time."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=_array_of(column.type)))
    return column.in_(list(values))


class Matching:
    """SELECT ``columns`` of the rows whose ``key`` is one of some values (at most :data:`MAX_IN`), and
    ``where``: for a column that is not unique. Built once per dialect (building it each time cost more than
    running it); run :meth:`statement` with :meth:`parameters`.

    On PostgreSQL one index look-up per value: the values unnested, each joined to a LATERAL subquery the
    planner cannot flatten (its OFFSET 0). Given ``key = ANY(array)`` instead, it read the whole table while
    the table was young or not analysed (a few hundred values then look like most of it): devices, consents
    and push tries of a few thousand rows, every batch of a push burst (BENCHMARKS.md, 6). Elsewhere
    ``key IN (values)``. The selected columns keep their names; ``where`` may hold named bind parameters.
    The planner still picks the index for each look-up: ``key`` needs one it leads, and no other index should
    serve ``where`` better (a LATERAL look-up of webhook deliveries by subject with ``sending_since IS NULL``
    in its ``where`` was answered from the ``sending_since`` index, reading every pending row per value;
    BENCHMARKS.md §7).
    """

    def __init__(self, columns: Sequence[Any], key: Any, *where: Any) -> None:
        self.columns, self.key, self.where = tuple(columns), key, where
        self._built: dict[bool, Select[Any]] = {}

    def statement(self, session: Session) -> Select[Any]:
        """The statement for ``session``'s database."""
        postgresql = session.get_bind().dialect.name == "postgresql"
        built = self._built.get(postgresql)
        if built is None:
            built = self._built[postgresql] = self._build(postgresql)
        return built

    def _build(self, postgresql: bool) -> Select[Any]:
        if not postgresql:
            return select(*self.columns).where(self.key.in_(bindparam("keys", expanding=True)), *self.where)
        keys = func.unnest(bindparam("keys", type_=_array_of(self.key.type))).table_valued("key").render_derived(
            name="keys")
        found = select(*self.columns).where(self.key == keys.c.key, *self.where).offset(0).lateral("found")
        return select(*found.c).select_from(keys).join(found, true())

    @staticmethod
    def parameters(values: Iterable[Any], **others: Any) -> dict[str, Any]:
        """The statement's parameters: the values (each once) and the ``where``'s."""
        return {"keys": list(dict.fromkeys(values)), **others}


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT ``rows`` (mappings with the same keys) into ``table``.

    On PostgreSQL one statement whatever their number: each column's values
    are one array parameter, unnested. psycopg's executemany runs one
    statement per row instead, ~16 µs of client CPU each and a server
    round of its own (BENCHMARKS.md, 7). Elsewhere executemany.
    """
    if not rows:
        return
    names = list(rows[0])
    # INSERT … SELECT runs no Python-side column default: every such column must be given.
    defaulted = [c.name for c in table.columns if c.default is not None and c.name not in names]
    if defaulted:
        raise ValueError(f"insert_rows into {table.name}: give {', '.join(defaulted)} (Python-side defaults)")
    if session.get_bind().dialect.name != "postgresql":
        session.execute(insert(table), list(rows))
        return
    source = _unnested(table, names, rows)
    session.execute(insert(table).from_select(names, select(*(source[name] for name in names))))


def update_rows(session: Session, table: Table, key: str, rows: Sequence[Mapping[str, Any]],
                same: Mapping[str, Any] | None = None) -> None:
    """UPDATE the rows of ``table`` whose ``key`` each of ``rows`` names, to that row's other values, and to
    ``same`` (the values every row gets). One statement over arrays on PostgreSQL, as :func:`insert_rows`."""
    if not rows:
        return
    names = [name for name in rows[0] if name != key]
    if session.get_bind().dialect.name != "postgresql":
        session.execute(update(table).where(table.c[key] == bindparam(f"b_{key}"))
                        .values({**{name: bindparam(f"b_{name}") for name in names}, **(same or {})}),
                        [{f"b_{name}": value for name, value in row.items()} for row in rows])
        return
    source = _unnested(table, [key, *names], rows)
    session.execute(update(table).where(table.c[key] == source[key])
                    .values({**{name: source[name] for name in names}, **(same or {})}))


def _unnested(table: Table, names: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``unnest(:a, :b, ...) AS u(a, b, ...)``, one typed array parameter per column: what to read from it for
    each name, as the column's type."""
    arrays, documents = [], set()
    for name in names:
        column_type = table.c[name].type
        values = [row[name] for row in rows]
        if isinstance(column_type, JSON):
            # As text, cast back per row: in an array parameter a list (a JSON array) would be another dimension.
            documents.add(name)
            values = [None if v is None and column_type.none_as_null else json.dumps(v) for v in values]
            column_type = Text()
        arrays.append(bindparam(f"u_{name}", values, type_=_array_of(column_type)))
    source = func.unnest(*arrays).table_valued(*names).render_derived(name="u")
    return {name: cast(source.c[name], table.c[name].type) if name in documents else source.c[name]
            for name in names}
