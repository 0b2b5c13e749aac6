"""The Celery app, built by a factory around a Flask app.

Tasks are ``@shared_task`` in :mod:`workers.tasks` and run inside the Flask
app context, so they reach the same container (database, settings) as the
API. Nothing here runs at import time.
"""

from __future__ import annotations

import gc
import logging
import os
import uuid
from datetime import timedelta
from time import monotonic
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_ready
from flask import Flask
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps

from smartsvc.config import Settings
from smartsvc.services.datasets import IMPORT_TASK
from smartsvc.services.webhook_batch import DELIVER_BATCH_TASK as WEBHOOK_BATCH_TASK
from smartsvc.services.webhook_events import DELIVER_TASK as WEBHOOK_TASK
from smartsvc.services.webhook_events import WEBHOOK_QUEUE

log = logging.getLogger(__name__)

QUEUE = "smartsvc"
RELAY_TASK = "smartsvc.outbox.relay"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from the service settings."""
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": QUEUE,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_soft_time_limit_s + 30,
        # Imports read whole files (a million features take minutes): their own, longer limits.
        "task_annotations": {IMPORT_TASK: {"soft_time_limit": settings.import_time_limit_s,
                                           "time_limit": settings.import_time_limit_s + 60}},
        # Partner webhooks wait on other people's servers (up to the timeout): a queue of their own, so that
        # a slow endpoint never holds up pushes and the engine (a worker can be given just this queue).
        "task_routes": {WEBHOOK_TASK: {"queue": WEBHOOK_QUEUE}, WEBHOOK_BATCH_TASK: {"queue": WEBHOOK_QUEUE}},
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "beat_schedule_filename": str(settings.var_dir / "celerybeat-schedule"),
        "beat_schedule": {
            "outbox-relay": {"task": RELAY_TASK, "schedule": timedelta(seconds=settings.outbox_relay_interval_s)},
            "maintenance-purge": {"task": "smartsvc.maintenance.purge", "schedule": timedelta(hours=1)},
            "geofence-timer": {"task": "smartsvc.context.geofence_timer", "schedule": timedelta(seconds=15)},
            "suggestion-timers": {"task": "smartsvc.suggestions.timers", "schedule": timedelta(seconds=30)},
            "schedule-rules": {"task": "smartsvc.schedule.run", "schedule": timedelta(minutes=1)},
            "retention-purge": {"task": "smartsvc.retention.purge", "schedule": timedelta(days=1)},
            "webhook-slots": {"task": "smartsvc.webhooks.release_stranded", "schedule": timedelta(minutes=1)},
        },
    }
    if settings.broker_url.startswith("filesystem"):
        folder = settings.broker_data_dir.resolve()
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.1,
        }
        config["worker_enable_remote_control"] = False
        config["broker_transport"] = f"{__name__}:AtomicFilesystemTransport"
    else:
        # Redis hands an unacknowledged message to another worker after this long: never
        # while a task may still legitimately be running (acks_late).
        config["broker_transport_options"] = {"visibility_timeout": max(3600, settings.import_time_limit_s + 600)}
    return config


class _AtomicFilesystemChannel(filesystem.Channel):
    """kombu's filesystem channel, publishing each message file atomically.

    kombu creates the message file, then writes it: a worker polling in
    between takes an empty file, loses the message and dies with
    ``JSONDecodeError`` ("Unrecoverable error"). Here the message is written
    under a name the consumer ignores, then renamed into place.
    """

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        try:
            with open(path + ".tmp", "wb") as handle:  # ".msg.tmp": not picked up by _get
                handle.write(dumps(payload).encode())
            os.replace(path + ".tmp", path)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {path!r} to directory") from exc


class AtomicFilesystemTransport(filesystem.Transport):
    """The embedded (``filesystem://``) broker transport, with atomic publishes."""

    Channel = _AtomicFilesystemChannel


def init_celery(app: Flask) -> Celery:
    """Create the Celery app for ``app`` and store it in ``app.extensions``."""

    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    settings: Settings = app.extensions["smartsvc"].settings
    celery = Celery(app.name, task_cls=FlaskTask)
    celery.config_from_object(celery_config(settings))
    celery.set_default()
    from . import tasks  # noqa: F401  (registers the shared tasks)

    def _dispose_after_fork(**_kwargs: Any) -> None:
        # A forked child must not reuse the parent's connections.
        app.extensions["smartsvc"].database.dispose()
        freeze_startup_objects()

    worker_process_init.connect(_dispose_after_fork, weak=False)
    worker_ready.connect(lambda **_kwargs: freeze_startup_objects(), weak=False)
    app.extensions["celery"] = celery
    return celery


def freeze_startup_objects() -> None:
    """Take what exists once a worker process has started (modules, the app, SQLAlchemy's mappers:
    ~200,000 objects that live as long as the process) out of the cyclic collector's walks.

    Each full collection walks every tracked object: in benchmark 7 the busiest webhook worker spent 6 % of
    its CPU in them, 2.4 % once frozen (BENCHMARKS.md, 7). Frozen objects are still freed by their
    reference counts; what the process builds later is collected as before.
    """
    gc.freeze()


def wake_relay(celery: Celery) -> None:
    """Ask a worker to relay the outbox now (best effort: beat runs it anyway)."""
    try:
        celery.send_task(RELAY_TASK, retry=False, ignore_result=True)
    except Exception as exc:  # broker down: the scheduled relay catches up
        log.warning("could not wake the outbox relay", extra={"error": str(exc)})
