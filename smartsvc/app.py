"""The Flask application factory."""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

from flask import Flask, request
from flask.sessions import SessionInterface

from .bootstrap import build_container
from .config import Settings, ensure_secret_key, load_settings
from .http.api import Api
from .http.registry import register_blueprints
from .http.requests import install_request_hooks
from .http.uploads import UploadRequest
from .logging_setup import configure_logging
from .ratelimit import RequestRateLimiter

API_VERSION = "1.0.0"
# Functions ensure_sync has found plain (hooks, views, error handlers: as many as the app registers).
_SYNC_KEPT_MAX = 10_000


class SmartsvcFlask(Flask):
    """Flask, with the sync-or-async check of each hook and view made once, not on every request.

    ``Flask.ensure_sync`` runs ``inspect.iscoroutinefunction`` for every hook
    and view of every request: nine times per spot search (BENCHMARKS.md, 2).
    Overriding it is the documented way to change how the app runs them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plain_functions: set[Any] = set()

    def ensure_sync(self, func: Any) -> Any:
        """``func`` itself when it is a plain function (as Flask decides); async ones are wrapped each time."""
        plain = self._plain_functions
        # A method view's method is bound to a new view object per request: its function is what is asked.
        key = getattr(func, "__func__", func)
        try:
            if key in plain:
                return func
        except TypeError:  # an unhashable callable: ask Flask every time
            return super().ensure_sync(func)
        wrapped = super().ensure_sync(func)
        if wrapped is func:
            if len(plain) >= _SYNC_KEPT_MAX:
                plain.clear()
            plain.add(key)
        return wrapped


def create_app(settings: Settings | None = None, environ: Mapping[str, str] | None = None) -> Flask:
    """Build a fresh app: settings, container, Celery, rate limits, the API.

    ``settings`` wins over ``environ`` (tests pass their own); with neither,
    the process environment is read. Nothing connects until first use.
    """
    settings = ensure_secret_key(settings or load_settings(environ))
    configure_logging(settings.log_level, settings.log_json, pseudonym_key=settings.secret_key)

    app = SmartsvcFlask("smartsvc")
    app.request_class = UploadRequest
    app.session_interface = NoSessionInterface()
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="smartsvc",
        API_VERSION=API_VERSION,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="v1/openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/",
        API_SPEC_OPTIONS=_spec_options(),
        JSON_SORT_KEYS=False,
    )
    container = build_container(settings)
    app.extensions["smartsvc"] = container

    from workers.celery_app import init_celery, wake_relay
    from workers.relay_waker import RedisWakeGate, RelayWaker

    celery = init_celery(app)
    interval_s = settings.outbox_wake_interval_ms / 1000
    gate = RedisWakeGate(settings.broker_url, interval_s) if settings.broker_url.startswith("redis") else None
    container.database.outbox_notifier = RelayWaker(lambda: wake_relay(celery), interval_s, gate)

    install_request_hooks(app)
    limiter = RequestRateLimiter(settings.rate_limit, settings.rate_limit_storage_url, _rate_limit_key)
    limiter.install(app)
    app.extensions["rate_limiter"] = limiter
    app.json.sort_keys = False  # type: ignore[attr-defined]
    api = Api(app)
    register_blueprints(api)
    from .cli.flask_commands import register_flask_commands

    register_flask_commands(app)
    return app


class NoSessionInterface(SessionInterface):
    """No cookie session: the API authenticates every request by its bearer credential.

    Flask's default interface builds a signing serializer and looks for a
    cookie on every request; with this one ``flask.session`` is Flask's
    ``NullSession`` (reading gives nothing, writing raises) and no
    ``Set-Cookie`` is ever sent.
    """

    def open_session(self, app: Flask, request: object) -> None:  # type: ignore[override]
        return None

    def save_session(self, app: Flask, session: object, response: object) -> None:  # type: ignore[override]
        return None


# Authorization header -> its counter key: a caller sends the same header on every request. Bounded, emptied
# when full (the limiter's own key table is too).
_CALLER_KEYS_MAX = 10_000
_caller_keys: dict[str, str] = {}


def _rate_limit_key() -> str:
    """Callers are counted by credential (hashed), anonymous ones by address."""
    header = request.headers.get("Authorization")
    if header:
        key = _caller_keys.get(header)
        if key is None:
            if len(_caller_keys) >= _CALLER_KEYS_MAX:
                _caller_keys.clear()
            key = _caller_keys[header] = "cred:" + hashlib.sha256(header.encode()).hexdigest()[:32]
        return key
    return "addr:" + (request.remote_addr or "unknown")


def _spec_options() -> dict[str, Any]:
    return {
        "info": {
            "description": (
                "Context-aware smart-service backend: products users own, where they are and what "
                "the world offers, turned into few, relevant, proactive suggestions. Errors are "
                "application/problem+json (RFC 9457)."
            )
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (ssk_…) or a user access token (sat_…).",
                }
            }
        },
    }
