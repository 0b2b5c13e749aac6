"""A per-process :class:`~geodata.geofences.GeofenceIndex` of the enabled geofences, kept current by each process.

Like :mod:`smartsvc.services.spot_index`: every process (API worker, Celery
worker) holds the index on its container; each use reads the
``geofence_versions`` counter (one primary-key read) and rebuilds the index
when a geofence was created, changed or deleted since. A lock makes
concurrent callers build once; while a new version is being built, the others
keep evaluating against the previous one, which is complete and consistent,
instead of waiting (only the very first build makes callers wait).

Stored fences were validated when saved, so they are loaded as they are (no
second validation); a fence whose schedule this version of the evaluator
cannot compile is left out of the index with a warning rather than failing
every evaluation.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from shapely.geometry import shape
from sqlalchemy import select
from sqlalchemy.orm import Session

from geodata.allowed import compile_when
from geodata.geofences import Geofence, GeofenceIndex

from ..models import GeofenceRecord
from .geofences import geofence_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexedFences:
    """The index of the enabled geofences as of one value of the change counter."""

    version: int
    index: GeofenceIndex


_COLUMNS = (GeofenceRecord.id, GeofenceRecord.kind, GeofenceRecord.geometry, GeofenceRecord.radius_m,
            GeofenceRecord.schedule, GeofenceRecord.time_zone, GeofenceRecord.country, GeofenceRecord.dwell_s,
            GeofenceRecord.hysteresis_m, GeofenceRecord.tag, GeofenceRecord.fence_metadata)


def fence_of(record: Any) -> Geofence:
    """The :class:`~geodata.geofences.Geofence` a stored fence describes (a record, or a row of its columns).

    Its id is the record's id as text.
    """
    common = dict(schedule=record.schedule, timezone=record.time_zone, country=record.country,
                  dwell_s=float(record.dwell_s) if record.dwell_s is not None else None,
                  hysteresis_m=record.hysteresis_m, tag=record.tag, metadata=dict(record.fence_metadata or {}))
    if record.kind == "circle":
        lon, lat = record.geometry["coordinates"][:2]
        return Geofence.circle(str(record.id), lat, lon, record.radius_m or 0.0, **common)
    return Geofence(str(record.id), shape(record.geometry), **common)


def iter_enabled_fences(session: Session, batch: int = 2000) -> Iterator[Geofence]:
    """Every enabled geofence, read in batches in id order.

    Columns, not ORM objects: nothing lands in the caller's session, whose
    transaction this may run in.
    """
    last = None
    while True:
        query = select(*_COLUMNS).where(GeofenceRecord.enabled.is_(True))
        if last is not None:
            query = query.where(GeofenceRecord.id > last)
        rows = session.execute(query.order_by(GeofenceRecord.id).limit(batch)).all()
        if not rows:
            return
        for row in rows:
            yield fence_of(row)
        last = rows[-1].id


class LiveGeofenceIndex:
    """The index of the enabled geofences, rebuilt when the change counter moves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: IndexedFences | None = None

    def current(self, session: Session) -> IndexedFences:
        """The index for the current counter, built or rebuilt first when it is stale."""
        version = geofence_version(session)
        held = self._held
        if held is not None and held.version == version:
            return held
        # Only the first build makes callers wait; later ones are answered from the old index meanwhile.
        if not self._lock.acquire(blocking=held is None):
            assert held is not None
            return held
        try:
            held = self._held
            if held is not None and held.version == version:
                return held  # built by the caller we waited for
            built = self._build(session, version)
            self._held = built
            return built
        finally:
            self._lock.release()

    def _build(self, session: Session, version: int) -> IndexedFences:
        started = time.perf_counter()
        fences = []
        schedules: dict[tuple[str, str, str | None], bool] = {}
        for fence in iter_enabled_fences(session):
            if fence.schedule is not None and not _compiles(schedules, fence):
                log.warning("geofence left out of the index: its schedule cannot be evaluated",
                            extra={"geofence_id": fence.id, "schedule": fence.schedule})
                continue
            fences.append(fence)
        index = GeofenceIndex(fences)
        seconds = time.perf_counter() - started
        log.info("geofence index built: version %s, %d fences in %.2f s", version, len(index), seconds,
                 extra={"event": "geofence_index_built", "version": version, "fences": len(index),
                        "build_s": round(seconds, 3), "pid": os.getpid()})
        return IndexedFences(version, index)


def _compiles(seen: dict[tuple[str, str, str | None], bool], fence: Geofence) -> bool:
    assert fence.schedule is not None
    key = (fence.schedule, fence.timezone, fence.country)
    if key not in seen:
        try:
            compile_when(*key)
            seen[key] = True
        except Exception:  # the evaluator raises different types depending on version
            seen[key] = False
    return seen[key]
