"""The command implementations (thin: they call the use cases and services)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..migrate import upgrade
from ..models import KEY_ROLES
from .common import build_app, ensure_schema
from .processes import preloaded_app_factory, run_all, serve_api


@click.command()
@click.option("--port", default=8080, show_default=True, help="HTTP port")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on")
def run(port: int, host: str) -> None:
    """API, worker and scheduler together on the embedded defaults (quick start)."""
    app = build_app()
    ensure_schema(app)
    settings = app.extensions["smartsvc"].settings
    click.echo(f"smartsvc on http://{host}:{port}  (docs: http://{host}:{port}/docs)", err=True)
    click.echo(f"database: {settings.database_url}   pushes: {settings.pushes_log_path}", err=True)
    raise SystemExit(run_all(host, port))


@click.command()
@click.option("--port", default=8080, show_default=True, help="HTTP port")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Server processes [default: number of cores]")
def api(port: int, host: str, workers: int | None) -> None:
    """The HTTP API alone, served by gunicorn."""
    app = build_app()
    ensure_schema(app)
    serve_api(host, port, workers or os.cpu_count() or 1, factory=preloaded_app_factory(app))


@click.command()
@click.option("--concurrency", type=click.IntRange(1, 256), default=None,
              help="Worker processes [default: number of cores]")
@click.option("--queues", default="smartsvc,webhooks", show_default=True,
              help="Queues to consume (e.g. a worker of its own for partner webhooks: --queues webhooks)")
def worker(concurrency: int | None, queues: str) -> None:
    """A Celery worker for the outbox relay, imports, suggestions and deliveries."""
    app = build_app()
    ensure_schema(app)
    celery = app.extensions["celery"]
    # -O fair: a task goes to a child process that is free, never queues behind one waiting on a slow
    # endpoint (Celery's default writes it into a busy child's pipe: isolation would be lost).
    argv = ["worker", "--loglevel=INFO", f"--concurrency={concurrency or os.cpu_count() or 1}",
            "-Q", queues, "-O", "fair", "--without-gossip", "--without-mingle", "-n", "smartsvc@%h"]
    celery.worker_main(argv)


@click.command()
def beat() -> None:
    """The scheduler: outbox relay sweeps, housekeeping, daily checks."""
    app = build_app()
    celery = app.extensions["celery"]
    # Its schedule file lives in the var folder, which nothing else creates when the database and the
    # broker are servers: beat would die opening it, and no relay sweep would ever run.
    Path(celery.conf.beat_schedule_filename).parent.mkdir(parents=True, exist_ok=True)
    celery.start(["beat", "--loglevel=INFO"])


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations (SQLite or PostgreSQL + PostGIS)."""
    app = build_app()
    upgrade(app.extensions["smartsvc"].database)
    click.echo("database is up to date")


@click.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--role", type=click.Choice(KEY_ROLES), required=True)
@click.option("--name", required=True, help="Who or what uses the key")
def keys_create(role: str, name: str) -> None:
    """Create an API key and print it (shown this once; only a hash is stored)."""
    from ..services.keys import create_key

    app = build_app()
    ensure_schema(app)
    created = create_key(app.extensions["smartsvc"].database, role, name)
    click.echo(created.plaintext)
    click.echo(f"key {created.key.id} ({role}, {name!r}) — store it now, it is not shown again", err=True)


@click.group()
def openapi() -> None:
    """The OpenAPI document."""


@openapi.command("write")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default=Path("api_spec/openapi.json"))
def openapi_write(path: Path) -> None:
    """Write the OpenAPI document generated from the code to PATH."""
    app = build_app()
    with app.test_request_context():
        document = app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    click.echo(f"wrote {path}")
