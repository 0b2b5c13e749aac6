"""The sharing ledger (TRUST.md): every time data about a user left the system.

When, to whom, with which event and which fields. Written in the same
transaction as the act of sharing (a webhook delivery's first send, a help
case handed to an agent), so the ledger never misses one; read by the user
(``GET /v1/me/sharing``) and the export.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Sequence
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import Database
from ..models import ApiKey, SharingLedgerEntry, WebhookEndpoint
from .pagination import Page, keyset_page


def record_sharing(session: Session, *, user_id: uuid.UUID, channel: str, recipient: str, event_type: str,
                   fields: Sequence[str], at: datetime, recipient_id: str | None = None,
                   recipient_owner: str | None = None, reference_id: str | None = None) -> SharingLedgerEntry:
    """Add one ledger entry in the caller's transaction."""
    entry = SharingLedgerEntry(user_id=user_id, at=at, channel=channel, recipient=recipient[:300],
                               recipient_id=recipient_id, recipient_owner=recipient_owner,
                               event_type=event_type, fields=list(fields), reference_id=reference_id)
    session.add(entry)
    return entry


def owner_name(session: Session, owner: str) -> str:
    """A person-readable name for a principal ident (``key:<id>`` → the key's name)."""
    kind, _, raw = owner.partition(":")
    if kind == "key":
        try:
            key_id = uuid.UUID(raw)
        except ValueError:
            return owner
        name = session.scalar(select(ApiKey.name).where(ApiKey.id == key_id))
        if name:
            return name
    return owner


def record_webhook_sharing(session: Session, endpoint: WebhookEndpoint, *, user_id: uuid.UUID, event_type: str,
                           fields: Sequence[str], delivery_id: uuid.UUID, at: datetime) -> SharingLedgerEntry:
    """The ledger entry of a webhook delivery carrying a user's data: partner name and endpoint host."""
    host = urlsplit(endpoint.url).hostname or endpoint.url
    return record_sharing(session, user_id=user_id, channel="webhook",
                          recipient=f"{owner_name(session, endpoint.owner)} ({host})", event_type=event_type,
                          fields=fields, at=at, recipient_id=str(endpoint.id), recipient_owner=endpoint.owner,
                          reference_id=str(delivery_id))


def ledger_body(entry: SharingLedgerEntry) -> dict[str, Any]:
    """A ledger entry as the user sees it."""
    return {"id": entry.id, "at": entry.at, "channel": entry.channel, "recipient": entry.recipient,
            "recipient_id": entry.recipient_id, "event_type": entry.event_type, "fields": list(entry.fields or []),
            "reference_id": entry.reference_id}


def list_sharing(database: Database, user_id: uuid.UUID, *, limit: int,
                 cursor: uuid.UUID | None) -> Page[SharingLedgerEntry]:
    """The user's ledger, newest first (keyset pagination on the id)."""
    with database.session() as session:
        return keyset_page(session, select(SharingLedgerEntry).where(SharingLedgerEntry.user_id == user_id),
                           SharingLedgerEntry.id, limit=limit, after=cursor, newest_first=True)
