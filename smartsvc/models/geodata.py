"""Uploaded geodata: dataset versions, their features, and which version of a layer is live.

A dataset is one uploaded file of one layer. Its features are written while it
imports and are invisible to readers until it is published: readers only ever
look at the features of the dataset that ``live_layers`` points at, so
publishing (one row update) swaps a whole layer atomically and publishing an
older dataset again is the rollback.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, created_column, id_column

LAYERS = ("parking", "pois", "geofences")
DATASET_FORMATS = ("geojson", "csv", "osm", "curblr", "cds")
DATASET_STATUSES = ("queued", "importing", "ready", "published", "failed", "superseded")


class Dataset(Base):
    """One uploaded file of a layer and what its import made of it."""

    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_layer_created", "layer", "created_at"),)

    id: Mapped[uuid.UUID] = id_column()
    name: Mapped[str] = mapped_column(String(200))
    layer: Mapped[str] = mapped_column(String(20))
    # The format asked for, or the detected one once the import has looked.
    format: Mapped[str | None] = mapped_column(String(20))
    # IANA zone the rules' local times are read in (CurbLR/CDS may bring their own).
    time_zone: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    file_name: Mapped[str | None] = mapped_column(String(300))
    file_size: Mapped[int] = mapped_column(BigInteger, default=0)
    # Where the upload waits for the worker; removed once imported.
    upload_path: Mapped[str | None] = mapped_column(Text)
    progress_done: Mapped[int] = mapped_column(BigInteger, default=0)
    progress_total: Mapped[int] = mapped_column(BigInteger, default=0)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    repaired: Mapped[int] = mapped_column(Integer, default=0)
    # Normalized features stored (an OSM road with parking on both sides is one accepted feature, two spots).
    spots: Mapped[int] = mapped_column(Integer, default=0)
    # Incremented by every import run that claims the dataset: a run whose number is no
    # longer current (a redelivered message took over) stops writing.
    import_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The first issues found ([{feature, field, message}]), capped; the total is errors_total.
    errors: Mapped[list[Any]] = mapped_column(default=list)
    errors_total: Mapped[int] = mapped_column(Integer, default=0)
    # Why a whole file failed (not what it claims to be, past a limit).
    failure: Mapped[str | None] = mapped_column(Text)
    # What the file says about itself (CurbLR manifest, CDS header), for the record.
    file_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    bbox_min_lon: Mapped[float | None] = mapped_column(Float)
    bbox_min_lat: Mapped[float | None] = mapped_column(Float)
    bbox_max_lon: Mapped[float | None] = mapped_column(Float)
    bbox_max_lat: Mapped[float | None] = mapped_column(Float)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_column()
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    published_at: Mapped[datetime | None] = mapped_column()


class LayerFeature(Base):
    """One normalized feature (a spot, a POI) of a dataset.

    ``properties`` holds the normalized properties (GEODATA.md names) and
    ``geometry`` the GeoJSON geometry, so a feature is served back unchanged.
    The bbox columns serve ``bbox`` filters on every database; PostgreSQL also
    has a ``geog`` geography column with a GiST index, added by the migration
    and maintained by the importer (SQLite has no such type).
    """

    __tablename__ = "layer_features"
    __table_args__ = (
        Index("ix_layer_features_dataset_seq", "dataset_id", "seq", unique=True),
        Index("ix_layer_features_dataset_bbox", "dataset_id", "min_lon", "min_lat"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    # Position in the dataset (0, 1, ...): the public id is "<dataset>.<seq>" and the paging key.
    seq: Mapped[int] = mapped_column(Integer)
    # The feature's index in the file and its own id there, as GEODATA.md's ``source``.
    feature_index: Mapped[int] = mapped_column(Integer)
    feature_id: Mapped[str | None] = mapped_column(String(300))
    kind: Mapped[str | None] = mapped_column(String(20))
    geometry: Mapped[dict[str, Any]] = mapped_column()
    properties: Mapped[dict[str, Any]] = mapped_column()
    min_lon: Mapped[float] = mapped_column(Float)
    min_lat: Mapped[float] = mapped_column(Float)
    max_lon: Mapped[float] = mapped_column(Float)
    max_lat: Mapped[float] = mapped_column(Float)


class LiveLayer(Base):
    """Which dataset is the live version of a layer.

    ``version`` grows with every publish so that each process can tell in one
    cheap read whether its in-memory index is stale.
    """

    __tablename__ = "live_layers"

    layer: Mapped[str] = mapped_column(String(20), primary_key=True)
    dataset_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    published_at: Mapped[datetime | None] = mapped_column()
