"""Product catalogue, the products users own, and their telemetry."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, created_column, id_column

PRODUCT_KINDS = ("car", "van", "motorcycle", "scooter", "bicycle", "other")


class ProductModel(Base):
    """A model in the catalogue (e.g. smart fortwo) with its attributes."""

    __tablename__ = "product_models"

    id: Mapped[uuid.UUID] = id_column()
    kind: Mapped[str] = mapped_column(String(16))
    brand: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = created_column()


class OwnedProduct(Base):
    """A product a user owns; ``latest_telemetry`` is derived by a worker."""

    __tablename__ = "owned_products"

    id: Mapped[uuid.UUID] = id_column()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("product_models.id", ondelete="RESTRICT"))
    nickname: Mapped[str | None] = mapped_column(String(100))
    # {field: {"value": ..., "at": iso}} — the newest reading of each field.
    latest_telemetry: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = created_column()


class TelemetryReading(Base):
    """One telemetry report of an owned product, as the app sent it."""

    __tablename__ = "telemetry_readings"
    __table_args__ = (Index("ix_telemetry_product_at", "product_id", "at"),)

    id: Mapped[uuid.UUID] = id_column()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("owned_products.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column()
    odometer_km: Mapped[float | None] = mapped_column(Float)
    battery_pct: Mapped[float | None] = mapped_column(Float)
    fuel_pct: Mapped[float | None] = mapped_column(Float)
    service_due_at: Mapped[datetime | None] = mapped_column()
    tire_pressure_bar: Mapped[list[Any] | None] = mapped_column()
    received_at: Mapped[datetime] = created_column()
    processed_at: Mapped[datetime | None] = mapped_column()

    MEASUREMENTS = ("odometer_km", "battery_pct", "fuel_pct", "service_due_at", "tire_pressure_bar")
