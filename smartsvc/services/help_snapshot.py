"""The context snapshot of a help case (TRUST.md "Help on demand"): what the agent sees without asking.

Taken in the transaction that opens the case, from what the service
already stores: the user's products with their latest telemetry (while
``telemetry`` is granted), the last location fix and the active trip (only
while ``location`` is granted), the app screen (as the request names it,
else the last one the app reported), the activity, the last suggestions
and the last interactions. Times are ISO 8601 strings: the snapshot is
stored as JSON and shown as it was taken.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Interaction, OwnedProduct, ProductModel, Suggestion, User, UserContext
from .consents import has_consent
from .suggestions import as_json

RECENT_SUGGESTIONS = 5
RECENT_INTERACTIONS = 10
# Suggestions that are themselves help answers belong to the conversation, not to the context.
HELP_ANSWER_KIND = "help_answer"


def _products(session: Session, user_id: uuid.UUID, with_telemetry: bool) -> list[dict[str, Any]]:
    rows = session.execute(
        select(OwnedProduct, ProductModel).join(ProductModel, ProductModel.id == OwnedProduct.model_id)
        .where(OwnedProduct.user_id == user_id).order_by(OwnedProduct.created_at, OwnedProduct.id))
    products = []
    for product, model in rows:
        item: dict[str, Any] = {
            "id": product.id, "nickname": product.nickname, "model_id": model.id, "kind": model.kind,
            "brand": model.brand, "name": model.name, "attributes": dict(model.attributes or {}),
        }
        item["latest_telemetry"] = dict(product.latest_telemetry or {}) if with_telemetry else None
        products.append(item)
    return products


def _screen(requested: str | None, context: UserContext | None) -> dict[str, Any] | None:
    if requested:
        return {"name": requested, "source": "request", "at": None}
    app = context.app if context is not None else None
    if app and app.get("screen"):
        return {"name": app["screen"], "source": "context", "at": app.get("at")}
    return None


def _location(context: UserContext | None) -> dict[str, Any] | None:
    fix = context.fix if context is not None else None
    if not fix:
        return None
    return {name: fix.get(name) for name in ("lat", "lon", "accuracy_m", "speed_mps", "heading", "at")}


def _trip(context: UserContext | None) -> dict[str, Any] | None:
    trip = context.trip if context is not None else None
    if not trip:
        return None
    return {"id": trip.get("trip_id"), "destination": trip.get("destination"), "product_id": trip.get("product_id"),
            "mode": trip.get("mode"), "started_at": trip.get("started_at")}


def _suggestions(session: Session, user_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Suggestion).where(Suggestion.user_id == user_id, Suggestion.kind != HELP_ANSWER_KIND)
        .order_by(Suggestion.id.desc()).limit(RECENT_SUGGESTIONS))
    return [{"id": s.id, "kind": s.kind, "title": s.title, "status": s.status, "status_reason": s.status_reason,
             "created_at": s.created_at} for s in rows]


def _interactions(session: Session, user_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Interaction).where(Interaction.user_id == user_id).order_by(Interaction.id.desc())
        .limit(RECENT_INTERACTIONS))
    return [{"id": i.id, "kind": i.kind, "subject_type": i.subject_type, "subject_id": i.subject_id,
             "data": i.data, "at": i.at} for i in rows]


def take_snapshot(session: Session, user: User, *, screen: str | None, product_id: uuid.UUID | None,
                  now: datetime) -> dict[str, Any]:
    """The user's context at ``now`` as a help case keeps it (plain JSON).

    ``product_id`` (already checked to be the user's) is the product the
    user asks about; without it, the active trip's product, else the only
    one the user owns, else none.
    """
    context = session.get(UserContext, user.id)
    location_granted = has_consent(session, user.id, "location")
    products = _products(session, user.id, has_consent(session, user.id, "telemetry"))
    owned = {product["id"] for product in products}
    focus = product_id
    trip_product = context.trip.get("product_id") if context is not None and context.trip else None
    if focus is None and trip_product and uuid.UUID(trip_product) in owned:  # the trip's may be gone since
        focus = uuid.UUID(trip_product)
    if focus is None and len(products) == 1:
        focus = products[0]["id"]
    activity = context.activity if context is not None else None
    snapshot = {
        "taken_at": now,
        "user": {"time_zone": user.time_zone, "locale": user.locale},
        "product_id": focus,
        "products": products,
        "screen": _screen(screen, context),
        "activity": {"value": activity.get("value"), "at": activity.get("at")} if activity else None,
        # Where consented only; without it the agent sees that it is withheld, not that it is unknown.
        "location_shared": location_granted,
        "location": _location(context) if location_granted else None,
        "trip": _trip(context) if location_granted else None,
        "suggestions": _suggestions(session, user.id),
        "interactions": _interactions(session, user.id),
    }
    return as_json(snapshot)


def shown_snapshot(snapshot: dict[str, Any], *, location_granted: bool) -> dict[str, Any]:
    """The stored snapshot as shown now: a location consent withdrawn since hides the location and trip."""
    if location_granted or not snapshot.get("location_shared"):
        return snapshot
    return {**snapshot, "location_shared": False, "location": None, "trip": None}
