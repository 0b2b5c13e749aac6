"""Partner webhook endpoints: register, read, change, delete, rotate the secret, send a test event.

Each endpoint belongs to the principal (API key) that registered it: another
principal's id is 404. The URL is checked against SSRF at registration and
at every change (and again at every send, :mod:`.webhook_delivery`). The
signing secret is returned once — at creation and at rotation — and stored
encrypted (:mod:`.webhook_secrets`). The delivery log, manual retry and
recover are in :mod:`.webhook_log`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import Database
from ..errors import Conflict, InvalidInput, NotFound
from ..models import WebhookDelivery, WebhookEndpoint, WebhookNotice
from ..timeutil import utcnow
from .pagination import Page, keyset_page
from .webhook_delivery import disable_endpoint
from .webhook_events import EVENT_TYPES, new_delivery
from .webhook_secrets import ROTATION_OVERLAP, encrypt_secret

MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 500
COORDINATE_DECIMALS = (0, 6)
DEFAULT_COORDINATE_DECIMALS = 6
NOTICES_SHOWN = 10


@dataclass(frozen=True)
class EndpointView:
    """An endpoint with its latest notices (``webhook.disabled``), newest first."""

    endpoint: WebhookEndpoint
    notices: Sequence[WebhookNotice]


@dataclass(frozen=True)
class SecretIssued:
    """An endpoint and the secret just issued for it (shown this once)."""

    view: EndpointView
    secret: str


def check_url(settings: Settings, url: str) -> str:
    """The URL as it will be called, or 422 naming ``url`` (not https, private address, ...)."""
    from ..webhooks.ssrf import UnsafeDestination
    from ..webhooks.ssrf import check_url as check_destination

    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput("url", f"must be at most {MAX_URL_LENGTH} characters")
    try:
        destination = check_destination(url, allow_private=settings.webhook_allow_private,
                                        allow_http=settings.webhook_allow_http)
    except UnsafeDestination as exc:
        message = str(exc)
        raise InvalidInput("url", message[len("url: "):] if message.startswith("url: ") else message) from None
    return destination.url if len(destination.url) <= MAX_URL_LENGTH else url


def check_event_types(event_types: Sequence[str]) -> list[str]:
    """The event types without repeats, in the given order; 422 naming the unknown ones."""
    unknown = sorted({name for name in event_types if name not in EVENT_TYPES})
    if unknown:
        raise InvalidInput("event_types", f"unknown event type(s) {', '.join(repr(u[:64]) for u in unknown)}; "
                                          f"known: {', '.join(EVENT_TYPES)}")
    if not event_types:
        raise InvalidInput("event_types", "subscribe to at least one event type")
    return list(dict.fromkeys(event_types))


def _view(session: Session, endpoint: WebhookEndpoint) -> EndpointView:
    notices = list(session.scalars(select(WebhookNotice).where(WebhookNotice.webhook_id == endpoint.id)
                                   .order_by(WebhookNotice.id.desc()).limit(NOTICES_SHOWN)))
    return EndpointView(endpoint, notices)


def owned_endpoint(session: Session, owner: str, webhook_id: uuid.UUID, *, lock: bool = False) -> WebhookEndpoint:
    """The principal's endpoint; someone else's (or none) is 404."""
    endpoint = session.get(WebhookEndpoint, webhook_id, with_for_update=lock, populate_existing=lock)
    if endpoint is None or endpoint.owner != owner:
        raise NotFound(f"webhook {webhook_id} does not exist")
    return endpoint


def create_webhook(database: Database, owner: str, data: Mapping[str, Any]) -> SecretIssued:
    """Register an endpoint for ``owner``; its secret is in the answer and never again."""
    from ..webhooks.signing import new_secret

    settings = database.settings
    url = check_url(settings, data["url"])
    event_types = check_event_types(data["event_types"])
    secret = new_secret()
    now = utcnow()
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        count = session.scalar(select(func.count()).select_from(WebhookEndpoint)
                               .where(WebhookEndpoint.owner == owner)) or 0
        if count >= settings.max_webhooks:
            raise Conflict(f"this key has {count} webhooks, the most allowed (SMARTSVC_MAX_WEBHOOKS); "
                           "delete one first", errors={"url": [f"at most {settings.max_webhooks} webhooks per key"]})
        endpoint = WebhookEndpoint(
            owner=owner, url=url, event_types=event_types, description=data.get("description"), enabled=True,
            coordinate_decimals=data.get("coordinate_decimals", DEFAULT_COORDINATE_DECIMALS),
            secret_encrypted=encrypt_secret(settings, secret), created_at=now, updated_at=now)
        session.add(endpoint)
        session.flush()
        view = EndpointView(endpoint, [])
        uow.commit()
    return SecretIssued(view, secret)


def list_webhooks(database: Database, owner: str, *, limit: int, cursor: uuid.UUID | None) -> Page[EndpointView]:
    """The principal's endpoints in creation order."""
    with database.session() as session:
        page = keyset_page(session, select(WebhookEndpoint).where(WebhookEndpoint.owner == owner),
                           WebhookEndpoint.id, limit=limit, after=cursor)
        return Page([_view(session, endpoint) for endpoint in page.items], page.next_after)


def get_webhook(database: Database, owner: str, webhook_id: uuid.UUID) -> EndpointView:
    """One of the principal's endpoints."""
    with database.session() as session:
        return _view(session, owned_endpoint(session, owner, webhook_id))


def update_webhook(database: Database, owner: str, webhook_id: uuid.UUID, changes: Mapping[str, Any]) -> EndpointView:
    """Change some fields; ``enabled: true`` re-enables a disabled endpoint (its failure streak forgotten)."""
    settings = database.settings
    url = check_url(settings, changes["url"]) if "url" in changes else None
    event_types = check_event_types(changes["event_types"]) if "event_types" in changes else None
    now = utcnow()
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        endpoint = owned_endpoint(session, owner, webhook_id, lock=True)
        if url is not None:
            endpoint.url = url
        if event_types is not None:
            endpoint.event_types = event_types
        for name in ("description", "coordinate_decimals"):
            if name in changes:
                setattr(endpoint, name, changes[name])
        enabled = changes.get("enabled")
        if enabled is True and not endpoint.enabled:
            endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at = True, None, None
            endpoint.failing_since, endpoint.consecutive_failures = None, 0
        elif enabled is False and endpoint.enabled:
            disable_endpoint(session, endpoint, "disabled by its owner", now, notice=False)
        endpoint.updated_at = now
        session.flush()
        view = _view(session, endpoint)
        uow.commit()
    return view


def delete_webhook(database: Database, owner: str, webhook_id: uuid.UUID) -> None:
    """Delete an endpoint with its delivery log; nothing more is sent to it."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        session.delete(owned_endpoint(session, owner, webhook_id, lock=True))
        uow.commit()


def rotate_secret(database: Database, owner: str, webhook_id: uuid.UUID) -> SecretIssued:
    """A new secret (returned this once); the current one keeps signing alongside it for 24 h."""
    from ..webhooks.signing import new_secret

    settings = database.settings
    secret = new_secret()
    now = utcnow()
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        endpoint = owned_endpoint(session, owner, webhook_id, lock=True)
        endpoint.previous_secret_encrypted = endpoint.secret_encrypted
        endpoint.previous_secret_expires_at = now + ROTATION_OVERLAP
        endpoint.secret_encrypted = encrypt_secret(settings, secret)
        endpoint.updated_at = now
        view = _view(session, endpoint)
        uow.commit()
    return SecretIssued(view, secret)


def require_enabled(endpoint: WebhookEndpoint) -> None:
    """409 for a disabled endpoint: nothing is sent to it until it is enabled again."""
    if not endpoint.enabled:
        raise Conflict(f"webhook {endpoint.id} is disabled ({endpoint.disabled_reason}); enable it first with "
                       "PATCH {\"enabled\": true}", errors={"enabled": ["the webhook is disabled"]})


def send_test(database: Database, owner: str, webhook_id: uuid.UUID, now: datetime | None = None) -> WebhookDelivery:
    """Queue a ``webhook.test`` event to this endpoint only (whatever it subscribes to)."""
    now = now or utcnow()
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        endpoint = owned_endpoint(session, owner, webhook_id)
        require_enabled(endpoint)
        delivery = new_delivery(uow, endpoint, "webhook.test", f"webhook:{endpoint.id}", {
            "webhook_id": str(endpoint.id), "message": "This is a test event from smartsvc."}, user_id=None, now=now,
            probe=True)
        uow.commit()
    return delivery
