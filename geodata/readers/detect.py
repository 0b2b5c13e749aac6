"""Format detection from the first bytes of a file, and checks that a file is what it claims to be.

Only the head (64 KiB) is looked at: JSON is parsed as far as it goes and the
keys seen decide (``manifest`` or ``regulations`` → CurbLR; ``zones`` /
``policies`` / ``spaces`` → CDS; a FeatureCollection whose properties are
OSM tags → OSM; one with normalized names or anything else → GeoJSON). Text
whose header names ``lat``/``lon`` or ``wkt`` columns is CSV.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from geodata.readers._json import RS, parse_events
from geodata.validate import FormatError

FORMATS = ("geojson", "csv", "osm", "curblr", "cds")
LABELS = {"geojson": "GeoJSON", "csv": "CSV", "osm": "OSM GeoJSON", "curblr": "CurbLR", "cds": "CDS Curbs"}

LAT_COLUMNS = ("lat", "latitude", "y")
LON_COLUMNS = ("lon", "lng", "long", "longitude", "x")
WKT_COLUMNS = ("wkt", "geometry", "geom", "the_geom")

_NORMALIZED = {
    "kind", "orientation", "length_m", "rules", "max_vehicle_length_m", "max_vehicle_width_m",
    "max_vehicle_height_m", "max_vehicle_weight_kg", "connectors", "power_kw", "source",
}
_OSM_KEYS = {"amenity", "highway", "parking", "access", "fee", "maxstay", "opening_hours", "capacity", "building"}
_CDS_KEYS = {"zones", "policies", "spaces", "areas"}


@dataclass
class Sniff:
    """What the head of a file looks like."""

    family: str  # "json", "json-seq", "text", "binary", "empty"
    top_keys: set[str] = field(default_factory=set)
    top_type: str | None = None
    property_keys: set[str] = field(default_factory=set)
    data_keys: set[str] = field(default_factory=set)
    header: list[str] = field(default_factory=list)


def _first_byte(head: bytes) -> bytes:
    stripped = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    return stripped[:1]


def sniff(head: bytes) -> Sniff:
    """Classify the head of a file and collect the keys detection needs."""
    first = _first_byte(head)
    if not first:
        return Sniff("empty")
    if first in (b"{", b"[", RS):
        sequence = first == RS or _looks_like_ndjson(head)
        result = Sniff("json-seq" if sequence else "json")
        for prefix, event, value in parse_events(head.lstrip(b"\xef\xbb\xbf"), sequence=sequence):
            if event == "string" and prefix == "type" and result.top_type is None:
                result.top_type = value
            if event != "map_key":
                continue
            if prefix == "":
                result.top_keys.add(value)
            elif prefix in ("features.item.properties", "properties"):
                result.property_keys.add(value)
            elif prefix in ("data", "data.item"):
                result.data_keys.add(value)
        return result
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the head is not a reason to call it binary.
        if exc.start < len(head) - 4:
            return Sniff("binary")
        text = head[: exc.start].decode("utf-8-sig")
    if "\x00" in text:
        return Sniff("binary")
    first_line = text.splitlines()[0] if text.splitlines() else ""
    header = next(csv.reader(io.StringIO(first_line), delimiter=csv_delimiter(first_line)), [first_line])
    return Sniff("text", header=[h.strip().lower() for h in header])


def csv_delimiter(header_line: str) -> str:
    """The delimiter of a CSV file from its header line: the most frequent of , ; tab |."""
    return max(",;\t|", key=header_line.count)


def _looks_like_ndjson(head: bytes) -> bool:
    lines = [ln for ln in head.lstrip(b"\xef\xbb\xbf").splitlines() if ln.strip()]
    return len(lines) > 1 and lines[0].strip().startswith(b"{") and lines[0].strip().endswith(b"}")


def _has_geometry_columns(header: list[str]) -> bool:
    has_lat = any(c in header for c in LAT_COLUMNS)
    has_lon = any(c in header for c in LON_COLUMNS)
    return (has_lat and has_lon) or any(c in header for c in WKT_COLUMNS)


def _is_osm(keys: set[str]) -> bool:
    if keys & _NORMALIZED:
        return False
    return bool(keys & _OSM_KEYS) or any(k.startswith(("@", "parking:", "socket:", "parking_space")) for k in keys)


def detect(s: Sniff) -> str | None:
    """The format a sniffed head belongs to, or ``None`` when it is none of them."""
    if s.family in ("json", "json-seq"):
        if "manifest" in s.top_keys or "regulations" in s.property_keys:
            return "curblr"
        if s.data_keys & _CDS_KEYS or s.top_keys & _CDS_KEYS or ("data" in s.top_keys and "time_zone" in s.top_keys):
            return "cds"
        if s.top_type in ("FeatureCollection", "Feature") or "features" in s.top_keys or s.family == "json-seq":
            return "osm" if _is_osm(s.property_keys) else "geojson"
        return None
    if s.family == "text" and _has_geometry_columns(s.header):
        return "csv"
    return None


def _describe(s: Sniff) -> str:
    if s.family == "empty":
        return "the file is empty"
    if s.family == "binary":
        return "the file is binary, not text"
    if s.family == "text":
        shown = ", ".join(s.header[:8]) or "nothing"
        return f"it is text whose first line has the columns {shown} (CSV needs lat and lon, or wkt)"
    keys = ", ".join(sorted(s.top_keys)[:8]) or "none"
    return f"it is JSON with the top-level keys {keys}"


def detect_format(head: bytes) -> str:
    """The format of a file from its head; :class:`FormatError` when it is not one we read."""
    s = sniff(head)
    found = detect(s)
    if found is None:
        raise FormatError(f"not a GeoJSON, CSV, OSM, CurbLR or CDS file: {_describe(s)}")
    return found


def check_format(head: bytes, claimed: str) -> str:
    """Fail clearly when a file is not what it claims to be; returns the format to read it as.

    GeoJSON and OSM GeoJSON are the same container, so either claim reads the
    other's files (the claim wins); every other mismatch is an error.
    """
    if claimed not in FORMATS:
        raise FormatError(f"unknown format '{claimed}' (use one of {', '.join(FORMATS)})")
    s = sniff(head)
    found = detect(s)
    if found == claimed or {found, claimed} <= {"geojson", "osm"}:
        return claimed
    what = f"it looks like {LABELS[found]}" if found else _describe(s)
    raise FormatError(f"the file was declared as {LABELS[claimed]} but {what}")
