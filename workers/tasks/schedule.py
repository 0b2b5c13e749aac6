"""The scheduler's beat job: ``schedule`` rules fire at their local time in each user's time zone."""

from __future__ import annotations

from celery import shared_task
from flask import current_app

from smartsvc.services.schedule import run_schedules

SCHEDULE_TASK = "smartsvc.schedule.run"


@shared_task(name=SCHEDULE_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def run() -> int:
    """Emit the due ``schedule`` triggers; idempotent (a trigger is written once per rule, user and local day)."""
    container = current_app.extensions["smartsvc"]
    return run_schedules(container.database, container.rule_cache, container.schedule_memo)
