"""What a partner's payload carries: coordinates coarsened per endpoint, and the field list the ledger shows."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from smartsvc.services.webhook_events import as_json, coarsen, field_paths


def test_coordinates_are_rounded_wherever_they_are_and_nothing_else_is():
    data = {
        "lat": 52.520008, "lon": 13.404954, "distance_m": 1234.5678, "battery_pct": 55.25, "ok": True,
        "spots": [{"latitude": 48.851234, "longitude": 2.351234, "width_m": 2.456}],
        "geometry": {"type": "Point", "coordinates": [13.377704, 52.516275]},
        "bbox": [2.351234, 48.851234, 2.361234, 48.861234],
        "center": {"lat": 1.23456, "lon": 6.54321}, "name": "lat",
    }
    assert coarsen(data, 2) == {
        "lat": 52.52, "lon": 13.4, "distance_m": 1234.5678, "battery_pct": 55.25, "ok": True,
        "spots": [{"latitude": 48.85, "longitude": 2.35, "width_m": 2.456}],
        "geometry": {"type": "Point", "coordinates": [13.38, 52.52]},
        "bbox": [2.35, 48.85, 2.36, 48.86],
        "center": {"lat": 1.23, "lon": 6.54}, "name": "lat",
    }
    assert coarsen(data, 6) == data
    assert coarsen({"lat": 52.520008, "lon": None}, 0) == {"lat": 53.0, "lon": None}


def test_field_paths_name_every_leaf_once():
    data = {"id": "x", "payload": {"spots": [{"lat": 1, "lon": 2}, {"lat": 3, "lon": 4, "id": "s"}], "empty": {}},
            "tags": [], "user_id": "u"}
    assert field_paths(data) == ["id", "payload.empty", "payload.spots[].id", "payload.spots[].lat",
                                 "payload.spots[].lon", "tags", "user_id"]


def test_as_json_turns_ids_and_times_into_text():
    at = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
    uid = uuid.UUID("01234567-89ab-7def-8123-456789abcdef")
    assert as_json({"at": at, "id": uid, "n": [1, 2.5]}) == {"at": "2026-11-24T09:00:00+00:00", "id": str(uid),
                                                              "n": [1, 2.5]}
