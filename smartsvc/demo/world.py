"""The service the demo talks to: a real app on a throwaway var dir, its HTTP API, its outbox run inline.

Nothing is short-cut: requests go through the Flask app's full stack (auth,
validation, the use cases), and the work the API leaves in the outbox
(imports, triggers, pushes) is relayed by :func:`~smartsvc.services.outbox.relay_pending`
and run by the registered Celery task functions, in this process, as a
worker would run them. The process's clock is the scenario's
(:func:`smartsvc.timeutil.simulated_clock`), so the run is the same every day.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from ..config import Settings, load_settings
from ..migrate import upgrade
from ..services.keys import create_key
from ..services.outbox import relay_pending

# Rounds of relay-and-run after which the outbox is taken to be looping (each round runs what the last made).
MAX_OUTBOX_ROUNDS = 20


class DemoFailed(Exception):
    """The service did not do what the scenario needs; the message says what and where."""


@dataclass
class SimulatedClock:
    """The scenario's "now": set by the steps, read by every use case through ``smartsvc.timeutil.utcnow``."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now.astimezone(timezone.utc)

    def set(self, at: datetime) -> None:
        """Move to ``at`` (never backwards: time does not run back in the scenario)."""
        self.now = max(self.now, at)

    def tick(self, seconds: float = 1.0) -> None:
        """Let a little time pass (a request takes a moment)."""
        self.now = self.now + timedelta(seconds=seconds)


def demo_settings(var_dir: Path) -> Settings:
    """The embedded defaults, everything under ``var_dir``; the caller's ``SMARTSVC_*`` variables are ignored
    so the demo never touches their database or broker."""
    return load_settings({
        "SMARTSVC_VAR_DIR": str(var_dir),
        "SMARTSVC_BROKER_URL": "memory://",  # tasks run in this process; nothing waits on a broker
        "SMARTSVC_PUSH_PROVIDER": "log",
        "SMARTSVC_LOG_JSON": "0",
        "SMARTSVC_LOG_LEVEL": "WARNING",
    })


@dataclass
class World:
    """The app, its test client and the scenario clock."""

    app: Flask
    clock: SimulatedClock
    tasks_run: list[str] = field(default_factory=list)
    client: FlaskClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = self.app.test_client()

    @classmethod
    def create(cls, var_dir: Path, clock: SimulatedClock) -> "World":
        """A fresh app on ``var_dir``, its database migrated (call inside the simulated clock)."""
        from ..app import create_app

        app = create_app(demo_settings(var_dir))
        upgrade(app.extensions["smartsvc"].database)
        return cls(app=app, clock=clock)

    @property
    def container(self) -> Any:
        return self.app.extensions["smartsvc"]

    @property
    def settings(self) -> Settings:
        return self.container.settings

    def close(self) -> None:
        """Close the database connections."""
        self.container.database.dispose()

    def key(self, role: str, name: str) -> str:
        """An API key, made as ``smartsvc keys create`` makes it."""
        return create_key(self.container.database, role, name).plaintext

    # ------------------------------------------------------------------ HTTP

    def call(self, method: str, path: str, token: str, *, expect: int, **kwargs: Any) -> Any:
        """One request through the app; its JSON body, or :class:`DemoFailed` when the status is not ``expect``."""
        client = self.client
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        response = client.open(path, method=method, headers=headers, **kwargs)
        self.clock.tick(0.2)
        if response.status_code != expect:
            raise DemoFailed(f"{method} {path} answered {response.status_code}, expected {expect}: "
                             f"{response.get_data(as_text=True)[:2000]}")
        return response.get_json(silent=True)

    # ------------------------------------------------------------------ the worker, inline

    def run_outbox(self) -> list[str]:
        """Relay every due outbox message and run its task here, until no work is left; the tasks run."""
        celery = self.app.extensions["celery"]
        database, settings = self.container.database, self.settings
        ran: list[str] = []
        for _ in range(MAX_OUTBOX_ROUNDS):
            due: list[tuple[str, dict[str, Any]]] = []
            # The relay publishes inside its own transaction: collect, and run once it has committed.
            relay_pending(database, lambda message: due.append(
                (message.task, {**message.payload, "outbox_id": message.id})),
                batch_size=settings.outbox_batch_size,
                redeliver_after=timedelta(seconds=settings.outbox_redeliver_after_s))
            if not due:
                self.tasks_run.extend(ran)
                return ran
            for task, kwargs in due:
                celery.tasks[task](**kwargs)  # the registered task: app context, then the task function
                ran.append(task)
        raise DemoFailed(f"the outbox still had work after {MAX_OUTBOX_ROUNDS} rounds: {ran[-10:]}")

    # ------------------------------------------------------------------ files

    def pushes(self) -> list[dict[str, Any]]:
        """The lines the ``log`` push provider wrote (``var/pushes.jsonl``)."""
        path = self.settings.pushes_log_path
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
