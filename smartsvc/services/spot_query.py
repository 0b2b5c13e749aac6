"""What a spot search asks, what every way of answering it offers, and what they share."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from geodata.model import Vehicle
from geodata.search import SpotResult

from ..models import Dataset
from ..timeutil import is_valid_time_zone

log = logging.getLogger(__name__)

# The layer spot search reads.
PARKING = "parking"


@dataclass(frozen=True)
class SpotQuery:
    """``GET /v1/spots``: around (lat, lon), for a product, a stay of ``duration_min`` from ``at``."""

    lat: float
    lon: float
    radius_m: float
    product_id: uuid.UUID
    at: datetime
    duration_min: int
    limit: int


class SpotFinder(Protocol):
    """One way to answer a spot search: the in-process index or PostGIS."""

    name: str

    def find(self, session: Session, query: SpotQuery, vehicle: Vehicle) -> list[SpotResult]:
        """Up to ``query.limit`` spots the vehicle fits and may park at for the stay, nearest first."""
        ...


def dataset_time_zone(session: Session, dataset_id: uuid.UUID) -> str:
    """The IANA zone a dataset's rules are read in (see :func:`usable_time_zone`)."""
    return usable_time_zone(dataset_id, session.scalar(select(Dataset.time_zone).where(Dataset.id == dataset_id)))


def usable_time_zone(dataset_id: uuid.UUID, zone: str | None) -> str:
    """``zone``, or UTC when the dataset has none or one this machine does not know."""
    if zone and is_valid_time_zone(zone):
        return zone
    if zone:
        # Better an answer in UTC than no answer at all; the import should have refused it.
        log.warning("dataset %s has an unknown time zone %r; reading its rules in UTC", dataset_id, zone)
    return "UTC"
