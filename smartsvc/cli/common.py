"""Helpers shared by the CLI commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..migrate import current_revision, head_revision, upgrade

if TYPE_CHECKING:
    from flask import Flask


def build_app() -> Flask:
    """The app from the environment (configuration errors surface here)."""
    from ..app import create_app

    return create_app()


def ensure_schema(app: Flask, *, auto_migrate_sqlite: bool = True) -> None:
    """Migrate the embedded SQLite database; refuse to start on an old PostgreSQL one."""
    container = app.extensions["smartsvc"]
    database = container.database
    if current_revision(database) == head_revision():
        return
    if container.settings.is_sqlite and auto_migrate_sqlite:
        click.echo("migrating the embedded database …", err=True)
        upgrade(database)
        return
    raise click.ClickException(
        f"database is at revision {current_revision(database)}, the code needs {head_revision()}: "
        "run 'smartsvc db upgrade' first"
    )
