"""The spot search's hot loop, compiled with Numba: window, distance, fit and rule state in one pass.

:func:`geodata.search.search` over a :class:`~geodata.index.SpotIndex` costs
about forty NumPy calls when done with array operations; at city densities
(a few hundred hits per query) their call overhead, not the data, is most of
the time. :func:`nearest_allowed` does the same work in one compiled call:
it finds the rows of grid cells in the query window, takes each candidate's
fit limits and rule-list state first (cheap, and most refusals), then its
exact distance (the mean-latitude plane of :mod:`geodata.geo`, nearest point
of each segment, 0 inside a polygon), keeps those within the radius and, as
they come, the nearest allowed ones. Only when a rule list not decided yet
for the stay lies among those are all hits sorted by distance, for the caller
to decide (sorting a few hundred hits was ~40 % of a warm call).

The array path in :mod:`geodata.index` stays the reference: a unit test
compares both on random layers (``tests/unit/test_search_kernel.py``).
Without Numba (or with ``NUMBA_DISABLE_JIT``) the search takes that path.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Callable

import numpy as np

from geodata.geo import plane_coefficients

UNKNOWN, ALLOWED, REFUSED = 0, 1, 2


_plane = plane_coefficients  # compiled by _compile()


def _lower_bound(keys, value):
    lo, hi = 0, len(keys)
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _upper_bound(keys, value):
    lo, hi = 0, len(keys)
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] <= value:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _row_ranges(keys, levels, lat, lon, dlat, dlon):
    """Spot position ranges [lo, hi) of every row of cells in the window, all levels (see ``SpotIndex._row_bounds``)."""
    lat0 = max(lat - dlat, -90.0)
    lat1 = min(lat + dlat, 90.0)
    n_levels = levels.shape[0]
    total = 0
    for k in range(n_levels):
        cell, nrows, pad_lat = levels[k, 0], levels[k, 2], levels[k, 4]
        r0 = max(int((lat0 - pad_lat + 90.0) // cell), 0)
        r1 = min(int((lat1 + pad_lat + 90.0) // cell), int(nrows) - 1)
        if r1 >= r0:
            total += (r1 - r0 + 1) * 2
    lo = np.empty(total, dtype=np.int64)
    hi = np.empty(total, dtype=np.int64)
    m = 0
    for k in range(n_levels):
        cell, ncols, nrows = levels[k, 0], int(levels[k, 1]), int(levels[k, 2])
        base, pad_lat, pad_lon = int(levels[k, 3]), levels[k, 4], levels[k, 5]
        r0 = max(int((lat0 - pad_lat + 90.0) // cell), 0)
        r1 = min(int((lat1 + pad_lat + 90.0) // cell), nrows - 1)
        lo_lon = lon - dlon - pad_lon
        hi_lon = lon + dlon + pad_lon
        # Up to two spans of columns (the window may cross the antimeridian).
        a0, a1, b0, b1 = 0, ncols - 1, 1, 0  # b: empty unless wrapping
        if hi_lon - lo_lon < 360.0:
            c0 = int((lo_lon + 180.0) // cell)
            c1 = int((hi_lon + 180.0) // cell)
            if c0 < 0:
                a0, a1, b0, b1 = c0 + ncols, ncols - 1, 0, c1
            elif c1 >= ncols:
                a0, a1, b0, b1 = c0, ncols - 1, 0, c1 - ncols
            else:
                a0, a1 = c0, c1
        for r in range(r0, r1 + 1):
            row = base + r * ncols
            lo[m] = _lower_bound(keys, row + a0)
            hi[m] = _upper_bound(keys, row + a1)
            m += 1
            if b1 >= b0:
                lo[m] = _lower_bound(keys, row + b0)
                hi[m] = _upper_bound(keys, row + b1)
                m += 1
    return lo[:m], hi[:m]


def _window(lat, radius_m):
    """Half sizes (degrees of latitude, of longitude) of the query circle's bbox, as ``SpotIndex._window``."""
    dlat = radius_m / _plane(lat)[2]  # metres per degree of latitude
    lat0 = max(lat - dlat, -90.0)
    lat1 = min(lat + dlat, 90.0)
    m_lon = _plane(max(abs(lat0), abs(lat1)))[0]  # metres per degree of longitude there
    dlon = 360.0 if m_lon * 360.0 <= radius_m * 2 else radius_m / m_lon
    return dlat, dlon


def _spaces(p, parallel, length, capacity, margin, vehicle_length):
    """Vehicles like this one spot ``p`` holds (``geodata.fit.spaces_for_vehicle``)."""
    cap = capacity[p]
    if parallel[p]:
        count = np.floor((length[p] + margin) / (vehicle_length + margin) + 1e-9)
        return int(count if np.isnan(cap) else min(count, cap))
    return 1 if np.isnan(cap) else int(cap)


def _nearest_allowed(keys, levels, seg_bounds, segments, is_polygon, fit_limits, need, ruleset_id, states,
                     parallel, length, capacity, margin, lat, lon, radius_m, limit):
    """The search's candidates, nearest first, and how many of them answer it.

    Returns ``(positions, d2, rulesets, spaces, k)``. When ``k >= 0`` the first ``k``
    entries are the answer: the ``limit`` nearest spots within the radius that
    the vehicle (``need``: length, width, height, weight) fits and whose rule
    list is allowed for the stay, with the spaces for the vehicle in each
    (``geodata.fit.spaces_for_vehicle``: ``parallel`` curbs hold
    ``(length + margin) / (vehicle + margin)``, at most ``capacity``). ``k == -1``
    means a rule list not decided yet for this stay came first; the arrays
    then hold every fitting hit not known to be refused, nearest first, and
    the caller decides the unknown ones and picks the answer.
    """
    dlat, dlon = _window(lat, radius_m)
    a, b, c, d = _plane(lat)
    wrap = abs(lon) > 170.0 or abs(lat) > 80.0
    radius2 = radius_m * radius_m
    lo, hi = _row_ranges(keys, levels, lat, lon, dlat, dlon)
    total = 0
    for i in range(len(lo)):
        total += hi[i] - lo[i]
    pos = np.empty(total, dtype=np.int64)
    d2s = np.empty(total, dtype=np.float64)
    n = 0
    # As the hits come: the ``limit`` nearest allowed ones, kept sorted (a tie goes to the earlier hit, as
    # in the stable sort below), and the nearest hit whose rule list is not decided yet. Most searches are
    # answered from these alone, without sorting every hit.
    top = np.empty(max(limit, 1), dtype=np.int64)
    m = 0
    unknown = -1
    for i in range(len(lo)):
        for p in range(lo[i], hi[i]):
            if not (fit_limits[p, 0] >= need[0] and fit_limits[p, 1] >= need[1]
                    and fit_limits[p, 2] >= need[2] and fit_limits[p, 3] >= need[3]):
                continue
            if states[ruleset_id[p]] == REFUSED:
                continue
            best = np.inf
            for s in range(seg_bounds[p], seg_bounds[p + 1]):
                # geodata.geo.segment_distance2, one segment at a time.
                dlat_a = segments[0, s] - lat
                dlon_a = segments[1, s] - lon
                dlat_b = segments[2, s] - lat
                dlon_b = segments[3, s] - lon
                if wrap:
                    dlon_a = (dlon_a + 180.0) % 360.0 - 180.0
                    dlon_b = (dlon_b + 180.0) % 360.0 - 180.0
                ax = (dlat_a * b + a) * dlon_a
                ay = (dlat_a * d + c) * dlat_a
                bx = (dlat_b * b + a) * dlon_b
                by = (dlat_b * d + c) * dlat_b
                dx = bx - ax
                dy = by - ay
                len2 = max(dx * dx + dy * dy, 1e-12)
                u = min(max((ax * dx + ay * dy) / len2, -1.0), 0.0)
                px = ax - dx * u
                py = ay - dy * u
                dist2 = px * px + py * py
                if dist2 < best:
                    best = dist2
            if best > 0.0 and is_polygon[p]:
                # Even-odd crossings over all the polygon's rings: inside means distance 0.
                inside = False
                for s in range(seg_bounds[p], seg_bounds[p + 1]):
                    ya, xa, yb, xb = segments[0, s], segments[1, s], segments[2, s], segments[3, s]
                    if (ya > lat) != (yb > lat):
                        if lon < (xb - xa) * (lat - ya) / (yb - ya) + xa:
                            inside = not inside
                if inside:
                    best = 0.0
            if best <= radius2:
                pos[n] = p
                d2s[n] = best
                state = states[ruleset_id[p]]
                if state == ALLOWED:
                    if m < limit or best < d2s[top[m - 1]]:
                        q = m if m < limit else limit - 1
                        while q > 0 and d2s[top[q - 1]] > best:
                            top[q] = top[q - 1]
                            q -= 1
                        top[q] = n
                        if m < limit:
                            m += 1
                elif state == UNKNOWN and (unknown < 0 or best < d2s[unknown]):
                    unknown = n
                n += 1
    if unknown < 0 or (m == limit and (d2s[top[m - 1]] < d2s[unknown]
                                       or (d2s[top[m - 1]] == d2s[unknown] and top[m - 1] < unknown))):
        # No undecided rule list before the last answer: the answer is the kept hits.
        out_pos = np.empty(m, dtype=np.int64)
        out_d2 = np.empty(m, dtype=np.float64)
        out_rs = np.empty(m, dtype=np.int64)
        spaces = np.empty(m, dtype=np.int64)
        for k in range(m):
            p = pos[top[k]]
            out_pos[k], out_d2[k], out_rs[k] = p, d2s[top[k]], ruleset_id[p]
            spaces[k] = _spaces(p, parallel, length, capacity, margin, need[0])
        return out_pos, out_d2, out_rs, spaces, m
    order = np.argsort(d2s[:n], kind="mergesort")
    out_pos = pos[:n][order]
    out_d2 = d2s[:n][order]
    out_rs = np.empty(n, dtype=np.int64)
    for j in range(n):
        out_rs[j] = ruleset_id[out_pos[j]]
    spaces = np.empty(min(n, limit), dtype=np.int64)
    k = 0
    for j in range(n):
        if k == limit:
            break
        state = states[out_rs[j]]
        if state == UNKNOWN:
            return out_pos, out_d2, out_rs, spaces, -1
        if state == ALLOWED:
            p = out_pos[j]
            out_pos[k], out_d2[k], out_rs[k] = p, out_d2[j], out_rs[j]
            spaces[k] = _spaces(p, parallel, length, capacity, margin, need[0])
            k += 1
    return out_pos, out_d2, out_rs, spaces, k


_compiled: Callable[..., Any] | None = None
_enabled: bool | None = None


def enabled() -> bool:
    """Whether the compiled search is used: Numba is installed and not switched off (``NUMBA_DISABLE_JIT=1``)."""
    global _enabled
    if _enabled is None:
        _enabled = (os.environ.get("NUMBA_DISABLE_JIT", "0") in ("", "0")
                    and importlib.util.find_spec("numba") is not None)
    return _enabled


def _compile() -> Callable[..., Any]:
    # Numba (and LLVM, ~0.5 s and ~120 MB) is loaded on the first search, not when geodata is imported;
    # the machine code is cached on disk next to this module, so later processes skip the compilation.
    from numba import njit

    global _lower_bound, _upper_bound, _row_ranges, _plane, _window, _spaces
    jit = njit(cache=True, nogil=True)
    _lower_bound, _upper_bound, _row_ranges = jit(_lower_bound), jit(_upper_bound), jit(_row_ranges)
    _spaces = jit(_spaces)
    _plane = jit(plane_coefficients)  # the very formula geodata.geo uses, compiled
    _window = jit(_window)
    return jit(_nearest_allowed)


def nearest_allowed(*args: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """:func:`_nearest_allowed` compiled (on the first call in a process)."""
    global _compiled
    if _compiled is None:
        _compiled = _compile()
    return _compiled(*args)
