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
from geodata.validate import ERROR, FormatError, Issue


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

    def _read(self) -> Iterator[FeatureResult]:
        for index, feature in iter_features(self.fp, self.head):
            yield self.convert(index, feature)

    def convert(self, index: int, feature: Any) -> FeatureResult:
        """One GeoJSON feature → a FeatureResult."""
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
        geom = self.geometry(feature.get("geometry"), label, issues)
        if geom is None:
            return FeatureResult(index, fid, (), tuple(issues))
        spot, more = spot_from_properties(props, geom, feature=label, dataset=self.options.dataset, feature_id=fid)
        issues.extend(more)
        return FeatureResult(index, fid, (spot,) if spot else (), tuple(issues))
