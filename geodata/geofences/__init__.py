"""Geofences: the model, an index that evaluates a point against 100k+ fences, and the
enter/exit/dwell state machine (SUGGESTIONS.md "Geofences") — no Flask, no database.

Modules, one job each:

- :mod:`geodata.geofences.model` — ``Geofence`` and ``parse_geofence`` (validation with per-field issues).
- :mod:`geodata.geofences.index` — ``GeofenceIndex.evaluate(lat, lon)``: inside flags and signed distances
  to the boundary of every fence near a point; ``evaluate_many`` for a batch of points.
- :mod:`geodata.geofences.build` — the index's tables and grids, built from the fences' geometries.
- :mod:`geodata.geofences.grid` — the per-cell boundary pieces and polygon lists behind the index.
- :mod:`geodata.geofences.rings` — polygon rings as flat arrays, their segments and boundary pieces.
- :mod:`geodata.geofences.machine` — ``step(index, state, fix)``: enter/exit/dwell events from a location
  fix over a plain-dict state; ``tick`` and ``due_at`` for time passing without fixes.
"""

from geodata.geofences.index import Evaluation, Evaluations, GeofenceIndex
from geodata.geofences.machine import (
    DWELLED, ENTERED, EXITED, Fix, GeofenceEvent, MachineConfig, due_at, inside, new_state, step, tick,
)
from geodata.geofences.model import (
    DEFAULT_HYSTERESIS_M, DEFAULT_MAX_ACCURACY_M, Geofence, GeofenceInvalid, GeofenceLimits, parse_geofence,
)

__all__ = [
    "DEFAULT_HYSTERESIS_M", "DEFAULT_MAX_ACCURACY_M", "DWELLED", "ENTERED", "EXITED", "Evaluation", "Evaluations",
    "Fix", "Geofence", "GeofenceEvent", "GeofenceIndex", "GeofenceInvalid", "GeofenceLimits", "MachineConfig",
    "due_at", "inside", "new_state", "parse_geofence", "step", "tick",
]
