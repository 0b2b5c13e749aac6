"""Telemetry post-processing: fold a reading into the product's latest values."""

from __future__ import annotations

import uuid

from celery import shared_task
from flask import current_app

from smartsvc.services.telemetry import PROCESS_TASK, process_reading


@shared_task(name=PROCESS_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def process(reading_id: str, outbox_id: int | None = None) -> bool:
    """Idempotent: running it twice leaves the same latest telemetry."""
    return process_reading(current_app.extensions["smartsvc"].database, uuid.UUID(reading_id), outbox_id)
