"""Flask CLI hooks (``flask --app smartsvc ...``) — kept minimal; ``smartsvc`` is the real CLI."""

from __future__ import annotations

from flask import Flask


def register_flask_commands(app: Flask) -> None:
    """Nothing beyond flask-smorest's ``openapi`` group for now."""
    return None
