"""Scheduled housekeeping."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from flask import current_app

from smartsvc.services import datasets, idempotency, outbox

log = logging.getLogger(__name__)


@shared_task(name="smartsvc.maintenance.purge", ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def purge() -> dict[str, int]:
    """Drop expired idempotency records, completed outbox messages (7 days) and stale uploads (1 day)."""
    container = current_app.extensions["smartsvc"]
    database = container.database
    counts = {
        "idempotency_records": idempotency.purge_expired(database),
        "outbox_messages": outbox.purge_completed(database, timedelta(days=7)),
        "stale_uploads": datasets.purge_stale_uploads(database, container.settings, timedelta(days=1)),
    }
    log.info("purged", extra=counts)
    return counts
