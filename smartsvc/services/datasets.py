"""Datasets: upload a geodata file, publish an imported one as the live version of its layer, delete one.

The import itself (the worker's job) is :mod:`smartsvc.services.dataset_import`.
Life of a dataset: ``queued`` (file stored, import enqueued in the same
transaction) → ``importing`` → ``ready`` or ``failed``; ``publish`` makes a
ready one ``published`` (the live version of its layer) and the previous live
one ``superseded``; publishing a superseded one again is the rollback.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import BinaryIO

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import Database
from ..errors import Conflict, InvalidInput, NotFound
from ..ids import new_id
from ..models import DATASET_FORMATS, DATASET_STATUSES, LAYERS, Dataset, LayerFeature, LiveLayer
from ..timeutil import is_valid_time_zone, utcnow
from . import outbox, uploads
from .pagination import Page, keyset_page
from .webhook_events import dataset_event, emit_event

log = logging.getLogger(__name__)

IMPORT_TASK = "smartsvc.datasets.import"
# Layers imported from files through the geodata spot readers. Geofences are
# objects with their own rules and are managed through /v1/geofences.
UPLOADABLE_LAYERS = ("parking", "pois")
GEOFENCES_MESSAGE = "geofences are managed through /v1/geofences, not uploaded as a dataset"
PUBLISHABLE = ("ready", "superseded", "published")
# Statuses whose upload file an import still needs.
WAITING = ("queued", "importing")
MAX_NAME_LENGTH = 200
MAX_FILE_NAME_LENGTH = 300


def check_upload_fields(*, name: str, layer: str, fmt: str | None, time_zone: str | None) -> None:
    """422 naming the field when one of an upload's fields is not acceptable."""
    if not name.strip() or len(name) > MAX_NAME_LENGTH or "\x00" in name:
        raise InvalidInput("name", f"must be 1–{MAX_NAME_LENGTH} characters, not blank")
    if layer == "geofences":
        raise InvalidInput("layer", GEOFENCES_MESSAGE)
    if layer not in UPLOADABLE_LAYERS:
        raise InvalidInput("layer", f"must be one of {', '.join(UPLOADABLE_LAYERS)}")
    if fmt is not None and fmt not in DATASET_FORMATS:
        raise InvalidInput("format", f"must be one of {', '.join(DATASET_FORMATS)} (or left out to detect it)")
    if time_zone is not None and not is_valid_time_zone(time_zone):
        raise InvalidInput("time_zone", f"'{time_zone[:64]}' is not an IANA time zone such as 'Europe/Berlin'")


def _clean_file_name(file_name: str | None) -> str | None:
    """The client's file name, for the record only (never used as a path)."""
    if not file_name:
        return None
    base = file_name.replace("\\", "/").rsplit("/", 1)[-1].replace("\x00", "")
    return base[:MAX_FILE_NAME_LENGTH] or None


def create_dataset(
    database: Database,
    settings: Settings,
    stream: BinaryIO,
    *,
    name: str,
    layer: str,
    fmt: str | None = None,
    time_zone: str | None = None,
    file_name: str | None = None,
    created_by: str | None = None,
    max_bytes: int | None,
    enqueue: bool = True,
) -> Dataset:
    """Store the uploaded file and a ``queued`` dataset, with its import enqueued in the same transaction.

    Past ``max_bytes`` the upload is 413 and nothing is kept. ``enqueue=False``
    (the CLI) leaves the import to the caller, who runs it in-process.
    """
    check_upload_fields(name=name, layer=layer, fmt=fmt, time_zone=time_zone)
    dataset_id = new_id()
    stored = uploads.save(settings.upload_folder, str(dataset_id), stream, max_bytes=max_bytes)
    committed: list[bool] = []
    try:
        with database.unit_of_work() as uow:
            session = uow.session
            assert session is not None
            # Registered first, so it runs before any other after-commit callback.
            uow.after_commit(lambda: committed.append(True))
            dataset = Dataset(
                id=dataset_id, name=name.strip(), layer=layer, format=fmt, time_zone=time_zone, status="queued",
                file_name=_clean_file_name(file_name), file_size=stored.size, upload_path=stored.name,
                progress_done=0, progress_total=stored.size, accepted=0, rejected=0, repaired=0, spots=0,
                import_attempts=0, errors=[], errors_total=0, file_metadata={}, created_by=created_by,
            )
            session.add(dataset)
            if enqueue:
                outbox.enqueue(uow, IMPORT_TASK, {"dataset_id": str(dataset_id)}, ordering_key=f"dataset:{dataset_id}")
            uow.commit()
    except BaseException:
        if not committed:
            uploads.remove(settings.upload_folder, stored.name)
        raise
    return dataset


def get_dataset(database: Database, dataset_id: uuid.UUID) -> Dataset:
    """One dataset, or 404."""
    with database.session() as session:
        dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    return dataset


def list_datasets(
    database: Database, *, layer: str | None, status: str | None, limit: int, cursor: uuid.UUID | None
) -> Page[Dataset]:
    """Datasets in upload order, optionally of one layer and/or status."""
    query = select(Dataset)
    if layer is not None:
        query = query.where(Dataset.layer == layer)
    if status is not None:
        query = query.where(Dataset.status == status)
    with database.session() as session:
        return keyset_page(session, query, Dataset.id, limit=limit, after=cursor)


def _dataset_locked_after_its_layer(session: Session, dataset_id: uuid.UUID) -> tuple[Dataset, LiveLayer | None]:
    """The dataset and its layer's live row, both locked, or 404.

    Locks are always taken in the order live row, then datasets (on
    PostgreSQL; SQLite's write transaction excludes other writers anyway), so
    a publish and a delete of datasets of one layer cannot deadlock.
    """
    layer = session.scalar(select(Dataset.layer).where(Dataset.id == dataset_id))
    if layer is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    live = session.get(LiveLayer, layer, with_for_update=True, populate_existing=True)
    dataset = session.get(Dataset, dataset_id, with_for_update=True, populate_existing=True)
    if dataset is None:  # deleted meanwhile
        raise NotFound(f"dataset {dataset_id} does not exist")
    return dataset, live


def _ensure_live_row(session: Session, layer: str) -> None:
    """Create the layer's live row (no dataset yet) unless it exists; concurrent creators do not collide."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(LiveLayer).values(layer=layer, dataset_id=None, version=0).on_conflict_do_nothing(
            index_elements=["layer"]
        )
    )


def publish_dataset(database: Database, dataset_id: uuid.UUID) -> Dataset:
    """Make the dataset the live version of its layer, atomically; the previous one becomes ``superseded``.

    Publishing the live dataset again changes nothing. Only a ``ready``,
    ``superseded`` (rollback) or ``published`` dataset can be published: 409 otherwise.
    """
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        layer = session.scalar(select(Dataset.layer).where(Dataset.id == dataset_id))
        if layer is None:
            raise NotFound(f"dataset {dataset_id} does not exist")
        _ensure_live_row(session, layer)
        dataset, live = _dataset_locked_after_its_layer(session, dataset_id)
        assert live is not None
        if live.dataset_id == dataset.id:
            uow.commit()  # nothing changed; committing keeps the loaded attributes (a rollback expires them)
            return dataset
        if dataset.status not in PUBLISHABLE:
            raise Conflict(
                f"dataset {dataset_id} is {dataset.status}; only a ready or superseded dataset can be published",
                errors={"status": [f"is {dataset.status}; must be ready or superseded"]},
            )
        now = utcnow()
        if live.dataset_id is not None:
            previous = session.get(Dataset, live.dataset_id, with_for_update=True, populate_existing=True)
            if previous is not None:
                previous.status = "superseded"
        live.dataset_id = dataset.id
        live.version = (live.version or 0) + 1
        live.published_at = now
        dataset.status = "published"
        dataset.published_at = now
        emit_event(uow, "dataset.published", f"layer:{dataset.layer}", dataset_event(dataset, live.version), now=now)
        uow.commit()
    log.info("dataset published", extra={"dataset_id": str(dataset_id), "layer": dataset.layer,
                                         "version": live.version})
    return dataset


def delete_dataset(database: Database, settings: Settings, dataset_id: uuid.UUID) -> None:
    """Delete a dataset with its features and any upload still waiting; 409 for the live one.

    An import of it that is running stops at its next batch and completes.
    """
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        dataset, live = _dataset_locked_after_its_layer(session, dataset_id)
        if live is not None and live.dataset_id == dataset.id:
            raise Conflict(
                f"dataset {dataset_id} is the live version of layer '{dataset.layer}': "
                "publish another dataset of the layer first, then delete this one"
            )
        upload = dataset.upload_path
        session.execute(delete(LayerFeature).where(LayerFeature.dataset_id == dataset_id))
        session.delete(dataset)
        uow.commit()
    uploads.remove(settings.upload_folder, upload)


def purge_stale_uploads(database: Database, settings: Settings, older_than: timedelta = timedelta(days=1)) -> int:
    """Remove upload files no waiting dataset needs (left by crashes); returns how many."""
    with database.session() as session:
        keep = set(session.scalars(
            select(Dataset.upload_path).where(Dataset.status.in_(WAITING), Dataset.upload_path.is_not(None))
        ))
    removed = 0
    for path in uploads.stale_files(settings.upload_folder, keep, older_than.total_seconds()):
        try:
            path.unlink(missing_ok=True)
            removed += 1
        except OSError as exc:
            log.warning("could not remove a stale upload", extra={"path": str(path), "error": str(exc)})
    return removed


__all__ = [
    "DATASET_FORMATS", "DATASET_STATUSES", "GEOFENCES_MESSAGE", "IMPORT_TASK", "LAYERS", "PUBLISHABLE",
    "UPLOADABLE_LAYERS", "check_upload_fields", "create_dataset", "delete_dataset", "get_dataset",
    "list_datasets", "publish_dataset", "purge_stale_uploads",
]
