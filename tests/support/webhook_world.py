"""A world for the partner webhook tests: keys, users and endpoints through the API, the worker run in-process.

:meth:`WebhookWorld.drain` is the worker: the real outbox relay publishes
due messages (collected, then run after its commit) and each webhook message
runs the real Celery task function (``workers.tasks.webhooks.deliver``)
inside the app context, until nothing is due. Sends go over HTTP to a
:class:`~tests.support.webhook_receiver.WebhookReceiver` on 127.0.0.1.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartsvc.config import Settings
from smartsvc.services.outbox import relay_pending
from smartsvc.services.webhook_batch import batches_per_endpoint
from smartsvc.services.proposals import Proposal, RecipeResult
from smartsvc.services.suggestions import propose
from smartsvc.services.webhook_events import DELIVER_TASK
from tests.support.factories import TestUser as ApiUser
from tests.support.factories import api_key, bearer, grant, make_settings, make_user

# Loopback receivers over plain http; retries at once (tests that need the schedule set their own).
WEBHOOK_SETTINGS: dict[str, Any] = {"webhook_allow_private": True, "webhook_allow_http": True,
                                    "webhook_retry_schedule": (0, 0, 0, 0), "webhook_timeout_s": 5.0}


def webhook_settings(var_dir: Path, **overrides: Any) -> Settings:
    """Test settings that let webhooks reach a local receiver."""
    return make_settings(var_dir, **{**WEBHOOK_SETTINGS, **overrides})


@dataclass
class WebhookWorld:
    """An app with a partner key, an app key and helpers for endpoints, events, the worker and the log."""

    app: Any
    client: Any
    partner: str
    app_key: str

    @property
    def database(self) -> Any:
        return self.app.extensions["smartsvc"].database

    def key(self, role: str = "partner") -> str:
        return api_key(self.app, role)

    def register(self, url: str, event_types: list[str], *, key: str | None = None, **extra: Any) -> dict[str, Any]:
        response = self.client.post("/v1/webhooks", headers=bearer(key or self.partner),
                                    json={"url": url, "event_types": event_types, **extra})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def webhook(self, webhook_id: str, *, key: str | None = None) -> dict[str, Any]:
        response = self.client.get(f"/v1/webhooks/{webhook_id}", headers=bearer(key or self.partner))
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def deliveries(self, webhook_id: str, *, key: str | None = None, **query: Any) -> list[dict[str, Any]]:
        response = self.client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=bearer(key or self.partner),
                                   query_string=query)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["items"]

    def user(self, name: str, *, sharing: bool = True) -> ApiUser:
        user = make_user(self.client, self.app_key, name)
        if sharing:
            grant(self.client, user, "partner_sharing")
        return user

    def set_sharing(self, user: ApiUser, granted: bool) -> None:
        response = self.client.put("/v1/me/consents/partner_sharing", headers=user.headers, json={"granted": granted})
        assert response.status_code == 200, response.get_json()

    def suggest(self, user: ApiUser, *, title: str = "3 spots near Alexanderplatz",
                payload: dict[str, Any] | None = None) -> str:
        """A suggestion for ``user``, as the engine stores them (``suggestion.created``)."""
        proposal = Proposal(user_id=uuid.UUID(user.id), kind="spots_near_destination", dedupe_key=str(uuid.uuid4()),
                            content=RecipeResult(title=title, body="free spots near your destination",
                                                 payload=payload or {"spots": [{"lat": 52.520008, "lon": 13.404954}]}),
                            reason={"rule": {"id": None, "name": "webhook test"}})
        with self.database.unit_of_work() as uow:
            suggestion_id = str(propose(uow, proposal).id)
            uow.commit()
        return suggestion_id

    def drain(self, max_rounds: int = 50) -> int:
        """Run the relay and the webhook tasks until nothing is due; how many deliveries the tasks were given.

        Deliveries go out as in production: the relay groups them per endpoint
        into batch tasks (``SMARTSVC_WEBHOOK_BATCH_SIZE``).
        """
        from workers.tasks.webhooks import deliver_batch

        ran = 0
        size = self.app.extensions["smartsvc"].settings.webhook_batch_size
        for _ in range(max_rounds):
            batches: list[list[dict[str, Any]]] = []

            def publish(messages: list[Any]) -> None:
                for group in batches_per_endpoint(messages):
                    batches.append([{**m.payload, "outbox_id": m.id} for m in group])

            relay_pending(self.database, lambda m: None, groups={DELIVER_TASK: (size, publish)})
            if not batches:
                return ran
            with self.app.app_context():
                for items in batches:
                    deliver_batch.run(items)
                    ran += len(items)
        raise AssertionError(f"webhook deliveries still due after {max_rounds} rounds")


def webhook_world(app: Any) -> WebhookWorld:
    """A world on ``app`` (its settings must allow the local receiver: :func:`webhook_settings`)."""
    return WebhookWorld(app=app, client=app.test_client(), partner=api_key(app, "partner"),
                        app_key=api_key(app, "app"))
