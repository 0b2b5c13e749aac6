"""Liveness and readiness."""

from __future__ import annotations

import logging

import marshmallow as ma
from flask import current_app
from flask.views import MethodView
from sqlalchemy import text

from .api import Blueprint
from .problems import problem_response

log = logging.getLogger(__name__)
blp = Blueprint("health", __name__, url_prefix="/v1", description="Liveness and readiness")


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True, metadata={"example": "ok"})


class ReadySchema(ma.Schema):
    status = ma.fields.String(required=True)
    checks = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String(), required=True)


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    def get(self):
        """The process is up (no dependencies checked)"""
        return {"status": "ok"}


@blp.route("/ready")
class Ready(MethodView):
    @blp.response(200, ReadySchema)
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self):
        """Database and broker answer; 503 naming the one that does not"""
        container = current_app.extensions["smartsvc"]
        checks = {"database": _check_database(container), "broker": _check_broker()}
        failing = [name for name, state in checks.items() if state != "ok"]
        if failing:
            errors = {name: [checks[name]] for name in failing}
            return problem_response(503, "Service Unavailable", f"not ready: {', '.join(failing)} down", errors)
        return {"status": "ok", "checks": checks}


def _check_database(container) -> str:
    try:
        with container.database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not ready"
        log.warning("database not ready", extra={"error": str(exc)})
        return f"unreachable: {type(exc).__name__}"
    return "ok"


def _check_broker() -> str:
    celery = current_app.extensions["celery"]
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # any transport error means "not ready"
        log.warning("broker not ready", extra={"error": str(exc)})
        return f"unreachable: {type(exc).__name__}"
    return "ok"
