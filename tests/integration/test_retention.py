"""Retention (SQLite and PostgreSQL): context older than SMARTSVC_RETENTION_DAYS is purged, with an injected clock."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select

from smartsvc.config import load_settings
from smartsvc.models import ContextEvent
from smartsvc.services.retention import purge_expired_context
from smartsvc.timeutil import utcnow
from tests.support.factories import api_key, grant, make_user
from tests.support.trust_world import post_context
from workers.celery_app import celery_config


def _events(database, user_id: str) -> list[tuple[str, dict]]:
    with database.session() as session:
        return [(e.type, e.data) for e in session.scalars(select(ContextEvent).where(
            ContextEvent.user_id == uuid.UUID(user_id)).order_by(ContextEvent.at))]


def test_context_older_than_the_retention_period_is_purged_in_batches(db_app):
    client = db_app.test_client()
    database = db_app.extensions["smartsvc"].database
    user = make_user(client, api_key(db_app, "app"), "alice")
    grant(client, user, "location")
    t0 = utcnow() - timedelta(minutes=4)
    post_context(client, user, *[{"type": "location", "at": t0 + timedelta(seconds=s), "lat": 48.123456789,
                                  "lon": 2.987654321, "accuracy_m": 5} for s in range(0, 50, 10)],
                 {"type": "app", "at": t0 + timedelta(seconds=60), "screen": "map"})
    assert {d["lat"] for t, d in _events(database, user.id) if t == "location"} == {48.123457}  # ≤ 6 decimals

    # 29 days later: still kept.
    report = purge_expired_context(database, now=t0 + timedelta(days=29), batch=2)
    assert report.context_events == 0 and len(_events(database, user.id)) == 6
    # 30 days after the first three fixes (and the default period): those go, two at a time.
    report = purge_expired_context(database, now=t0 + timedelta(days=30, seconds=25), batch=2)
    assert report.context_events == 3
    assert len(_events(database, user.id)) == 3
    assert client.get("/v1/me/context", headers=user.headers).get_json()["location"] is not None
    # Later still: everything, and the last known position with it; a second run finds nothing.
    report = purge_expired_context(database, now=t0 + timedelta(days=31), batch=2)
    assert (report.context_events, report.last_fixes) == (3, 1)
    assert _events(database, user.id) == []
    assert client.get("/v1/me/context", headers=user.headers).get_json()["location"] is None
    again = purge_expired_context(database, now=t0 + timedelta(days=31), batch=2)
    assert (again.context_events, again.triggers, again.last_fixes) == (0, 0, 0)


def test_the_period_is_a_setting_and_the_purge_runs_daily(db_app):
    client = db_app.test_client()
    database = db_app.extensions["smartsvc"].database
    user = make_user(client, api_key(db_app, "app"), "bob")
    post_context(client, user, {"type": "app", "at": utcnow() - timedelta(minutes=1), "screen": "home"})
    assert purge_expired_context(database, now=utcnow() + timedelta(days=3), days=7).context_events == 0
    assert purge_expired_context(database, now=utcnow() + timedelta(days=8), days=7).context_events == 1

    assert load_settings({}).retention_days == 30
    assert load_settings({"SMARTSVC_RETENTION_DAYS": "7"}).retention_days == 7
    schedule = celery_config(db_app.extensions["smartsvc"].settings)["beat_schedule"]
    [entry] = [e for e in schedule.values() if e["task"] == "smartsvc.retention.purge"]
    assert entry["schedule"] == timedelta(days=1)
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(ContextEvent)) == 0
