"""The dataset import: read an uploaded file into layer features, in batches."""

from __future__ import annotations

import uuid

from celery import shared_task
from flask import current_app

from smartsvc.services.dataset_import import run_import
from smartsvc.services.datasets import IMPORT_TASK


# The time limits come from SMARTSVC_IMPORT_TIME_LIMIT_S (task_annotations in
# workers.celery_app): a million-feature file takes minutes, not the 60 s of other tasks.
@shared_task(name=IMPORT_TASK, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def import_dataset(dataset_id: str, outbox_id: int | None = None) -> str:
    """Idempotent: a dataset already imported (or deleted) is left alone; returns its status."""
    container = current_app.extensions["smartsvc"]
    return run_import(container.database, container.settings, uuid.UUID(dataset_id), outbox_id).status
