"""A batch of context events from a phone: stored once, applied in ``at`` order, triggers noticed on the way.

One write transaction per batch (docs/engine.md §1): the user's
``user_contexts`` row is locked first (``SELECT … FOR UPDATE`` on PostgreSQL;
SQLite's write transaction already excludes other writers), so batches of one
user are applied one at a time whatever order they arrive in. Then:

1. each event is stored in ``context_events`` (:mod:`.context_store`) unless the same (user, type,
   ``at``) is stored already — a duplicate is neither stored nor counted;
2. an event older than the user's last applied one by more than the late
   window is stored with ``late = true`` and applied to nothing;
3. the others are applied in ``at`` order; state that is newer than an event
   stays (a fix older than the last fix does not move the user);
4. location fixes go through the geofence tracker; geofence events, trip
   starts, approaches (per ``trip.approaching`` rule) and arrivals become
   triggers (:func:`smartsvc.services.triggers.emit_trigger`) in the same
   transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from geodata.geofences import DWELLED, EXITED, Fix, GeofenceEvent

from ..db import UnitOfWork
from ..errors import InvalidInput, NotFound
from ..models import OwnedProduct, User, UserContext
from ..timeutil import utcnow
from .consents import has_consent, require_consent
from .geofence_tracking import UserFences
from .context_state import (
    MIN_SPEED_SPAN_S, approaching_reached, fix_speed, parse_time, round_coordinate, trip_progress,
)
from .context_store import PreparedEvent, store_events
from .triggers import emit_trigger

# How far ahead of the server's clock an event's ``at`` may be (phones' clocks drift a little).
MAX_FUTURE_S = 300
# A geofence timer run catches up at most this many due moments per user (each one is a tick).
MAX_TICKS_PER_RUN = 100


@dataclass(frozen=True)
class IngestResult:
    """What a batch did: events newly stored (late ones included) and the geofence events it caused."""

    accepted: int
    geofence_events: list[dict[str, Any]] = field(default_factory=list)


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat()


def _prepare(index: int, event: Mapping[str, Any], now: datetime) -> PreparedEvent:
    """The stored form of one validated event: UTC time, rounded coordinates, no empty optional fields."""
    at = event["at"]
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise InvalidInput(f"events.{index}.at", "must be an RFC 3339 time with an offset")
    if at > now + timedelta(seconds=MAX_FUTURE_S):
        raise InvalidInput(f"events.{index}.at", f"is more than {MAX_FUTURE_S // 60} minutes in the future")
    kind = event["type"]
    data: dict[str, Any] = {}
    if kind == "location":
        data = {"lat": round_coordinate(event["lat"]), "lon": round_coordinate(event["lon"])}
        for name in ("accuracy_m", "speed_mps", "heading"):
            if event.get(name) is not None:
                data[name] = float(event[name])
    elif kind == "activity":
        data = {"value": event["value"]}
    elif kind == "app":
        data = {"screen": event["screen"]}
    elif kind == "trip":
        if event.get("status") == "ended":
            data = {"status": "ended"}
        else:
            destination = event["destination"]
            data = {"destination": {"lat": round_coordinate(destination["lat"]),
                                    "lon": round_coordinate(destination["lon"])}}
            if event.get("product_id") is not None:
                data["product_id"] = str(event["product_id"])
            if event.get("mode") is not None:
                data["mode"] = event["mode"]
    else:
        raise InvalidInput(f"events.{index}.type", "must be one of location, activity, trip, app")
    return PreparedEvent(index, kind, at.astimezone(timezone.utc), data)


def ingest_context(container: Any, user_id: uuid.UUID, events: Sequence[Mapping[str, Any]]) -> IngestResult:
    """Store and apply a batch of the user's context events (validated by the HTTP layer) in one transaction.

    403 for the whole batch (nothing stored) when it holds a location event
    and consent ``location`` is not granted; 422 naming
    ``events.<i>.product_id`` when a trip names a product that is not the
    user's (another user's product looks exactly like an unknown one).
    """
    settings = container.settings
    if len(events) > settings.max_context_events:
        raise InvalidInput("events", f"at most {settings.max_context_events} events per batch; send the rest in "
                                     "another batch")
    now = utcnow()
    prepared = [_prepare(index, event, now) for index, event in enumerate(events)]
    with container.database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        if any(event.type == "location" for event in prepared):
            require_consent(session, user_id, "location")
        _check_products(session, user_id, prepared)
        context = _locked_context(session, user_id)
        window = timedelta(seconds=settings.context_late_window_s)
        cursor = context.last_at
        stored = store_events(session, user_id, prepared, lambda at: cursor is not None and at < cursor - window)
        applier = _Applier(container, uow, user_id, context)
        for event_id, event, late in stored:
            if not late:
                applier.apply(event_id, event)
        applier.finish(now)
        uow.commit()
    return IngestResult(accepted=len(stored), geofence_events=applier.geofence_events)


def _check_products(session: Session, user_id: uuid.UUID, events: list[PreparedEvent]) -> None:
    named = [(event.index, event.data["product_id"]) for event in events
             if event.type == "trip" and "product_id" in event.data]
    if not named:
        return
    wanted = {uuid.UUID(product_id) for _, product_id in named}
    owned = {str(product_id) for product_id in session.scalars(
        select(OwnedProduct.id).where(OwnedProduct.user_id == user_id, OwnedProduct.id.in_(wanted)))}
    for index, product_id in named:
        if product_id not in owned:
            raise InvalidInput(f"events.{index}.product_id",
                               f"product {product_id} is not one of your products (GET /v1/me/products)")


def _locked_context(session: Session, user_id: uuid.UUID) -> UserContext:
    """The user's context row, created when missing, locked until the transaction ends."""
    row = session.get(UserContext, user_id, with_for_update=True, populate_existing=True)
    if row is not None:
        return row
    if session.get(User, user_id) is None:
        raise NotFound(f"user {user_id} does not exist")
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    # A concurrent first batch of the same user may insert first; its row is then the one locked.
    session.execute(insert(UserContext).values(user_id=user_id, updated_at=utcnow())
                    .on_conflict_do_nothing(index_elements=["user_id"]))
    row = session.get(UserContext, user_id, with_for_update=True, populate_existing=True)
    assert row is not None
    return row


def geofence_event_body(event: GeofenceEvent, fence: Any) -> dict[str, Any]:
    """A geofence event as the API answers it and as the trigger's fields carry it."""
    body: dict[str, Any] = {"type": event.type, "geofence_id": event.fence_id,
                            "tag": fence.tag if fence is not None else None,
                            "metadata": dict(fence.metadata) if fence is not None else {},
                            "at": event.at.astimezone(timezone.utc)}
    if event.inside_since is not None:
        body["inside_since"] = event.inside_since.astimezone(timezone.utc)
        held = round((event.at - event.inside_since).total_seconds())
        if event.type == EXITED:
            body["inside_s"] = held
        elif event.type == DWELLED:
            body["dwell_s"] = held
    if event.reason is not None:
        body["reason"] = event.reason
    return body


def emit_geofence_triggers(uow: UnitOfWork, container: Any, user_id: uuid.UUID,
                           events: list[GeofenceEvent], index: Any = None) -> list[dict[str, Any]]:
    """One ``geofence.*`` trigger per tracker event (deduplicated on user, fence, kind and time); their bodies."""
    if not events:
        return []
    assert uow.session is not None
    if index is None:
        index = container.geofence_tracker.live_index.current(uow.session).index
    bodies = []
    for event in events:
        body = geofence_event_body(event, index.get(event.fence_id))
        fields = {"geofence_id": event.fence_id, "metadata": body["metadata"]}
        if body["tag"] is not None:
            fields["tag"] = body["tag"]
        for name in ("inside_s", "dwell_s"):
            if name in body:
                fields[name] = body[name]
        emit_trigger(uow, user_id=user_id, event=event.type, at=event.at,
                     dedupe_key=f"{event.type}:{user_id}:{event.fence_id}:{_iso(event.at)}", fields=fields)
        bodies.append(body)
    return bodies


class _Applier:
    """Applies one batch's new events to the locked context row, noticing triggers on the way."""

    def __init__(self, container: Any, uow: UnitOfWork, user_id: uuid.UUID, context: UserContext) -> None:
        self.container = container
        self.uow = uow
        self.session = uow.session
        self.user_id = user_id
        self.context = context
        # Working copies: JSON columns are replaced as a whole at the end (in-place changes are not tracked).
        self.fix = dict(context.fix) if context.fix else None
        self.speed = context.speed_mps
        self.activity = dict(context.activity) if context.activity else None
        self.app = dict(context.app) if context.app else None
        self.trip = dict(context.trip) if context.trip else None
        self.last_at = context.last_at
        self.fences: UserFences | None = None  # the user's geofence state, opened at the batch's first fix
        self.geofence_events: list[dict[str, Any]] = []
        self._approaching_rules: Any = None

    def apply(self, event_id: uuid.UUID, event: PreparedEvent) -> None:
        if self.last_at is None or event.at > self.last_at:
            self.last_at = event.at
        if event.type == "location":
            self._location(event)
        elif event.type == "trip":
            self._trip(event_id, event)
        elif event.type == "activity":
            if self.activity is None or event.at > parse_time(self.activity["at"]):
                self.activity = {"value": event.data["value"], "at": _iso(event.at)}
        elif event.type == "app":
            if self.app is None or event.at > parse_time(self.app["at"]):
                self.app = {"screen": event.data["screen"], "at": _iso(event.at)}

    def _location(self, event: PreparedEvent) -> None:
        previous = self.fix
        if previous is not None and event.at <= parse_time(previous["at"]):
            return  # a newer fix is known: it stays
        data = event.data
        speed = fix_speed(data.get("speed_mps"), previous, data["lat"], data["lon"], event.at)
        if speed is None and previous is not None and \
                (event.at - parse_time(previous["at"])).total_seconds() < MIN_SPEED_SPAN_S:
            speed = self.speed  # too close to the last fix to tell: the last speed still holds
        self.fix = {"lat": data["lat"], "lon": data["lon"], "accuracy_m": data.get("accuracy_m"),
                    "speed_mps": data.get("speed_mps"), "heading": data.get("heading"), "at": _iso(event.at)}
        self.speed = speed
        if self.fences is None:
            self.fences = self.container.geofence_tracker.open(self.session, self.user_id)
        events = self.fences.evaluate_fix(Fix(data["lat"], data["lon"], event.at, data.get("accuracy_m")))
        self.geofence_events.extend(emit_geofence_triggers(self.uow, self.container, self.user_id, events,
                                                           self.fences.index))
        self._trip_progress(event.at)

    def _trip(self, event_id: uuid.UUID, event: PreparedEvent) -> None:
        current = self.trip
        if current is not None and event.at < parse_time(current["started_at"]):
            return  # a newer trip (or end) is known: it stays
        if event.data.get("status") == "ended":
            self.trip = None
            return
        self.trip = {"trip_id": str(event_id), "destination": event.data["destination"],
                     "product_id": event.data.get("product_id"), "mode": event.data.get("mode"),
                     "started_at": _iso(event.at), "approached": []}
        progress = trip_progress(self.trip, self.fix, self.speed, self.activity)
        fields = {}
        if progress is not None and progress.distance_m is not None:
            fields["distance_m"] = round(progress.distance_m, 1)
        self._emit("trip.started", event.at, f"trip.started:{event_id}", fields)

    def _trip_progress(self, at: datetime) -> None:
        """Approaching (once per trip and rule) and arrival, measured at the fix just applied."""
        trip = self.trip
        if trip is None or at < parse_time(trip["started_at"]):
            return
        progress = trip_progress(trip, self.fix, self.speed, self.activity)
        if progress is None or progress.distance_m is None:
            return
        fields: dict[str, Any] = {"distance_m": round(progress.distance_m, 1)}
        if progress.eta_s is not None:
            fields["eta_s"] = round(progress.eta_s)
        approached = list(trip.get("approached") or [])
        for rule in self._rules():
            if str(rule.id) in approached or not approaching_reached(rule.trigger, progress.distance_m,
                                                                     progress.eta_s):
                continue
            approached.append(str(rule.id))
            self._emit("trip.approaching", at, f"trip.approaching:{trip['trip_id']}:{rule.id}", fields,
                       rule_id=rule.id)
        self.trip = {**trip, "approached": approached}
        if progress.distance_m <= self.container.settings.arrival_radius_m:
            self._emit("trip.arrived", at, f"trip.arrived:{trip['trip_id']}",
                       {"distance_m": fields["distance_m"]})
            self.trip = None

    def _rules(self) -> tuple[Any, ...]:
        if self._approaching_rules is None:
            rules = self.container.rule_cache.current(self.session).rules_for("trip.approaching")
            self._approaching_rules = rules
        return self._approaching_rules

    def _emit(self, event: str, at: datetime, dedupe_key: str, fields: dict[str, Any],
              rule_id: uuid.UUID | None = None) -> None:
        product = self.trip.get("product_id") if self.trip else None
        emit_trigger(self.uow, user_id=self.user_id, event=event, at=at, dedupe_key=dedupe_key, fields=fields,
                     rule_id=rule_id, product_id=uuid.UUID(product) if product else None)

    def finish(self, now: datetime) -> None:
        context = self.context
        context.last_at = self.last_at
        context.fix = self.fix
        context.speed_mps = self.speed
        context.activity = self.activity
        context.app = self.app
        context.trip = self.trip
        if self.fences is not None:
            self.fences.store()
            context.geofence_due_at = self.fences.due_at()
        context.updated_at = now


def tick_geofences(container: Any, user_id: uuid.UUID, now: datetime | None = None) -> list[dict[str, Any]]:
    """Let time pass for one user whose geofence timer is due: dwell events, schedules closing → triggers.

    Each due moment is ticked at that moment (not at ``now``), so a fix of
    the same time still arriving from the phone is not shadowed by the timer
    more than necessary. Idempotent: a second run finds nothing due, and the
    triggers are deduplicated anyway. Returns the geofence events fired.
    """
    now = now or utcnow()
    tracker = container.geofence_tracker
    fired: list[dict[str, Any]] = []
    with container.database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        # The context row first, as a batch does: a batch and a tick of one user never interleave.
        context = session.get(UserContext, user_id, with_for_update=True, populate_existing=True)
        if context is None or context.geofence_due_at is None or context.geofence_due_at > now:
            uow.commit()
            return []
        if not has_consent(session, user_id, "location"):
            context.geofence_due_at = None  # location withdrawn: no more geofence events for the user
            uow.commit()
            return []
        due = tracker.due_at(session, user_id)
        for _ in range(MAX_TICKS_PER_RUN):
            if due is None or due > now:
                break
            fired.extend(emit_geofence_triggers(uow, container, user_id, tracker.tick(session, user_id, due)))
            due = tracker.due_at(session, user_id)
        context.geofence_due_at = due
        uow.commit()
    return fired


def due_geofence_users(container: Any, now: datetime, limit: int) -> list[uuid.UUID]:
    """Users whose geofence timer is due at ``now``, the longest overdue first."""
    with container.database.session() as session:
        return list(session.scalars(
            select(UserContext.user_id).where(UserContext.geofence_due_at <= now)
            .order_by(UserContext.geofence_due_at).limit(limit)))
