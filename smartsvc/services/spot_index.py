"""Spot search on an in-process :class:`~geodata.index.SpotIndex` of the live parking layer.

The embedded (SQLite) path, and the fast path wherever it is chosen (see
:mod:`smartsvc.services.spots`). Each process — every API worker, every
Celery worker — holds its own index on its container and keeps it current by
itself: each search reads the layer's ``LiveLayer`` row (one primary-key
read) and rebuilds the index when the live dataset or its publish counter
changed. A lock makes concurrent requests build once; while a new version is
being built, the others keep answering from the previous one, which is
complete and consistent, instead of waiting. ``smartsvc api`` builds the
index once in the gunicorn master before forking (:func:`preload_spot_index`);
the workers start from that copy (:meth:`LiveSpotIndex.adopt`).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import shapely
from shapely.geometry import shape
from sqlalchemy import Text, bindparam, cast, select
from sqlalchemy.orm import Session

from geodata.fit import DEFAULT_FIT, FitConfig
from geodata.index import SpotIndex
from geodata.model import Rule, Spot, Vehicle
from geodata.search import SpotResult, find_spots, search

from ..db import Database
from ..models import LayerFeature
from .layers import LiveVersion, live_layer, public_id
from .spot_query import PARKING, SpotQuery, dataset_time_zone

# From this many spots an index build takes the index out of the cyclic collector's walks (gc.freeze).
_FREEZE_FROM_SPOTS = 50_000

log = logging.getLogger(__name__)


_LAYER_ROWS = (
    select(LayerFeature.seq, cast(LayerFeature.geometry, Text), cast(LayerFeature.properties, Text))
    .where(LayerFeature.dataset_id == bindparam("dataset_id"), LayerFeature.seq > bindparam("after"))
    .order_by(LayerFeature.seq)
    .limit(bindparam("batch"))
)


def read_layer_spots(session: Session, dataset_id: uuid.UUID, batch: int = 20_000) -> tuple[list[str], list[Spot]]:
    """Every feature of a dataset as public ids and spots, in ``seq`` order: what :func:`.layers.iter_spots` gives.

    Built for a million features per process start: the JSON is read as text, the
    geometries of a whole batch are parsed by GEOS in one call, and the rule lists
    (a few dozen distinct ones in a city) are parsed once each and shared by the
    spots that have them. About 4× faster than ``iter_spots`` (BENCHMARKS.md, 2).
    """
    ids: list[str] = []
    spots: list[Spot] = []
    rule_lists: dict[str, tuple[Rule, ...]] = {}
    loads, dumps = json.loads, json.dumps
    prefix = public_id(dataset_id, 0)[:-1]  # "<dataset>."
    after = -1
    while True:
        rows = session.execute(_LAYER_ROWS, {"dataset_id": dataset_id, "after": after, "batch": batch}).all()
        if not rows:
            return ids, spots
        texts = [row[1] for row in rows]
        try:
            geometries = list(shapely.from_geojson(texts))
        except shapely.errors.GEOSException:  # not written by our importer: the slow, forgiving way
            geometries = [shape(loads(text)) for text in texts]
        for (seq, _, properties_text), geometry in zip(rows, geometries):
            properties = loads(properties_text)
            raw = properties.get("rules") or ()
            key = dumps(raw)
            rules = rule_lists.get(key)
            if rules is None:
                rules = rule_lists[key] = tuple(Rule.from_dict(r) for r in raw)
            spots.append(Spot.from_properties(properties, geometry, rules=rules))
            ids.append(f"{prefix}{seq}")
        after = rows[-1][0]


@dataclass(frozen=True)
class IndexedLayer:
    """The index of one live version of a layer (``index`` None when nothing is live)."""

    dataset_id: uuid.UUID | None
    version: int
    index: SpotIndex | None

    def is_for(self, live: LiveVersion) -> bool:
        """True when this index was built from ``live``."""
        return (self.dataset_id, self.version) == (live.dataset_id, live.version)


class LiveSpotIndex:
    """The index of a layer's live version, rebuilt when a publish changes it."""

    def __init__(self, layer: str = PARKING, fit_config: FitConfig = DEFAULT_FIT) -> None:
        self.layer = layer
        self.fit_config = fit_config
        self._lock = threading.Lock()
        self._held: IndexedLayer | None = None

    def held_for(self, live: LiveVersion) -> IndexedLayer | None:
        """The index held for ``live`` when it is current (no database read, no build), else None."""
        held = self._held
        return held if held is not None and held.is_for(live) else None

    def adopt(self, layer: IndexedLayer) -> None:
        """Start from an index built elsewhere in this process's memory (the gunicorn master's, see
        :func:`preload_spot_index`): answered from as long as its version is live, rebuilt like any
        other index after a publish."""
        with self._lock:
            if self._held is None:
                self._held = layer

    def current(self, session: Session) -> IndexedLayer:
        """The index of the live version, built or rebuilt first when it is stale."""
        live = live_layer(session, self.layer)
        held = self._held
        if held is not None and held.is_for(live):
            return held
        # Only the first build makes requests wait; later ones are answered from the old version meanwhile.
        if not self._lock.acquire(blocking=held is None):
            assert held is not None
            return held
        try:
            held = self._held
            if held is not None and held.is_for(live):
                return held  # built by the request we waited for
            built = self._build(session, live)
            self._held = built
            return built
        finally:
            self._lock.release()

    def _build(self, session: Session, live: LiveVersion) -> IndexedLayer:
        if live.dataset_id is None:
            return IndexedLayer(None, live.version, None)
        started = time.perf_counter()
        zone = dataset_time_zone(session, live.dataset_id)
        # Millions of new objects: the cyclic GC would scan the growing heap again and again (a third of
        # the build at 100k spots, more at 1M). None of them form cycles; collect once afterwards.
        collecting = gc.isenabled()
        gc.disable()
        try:
            ids, spots = read_layer_spots(session, live.dataset_id)
            index = SpotIndex(spots, ids=ids, fit_config=self.fit_config,
                              timezones={str(live.dataset_id): zone}, default_timezone=zone)
            del ids, spots
        finally:
            if collecting:
                gc.enable()
        # The index lives as long as its version is live: keep the collector from walking it on every full
        # collection (at 1M spots one walk takes long enough to show in request latencies). What an earlier
        # build froze is released first, so a replaced index and anything else since gone are collected.
        if len(index) >= _FREEZE_FROM_SPOTS:
            # A full collection costs as much as the heap is big (seconds in a large process): only worth it
            # for an index big enough to slow the collector down. Frozen objects are still freed by their
            # reference counts (the index has no cycles), so a replaced index goes away either way.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        seconds = time.perf_counter() - started
        log.info("spot index of layer %s built: dataset %s, version %s, %d spots in %.1f s",
                 self.layer, live.dataset_id, live.version, len(index), seconds,
                 extra={"event": "spot_index_built", "layer": self.layer, "spots": len(index),
                        "build_s": round(seconds, 3), "pid": os.getpid()})
        return IndexedLayer(live.dataset_id, live.version, index)


def preload_spot_index(finder: object, database: Database) -> IndexedLayer | None:
    """Build the live layer's index now, in this process, when ``finder`` searches an in-process index.

    ``smartsvc api`` calls it in the gunicorn master before forking: every worker (and every worker
    recycled after ``max_requests``) inherits the built index copy-on-write instead of reading the
    whole layer again, and the compiled search. The database's connections are closed afterwards, so none crosses the fork.
    None for the PostGIS finder (nothing to build).
    """
    live_index = getattr(finder, "live_index", None)
    if not isinstance(live_index, LiveSpotIndex):
        return None
    try:
        with database.session() as session:
            layer = live_index.current(session)
        if layer is not None and layer.index is not None:
            layer.index.warm_up()  # the compiled search too, so no worker compiles it again
        return layer
    except Exception:  # the workers then build it themselves at their first search, as without preloading
        log.exception("could not build the spot index before starting the workers")
        return None
    finally:
        database.engine.dispose()


class IndexSpotFinder:
    """Finds spots with the process's :class:`LiveSpotIndex`."""

    name = "index"

    def __init__(self, live_index: LiveSpotIndex | None = None) -> None:
        self.live_index = live_index or LiveSpotIndex()

    def find(self, session: Session, query: SpotQuery, vehicle: Vehicle) -> list[SpotResult]:
        """The nearest spots the vehicle fits and may park at, nearest first."""
        return self._search(self.live_index.current(session), query, vehicle)

    def find_current(self, live: LiveVersion, query: SpotQuery, vehicle: Vehicle) -> Sequence[SpotResult] | None:
        """:meth:`find` without a session when the caller has just read ``live`` and the index held is
        for it; None when it is not (then :meth:`find` reads the live version again and rebuilds).

        The results as :class:`~geodata.search.FoundSpots` (made when read; the answer is written from its
        columns)."""
        layer = self.live_index.held_for(live)
        if layer is None:
            return None
        if layer.index is None:
            return []
        return find_spots(layer.index, query.lat, query.lon, query.radius_m, vehicle, query.at,
                          query.duration_min, query.limit)

    @staticmethod
    def _search(layer: IndexedLayer, query: SpotQuery, vehicle: Vehicle) -> list[SpotResult]:
        if layer.index is None:
            return []
        return search(layer.index, query.lat, query.lon, query.radius_m, vehicle, query.at, query.duration_min,
                      query.limit)
