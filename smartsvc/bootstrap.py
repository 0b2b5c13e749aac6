"""One place that wires the service's parts together from settings."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .credentials import AccessTokens
from .db import Database


@dataclass
class Container:
    """The long-lived parts one process shares: settings, database, token signer."""

    settings: Settings
    database: Database
    tokens: AccessTokens


def build_container(settings: Settings) -> Container:
    """Build the parts for ``settings`` (nothing connects until first use)."""
    return Container(
        settings=settings,
        database=Database(settings),
        tokens=AccessTokens(settings.secret_key, settings.access_token_ttl_s),
    )
