"""GeoJSON whose properties already use the normalized names (GEODATA.md "The normalized spot").

Streams a FeatureCollection's ``features`` array, a single Feature, or a
feature sequence (newline-delimited or RFC 8142 RS-separated) with ijson: one
feature in memory at a time.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Iterator, Mapping

from geodata.normalize import spot_from_properties
from geodata.readers import FeatureResult, Reader
from geodata.readers._json import iter_items, peek_head
from geodata.readers.detect import sniff
from geodata.validate import ERROR, FormatError, GeometryRejected, Issue, build_simple, simple_positions


def iter_features(fp: BinaryIO, head: bytes | None) -> Iterator[tuple[int, Any]]:
    """``(index, feature)`` for every feature of a GeoJSON document or sequence, streamed."""
    if head is None:
        head, fp = peek_head(fp)
    s = sniff(head)
    if s.family == "json-seq":
        items = iter_items(fp, [""], sequence=True)
    elif s.top_type == "Feature":
        items = iter_items(fp, [""])
    elif s.top_type == "FeatureCollection" or "features" in s.top_keys:
        items = iter_items(fp, ["features.item"])
    else:
        raise FormatError("not GeoJSON: expected a FeatureCollection, a Feature or a sequence of features")
    for index, (_, item) in enumerate(items):
        yield index, item


def feature_id(feature: Mapping[str, Any]) -> str | None:
    """The feature's own id, if it has one."""
    fid = feature.get("id")
    return None if fid is None or fid == "" else str(fid)


class GeoJSONReader(Reader):
    """Reads normalized GeoJSON."""

    format = "geojson"

    # Features are finished this many at a time, so that their plain points and lines are built by one
    # shapely call per chunk rather than one per feature (the results, and their order, are the same).
    CHUNK = 256

    def _read(self) -> Iterator[FeatureResult]:
        chunk: list[Any] = []
        try:
            for index, feature in iter_features(self.fp, self.head):
                chunk.append(self._prepare(index, feature))
                if len(chunk) >= self.CHUNK:
                    yield from self._complete(chunk)
                    chunk = []
        except Exception:
            yield from self._complete(chunk)  # the features read before a broken part, as one at a time would
            raise
        yield from self._complete(chunk)

    def convert(self, index: int, feature: Any) -> FeatureResult:
        """One GeoJSON feature → a FeatureResult."""
        return next(self._complete([self._prepare(index, feature)]))

    def _prepare(self, index: int, feature: Any) -> Any:
        """Everything up to the geometry: a finished FeatureResult (rejected), or what :meth:`_complete` needs."""
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            issue = Issue(index, "type", "this item is not a GeoJSON Feature", ERROR)
            return FeatureResult(index, None, (), (issue,))
        fid = feature_id(feature)
        label: int | str = fid if fid is not None else index
        issues: list[Issue] = []
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            issues.append(Issue(label, "properties", "properties must be a JSON object", ERROR))
            return FeatureResult(index, fid, (), tuple(issues))
        if self.too_deep(props, label, "properties", issues):
            return FeatureResult(index, fid, (), tuple(issues))
        geometry = feature.get("geometry")
        try:
            simple = simple_positions(geometry, self.options.limits, self.options.service_area)
        except GeometryRejected:
            simple = None  # the full path below reports it
        if simple is not None:
            return (index, fid, label, issues, props, None, simple)
        geom = self.geometry(geometry, label, issues)
        if geom is None:
            return FeatureResult(index, fid, (), tuple(issues))
        return (index, fid, label, issues, props, geom, None)

    def _complete(self, chunk: list[Any]) -> Iterator[FeatureResult]:
        """Build the chunk's plain geometries at once, then normalize each feature, in order."""
        simple = [item[6] for item in chunk if type(item) is tuple and item[6] is not None]
        built = iter(build_simple(simple)) if simple else iter(())
        dataset = self.options.dataset
        for item in chunk:
            if type(item) is not tuple:
                yield item
                continue
            index, fid, label, issues, props, geom, positions = item
            if positions is not None:
                geom = next(built)
            spot, more = spot_from_properties(props, geom, feature=label, dataset=dataset, feature_id=fid)
            if more:
                issues.extend(more)
            yield FeatureResult(index, fid, (spot,) if spot else (), tuple(issues))
