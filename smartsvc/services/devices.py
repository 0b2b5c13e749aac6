"""Devices that receive pushes: register (deduplicated), list, remove."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from ..db import Database
from ..errors import InvalidInput, NotFound
from ..models import Device
from ..timeutil import utcnow
from .pagination import Page, keyset_page


@dataclass(frozen=True)
class Registration:
    """A device and whether this call created it (False: already known)."""

    device: Device
    created: bool


def _identity(platform: str, token: str | None, subscription: dict[str, Any] | None) -> str:
    if platform == "webpush":
        if not subscription:
            raise InvalidInput("subscription", "is required for platform 'webpush'")
        if token:
            raise InvalidInput("token", "is not used for platform 'webpush'; send 'subscription'")
        raw = subscription["endpoint"]
    else:
        if not token:
            raise InvalidInput("token", f"is required for platform '{platform}'")
        if subscription:
            raise InvalidInput("subscription", f"is only used for platform 'webpush', not '{platform}'")
        raw = token
    return hashlib.sha256(f"{platform}:{raw}".encode()).hexdigest()


def register_device(
    database: Database,
    user_id: uuid.UUID,
    *,
    platform: str,
    token: str | None,
    subscription: dict[str, Any] | None,
    max_devices: int,
) -> Registration:
    """Register a device; the same token again reactivates the existing row."""
    token_hash = _identity(platform, token, subscription)
    now = utcnow()
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        existing = session.scalar(
            select(Device).where(Device.user_id == user_id, Device.token_hash == token_hash)
        )
        if existing is not None:
            existing.active = True
            existing.deactivated_reason = None
            existing.last_seen_at = now
            existing.subscription = subscription
            uow.commit()
            return Registration(existing, created=False)
        count = session.scalar(
            select(func.count()).select_from(Device).where(Device.user_id == user_id, Device.active.is_(True))
        )
        if count is not None and count >= max_devices:
            raise InvalidInput(
                "token", f"at most {max_devices} active devices per user; remove one first"
            )
        device = Device(
            user_id=user_id,
            platform=platform,
            token=token,
            subscription=subscription,
            token_hash=token_hash,
        )
        session.add(device)
        uow.commit()
    return Registration(device, created=True)


def list_devices(
    database: Database, user_id: uuid.UUID, *, limit: int, cursor: uuid.UUID | None
) -> Page[Device]:
    """The user's devices, oldest first."""
    with database.session() as session:
        query = select(Device).where(Device.user_id == user_id)
        return keyset_page(session, query, Device.id, limit=limit, after=cursor)


def delete_device(database: Database, user_id: uuid.UUID, device_id: uuid.UUID) -> None:
    """Remove one of the user's devices; someone else's is 404."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        device = session.scalar(select(Device).where(Device.id == device_id, Device.user_id == user_id))
        if device is None:
            raise NotFound(f"device {device_id} does not exist")
        session.delete(device)
        uow.commit()


def mask_token(value: str | None) -> str | None:
    """Show only the last 6 characters of a push token."""
    if not value:
        return None
    return "…" + value[-6:] if len(value) > 6 else "…"
