"""Erasure and retention tasks: finish a user's erasure (from the outbox), purge old context (beat, daily)."""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from flask import current_app

from smartsvc.services.erasure import ERASE_TASK, finish_erasure
from smartsvc.services.retention import purge_expired_context

log = logging.getLogger(__name__)

RETENTION_TASK = "smartsvc.retention.purge"


@shared_task(name=ERASE_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def erase(user_id: str, outbox_id: int | None = None) -> dict[str, int]:
    """Idempotent: a second run finds nothing more of the user."""
    report = finish_erasure(current_app.extensions["smartsvc"].database, uuid.UUID(user_id), outbox_id)
    return {"rows": sum(report.rows.values()), "push_log_lines": report.push_log_lines}


@shared_task(name=RETENTION_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def retention() -> dict[str, int]:
    """Beat job (daily): delete context older than SMARTSVC_RETENTION_DAYS; safe to run twice."""
    report = purge_expired_context(current_app.extensions["smartsvc"].database)
    counts = {"context_events": report.context_events, "triggers": report.triggers, "last_fixes": report.last_fixes}
    log.info("retention purge", extra=counts)
    return counts
