"""``smartsvc import FILE --layer parking``: the API's import, run in this process with a progress bar."""

from __future__ import annotations

import contextlib
import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ApiError
from ..models import DATASET_FORMATS, LAYERS, Dataset
from .common import build_app, ensure_schema

if TYPE_CHECKING:
    from rich.console import Console

ERRORS_SHOWN = 20


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (containers)
        return "cli"


def _report(console: Console, dataset: Dataset) -> None:
    """What the import made of the file, for a person."""
    console.print(f"dataset {dataset.id}  {dataset.name!r}  layer {dataset.layer}  format {dataset.format or '?'}"
                  f"  time zone {dataset.time_zone or 'none'}")
    console.print(f"{dataset.status}: {dataset.accepted:,} features accepted, {dataset.rejected:,} rejected, "
                  f"{dataset.repaired:,} repaired; {dataset.spots:,} spots stored")
    if dataset.errors_total:
        shown = (dataset.errors or [])[:ERRORS_SHOWN]
        console.print(f"{dataset.errors_total:,} problems found (first {len(shown)} shown):")
        for issue in shown:
            console.print(f"  [{issue['level']}] feature {issue['feature']}: {issue['field']}: {issue['message']}")


def _import_with_progress(database: Any, settings: Any, dataset: Dataset, label: str) -> None:
    """Run the import here, drawing a progress bar by bytes read (on stderr)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from ..services.dataset_import import fail_import, run_import

    columns = (TextColumn("importing {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True, highlight=False)) as progress:
        bar = progress.add_task(label, total=max(dataset.file_size, 1))
        try:
            run_import(database, settings, dataset.id,
                       on_progress=lambda done, _total: progress.update(bar, completed=done))
        except BaseException:  # Ctrl-C or the database went away: leave nothing half-imported
            with contextlib.suppress(Exception):
                fail_import(database, settings, dataset.id, "the import was interrupted; run it again")
            raise


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option("--layer", type=click.Choice(LAYERS), required=True, help="The layer it becomes a version of")
@click.option("--name", default=None, help="Dataset name [default: the file name]")
@click.option("--format", "fmt", type=click.Choice(DATASET_FORMATS), default=None,
              help="File format [default: detected]")
@click.option("--time-zone", default=None, help="IANA time zone of the rules' local times (CurbLR brings its own)")
@click.option("--publish", is_flag=True, help="Make it the live version of the layer when the import succeeds")
def import_file(file: Path, layer: str, name: str | None, fmt: str | None, time_zone: str | None,
                publish: bool) -> None:
    """Import a geodata file as a new dataset, as the API does, here in this process (no worker needed)."""
    from rich.console import Console

    from ..services.datasets import create_dataset, get_dataset, publish_dataset

    app = build_app()
    database, settings = app.extensions["smartsvc"].database, app.extensions["smartsvc"].settings
    out = Console(highlight=False, soft_wrap=True, markup=False)  # file text is not markup
    try:
        ensure_schema(app)
        try:
            with open(file, "rb") as stream:
                # The upload size limit is for HTTP bodies; a local file is held to the import limits only.
                dataset = create_dataset(database, settings, stream, name=name or file.name[:200], layer=layer,
                                         fmt=fmt, time_zone=time_zone, file_name=file.name, created_by=_who(),
                                         max_bytes=None, enqueue=False)
        except ApiError as exc:
            raise click.ClickException(exc.detail) from None
        _import_with_progress(database, settings, dataset, file.name)
        dataset = get_dataset(database, dataset.id)
        _report(out, dataset)
        if dataset.status != "ready":
            raise click.ClickException(f"the import of {file.name} failed: {dataset.failure or dataset.status}")
        if publish:
            published = publish_dataset(database, dataset.id)
            out.print(f"published: dataset {published.id} is now the live version of layer {published.layer}")
        else:
            out.print(f"not published; publish it with POST /v1/datasets/{dataset.id}/publish")
    finally:
        database.engine.dispose()
