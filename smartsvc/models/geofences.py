"""Operator geofences, the counter that tells processes their in-memory index is stale, and users' geofence state.

Geofences live in one operator namespace: API.md has no tenants, and the
operator is one company whose keys come and go (a revoked key must not take
its fences with it), so every operator key sees and edits every fence;
``created_by`` only records which key made one.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, created_column, id_column

GEOFENCE_KINDS = ("circle", "polygon")


class GeofenceRecord(Base):
    """One geofence as stored: a circle (``center_*`` + ``radius_m``) or a Polygon/MultiPolygon ``geometry``.

    ``geometry`` is the GeoJSON as validated (and safely repaired) on save; for
    a circle it is the centre as a GeoJSON Point.
    """

    __tablename__ = "geofences"
    __table_args__ = (Index("ix_geofences_tag_id", "tag", "id"),)

    id: Mapped[uuid.UUID] = id_column()
    name: Mapped[str] = mapped_column(String(200))
    tag: Mapped[str | None] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(10))
    geometry: Mapped[dict[str, Any]] = mapped_column()
    radius_m: Mapped[float | None] = mapped_column(Float)
    # Positions of the polygon (0 for a circle): the in-memory index grows with them, so they are budgeted.
    vertices: Mapped[int] = mapped_column(Integer, default=0)
    # "metadata" is taken by SQLAlchemy's declarative base; the column keeps the API's name.
    fence_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    # OSM opening_hours, read in ``time_zone`` (``country`` makes PH, public holidays, work).
    schedule: Mapped[str | None] = mapped_column(Text)
    time_zone: Mapped[str] = mapped_column(String(64))
    country: Mapped[str | None] = mapped_column(String(2))
    dwell_s: Mapped[int | None] = mapped_column(Integer)
    hysteresis_m: Mapped[float] = mapped_column(Float)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # What the last save repaired or ignored ([{field, message}]), so the operator can see it later.
    notes: Mapped[list[Any]] = mapped_column(default=list)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = created_column()


class GeofenceVersion(Base):
    """One row whose ``version`` grows with every geofence create, update and delete (same transaction).

    Each process compares it (one primary-key read) with the version its
    in-memory index was built from, like ``live_layers.version``.
    """

    __tablename__ = "geofence_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    changed_at: Mapped[datetime | None] = mapped_column()


class UserGeofenceState(Base):
    """Which fences a user is inside and since when, as :mod:`geodata.geofences.machine` serializes it."""

    __tablename__ = "user_geofence_states"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column()
    updated_at: Mapped[datetime] = created_column()
