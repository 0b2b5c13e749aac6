"""CSV with ``lat``/``lon`` columns or a ``wkt`` column; other columns use the normalized names.

``rules`` (and ``connectors``, ``source``) may hold JSON; an ``id`` column
gives the feature id. Read row by row through the csv module, so memory is
one row. The delimiter (``,`` ``;`` tab ``|``) is sniffed from the header.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterator

import shapely
from shapely.geometry import mapping

from geodata.normalize import spot_from_properties
from geodata.readers import FeatureResult, Reader
from geodata.readers.detect import LAT_COLUMNS, LON_COLUMNS, WKT_COLUMNS, csv_delimiter
from geodata.validate import ERROR, FormatError, Issue

_ID_COLUMNS = ("id", "feature_id", "source_feature_id")
_GEOMETRY_COLUMNS = set(LAT_COLUMNS) | set(LON_COLUMNS) | set(WKT_COLUMNS)


def _number(value: str, name: str) -> float:
    try:
        return float(value.strip())
    except ValueError:
        raise ValueError(f"{name} '{value}' is not a number in decimal degrees") from None


class CSVReader(Reader):
    """Reads CSV spots."""

    format = "csv"

    def _read(self) -> Iterator[FeatureResult]:
        text = io.TextIOWrapper(self.fp, encoding="utf-8-sig", newline="")
        try:
            first = text.readline()
            delimiter = csv_delimiter(first)
            header = [h.strip().lower() for h in next(csv.reader([first], delimiter=delimiter), [])]
            lat_col = next((c for c in LAT_COLUMNS if c in header), None)
            lon_col = next((c for c in LON_COLUMNS if c in header), None)
            wkt_col = next((c for c in WKT_COLUMNS if c in header), None)
            if not ((lat_col and lon_col) or wkt_col):
                raise FormatError("CSV needs lat and lon columns, or a wkt column; the header has " + ", ".join(header))
            id_col = next((c for c in _ID_COLUMNS if c in header), None)
            for index, row in enumerate(csv.reader(text, delimiter=delimiter)):
                if not any(cell.strip() for cell in row):
                    continue
                record = {name: (row[i] if i < len(row) else "") for i, name in enumerate(header)}
                yield self._convert(index, record, lat_col, lon_col, wkt_col, id_col)
        except UnicodeDecodeError as exc:
            raise FormatError(f"the CSV file is not UTF-8 text ({exc.reason})") from None
        except csv.Error as exc:
            raise FormatError(f"the CSV file cannot be read: {exc}") from None
        finally:
            text.detach()

    def _convert(
        self, index: int, record: dict[str, str], lat_col: str | None, lon_col: str | None,
        wkt_col: str | None, id_col: str | None,
    ) -> FeatureResult:
        fid = (record.get(id_col) or "").strip() or None if id_col else None
        label: int | str = fid if fid is not None else index
        issues: list[Issue] = []
        geometry: Any = None
        try:
            if wkt_col and record.get(wkt_col, "").strip():
                geometry = mapping(shapely.from_wkt(record[wkt_col]))
            elif lat_col and lon_col:
                geometry = {
                    "type": "Point",
                    "coordinates": [_number(record[lon_col], lon_col), _number(record[lat_col], lat_col)],
                }
        except (ValueError, shapely.errors.GEOSException) as exc:
            message = str(exc) if "decimal degrees" in str(exc) else f"wkt '{record[wkt_col][:60]}' is not valid WKT"
            issues.append(Issue(label, "geometry", message, ERROR, "geometry"))
            return FeatureResult(index, fid, (), tuple(issues))
        geom = self.geometry(geometry, label, issues)
        if geom is None:
            return FeatureResult(index, fid, (), tuple(issues))
        props: dict[str, Any] = {}
        for name, value in record.items():
            if name in _GEOMETRY_COLUMNS or name in _ID_COLUMNS or not value.strip():
                continue
            props[name] = value.strip()
        if isinstance(props.get("source"), str):
            try:
                props["source"] = json.loads(props["source"])
            except json.JSONDecodeError:
                props.pop("source")
        spot, more = spot_from_properties(props, geom, feature=label, dataset=self.options.dataset, feature_id=fid)
        issues.extend(more)
        return FeatureResult(index, fid, (spot,) if spot else (), tuple(issues))
