"""Assertions the API tests share: the problem+json shape and row counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select


def problem(response: Any, status: int, field: str | None = None) -> dict:
    """Assert ``response`` is an RFC 9457 problem with ``status`` (naming ``field`` when given); return its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert set(body) >= {"type", "title", "status", "detail", "request_id"}
    assert body["status"] == status and body["detail"]
    assert body["request_id"] == response.headers["X-Request-Id"]
    if field is not None:
        assert field in body.get("errors", {}), body
    return body


def count(app: Any, model: Any) -> int:
    """Rows of ``model`` in the app's database."""
    with app.extensions["smartsvc"].database.session() as session:
        return session.scalar(select(func.count()).select_from(model))
