"""The export (TRUST.md "What the user can see"): everything stored about a user, as one JSON document.

One section per kind of data, each the rows of one table (all their columns,
so a column added later is exported without a change here), newest last.
:data:`SECTIONS` is the whole list; a test checks that every table with a
``user_id`` column has a section, so a table added later without one fails.
Device tokens, Web Push subscriptions and credentials in stored answers are
masked (the last 4 characters of a token, the host of an endpoint); hashes of
credentials are left out.

The document is streamed: rows are read in batches of :data:`BATCH` inside
one read transaction (a snapshot: REPEATABLE READ on PostgreSQL, SQLite's
read transaction) and written out in chunks of about :data:`CHUNK_CHARS`,
so a user with millions of rows is exported in constant memory, with no cap
on the number of rows.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

from sqlalchemy import Select, Table, select

from ..db import Database
from ..models.base import Base
from ..timeutil import utcnow

FORMAT = "smartsvc-export/1"
BATCH = 500
CHUNK_CHARS = 64 * 1024
MASK = "****"


def mask_token(token: str | None) -> str | None:
    """A device token as the export shows it: its last 4 characters (all masked when it is short)."""
    if token is None:
        return None
    return MASK + token[-4:] if len(token) >= 12 else MASK


def mask_subscription(subscription: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A Web Push subscription with its endpoint reduced to the push service's host and its keys masked."""
    if subscription is None:
        return None
    endpoint = str(subscription.get("endpoint") or "")
    parts = urlsplit(endpoint)
    masked = f"{parts.scheme}://{parts.hostname}/{MASK}{endpoint[-4:]}" if parts.hostname else mask_token(endpoint)
    keys = subscription.get("keys")
    return {"endpoint": masked, "keys": {name: MASK for name in keys} if isinstance(keys, Mapping) else None}


def _device(row: dict[str, Any]) -> dict[str, Any]:
    row["token"] = mask_token(row.get("token"))
    row["subscription"] = mask_subscription(row.get("subscription"))
    return row


# Credentials a stored answer may carry (an access token minted for the user): masked like device tokens.
SECRET_KEYS = frozenset({"access_token", "token", "secret", "refresh_token"})


def mask_secrets(value: Any) -> Any:
    """``value`` with the strings under :data:`SECRET_KEYS`, at any depth, masked."""
    if isinstance(value, Mapping):
        return {key: mask_token(item) if key in SECRET_KEYS and isinstance(item, str) else mask_secrets(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [mask_secrets(item) for item in value]
    return value


def _stored_response(row: dict[str, Any]) -> dict[str, Any]:
    row["response_body"] = mask_secrets(row.get("response_body"))
    return row


Query = Callable[[Table, uuid.UUID], Select[Any]]


def _own_rows(table: Table, user_id: uuid.UUID) -> Select[Any]:
    return select(table).where(table.c.user_id == user_id)


def _own_locations(table: Table, user_id: uuid.UUID) -> Select[Any]:
    return _own_rows(table, user_id).where(table.c.type == "location")


def _own_other_context(table: Table, user_id: uuid.UUID) -> Select[Any]:
    return _own_rows(table, user_id).where(table.c.type != "location")


def _profile(table: Table, user_id: uuid.UUID) -> Select[Any]:
    return select(table).where(table.c.id == user_id)


def _products(table: Table, user_id: uuid.UUID) -> Select[Any]:
    models = Base.metadata.tables["product_models"]
    return (select(table, models.c.kind.label("model_kind"), models.c.brand.label("model_brand"),
                   models.c.name.label("model_name"))
            .join(models, models.c.id == table.c.model_id).where(table.c.user_id == user_id))


def _push_attempts(table: Table, user_id: uuid.UUID) -> Select[Any]:
    suggestions = Base.metadata.tables["suggestions"]
    return (select(table).join(suggestions, suggestions.c.id == table.c.suggestion_id)
            .where(suggestions.c.user_id == user_id))


@dataclass(frozen=True)
class Section:
    """One part of the export: rows of ``table`` the ``query`` picks for the user (one object if not ``many``)."""

    name: str
    table: str
    query: Query = _own_rows
    many: bool = True
    exclude: tuple[str, ...] = ()
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    description: str = field(default="", compare=False)


SECTIONS: tuple[Section, ...] = (
    Section("profile", "users", _profile, many=False, description="The user: ids, time zone, locale, quiet hours"),
    Section("consents", "consents", description="Each purpose: granted or not, since when"),
    Section("consent_history", "consent_events", description="Every change of consent"),
    Section("devices", "devices", exclude=("token_hash",), convert=_device,
            description="Devices, tokens masked to their last 4 characters"),
    Section("products", "owned_products", _products, description="Owned products, their catalogue model"),
    Section("telemetry", "telemetry_readings", description="Every telemetry reading"),
    Section("location_history", "context_events", _own_locations, description="Location events"),
    Section("context_events", "context_events", _own_other_context, description="Activity, trip and app events"),
    Section("current_context", "user_contexts", many=False, description="The context as last known"),
    Section("geofence_state", "user_geofence_states", many=False, description="Geofences the user is in"),
    Section("triggers", "triggers", description="Events that started rules"),
    Section("suggestions", "suggestions", description="Every suggestion with its reason and status"),
    Section("push_attempts", "push_attempts", _push_attempts, description="Every push of a suggestion"),
    Section("feedback", "user_rule_scores", description="What the user's feedback taught each rule"),
    Section("interactions", "interactions", description="The interaction journal"),
    Section("sharing_ledger", "sharing_ledger", description="Every time data about the user left the system"),
    Section("webhook_deliveries", "webhook_deliveries", description="The events sent to partners about the user"),
    Section("queued_work", "outbox_messages", description="Work queued for the user, done or not"),
    Section("stored_responses", "idempotency_records", convert=_stored_response,
            description="Answers kept to replay a repeated request (Idempotency-Key), credentials masked"),
    Section("help_cases", "help_cases", description="Help requests with their context snapshot"),
    Section("help_messages", "help_messages", description="The messages of the help cases"),
)


def table_sections() -> dict[str, list[str]]:
    """Each table the export reads → the sections its rows go to."""
    out: dict[str, list[str]] = {}
    for section in SECTIONS:
        out.setdefault(section.table, []).append(section.name)
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None  # no table of the export holds binary personal data
    raise TypeError(f"{type(value).__name__} is not JSON")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def _rows(session: Any, section: Section, table: Table, user_id: uuid.UUID) -> Iterator[dict[str, Any]]:
    query = section.query(table, user_id)
    order = [table.c.id] if "id" in table.c else list(table.primary_key.columns)
    result = session.execute(query.order_by(*order).execution_options(yield_per=BATCH))
    for row in result.mappings():
        item = {key: value for key, value in row.items() if key not in section.exclude}
        yield section.convert(item) if section.convert else item


def export_chunks(database: Database, user_id: uuid.UUID) -> Iterator[str]:
    """The export of ``user_id`` as pieces of one JSON object (joined: the document)."""
    head = {"format": FORMAT, "exported_at": utcnow(), "user_id": user_id,
            "sections": {s.name: s.description for s in SECTIONS if s.table in Base.metadata.tables}}
    parts: list[str] = [_dumps(head)[:-1]]
    size = len(parts[0])
    with database.session() as session:
        if database.engine.dialect.name == "postgresql":  # one snapshot for every section
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        for section in SECTIONS:
            table = Base.metadata.tables.get(section.table)
            if table is None:
                continue  # a part of the service this installation does not have
            rows = _rows(session, section, table, user_id)
            if not section.many:
                parts.append(f',"{section.name}":{_dumps(next(rows, None))}')
                continue
            parts.append(f',"{section.name}":[')
            for n, row in enumerate(rows):
                text = _dumps(row)
                parts.append("," + text if n else text)
                size += len(text)
                if size >= CHUNK_CHARS:
                    yield "".join(parts)
                    parts, size = [], 0
            parts.append("]")
    parts.append("}")
    yield "".join(parts)


def export_document(database: Database, user_id: uuid.UUID) -> dict[str, Any]:
    """The whole export as a dict (the CLI, tests; the API streams :func:`export_chunks`)."""
    return json.loads("".join(export_chunks(database, user_id)))
