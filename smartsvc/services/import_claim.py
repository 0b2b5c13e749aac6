"""Which import run holds a dataset: taking it for a run, checking the run still holds it, and letting it go.

A run takes a queued (or interrupted) dataset by numbering itself
(``import_attempts``); every later write checks that number first (:func:`current`),
so a run that was taken over, or whose dataset was deleted, stops without
writing (:class:`RunStopped`, :func:`stopped`). :func:`fail_import` ends a run
that cannot finish: the dataset ``failed``, its features and upload gone.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import Database
from ..models import Dataset, LayerFeature
from ..timeutil import utcnow
from . import outbox, uploads
from .import_rows import short

# The importer's logger, so the records keep the logger name they had before this module was split off.
log = logging.getLogger("smartsvc.services.dataset_import")


@dataclass(frozen=True)
class ImportOutcome:
    """What a run did: ``status`` is the dataset's status afterwards (``gone`` when deleted)."""

    dataset_id: uuid.UUID
    status: str
    ran: bool


class RunStopped(Exception):
    """The dataset was deleted, or another run took it over: stop without writing."""


@dataclass(frozen=True)
class Claim:
    """A run's hold on its dataset (``attempt`` is the run's number) and what it needs of the dataset row."""

    dataset_id: uuid.UUID
    attempt: int
    upload_name: str | None
    file_size: int
    fmt: str | None
    time_zone: str | None


def _locked(session: Session, dataset_id: uuid.UUID) -> Dataset | None:
    # FOR UPDATE on PostgreSQL; SQLite's write transaction already excludes other writers.
    return session.get(Dataset, dataset_id, with_for_update=True, populate_existing=True)


def take_dataset(database: Database, dataset_id: uuid.UUID, outbox_id: int | None) -> Claim | ImportOutcome:
    """Take the dataset for this run (queued or importing → importing), or say why there is nothing to do."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        dataset = _locked(session, dataset_id)
        if dataset is None or dataset.status not in ("queued", "importing"):
            outbox.complete(session, outbox_id)
            uow.commit()
            return ImportOutcome(dataset_id, dataset.status if dataset else "gone", False)
        if dataset.status == "importing":
            log.warning("restarting an interrupted import", extra={"dataset_id": str(dataset_id),
                                                                     "attempt": dataset.import_attempts})
            session.execute(delete(LayerFeature).where(LayerFeature.dataset_id == dataset_id))
        dataset.status = "importing"
        dataset.import_attempts = (dataset.import_attempts or 0) + 1
        dataset.started_at = utcnow()
        dataset.finished_at = None
        dataset.progress_done = 0
        dataset.progress_total = dataset.file_size
        dataset.accepted = dataset.rejected = dataset.repaired = dataset.spots = dataset.errors_total = 0
        dataset.errors = []
        dataset.failure = None
        dataset.bbox_min_lon = dataset.bbox_min_lat = dataset.bbox_max_lon = dataset.bbox_max_lat = None
        outbox.extend_lease(session, outbox_id)
        claim = Claim(dataset_id, dataset.import_attempts, dataset.upload_path, dataset.file_size,
                      dataset.format, dataset.time_zone)
        uow.commit()
    return claim


def current(session: Session, claim: Claim) -> Dataset:
    """The dataset, locked, if this run still owns it; :class:`RunStopped` otherwise."""
    dataset = _locked(session, claim.dataset_id)
    if dataset is None or dataset.status != "importing" or dataset.import_attempts != claim.attempt:
        raise RunStopped()
    return dataset


def stopped(database: Database, claim: Claim, outbox_id: int | None) -> ImportOutcome:
    """This run lost its dataset: deleted (the message is done) or taken over by another run."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        dataset = session.get(Dataset, claim.dataset_id)
        if dataset is None:
            outbox.complete(session, outbox_id)
            uow.commit()
            log.info("dataset deleted while importing", extra={"dataset_id": str(claim.dataset_id)})
            return ImportOutcome(claim.dataset_id, "gone", False)
        status = dataset.status
    log.info("import taken over by another run", extra={"dataset_id": str(claim.dataset_id)})
    return ImportOutcome(claim.dataset_id, status, False)


def fail_import(
    database: Database,
    settings: Settings,
    dataset_id: uuid.UUID,
    failure: str,
    *,
    outbox_id: int | None = None,
    attempt: int | None = None,
) -> ImportOutcome:
    """Mark an importing dataset ``failed`` with ``failure``; its features and upload go.

    With ``attempt``, only if that run still owns the dataset. Used by the
    import itself and by ``smartsvc import`` when it is interrupted.
    """
    upload = None
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        dataset = _locked(session, dataset_id)
        if dataset is None:
            outbox.complete(session, outbox_id)
            uow.commit()
            return ImportOutcome(dataset_id, "gone", False)
        taken_over = attempt is not None and dataset.import_attempts != attempt
        if dataset.status not in ("queued", "importing") or taken_over:
            return ImportOutcome(dataset_id, dataset.status, False)
        session.execute(delete(LayerFeature).where(LayerFeature.dataset_id == dataset_id))
        upload = dataset.upload_path
        dataset.status = "failed"
        dataset.failure = short(failure, 2000)
        dataset.spots = 0
        dataset.bbox_min_lon = dataset.bbox_min_lat = dataset.bbox_max_lon = dataset.bbox_max_lat = None
        dataset.finished_at = utcnow()
        dataset.upload_path = None
        outbox.complete(session, outbox_id)
        uow.commit()
    uploads.remove(settings.upload_folder, upload)
    log.info("dataset import failed", extra={"dataset_id": str(dataset_id), "failure": failure[:200]})
    return ImportOutcome(dataset_id, "failed", True)
