"""A world for the suggestion tests: users, devices and rules through the API; proposals, delivery, pushes.

Suggestions come from ``propose`` (what the engine calls); pushes are
delivered by the delivery service from the outbox, as the worker would; what
the user notices is read through ``GET /v1/me/suggestions`` and the lines of
``var/pushes.jsonl``. Every clock is injectable (``now``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from smartsvc.models import OutboxMessage
from smartsvc.services.delivery import deliver_suggestion
from smartsvc.services.proposals import Proposal, RecipeResult
from smartsvc.services.suggestions import PUSH_TASK, propose
from smartsvc.timeutil import utcnow
from tests.support.factories import TestUser as ApiUser
from tests.support.factories import api_key, bearer, grant, make_user
from tests.support.rules import example_rule

BERLIN = ZoneInfo("Europe/Berlin")


@dataclass
class SuggestionWorld:
    """An app with helpers to set users up through the API, propose, deliver and read back."""

    app: Any
    client: Any
    operator: str
    app_key: str

    @property
    def database(self) -> Any:
        return self.app.extensions["smartsvc"].database

    def user(self, name: str, *, time_zone: str = "Europe/Berlin", consent: bool = True,
             devices: int = 1, max_pushes_per_day: int = 50) -> ApiUser:
        user = make_user(self.client, self.app_key, name, time_zone=time_zone)
        self.patch_me(user, max_pushes_per_day=max_pushes_per_day)  # the cap has its own test
        if consent:
            grant(self.client, user, "proactive_push")
        for n in range(devices):
            response = self.client.post("/v1/me/devices", headers=user.headers,
                                        json={"platform": ("fcm", "apns")[n % 2], "token": f"{name}-phone-{n}"})
            assert response.status_code == 201, response.get_json()
        return user

    def rule(self, name: str, cooldown_s: int = 0) -> str:
        response = self.client.post("/v1/rules", headers=bearer(self.operator),
                                    json=example_rule(name=name, cooldown_s=cooldown_s))
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def patch_me(self, user: ApiUser, **changes: Any) -> None:
        response = self.client.patch("/v1/me", headers=user.headers, json=changes)
        assert response.status_code == 200, response.get_json()

    def consent(self, user: ApiUser, granted: bool) -> None:
        response = self.client.put("/v1/me/consents/proactive_push", headers=user.headers, json={"granted": granted})
        assert response.status_code == 200, response.get_json()

    def propose(self, user: ApiUser, rule_id: str | None, *, now: datetime | None = None, title: str = "Parking",
                body: str | None = None, expires_at: datetime | None = None, collapse_key: str | None = None,
                cooldown_s: int = 0, dedupe_key: str | None = None, payload: dict | None = None) -> str:
        trigger_id = uuid.uuid4()
        body = body if body is not None else f"spots near your destination ({trigger_id})"
        proposal = Proposal(
            user_id=uuid.UUID(user.id), kind="spots_near_destination",
            content=RecipeResult(title=title, body=body, payload=payload or {"spots": [{"id": str(trigger_id)}]},
                                 collapse_key=collapse_key, expires_at=expires_at),
            reason={"rule": {"id": rule_id, "name": "small spots before arrival"},
                    "trigger": {"event": "trip.approaching", "at": (now or utcnow()).isoformat(), "fields": {}},
                    "facts": {"product.attributes.length_m": 2.69}},
            dedupe_key=dedupe_key or f"{trigger_id}:{rule_id}", rule_id=uuid.UUID(rule_id) if rule_id else None,
            trigger_id=trigger_id, cooldown_s=cooldown_s)
        with self.database.unit_of_work() as uow:
            suggestion = propose(uow, proposal, now=now)
            uow.commit()
            return str(suggestion.id)

    def deliver(self, now: datetime | None = None, **kwargs: Any) -> int:
        """Run every open push message of the outbox (as the worker would); how many ran."""
        with self.database.session() as session:
            messages = list(session.execute(select(OutboxMessage.id, OutboxMessage.payload).where(
                OutboxMessage.task == PUSH_TASK, OutboxMessage.completed_at.is_(None)).order_by(OutboxMessage.id)))
        for outbox_id, payload in messages:
            deliver_suggestion(self.app.extensions["smartsvc"], uuid.UUID(payload["suggestion_id"]), outbox_id,
                               now=now, **kwargs)
        return len(messages)

    def pushes(self) -> list[dict[str, Any]]:
        path = self.app.extensions["smartsvc"].settings.pushes_log_path
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def get(self, user: ApiUser, suggestion_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/me/suggestions/{suggestion_id}", headers=user.headers)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def inbox(self, user: ApiUser, **query: Any) -> list[dict[str, Any]]:
        response = self.client.get("/v1/me/suggestions", headers=user.headers, query_string=query)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["items"]

    def feedback(self, user: ApiUser, suggestion_id: str, expect: int = 200, **body: Any) -> dict[str, Any]:
        response = self.client.post(f"/v1/me/suggestions/{suggestion_id}/feedback", headers=user.headers, json=body)
        assert response.status_code == expect, response.get_json()
        return response.get_json()


def suggestion_world(app: Any) -> SuggestionWorld:
    """A world on ``app`` with an operator key and an app key."""
    return SuggestionWorld(app, app.test_client(), api_key(app, "operator"), api_key(app, "app"))


def berlin(*args: int) -> datetime:
    """A Berlin wall-clock time, in UTC."""
    return datetime(*args, tzinfo=BERLIN).astimezone(timezone.utc)


def parse(value: str) -> datetime:
    """A time the API returned."""
    return datetime.fromisoformat(value)
