"""A user's current context, read: the facts rules test (``context_facts``) and the snapshot ``GET /v1/me/context`` shows.

Both derive from the stored ``user_contexts`` row, the user's products and
their latest telemetry, and the clock in the user's time zone. Facts use the
names of :data:`smartsvc.rules.facts.FACTS` (nested: ``{"product":
{"attributes": {"length_m": …}}}``); a namespace the user has nothing for is
left out, so that rules on it do not match.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Sequence
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import OwnedProduct, ProductModel, User, UserContext
from ..timeutil import utcnow
from .bulk import among, chunks
from .context_state import TripProgress, parse_time, trip_progress


def _zone(user: User) -> ZoneInfo:
    try:
        return ZoneInfo(user.time_zone)
    except (KeyError, ValueError):  # a zone this machine no longer knows: UTC rather than no context at all
        return ZoneInfo("UTC")


def _user_facts(user: User, now: datetime) -> dict[str, Any]:
    local = now.astimezone(_zone(user))
    return {"time_zone": user.time_zone, "local_time": local.strftime("%H:%M"), "weekday": local.isoweekday()}


def _telemetry_values(latest: dict[str, Any] | None) -> dict[str, Any]:
    """``latest_telemetry`` ({name: {"value", "at"}}) as the facts' {name: value}."""
    return {name: entry["value"] for name, entry in (latest or {}).items()
            if isinstance(entry, dict) and entry.get("value") is not None}


def _product_facts(product: OwnedProduct, model: ProductModel) -> dict[str, Any]:
    return {"id": str(product.id), "kind": model.kind, "brand": model.brand, "name": model.name,
            "attributes": dict(model.attributes or {}), "telemetry": _telemetry_values(product.latest_telemetry)}


Owned = tuple[OwnedProduct, ProductModel]


def _owned(session: Session, user_id: uuid.UUID, product_id: uuid.UUID | None = None) -> list[Owned]:
    query = (select(OwnedProduct, ProductModel).join(ProductModel, ProductModel.id == OwnedProduct.model_id)
             .where(OwnedProduct.user_id == user_id).order_by(OwnedProduct.created_at, OwnedProduct.id))
    if product_id is not None:
        query = query.where(OwnedProduct.id == product_id)
    return [(product, model) for product, model in session.execute(query)]


def _progress(context: UserContext | None) -> TripProgress | None:
    if context is None:
        return None
    return trip_progress(context.trip, context.fix, context.speed_mps, context.activity)


def _trip_facts(context: UserContext, progress: TripProgress | None) -> dict[str, Any]:
    trip = context.trip or {}
    facts: dict[str, Any] = {"id": trip.get("trip_id"), "destination": trip.get("destination"),
                             "mode": trip.get("mode"), "product_id": trip.get("product_id")}
    if progress is not None and progress.distance_m is not None:
        facts["distance_m"] = round(progress.distance_m, 1)
    if progress is not None and progress.eta_s is not None:
        facts["eta_s"] = round(progress.eta_s)
    return {name: value for name, value in facts.items() if value is not None}


def owned_products(session: Session, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Owned]]:
    """Each user's products with their models, in the order :func:`context_facts` picks the first from."""
    out: dict[uuid.UUID, list[Owned]] = {user_id: [] for user_id in user_ids}
    for chunk in chunks(list(user_ids)):
        query = (select(OwnedProduct, ProductModel).join(ProductModel, ProductModel.id == OwnedProduct.model_id)
                 .where(among(session, OwnedProduct.user_id, chunk))
                 .order_by(OwnedProduct.user_id, OwnedProduct.created_at, OwnedProduct.id))
        for product, model in session.execute(query):
            out[product.user_id].append((product, model))
    return out


def context_facts(session: Session, user_id: uuid.UUID, *, product_id: uuid.UUID | None = None,
                  now: datetime | None = None, owned: Sequence[Owned] | None = None) -> dict[str, Any]:
    """The nested facts of the user's context: ``user``, ``product``, ``trip`` (docs/engine.md, contracts).

    The product is ``product_id`` when given (and the user's), else the
    active trip's, else the user's first product. The engine adds
    ``geofence`` and ``event`` itself. An unknown user has no facts (``{}``).
    ``owned``: the user's products as :func:`owned_products` read them (a
    batch reads them once for many users), else they are read here.
    """
    now = now or utcnow()
    user = session.get(User, user_id)
    if user is None:
        return {}
    facts: dict[str, Any] = {"user": _user_facts(user, now)}
    context = session.get(UserContext, user_id)
    trip = context.trip if context is not None else None

    def products_of(wanted: uuid.UUID | None = None) -> list[Owned]:
        if owned is None:
            return _owned(session, user_id, wanted)
        return [pair for pair in owned if wanted is None or pair[0].id == wanted]

    if product_id is not None:
        products = products_of(product_id)
    else:
        trip_product = trip.get("product_id") if trip else None
        products = products_of(uuid.UUID(trip_product)) if trip_product else []
        if not products:
            products = products_of()[:1]
    if products:
        facts["product"] = _product_facts(*products[0])
    if context is not None and trip:
        facts["trip"] = _trip_facts(context, _progress(context))
    return facts


def _time(value: Any) -> datetime | None:
    parsed = parse_time(value)
    return parsed.astimezone(timezone.utc) if parsed is not None else None


def context_snapshot(session: Session, tracker: Any, user_id: uuid.UUID, *,
                     now: datetime | None = None) -> dict[str, Any]:
    """The user's current context as ``GET /v1/me/context`` shows it (times as datetimes)."""
    now = now or utcnow()
    user = session.get(User, user_id)
    if user is None:
        return {}
    context = session.get(UserContext, user_id)
    fix = context.fix if context is not None else None
    location = None
    if fix:
        location = {**{name: fix.get(name) for name in ("lat", "lon", "accuracy_m", "speed_mps", "heading")},
                    "at": _time(fix["at"])}
    activity = context.activity if context is not None else None
    app = context.app if context is not None else None
    trip = None
    if context is not None and context.trip:
        progress = _progress(context)
        raw = context.trip
        trip = {"id": raw["trip_id"], "destination": raw["destination"], "product_id": raw.get("product_id"),
                "mode": raw.get("mode"), "started_at": _time(raw["started_at"]),
                "distance_m": round(progress.distance_m, 1) if progress and progress.distance_m is not None else None,
                "eta_s": round(progress.eta_s) if progress and progress.eta_s is not None else None,
                "eta": progress.eta if progress else None}
    geofences = [{"geofence_id": fence.fence_id, "tag": fence.tag, "metadata": dict(fence.metadata),
                  "since": fence.since, "dwelled": fence.dwelled}
                 for fence in tracker.inside_fences(session, user_id)]
    products = [{"id": product.id, "nickname": product.nickname, "model_id": model.id, "kind": model.kind,
                 "brand": model.brand, "name": model.name, "attributes": dict(model.attributes or {}),
                 "latest_telemetry": {name: {"value": entry["value"], "at": _time(entry["at"])}
                                      for name, entry in (product.latest_telemetry or {}).items()}}
                for product, model in _owned(session, user_id)]
    user_facts = _user_facts(user, now)
    return {
        "location": location,
        "speed_mps": context.speed_mps if context is not None else None,
        "activity": {"value": activity["value"], "at": _time(activity["at"])} if activity else None,
        "app": {"screen": app["screen"], "at": _time(app["at"])} if app else None,
        "trip": trip,
        "geofences": geofences,
        "products": products,
        "time_zone": user.time_zone,
        "local_time": user_facts["local_time"],
        "weekday": user_facts["weekday"],
        "last_event_at": context.last_at if context is not None else None,
        "updated_at": context.updated_at if context is not None else None,
    }
