"""The geofence timer (beat, every 15 s): dwell events and closing schedules for users who sent no fix since.

A user inside a fence with ``dwell_s`` may stop sending fixes (the phone
sleeps); their dwell event must come all the same. Each context batch stores
when the tracker next has something to do (``user_contexts.geofence_due_at``);
this job ticks the users whose moment has come, one transaction each, and
writes their geofence triggers. Idempotent: a second run finds nothing due,
and the triggers are deduplicated on (user, fence, kind, time) anyway.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from celery import shared_task
from flask import current_app

from smartsvc.services.context_ingest import due_geofence_users, tick_geofences
from smartsvc.timeutil import utcnow

log = logging.getLogger(__name__)

TIMER_TASK = "smartsvc.context.geofence_timer"
INTERVAL_S = 15
# Users ticked per run; more wait for the next run (the longest overdue go first).
BATCH = 1000


def run_geofence_timer(container: Any, now: datetime | None = None, *, batch: int = BATCH) -> int:
    """Tick every user whose geofence timer is due at ``now``; the number of geofence events fired."""
    now = now or utcnow()
    fired = 0
    for user_id in due_geofence_users(container, now, batch):
        try:
            fired += len(tick_geofences(container, user_id, now))
        except Exception:  # one user's failure must not hold up everyone else's dwell events
            log.exception("geofence tick failed", extra={"user_id": str(user_id)})
    if fired:
        log.info("geofence timer fired", extra={"events": fired})
    return fired


@shared_task(name=TIMER_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def geofence_timer() -> int:
    """Beat job: tick the users whose geofence timer is due (idempotent)."""
    return run_geofence_timer(current_app.extensions["smartsvc"])
