"""The ``smartsvc`` command line: run, api, worker, beat, db, keys, import, openapi, demo."""

from __future__ import annotations

import click

from ..config import ConfigError
from .commands import api, beat, db, keys, openapi, run, worker
from .demo_command import demo
from .import_command import import_file


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.ClickException(f"configuration error: {exc}") from None


@click.group(cls=_Group)
@click.version_option(package_name="smartsvc")
def main() -> None:
    """smartsvc — context-aware smart-service backend."""


for command in (run, api, worker, beat, db, keys, import_file, openapi, demo):
    main.add_command(command)
