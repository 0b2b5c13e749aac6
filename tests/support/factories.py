"""Helpers that build apps, keys and users for tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask

from smartsvc.app import create_app
from smartsvc.config import Settings
from smartsvc.migrate import upgrade
from smartsvc.services.keys import create_key


def make_settings(var_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test: everything under ``var_dir``, JSON logs off."""
    base = Settings(
        var_dir=var_dir,
        database_url=f"sqlite:///{var_dir / 'smartsvc.db'}",
        broker_url="filesystem://",
        secret_key="test-secret-key-0123456789abcdef0123456789",
        rate_limit="100000/minute",
        log_json=False,
        log_level="WARNING",
    )
    return base.replace(**overrides)


def make_app(settings: Settings, *, migrate: bool = True) -> Flask:
    """A fresh app on ``settings`` with its schema migrated."""
    app = create_app(settings)
    if migrate:
        upgrade(app.extensions["smartsvc"].database)
    return app


def api_key(app: Flask, role: str, name: str | None = None) -> str:
    """A new API key with ``role``."""
    return create_key(app.extensions["smartsvc"].database, role, name or f"test {role}").plaintext


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


@dataclass
class TestUser:
    """A user created through the API, with its token."""

    id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def make_user(client: Any, app_key: str, external_id: str, time_zone: str = "Europe/Berlin") -> TestUser:
    """Create a user through ``POST /v1/users``."""
    response = client.post("/v1/users", json={"external_id": external_id, "time_zone": time_zone},
                           headers=bearer(app_key))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    return TestUser(id=body["id"], token=body["access_token"])


def grant(client: Any, user: TestUser, *purposes: str) -> None:
    """Grant consents for ``user``."""
    for purpose in purposes:
        response = client.put(f"/v1/me/consents/{purpose}", json={"granted": True}, headers=user.headers)
        assert response.status_code == 200, response.get_json()
