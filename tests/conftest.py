"""Fixtures every test layer shares: a fresh app and database per test."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask

from tests.support.factories import TestUser, api_key, make_app, make_settings, make_user


@pytest.fixture
def settings(tmp_path: Path):
    """Settings on a fresh SQLite database and filesystem broker under tmp_path."""
    return make_settings(tmp_path / "var")


@pytest.fixture
def app(settings) -> Iterator[Flask]:
    """A fresh, migrated app; its container (push connections, database pool) is closed afterwards."""
    app = make_app(settings)
    try:
        yield app
    finally:
        app.extensions["smartsvc"].close()
        celery = app.extensions.get("celery")
        if celery is not None:
            celery.close()


@pytest.fixture
def client(app: Flask) -> Any:
    """Flask test client."""
    return app.test_client()


@pytest.fixture
def operator_key(app: Flask) -> str:
    return api_key(app, "operator")


@pytest.fixture
def app_key(app: Flask) -> str:
    return api_key(app, "app")


@pytest.fixture
def partner_key(app: Flask) -> str:
    return api_key(app, "partner")


@pytest.fixture
def agent_key(app: Flask) -> str:
    return api_key(app, "agent")


@pytest.fixture
def user(client: Any, app_key: str) -> TestUser:
    """A user created through the API."""
    return make_user(client, app_key, "alice")


@pytest.fixture
def other_user(client: Any, app_key: str) -> TestUser:
    """A second user, whose objects the first must never reach."""
    return make_user(client, app_key, "bob")
