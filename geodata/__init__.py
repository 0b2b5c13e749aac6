"""Geodata library: parsers, validation, the normalized spot model, fit and
allowed-now rules, and the spatial index — no Flask, no database.

Modules, one job each:

- :mod:`geodata.model` — ``Spot``, ``Rule``, ``Rate``, ``Vehicle`` and the normalized property names.
- :mod:`geodata.readers` — ``open_reader(fp, fmt=None, options)``: streaming GeoJSON, CSV, OSM,
  CurbLR and CDS readers with format detection (:mod:`geodata.readers.detect`).
- :mod:`geodata.validate` — per-feature ``Issue``, ``Limits``, geometry checks and safe repair.
- :mod:`geodata.normalize` — untrusted normalized properties → ``Spot`` with issues.
- :mod:`geodata.units` — lengths, weights, durations and power from text.
- :mod:`geodata.fit` — does a vehicle fit, how many of it, and why.
- :mod:`geodata.allowed` — may the public park from ``at`` for ``d`` minutes (opening_hours rules).
- :mod:`geodata.geo` — geodesic lengths and distances, vectorised.
- :mod:`geodata.index` — ``SpotIndex``: a grid index whose query cost follows the hits.
- :mod:`geodata.search` — ``search(index, lat, lon, radius_m, vehicle, at, duration_min, limit)``.
- :mod:`geodata.results` — ``SpotResult`` and a search's results, and the API's dicts of them.
- :mod:`geodata.candidates` — ``CandidateJudge``: search's decision for spots found elsewhere (PostGIS).
"""

from geodata.allowed import Decision, RuleSet, evaluate
from geodata.fit import FitConfig, FitResult, fit
from geodata.index import SpotIndex
from geodata.model import Rate, Rule, Spot, Vehicle
from geodata.readers import FeatureResult, ReadOptions, open_reader
from geodata.search import SpotResult, search
from geodata.validate import FormatError, Issue, LimitExceeded, Limits

__all__ = [
    "Decision", "FeatureResult", "FitConfig", "FitResult", "FormatError", "Issue", "LimitExceeded", "Limits",
    "Rate", "ReadOptions", "Rule", "RuleSet", "Spot", "SpotIndex", "SpotResult", "Vehicle", "evaluate", "fit",
    "open_reader", "search",
]
