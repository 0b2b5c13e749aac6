"""Enter, exit and dwell events from a user's location fixes: a pure function over plain-dict state.

``step(index, state, fix)`` returns the new state and the events
(``geofence.entered``, ``geofence.exited``, ``geofence.dwelled``); ``tick(index,
state, at)`` lets time pass without a fix (dwell timers, schedules closing);
``due_at(index, state)`` says when a tick would next have something to do.
The state is JSON-able (strings, booleans, ``None``) so the service can keep
it in a database column; functions never modify the state they are given
(the new state may share unchanged per-fence records with it).

The rules, and why:

- **Order.** The caller processes a user's fixes in ``at`` order. A fix (or
  tick) not later than the last one processed is ignored — no events, state
  unchanged — so duplicates and late arrivals never move anyone backwards in
  time. (The service decides which late events to store; the machine never
  rewrites history.)
- **Hysteresis.** Each fix has a *band* ``max(fence.hysteresis_m,
  fix.accuracy_m)``: an imprecise fix widens it. Someone outside enters when
  the fix is inside the fence by at least the band; someone inside exits
  when the fix is outside by at least the band. Between the two nothing
  changes, so GPS jitter around a boundary produces no enter/exit storm.
- **Tiny fences.** A fence too small to be a band deep inside (a 10 m
  circle and a 20 m band) would be impossible to enter; the depth asked for
  is therefore capped at half the fence's own depth (its radius, or for a
  polygon the radius of its largest inscribed circle): enter within the
  inner half of a small fence. Exiting still needs the full band outside.
- **Accuracy.** A fix whose ``accuracy_m`` is worse than
  ``max_accuracy_m`` (default 100 m; also a negative or non-finite value) is
  too coarse to move anyone in or out: it counts as time passing (dwell,
  schedules) but not as a position. A fix without ``accuracy_m`` is taken as
  precise.
- **Schedules.** A fence with a schedule exists only while it is open. While
  closed it produces no ``entered``; someone inside when it closes gets
  ``exited`` with ``reason: "closed"`` at the first fix or tick after the
  closing (their "inside since" ends; if the fence reopens while they are
  still inside, a new fix enters them again).
- **Dwell.** ``geofence.dwelled`` fires once per stay, at the first fix or
  tick at least ``dwell_s`` after entering while still inside (``dwell_s: 0``
  fires together with ``entered``). The event's ``at`` is that fix or tick;
  ``inside_since`` says when the stay began.
- **Deleted fences.** A fence the user is inside that is no longer in the
  index is forgotten without an event (the operator removed it; there is
  nothing to exit).

Per fence the state keeps only stays in progress:
``{"inside_since", "dwelled", "last_transition": {"type", "at"}}``; an exit
removes the entry (the exit is the event).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from geodata.geofences.index import GeofenceIndex
from geodata.geofences.model import DEFAULT_MAX_ACCURACY_M, Geofence

ENTERED = "geofence.entered"
EXITED = "geofence.exited"
DWELLED = "geofence.dwelled"
STATE_VERSION = 1
_ORDER = {EXITED: 0, ENTERED: 1, DWELLED: 2}


@dataclass(frozen=True, slots=True)
class Fix:
    """One location fix: where, when (timezone-aware) and how precise (metres, 68 % radius as phones report it)."""

    lat: float
    lon: float
    at: datetime
    accuracy_m: float | None = None


@dataclass(frozen=True, slots=True)
class MachineConfig:
    """Settings of the state machine."""

    max_accuracy_m: float = DEFAULT_MAX_ACCURACY_M


DEFAULT_CONFIG = MachineConfig()


@dataclass(frozen=True, slots=True)
class GeofenceEvent:
    """``geofence.entered`` / ``exited`` / ``dwelled`` for one fence.

    ``reason`` is set on exits: ``"left"`` (the fix was outside) or
    ``"closed"`` (the fence's schedule closed). ``distance_m`` is the signed
    distance to the boundary at the fix (negative inside; ``None`` when no
    position decided it).
    """

    type: str
    fence_id: str
    at: datetime
    inside_since: datetime | None = None
    reason: str | None = None
    distance_m: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (ISO 8601 times in UTC)."""
        out: dict[str, Any] = {"type": self.type, "fence_id": self.fence_id, "at": _iso(self.at)}
        if self.inside_since is not None:
            out["inside_since"] = _iso(self.inside_since)
        if self.reason is not None:
            out["reason"] = self.reason
        if self.distance_m is not None and math.isfinite(self.distance_m):
            out["distance_m"] = round(self.distance_m, 2)
        return out


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat()


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _aware(at: datetime, what: str) -> datetime:
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return at.astimezone(timezone.utc)


def new_state() -> dict[str, Any]:
    """The state of a user nothing is known about yet."""
    return {"v": STATE_VERSION, "last_at": None, "fences": {}}


def _load(state: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of a stored state to work on: its own outer dicts; per-fence records are shared and
    replaced, never modified, so the caller's state is left as it was."""
    if not state:
        return new_state()
    if state.get("v") != STATE_VERSION:
        raise ValueError(f"unknown geofence state version {state.get('v')!r} (expected {STATE_VERSION})")
    return {"v": STATE_VERSION, "last_at": state.get("last_at"), "fences": dict(state.get("fences") or {})}


def inside(state: Mapping[str, Any] | None) -> dict[str, datetime]:
    """The fences the user is inside, with since when (for the user's context)."""
    if not state:
        return {}
    return {fid: _time(rec["inside_since"]) for fid, rec in (state.get("fences") or {}).items()}


def _is_stale(st: dict[str, Any], at: datetime) -> bool:
    last = st["last_at"]
    return last is not None and at <= _time(last)


def _dwell(fence: Geofence, fid: str, fences: dict[str, Any], at: datetime, events: list[GeofenceEvent]) -> None:
    rec = fences[fid]
    if fence.dwell_s is None or rec["dwelled"]:
        return
    since = _time(rec["inside_since"])
    if (at - since).total_seconds() >= fence.dwell_s:
        fences[fid] = {**rec, "dwelled": True, "last_transition": {"type": DWELLED, "at": _iso(at)}}
        events.append(GeofenceEvent(DWELLED, fid, at, inside_since=since))


def _exit(fences: dict[str, Any], fid: str, at: datetime, reason: str, events: list[GeofenceEvent],
          distance: float | None = None) -> None:
    rec = fences.pop(fid)
    if distance is not None and not math.isfinite(distance):
        distance = None
    events.append(GeofenceEvent(EXITED, fid, at, inside_since=_time(rec["inside_since"]), reason=reason,
                                distance_m=distance))


def _time_passes(index: GeofenceIndex, fences: dict[str, Any], at: datetime, events: list[GeofenceEvent]) -> None:
    """What happens at ``at`` without a usable position: schedules close, dwell timers run out."""
    for fid in list(fences):
        fence = index.get(fid)
        if fence is None:
            del fences[fid]
        elif fence.schedule is not None and not fence.is_active(at):
            _exit(fences, fid, at, "closed", events)
        else:
            _dwell(fence, fid, fences, at, events)


def _sorted(events: list[GeofenceEvent]) -> list[GeofenceEvent]:
    return sorted(events, key=lambda e: (_ORDER[e.type], e.fence_id))


def step(index: GeofenceIndex, state: Mapping[str, Any] | None, fix: Fix,
         config: MachineConfig = DEFAULT_CONFIG) -> tuple[dict[str, Any], list[GeofenceEvent]]:
    """The new state and the events after one fix (exits first, then entries, then dwells; by fence id)."""
    at = _aware(fix.at, "fix.at")
    st = _load(state)
    if _is_stale(st, at):
        return st, []
    st["last_at"] = _iso(at)
    events: list[GeofenceEvent] = []
    fences = st["fences"]
    acc = fix.accuracy_m
    if acc is not None and not (0 <= acc <= config.max_accuracy_m):
        # Too coarse (or nonsense) to place the user: only time passes.
        _time_passes(index, fences, at, events)
        return st, _sorted(events)
    acc = 0.0 if acc is None else float(acc)
    ev = index.evaluate(fix.lat, fix.lon, max(index.max_hysteresis_m, acc))
    near = dict(zip(ev.positions.tolist(), zip(ev.inside.tolist(), ev.signed_m.tolist())))
    for fid in list(fences):
        pos = index.position(fid)
        if pos is None:
            del fences[fid]
            continue
        fence = index.fences[pos]
        if fence.schedule is not None and not fence.is_active(at):
            _exit(fences, fid, at, "closed", events)
            continue
        signed = near.get(pos, (False, math.inf))[1]
        if signed > 0 and signed >= max(fence.hysteresis_m, acc):
            _exit(fences, fid, at, "left", events, signed)
        elif fence.dwell_s is not None and not fences[fid]["dwelled"]:
            _dwell(fence, fid, fences, at, events)
    ids = index.ids
    for pos, (is_inside, signed) in near.items():
        if not is_inside or ids[pos] in fences:
            continue
        fence = index.fences[pos]
        band = max(fence.hysteresis_m, acc)
        depth = -signed
        # Only fences too small to be a band deep need their own depth (computed on first use).
        if depth < band and depth < 0.5 * index.depth_m(pos):
            continue
        if fence.schedule is not None and not fence.is_active(at):
            continue
        fid = ids[pos]
        since = _iso(at)
        fences[fid] = {"inside_since": since, "dwelled": False, "last_transition": {"type": ENTERED, "at": since}}
        events.append(GeofenceEvent(ENTERED, fid, at, inside_since=at,
                                    distance_m=signed if math.isfinite(signed) else None))
        _dwell(fence, fid, fences, at, events)
    return st, _sorted(events)


def tick(index: GeofenceIndex, state: Mapping[str, Any] | None, at: datetime,
         config: MachineConfig = DEFAULT_CONFIG) -> tuple[dict[str, Any], list[GeofenceEvent]]:
    """Let time pass until ``at`` without a fix: dwell events come due, closing schedules exit people.

    A tick is processed like a fix in the user's timeline: a later-arriving
    fix older than ``at`` is ignored.
    """
    at = _aware(at, "at")
    st = _load(state)
    if _is_stale(st, at):
        return st, []
    st["last_at"] = _iso(at)
    events: list[GeofenceEvent] = []
    _time_passes(index, st["fences"], at, events)
    return st, _sorted(events)


def due_at(index: GeofenceIndex, state: Mapping[str, Any] | None) -> datetime | None:
    """The earliest moment a :func:`tick` would produce an event (a dwell due, a schedule closing), or None."""
    if not state or not state.get("fences") or state.get("last_at") is None:
        return None
    last = _time(state["last_at"])
    best: datetime | None = None
    for fid, rec in state["fences"].items():
        fence = index.get(fid)
        if fence is None:
            continue
        if fence.dwell_s is not None and not rec.get("dwelled"):
            due = max(_time(rec["inside_since"]) + timedelta(seconds=fence.dwell_s), last + timedelta(microseconds=1))
            best = due if best is None else min(best, due)
        change = fence.next_change(last)
        if change is not None:
            change = max(change, last + timedelta(microseconds=1))
            best = change if best is None else min(best, change)
    return best
