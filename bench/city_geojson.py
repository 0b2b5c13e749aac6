"""The benchmark city as a GeoJSON file: exactly the text ``json`` makes of each spot's ``to_feature()``, made faster.

:meth:`bench.citygen.City.write_geojson` is the entry point; this module is
the encoding behind it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shapely
from shapely.geometry import mapping

from bench.parallel import ordered_map
from geodata.model import Rule, Spot

if TYPE_CHECKING:
    from bench.citygen import City


def write_feature_collection(city: City, path: str | Path) -> int:
    """Write every spot of ``city`` as a FeatureCollection; returns bytes written (see :meth:`City.write_geojson`)."""
    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as fp:
        head = '{"type":"FeatureCollection","features":[\n'
        fp.write(head)
        written += len(head)
        # The chunks' text is made on every core (bench.parallel), written here in order.
        for k, text in enumerate(ordered_map(_chunk_text, ((city, k) for k in range(city.chunk_count())))):
            if k:
                text = ",\n" + text
            fp.write(text)
            written += len(text.encode("utf-8")) if not text.isascii() else len(text)
        tail = "\n]}\n"
        fp.write(tail)
        written += len(tail)
    return written


# Each distinct rule list's JSON, per process (a city has a few dozen).
_RULES_TEXT: dict[tuple[Rule, ...], str] = {}


def _chunk_text(city: City, k: int) -> str:
    """The features of chunk ``k`` as JSON text, one a line, joined by ``,\\n``."""
    return ",\n".join(_feature_lines(city.chunk(k), _RULES_TEXT))


_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# Stands for the rule list while a feature's other properties are encoded; encoded as "\u0000R".
_RULES_MARK = "\x00R"
_RULES_MARK_JSON = _DUMPS(_RULES_MARK)
_SIMPLE = {"Point": ("", ""), "LineString": ("[", "]")}


def _geometry_texts(spots: list[Spot]) -> list[str]:
    """``json`` of ``mapping(geometry)`` for each spot; Points, LineStrings and hole-free Polygons in one pass."""
    geoms = np.empty(len(spots), dtype=object)
    geoms[:] = [s.geometry for s in spots]
    coords, owner = shapely.get_coordinates(geoms, return_index=True)
    pairs = [f"[{x!r},{y!r}]" for x, y in coords.tolist()]
    ends = np.cumsum(np.bincount(owner, minlength=len(spots))).tolist()
    holes = shapely.get_num_interior_rings(geoms).tolist()
    has_z = shapely.has_z(geoms).tolist()
    texts = []
    start = 0
    for geom, end, hole_count, z in zip(geoms, ends, holes, has_z):
        kind = geom.geom_type
        if end > start and not z and (kind in _SIMPLE or (kind == "Polygon" and hole_count == 0)):
            left, right = _SIMPLE.get(kind, ("[[", "]]"))
            texts.append('{"type":"' + kind + '","coordinates":' + left + ",".join(pairs[start:end]) + right + "}")
        else:  # empty, 3D, holes, multi-part: not generated today; exact all the same
            texts.append(_DUMPS(mapping(geom)))
        start = end
    return texts


def _feature_lines(spots: list[Spot], rules_text: dict[tuple[Rule, ...], str]) -> list[str]:
    """``json`` of ``spot.to_feature()`` for each spot (see :meth:`City.write_geojson`)."""
    lines = []
    for spot, geometry in zip(spots, _geometry_texts(spots)):
        props = spot.to_properties()
        rules = rules_text.get(spot.rules)
        if rules is None:
            rules = rules_text[spot.rules] = _DUMPS(props["rules"])
        props["rules"] = _RULES_MARK
        properties = _DUMPS(props).replace(_RULES_MARK_JSON, rules, 1)
        lines.append('{"type":"Feature","geometry":' + geometry + ',"properties":' + properties + "}")
    return lines
