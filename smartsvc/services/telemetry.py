"""Telemetry: store a reading (consent ``telemetry``), then fold it in a worker, which notices it for the rules."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select

from ..db import Database
from ..errors import InvalidInput, NotFound
from ..models import OwnedProduct, TelemetryReading
from ..timeutil import utcnow
from . import outbox
from .consents import has_consent, require_consent
from .pagination import Page, keyset_page
from .triggers import emit_trigger

PROCESS_TASK = "smartsvc.telemetry.process"


def record_reading(
    database: Database, user_id: uuid.UUID, product_id: uuid.UUID, values: dict[str, Any]
) -> TelemetryReading:
    """Store a reading and enqueue its processing in the same transaction.

    Refused with 403 (nothing stored) without the ``telemetry`` consent.
    """
    measurements = {k: v for k, v in values.items() if k in TelemetryReading.MEASUREMENTS and v is not None}
    if not measurements:
        raise InvalidInput(
            "body", f"send at least one measurement: {', '.join(TelemetryReading.MEASUREMENTS)}"
        )
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        product = session.scalar(
            select(OwnedProduct.id).where(OwnedProduct.id == product_id, OwnedProduct.user_id == user_id)
        )
        if product is None:
            raise NotFound(f"product {product_id} does not exist")
        require_consent(session, user_id, "telemetry")
        reading = TelemetryReading(user_id=user_id, product_id=product_id, at=values["at"], **measurements)
        session.add(reading)
        session.flush()
        outbox.enqueue(
            uow, PROCESS_TASK, {"reading_id": str(reading.id)},
            ordering_key=f"user:{user_id}", user_id=user_id,
        )
        uow.commit()
    return reading


def list_readings(
    database: Database, user_id: uuid.UUID, product_id: uuid.UUID, *, limit: int, cursor: uuid.UUID | None
) -> Page[TelemetryReading]:
    """The product's readings in the order they were received."""
    with database.session() as session:
        owned = session.scalar(
            select(OwnedProduct.id).where(OwnedProduct.id == product_id, OwnedProduct.user_id == user_id)
        )
        if owned is None:
            raise NotFound(f"product {product_id} does not exist")
        query = select(TelemetryReading).where(TelemetryReading.product_id == product_id)
        return keyset_page(session, query, TelemetryReading.id, limit=limit, after=cursor)


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _is_newest(reading: TelemetryReading, latest: dict[str, Any]) -> bool:
    """Whether no reading folded so far happened after this one (of any measurement)."""
    return all(datetime.fromisoformat(entry["at"]) <= reading.at for entry in latest.values()
               if isinstance(entry, dict) and entry.get("at"))


def _changes(reading: TelemetryReading, latest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"product.telemetry.<name>": {"value", "previous_value"}}`` for each measurement the reading carries."""
    changes = {}
    for name in TelemetryReading.MEASUREMENTS:
        value = getattr(reading, name)
        if value is not None:
            previous = latest.get(name)
            changes[f"product.telemetry.{name}"] = {
                "value": _json_value(value),
                "previous_value": previous.get("value") if isinstance(previous, dict) else None}
    return changes


def process_reading(database: Database, reading_id: uuid.UUID, outbox_id: int | None = None) -> bool:
    """Fold a reading into its product's ``latest_telemetry`` (newest ``at`` wins) and notice it for the rules.

    When the reading is the product's newest, a ``telemetry.updated`` trigger is
    written in the same transaction (dedupe ``telemetry.updated:{reading_id}``)
    with the measurements it carried and, per fact, the value before it — what
    ``telemetry.threshold`` rules compare. A reading arriving after a newer one
    fires nothing (its values may still fill fields the newer one lacked).

    Idempotent: a reading already processed, or processed twice
    concurrently, leaves the same state. Returns False when there was
    nothing to do (unknown or already processed reading).
    """
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        outbox.complete(session, outbox_id)
        reading = session.get(TelemetryReading, reading_id)
        # Lock the product row (PostgreSQL; SQLite holds the write lock already) so readings of
        # one product are folded one at a time: no lost update of latest_telemetry, and a
        # duplicate running concurrently sees processed_at once it gets the lock.
        product = session.get(OwnedProduct, reading.product_id, with_for_update=True) if reading is not None else None
        if product is not None:
            reading = session.get(TelemetryReading, reading_id, populate_existing=True)
        if reading is None or product is None or reading.processed_at is not None:
            uow.commit()  # nothing (left) to do: the message is still done
            return False
        if not has_consent(session, reading.user_id, "telemetry"):
            reading.processed_at = utcnow()  # withdrawn since it was sent: dropped, never folded
            uow.commit()
            return False
        latest = dict(product.latest_telemetry or {})
        if _is_newest(reading, latest):
            changes = _changes(reading, latest)
            emit_trigger(uow, user_id=reading.user_id, event="telemetry.updated", at=reading.at,
                         dedupe_key=f"telemetry.updated:{reading.id}", product_id=product.id,
                         fields={"product_id": str(product.id),
                                 "fields": [name.removeprefix("product.telemetry.") for name in changes],
                                 "changes": changes})
        for name in TelemetryReading.MEASUREMENTS:
            value = getattr(reading, name)
            if value is None:
                continue
            current = latest.get(name)
            if current is None or datetime.fromisoformat(current["at"]) <= reading.at:
                latest[name] = {"value": _json_value(value), "at": reading.at.isoformat()}
        product.latest_telemetry = latest
        reading.processed_at = utcnow()
        uow.commit()
    return True
