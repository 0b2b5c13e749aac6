"""Structured logging: one JSON object per line, with the request id.

The request id comes from the ``X-Request-Id`` header when the caller sends
a sane one, otherwise it is generated; it is returned in the response
header and in every problem document, so a user's report can be matched to
the log lines of their request.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "smartsvc_request_id", default=None
)

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# Log fields that name a user. Process logs cannot be rewritten when a user is erased (TRUST.md), so a user
# appears in them only under a keyed pseudonym: stable across processes, useless without the secret key.
_USER_FIELDS = ("principal", "user_id")
_USER_PREFIX = "user:"


def user_pseudonym(key: str, user_id: object) -> str:
    """``user~`` and 16 hex digits of HMAC-SHA256(key, user id): the name a user has in the logs.

    An operator holding the key can compute it from a user id to find a
    user's requests; once the user is erased, nothing links it back.
    """
    digest = hmac.new(key.encode("utf-8"), str(user_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return "user~" + digest[:16]


def _pseudonymize(record: logging.LogRecord, key: str) -> None:
    for field in _USER_FIELDS:
        value = record.__dict__.get(field)
        if value is None:
            continue
        text = str(value)
        if field == "principal":
            if text.startswith(_USER_PREFIX):
                record.__dict__[field] = user_pseudonym(key, text[len(_USER_PREFIX):])
        else:
            record.__dict__[field] = user_pseudonym(key, text)


class PseudonymFilter(logging.Filter):
    """Replaces user ids in the ``principal`` and ``user_id`` fields by :func:`user_pseudonym`."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self._key = key

    def filter(self, record: logging.LogRecord) -> bool:
        _pseudonymize(record, self._key)
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with its ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, still carrying the request id."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = request_id_var.get()
        return f"{line} [{request_id}]" if request_id else line


def configure_logging(level: str = "INFO", json_lines: bool = True, pseudonym_key: str = "") -> None:
    """Install one stderr handler on the ``smartsvc`` and ``workers`` loggers.

    Idempotent, so every process (API, worker, CLI) can call it at start.
    With ``pseudonym_key`` (the service's secret key), user ids in log fields
    are written as :func:`user_pseudonym`.
    """
    handler = logging.StreamHandler(sys.stderr)
    if pseudonym_key:
        handler.addFilter(PseudonymFilter(pseudonym_key))
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("smartsvc", "workers", "geodata"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if getattr(old, "_smartsvc", False):
                logger.removeHandler(old)
        handler._smartsvc = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
