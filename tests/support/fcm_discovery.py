"""Validate a ``projects.messages.send`` body against Google's ``fcm.v1`` discovery document.

The document ships with google-api-python-client; it is read from the
installed package, never from the network. Checks follow Google's JSON
mapping of protobuf: unknown fields, wrong types, values outside an enum and
malformed durations are refused, each reported as the field path and a
description in the words Google uses. FCM's own rules that the schema cannot
express (one target, reserved data keys, the 4 KB payload) are checked too.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

DURATION = re.compile(r"^-?\d+(\.\d{1,9})?s$")
TARGETS = ("token", "topic", "condition", "fid")
MAX_PAYLOAD_BYTES = 4096
INT32 = (-(2 ** 31), 2 ** 31 - 1)


@dataclass(frozen=True)
class Violation:
    """One refused field: its path (``message.android.ttl``) and why."""

    field: str
    description: str


@functools.cache
def discovery_document() -> dict[str, Any]:
    """The ``fcm.v1`` discovery document of the installed google-api-python-client."""
    path = resources.files("googleapiclient") / "discovery_cache" / "documents" / "fcm.v1.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _check(value: Any, schema: dict[str, Any], path: str, out: list[Violation]) -> None:
    if value is None:
        return  # JSON null is the field's default in Google's mapping
    if "$ref" in schema:
        schema = discovery_document()["schemas"][schema["$ref"]]
    kind = schema.get("type")
    if kind == "any":
        return
    if kind == "object" and "additionalProperties" not in schema:
        _check_message(value, schema, path, out)
    elif kind == "object":  # a map (protobuf map<string, T>)
        if not isinstance(value, dict):
            out.append(Violation(path, f"Invalid value at '{path}', {json.dumps(value)}: expected an object"))
            return
        for key, item in value.items():
            _check(item, schema.get("additionalProperties", {"type": "any"}), f"{path}[{key!r}]", out)
    elif kind == "array":
        if not isinstance(value, list):
            out.append(Violation(path, f"Invalid value at '{path}', {json.dumps(value)}: expected a list"))
            return
        for index, item in enumerate(value):
            _check(item, schema.get("items", {"type": "any"}), f"{path}[{index}]", out)
    else:
        problem = _scalar_problem(value, schema)
        if problem:
            out.append(Violation(path, f"Invalid value at '{path}' ({problem}), {json.dumps(value)}"))


def _check_message(value: Any, schema: dict[str, Any], path: str, out: list[Violation]) -> None:
    if not isinstance(value, dict):
        out.append(Violation(path, f"Invalid value at '{path}', {json.dumps(value)}: expected an object"))
        return
    properties = schema.get("properties", {})
    names = {**{_snake(name): name for name in properties}, **{name: name for name in properties}}
    for key, item in value.items():
        name = names.get(key)
        if name is None:
            where = path or "message"
            out.append(Violation(f"{path}.{key}" if path else key,
                                 f'Invalid JSON payload received. Unknown name "{key}" at \'{where}\': '
                                 "Cannot find field."))
            continue
        _check(item, properties[name], f"{path}.{name}" if path else name, out)


def _scalar_problem(value: Any, schema: dict[str, Any]) -> str | None:
    kind, fmt = schema.get("type"), schema.get("format")
    if kind == "string":
        if not isinstance(value, str):
            return "TYPE_STRING"
        if "enum" in schema and value not in schema["enum"]:
            return f"TYPE_ENUM, one of {schema['enum']}"
        if fmt == "google-duration" and not DURATION.match(value):
            return "type.googleapis.com/google.protobuf.Duration"
        if fmt == "google-datetime":
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return "type.googleapis.com/google.protobuf.Timestamp"
        if fmt == "byte":
            try:
                base64.b64decode(value, validate=True)
            except ValueError:
                return "TYPE_BYTES"
        if fmt in ("int64", "uint64"):
            return None if re.fullmatch(r"-?\d+", value) else "TYPE_INT64"
        return None
    if kind == "integer":
        number = value if isinstance(value, int) and not isinstance(value, bool) else \
            int(value) if isinstance(value, str) and re.fullmatch(r"-?\d+", value) else None
        if number is None or (fmt == "int32" and not INT32[0] <= number <= INT32[1]):
            return "TYPE_INT32"
        return None
    if kind == "number":
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "TYPE_FLOAT"
    if kind == "boolean":
        return None if isinstance(value, bool) else "TYPE_BOOL"
    return None


def _fcm_rules(message: dict[str, Any], out: list[Violation]) -> None:
    targets = [name for name in TARGETS if message.get(name)]
    if len(targets) != 1:
        out.append(Violation("message", f"exactly one of {', '.join(TARGETS)} must be set, got {targets or 'none'}"))
    for key in (message.get("data") or {}):
        if key in ("from", "message_type") or key.startswith(("google.", "gcm.notification.")):
            out.append(Violation(f"message.data[{key!r}]", f"Invalid data payload key: {key!r} is reserved"))
    size = sum(len(json.dumps(message.get(part) or {}, ensure_ascii=False, separators=(",", ":")).encode())
               for part in ("data", "notification"))
    if size > MAX_PAYLOAD_BYTES:
        out.append(Violation("message", f"Message is too big: {size} bytes of payload (at most {MAX_PAYLOAD_BYTES})"))


def validate_send_request(body: Any) -> list[Violation]:
    """Everything FCM would refuse in a ``messages:send`` body (empty: it is accepted)."""
    document = discovery_document()
    method = document["resources"]["projects"]["resources"]["messages"]["methods"]["send"]
    out: list[Violation] = []
    _check_message(body, document["schemas"][method["request"]["$ref"]], "", out)
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict):
        out.append(Violation("message", "message is required"))
    elif not out:
        _fcm_rules(message, out)
    return out
