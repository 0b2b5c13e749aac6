"""Fit and allowed-now for spots handed over one at a time (candidates from a database).

:func:`geodata.search.search` decides over a :class:`~geodata.index.SpotIndex`
with vectorised arrays; :class:`CandidateJudge` takes the same decision for
spots found elsewhere (PostGIS ``ST_DWithin`` candidates, say), from the same
functions: :func:`geodata.fit.max_length_m` and the legal limits for fit,
:func:`geodata.fit.spaces_for_vehicle`, and :class:`geodata.allowed.RuleSet`
for allowed-now — so both ways give identical answers. Its results are
:class:`~geodata.search.SpotResult` objects, serialised by the same ``to_dict``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Mapping

from geodata.allowed import Decision, RuleSet
from geodata.fit import DEFAULT_FIT, FitConfig, max_length_m, spaces_for_vehicle
from geodata.model import Rule, Spot, Vehicle
from geodata.search import SpotResult


# Decisions kept per process across judges, by (rule list, zone, country, start, duration): the
# same few rule lists come back with every search near the same streets. Bounded; emptied when full.
_DECISIONS_MAX = 20_000
_decisions: dict[tuple[tuple[Rule, ...], str, str | None, datetime, float], Decision | None] = {}


def _limit(value: float | None) -> float:
    return math.inf if value is None else value


def _shared_decision(rules: tuple[Rule, ...], zone: str, country: str | None, at: datetime,
                     duration_min: float) -> Decision | None:
    """Allowed-now of a rule list for a stay (None: no rule ever permits public parking), kept per process."""
    key = (rules, zone, country, at, duration_min)
    try:
        return _decisions[key]
    except KeyError:
        pass
    ruleset = RuleSet(rules, zone, country)
    decision = None if ruleset.never else ruleset.evaluate(at, duration_min)
    if len(_decisions) >= _DECISIONS_MAX:
        _decisions.clear()
    _decisions[key] = decision
    return decision


class CandidateJudge:
    """Decides, spot by spot, what :func:`geodata.search.search` decides over an index.

    One judge serves one query (a vehicle, a start and a duration); it
    decides each distinct rule list once per stay (kept per process, shared by judges).
    ``timezones``/``countries`` map a spot's ``source_dataset`` to its IANA
    zone and ISO country, as for :class:`~geodata.index.SpotIndex`.
    """

    def __init__(
        self,
        vehicle: Vehicle,
        at: datetime,
        duration_min: float,
        *,
        timezones: Mapping[str, str] | None = None,
        default_timezone: str = "UTC",
        countries: Mapping[str, str] | None = None,
        fit_config: FitConfig = DEFAULT_FIT,
    ) -> None:
        self.vehicle = vehicle
        self.at = at
        self.duration_min = duration_min
        # SpotResult reads ``fit_config`` from the object it is given as its index.
        self.fit_config = fit_config
        self._timezones = timezones or {}
        self._default_timezone = default_timezone
        self._countries = countries or {}
        self._width = _limit(vehicle.width_m)
        self._height = _limit(vehicle.height_m)
        self._weight = _limit(vehicle.weight_kg)

    def fits(self, spot: Spot) -> bool:
        """Whether the vehicle fits: the geometric rule and every legal limit (as the index decides it)."""
        return (
            max_length_m(spot, self.fit_config) >= self.vehicle.length_m
            and _limit(spot.max_vehicle_width_m) >= self._width
            and _limit(spot.max_vehicle_height_m) >= self._height
            and _limit(spot.max_vehicle_weight_kg) >= self._weight
        )

    def decision(self, spot: Spot) -> Decision | None:
        """Allowed-now for the spot's rules in its dataset's zone; None when no rule ever permits public parking."""
        zone = self._timezones.get(spot.source_dataset or "", self._default_timezone)
        country = self._countries.get(spot.source_dataset or "")
        return _shared_decision(spot.rules, zone, country, self.at, self.duration_min)

    def judge(self, id: str, spot: Spot, distance_m: float) -> SpotResult | None:
        """The result for a spot the vehicle fits and may park at for the whole stay, else None."""
        if not self.fits(spot):
            return None
        decision = self.decision(spot)
        if decision is None or not decision.allowed:
            return None
        spaces = spaces_for_vehicle(spot, self.vehicle.length_m, self.fit_config)
        return SpotResult(id, spot, distance_m, spaces, decision, self.vehicle, self)  # type: ignore[arg-type]
