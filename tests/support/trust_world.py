"""Helpers for the consent, erasure and retention tests: a user with data through the API, the worker in-process.

:func:`run_outbox` is the worker: the real relay publishes due messages and
each runs its real Celery task function (by name) inside the app context,
until nothing is due.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from smartsvc.services.outbox import relay_pending
from tests.support.factories import bearer


def run_outbox(app: Any, *, skip: tuple[str, ...] = (), max_rounds: int = 50) -> list[str]:
    """Run every due outbox message's task (except ``skip``) until none is due; the task names run."""
    database = app.extensions["smartsvc"].database
    ran: list[str] = []
    for _ in range(max_rounds):
        batch: list[tuple[str, dict[str, Any], int]] = []
        relay_pending(database, lambda m: batch.append((m.task, dict(m.payload), m.id)))
        todo = [item for item in batch if item[0] not in skip]
        if not todo:
            return ran
        with app.app_context():
            tasks = app.extensions["celery"].tasks
            for task, payload, outbox_id in todo:
                tasks[task].run(**payload, outbox_id=outbox_id)
                ran.append(task)
    raise AssertionError(f"outbox messages still due after {max_rounds} rounds")


def pushes(app: Any) -> list[dict[str, Any]]:
    """The lines of the log push provider's file."""
    path = app.extensions["smartsvc"].settings.pushes_log_path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def post_context(client: Any, user: Any, *events: dict[str, Any], expect: int = 202) -> dict[str, Any]:
    """``POST /v1/me/context`` with ``events`` (``at`` as datetimes or strings)."""
    body = [{**e, "at": e["at"].isoformat() if isinstance(e["at"], datetime) else e["at"]} for e in events]
    response = client.post("/v1/me/context", json={"events": body}, headers=user.headers)
    assert response.status_code == expect, response.get_json()
    return response.get_json()


def set_consent(client: Any, user: Any, purpose: str, granted: bool) -> dict[str, Any]:
    """``PUT /v1/me/consents/{purpose}``."""
    response = client.put(f"/v1/me/consents/{purpose}", json={"granted": granted}, headers=user.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def create(client: Any, key: str, path: str, body: dict[str, Any]) -> str:
    """POST ``body`` with an API key; the new object's id."""
    response = client.post(path, json=body, headers=bearer(key))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]

