"""Geodata for tests: spots stored as a dataset and made live directly, without the import pipeline."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import select

from geodata.model import Spot
from geodata.readers import ReadOptions, open_reader
from smartsvc.db import Database
from smartsvc.ids import new_id
from smartsvc.models import Dataset, LiveLayer
from smartsvc.services.layers import FeatureToStore, feature_row, insert_features
from smartsvc.timeutil import utcnow
from tests.support.factories import bearer

NORMALIZED_FIXTURE = Path(__file__).resolve().parents[1] / "unit" / "geodata" / "fixtures" / "normalized.geojson"


def fixture_spots(path: Path = NORMALIZED_FIXTURE, fmt: str = "geojson") -> list[Spot]:
    """The spots a fixture file gives (its rejected features left out)."""
    with open(path, "rb") as handle:
        return [spot for result in open_reader(handle, fmt, ReadOptions()) for spot in result.spots]


def store_dataset(database: Database, spots: Iterable[Spot], *, layer: str = "parking",
                  time_zone: str | None = "Europe/Paris", name: str = "test spots",
                  dataset_id: uuid.UUID | None = None, publish: bool = True) -> uuid.UUID:
    """Store ``spots`` as a new dataset of ``layer`` and, with ``publish``, make it the live version.

    Each spot's ``source.dataset`` becomes the dataset id, as the importer
    writes it. Publishing bumps the layer's version like ``POST /v1/datasets/{id}/publish``.
    """
    dataset_id = dataset_id or new_id()
    rows = [
        feature_row(dataset_id, seq, FeatureToStore(dataclasses.replace(spot, source_dataset=str(dataset_id)), seq))
        for seq, spot in enumerate(spots)
    ]
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        session.add(Dataset(id=dataset_id, name=name, layer=layer, format="geojson", time_zone=time_zone,
                            status="ready", accepted=len(rows)))
        session.flush()
        for start in range(0, len(rows), 5000):
            insert_features(session, rows[start:start + 5000])
        uow.commit()
    if publish:
        publish_dataset(database, dataset_id)
    return dataset_id


def publish_dataset(database: Database, dataset_id: uuid.UUID) -> None:
    """Make a stored dataset the live version of its layer (the previous one becomes superseded)."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        live = session.get(LiveLayer, dataset.layer)
        if live is None:
            live = LiveLayer(layer=dataset.layer, version=0)
            session.add(live)
        elif live.dataset_id is not None and live.dataset_id != dataset_id:
            previous = session.scalar(select(Dataset).where(Dataset.id == live.dataset_id))
            if previous is not None:
                previous.status = "superseded"
        live.dataset_id = dataset_id
        live.version = (live.version or 0) + 1
        live.published_at = utcnow()
        dataset.status = "published"
        dataset.published_at = live.published_at
        uow.commit()


def add_vehicle_model(client: Any, operator_key: str, name: str, **attributes: Any) -> str:
    """A catalogue car with ``attributes`` (``length_m`` and so on); returns its id."""
    response = client.post("/v1/catalog/models", headers=bearer(operator_key),
                           json={"kind": "car", "brand": "test", "name": name, "attributes": attributes})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def own(client: Any, user: Any, model_id: str) -> str:
    """``user`` owns a product of ``model_id``; returns the product id."""
    response = client.post("/v1/me/products", headers=user.headers, json={"model_id": model_id})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]
