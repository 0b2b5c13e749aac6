"""Geofences (operator): create, read, list, change and delete them.

Every write runs in one transaction that first bumps the ``geofence_versions``
counter: on PostgreSQL its row lock makes geofence writers take turns (so the
count and vertex budgets cannot be overrun by concurrent creates), and every
process learns from the new version that its in-memory index is stale (see
:mod:`smartsvc.services.geofence_index`). Validation is
:mod:`smartsvc.services.geofence_input`; a change (PATCH) is merged into the
stored fence and the result validated as a whole.

Geofences are in one operator namespace (see :mod:`smartsvc.models.geofences`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Mapping

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import Database
from ..errors import Conflict, NotFound
from ..models import GeofenceRecord, GeofenceVersion
from ..timeutil import utcnow
from .geofence_input import GeofenceRejected, ValidGeofence, validate_geofence
from .pagination import Page

log = logging.getLogger(__name__)

VERSION_ROW = 1
# A page of the list stops early past this many polygon vertices, so that a page of large
# polygons stays a few megabytes (the cursor continues where it stopped).
MAX_PAGE_VERTICES = 100_000


def bump_version(session: Session) -> None:
    """Count one more geofence change (in the caller's transaction), creating the counter row if it is gone."""
    now = utcnow()
    bumped = session.execute(
        update(GeofenceVersion).where(GeofenceVersion.id == VERSION_ROW)
        .values(version=GeofenceVersion.version + 1, changed_at=now)
    )
    if getattr(bumped, "rowcount", 1):
        return
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(GeofenceVersion).values(id=VERSION_ROW, version=0, changed_at=now)
                    .on_conflict_do_nothing(index_elements=["id"]))
    session.execute(
        update(GeofenceVersion).where(GeofenceVersion.id == VERSION_ROW)
        .values(version=GeofenceVersion.version + 1, changed_at=now)
    )


def _check_budgets(session: Session, settings: Settings, valid: ValidGeofence,
                   replacing: GeofenceRecord | None = None) -> None:
    """409 when the fence would pass the number of fences or the polygon vertices all fences may have."""
    count, vertices = session.execute(
        select(func.count(), func.coalesce(func.sum(GeofenceRecord.vertices), 0)).select_from(GeofenceRecord)
    ).one()
    if replacing is None and count >= settings.max_geofences:
        message = (f"there are {count:,} geofences, the limit (SMARTSVC_MAX_GEOFENCES); delete some first")
        raise Conflict(message, errors={"geofences": [message]})
    others = int(vertices) - (replacing.vertices if replacing is not None else 0)
    if valid.vertices and others + valid.vertices > settings.max_geofence_vertices_total:
        message = (f"all geofences together would have {others + valid.vertices:,} polygon vertices; the limit "
                   f"is {settings.max_geofence_vertices_total:,} (SMARTSVC_MAX_GEOFENCE_VERTICES_TOTAL)")
        raise Conflict(message, errors={"geometry": [message]})


def _apply(record: GeofenceRecord, valid: ValidGeofence) -> None:
    fields = valid.fields
    record.name = fields["name"]
    record.tag = fields["tag"]
    record.kind = valid.kind
    record.geometry = valid.geometry
    record.radius_m = valid.radius_m
    record.vertices = valid.vertices
    record.fence_metadata = fields["metadata"]
    record.schedule = fields["schedule"]
    record.time_zone = fields["time_zone"]
    record.country = fields["country"]
    record.dwell_s = fields["dwell_s"]
    record.hysteresis_m = fields["hysteresis_m"]
    record.enabled = fields["enabled"]
    record.notes = valid.notes


def create_geofence(database: Database, settings: Settings, fields: Mapping[str, Any], *,
                    created_by: str | None = None) -> GeofenceRecord:
    """Validate and store a geofence (fields as :mod:`~smartsvc.services.geofence_input` names them)."""
    valid = validate_geofence(fields, service_area=settings.service_area)
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        bump_version(session)  # first: the counter row lock serialises writers before the budgets are read
        _check_budgets(session, settings, valid)
        now = utcnow()
        record = GeofenceRecord(created_by=created_by, created_at=now, updated_at=now)
        _apply(record, valid)
        session.add(record)
        uow.commit()
    log.info("geofence created", extra={"geofence_id": str(record.id), "kind": record.kind,
                                        "vertices": record.vertices})
    return record


def get_geofence(database: Database, geofence_id: uuid.UUID) -> GeofenceRecord:
    """One geofence, or 404."""
    with database.session() as session:
        record = session.get(GeofenceRecord, geofence_id)
    if record is None:
        raise NotFound(f"geofence {geofence_id} does not exist")
    return record


def list_geofences(database: Database, *, tag: str | None = None, enabled: bool | None = None, limit: int,
                   cursor: uuid.UUID | None) -> Page[GeofenceRecord]:
    """Geofences in creation order, optionally with one tag and/or enabled or not.

    A page holds ``limit`` fences at most, fewer when their polygons pass
    :data:`MAX_PAGE_VERTICES` together (never fewer than one).
    """
    keys = select(GeofenceRecord.id, GeofenceRecord.vertices)
    if tag is not None:
        keys = keys.where(GeofenceRecord.tag == tag)
    if enabled is not None:
        keys = keys.where(GeofenceRecord.enabled == enabled)
    if cursor is not None:
        keys = keys.where(GeofenceRecord.id > cursor)
    with database.session() as session:
        rows = session.execute(keys.order_by(GeofenceRecord.id).limit(limit + 1)).all()
        chosen: list[uuid.UUID] = []
        budget = 0
        for row in rows[:limit]:
            if chosen and budget + row.vertices > MAX_PAGE_VERTICES:
                break
            chosen.append(row.id)
            budget += row.vertices
        records = {r.id: r for r in session.scalars(select(GeofenceRecord).where(GeofenceRecord.id.in_(chosen)))}
    more = len(rows) > len(chosen)
    items = [records[i] for i in chosen if i in records]  # one deleted between the two reads is left out
    return Page(items=items, next_after=chosen[-1] if more and chosen else None)


def stored_fields(record: GeofenceRecord) -> dict[str, Any]:
    """The stored fence as input fields (what a PATCH is merged into)."""
    fields: dict[str, Any] = {
        "name": record.name, "tag": record.tag, "metadata": dict(record.fence_metadata or {}),
        "schedule": record.schedule, "time_zone": record.time_zone, "country": record.country,
        "dwell_s": record.dwell_s, "hysteresis_m": record.hysteresis_m, "enabled": record.enabled,
    }
    if record.kind == "circle":
        lon, lat = record.geometry["coordinates"][:2]
        fields.update(center={"lat": lat, "lon": lon}, radius_m=record.radius_m)
    else:
        fields["geometry"] = record.geometry
    return fields


def merge_changes(stored: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``stored`` with ``changes`` applied; 422 when the changes describe only part of a new shape.

    The shape is replaced as a whole: ``center`` with ``radius_m`` (a circle)
    or ``geometry`` (an area), ``type`` only alongside them.
    """
    has_center, has_radius = "center" in changes, "radius_m" in changes
    if has_center != has_radius:
        missing = "radius_m" if has_center else "center"
        raise GeofenceRejected({missing: ["is required with " + ("center" if has_center else "radius_m")
                                          + ": a change of shape sends center and radius_m, or geometry"]})
    if "type" in changes and not (has_center or "geometry" in changes):
        raise GeofenceRejected({"type": ["is only accepted with the new shape (center and radius_m, or geometry)"]})
    merged = dict(stored)
    if has_center or "geometry" in changes:
        for name in ("center", "radius_m", "geometry", "type"):
            merged.pop(name, None)
    merged.update(changes)
    return merged


def update_geofence(database: Database, settings: Settings, geofence_id: uuid.UUID,
                    changes: Mapping[str, Any]) -> GeofenceRecord:
    """Apply a partial change (PATCH); the changed fence is validated as a whole, 404 when it does not exist."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        bump_version(session)  # the same lock order as create and delete: counter row, then the fence
        record = session.get(GeofenceRecord, geofence_id, with_for_update=True, populate_existing=True)
        if record is None:
            raise NotFound(f"geofence {geofence_id} does not exist")
        valid = validate_geofence(merge_changes(stored_fields(record), changes), service_area=settings.service_area)
        _check_budgets(session, settings, valid, replacing=record)
        _apply(record, valid)
        record.updated_at = utcnow()
        uow.commit()
    log.info("geofence updated", extra={"geofence_id": str(geofence_id), "fields": sorted(changes)})
    return record


def delete_geofence(database: Database, geofence_id: uuid.UUID) -> None:
    """Delete a geofence; users inside it are forgotten there without an exit event (the fence is gone)."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        bump_version(session)
        record = session.get(GeofenceRecord, geofence_id, with_for_update=True)
        if record is None:
            raise NotFound(f"geofence {geofence_id} does not exist")
        session.delete(record)
        uow.commit()
    log.info("geofence deleted", extra={"geofence_id": str(geofence_id)})


def geofence_version(session: Session) -> int:
    """The current geofence change counter (0 before any change)."""
    return session.scalar(select(GeofenceVersion.version).where(GeofenceVersion.id == VERSION_ROW)) or 0
