"""The suggestions beat job: release what waited for quiet hours, expire, re-push after a snooze."""

from __future__ import annotations

from celery import shared_task
from flask import current_app

from smartsvc.services.suggestion_timers import run_timers

TIMERS_TASK = "smartsvc.suggestions.timers"


@shared_task(name=TIMERS_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def timers() -> dict[str, int]:
    """Safe to run concurrently and repeatedly: each suggestion is re-checked under its user's lock."""
    report = run_timers(current_app.extensions["smartsvc"].database)
    return {"expired": report.expired, "released": report.released, "repushed": report.repushed}
