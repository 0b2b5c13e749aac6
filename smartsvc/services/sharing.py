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

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import Database
from ..models import ApiKey, SharingLedgerEntry
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
