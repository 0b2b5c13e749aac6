"""Streaming readers: a binary file in, normalized spots (or per-feature issues) out, one feature at a time.

``open_reader(fp, fmt=None, options)`` detects or checks the format from the
first 64 KiB and returns an iterable :class:`Reader`; iterating it yields one
:class:`FeatureResult` per input feature (an OSM road may give two spots, a
feature that is not about parking none). Nothing holds more than one feature
in memory, except what a format needs up front (a CurbLR manifest, CDS
policies), read in a first pass described in each reader.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator

from geodata.model import Spot
from geodata.readers._json import peek_head
from geodata.readers.detect import check_format, detect_format
from geodata.validate import (
    ERROR,
    REPAIRED,
    BBox,
    GeometryRejected,
    Issue,
    LimitExceeded,
    Limits,
    deeper_than,
    json_depth,
    parse_geometry,
)

_READERS = {
    "geojson": "geodata.readers.geojson:GeoJSONReader",
    "csv": "geodata.readers.csv:CSVReader",
    "osm": "geodata.readers.osm:OSMReader",
    "curblr": "geodata.readers.curblr:CurbLRReader",
    "cds": "geodata.readers.cds:CDSReader",
}


@dataclass(frozen=True)
class ReadOptions:
    """How to read: the dataset name, limits, the operator's service area and the dataset time zone."""

    dataset: str | None = None
    limits: Limits = field(default_factory=Limits)
    service_area: BBox | None = None
    timezone: str | None = None


@dataclass(frozen=True, slots=True)
class FeatureResult:
    """What one input feature became: zero or more spots, and its issues."""

    index: int
    feature_id: str | None
    spots: tuple[Spot, ...]
    issues: tuple[Issue, ...] = ()

    @property
    def rejected(self) -> bool:
        """True when the feature had errors and gave no spot."""
        return not self.spots and any(i.level == ERROR for i in self.issues)

    @property
    def repaired(self) -> bool:
        """True when its geometry was repaired."""
        return any(i.level == REPAIRED for i in self.issues)


@dataclass
class ReadStats:
    """Running counts, updated as the reader is iterated."""

    features: int = 0
    spots: int = 0
    rejected: int = 0
    repaired: int = 0


class Reader(abc.ABC):
    """Base class: iterate to get :class:`FeatureResult` objects; enforces ``max_features``."""

    format = ""

    def __init__(self, fp: BinaryIO, options: ReadOptions | None = None, *, head: bytes | None = None) -> None:
        self.fp = fp
        self.options = options or ReadOptions()
        self.head = head
        self.stats = ReadStats()
        #: The dataset's time zone: configured, or read from the file (CurbLR, CDS).
        self.timezone: str | None = self.options.timezone
        #: Anything else the file says about itself (CurbLR manifest, CDS header).
        self.metadata: dict[str, Any] = {}
        #: The stream of the pass that yields features (a spooled copy for a non-seekable CurbLR/CDS input).
        self.stream: BinaryIO = fp
        self._results: Iterator[FeatureResult] | None = None

    def position(self) -> int | None:
        """Bytes of the input read so far by the pass that yields features, for progress bars; None if unknown.

        Approximate (reads are buffered); compare with the file size.
        """
        try:
            return self.stream.tell()
        except (OSError, ValueError):
            return None

    def __iter__(self) -> Iterator[FeatureResult]:
        # One pass per reader: iterating again goes on where the last loop stopped
        # (a second generator would restart parsing mid-file).
        if self._results is None:
            self._results = self._counted()
        return self._results

    def _counted(self) -> Iterator[FeatureResult]:
        limit = self.options.limits.max_features
        stats = self.stats
        for result in self._read():
            if stats.features >= limit:
                raise LimitExceeded(f"the file has more than {limit:,} features, the limit per file")
            stats.features += 1
            stats.spots += len(result.spots)
            if result.issues:  # without issues a feature is neither rejected nor repaired
                stats.rejected += result.rejected
                stats.repaired += result.repaired
            yield result

    @abc.abstractmethod
    def _read(self) -> Iterator[FeatureResult]:
        """Every feature of the file as a :class:`FeatureResult`, in file order (each format's own parser)."""

    # Helpers shared by the readers -------------------------------------------------

    def geometry(self, geometry: Any, feature: int | str, issues: list[Issue], *, allow_multi: bool = False) -> Any:
        """A checked shapely geometry, or ``None`` with the reason appended to ``issues``."""
        try:
            geom, notes = parse_geometry(geometry, self.options.limits, self.options.service_area, allow_multi=allow_multi)
        except GeometryRejected as exc:
            code = "limit" if "the limit is" in str(exc) else "geometry"
            issues.append(Issue(feature, "geometry", str(exc), ERROR, code))
            return None
        issues.extend(Issue(feature, "geometry", text, level, "geometry") for level, text in notes)
        return geom

    def too_deep(self, value: Any, feature: int | str, field_name: str, issues: list[Issue]) -> bool:
        """True (with an issue) when ``value`` nests deeper than the limit."""
        if deeper_than(value, self.options.limits.max_depth):
            depth = json_depth(value)
            issues.append(
                Issue(
                    feature, field_name, f"{field_name} nests {depth} levels deep; the limit is "
                    f"{self.options.limits.max_depth}", ERROR, "limit",
                )
            )
            return True
        return False


def reader_class(fmt: str) -> type[Reader]:
    """The reader class for a format name."""
    module, _, name = _READERS[fmt].partition(":")
    return getattr(importlib.import_module(module), name)


def open_reader(fp: BinaryIO, fmt: str | None = None, options: ReadOptions | None = None) -> Reader:
    """A reader for ``fp`` (a binary file object): ``fmt`` checked against the content, or detected.

    Raises :class:`~geodata.validate.FormatError` when the file is not what it
    claims to be, or not a format we read.
    """
    head, stream = peek_head(fp)
    found = check_format(head, fmt) if fmt else detect_format(head)
    return reader_class(found)(stream, options, head=head)


__all__ = ["FeatureResult", "ReadOptions", "ReadStats", "Reader", "open_reader", "reader_class"]
