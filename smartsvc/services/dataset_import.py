"""Importing a dataset's file into layer features: the worker's job, and ``smartsvc import``'s in-process.

The file is streamed through the geodata readers and written in batches, each
in its own short transaction that also records the progress (bytes of the
file read), so the API shows progress while a large file imports and no
transaction holds a million rows. Readers never see these features before the
dataset is published.

Safe to run again at any time (the outbox delivers at least once):
- a dataset already ``ready``/``failed``/published, or deleted, is left alone;
- a dataset found ``importing`` (its worker died, or the message came twice)
  is restarted cleanly: its features are deleted first. Each run takes a
  number (``import_attempts``); a run whose number is no longer the current
  one stops at its next batch without writing, so two runs never mix.

A file that is not what it claims to be, or past the features-per-file limit,
fails as a whole: status ``failed``, a ``failure`` a person understands, and
none of its features left.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import delete
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from geodata.readers import FeatureResult, Reader, ReadOptions, open_reader
from geodata.validate import FormatError, Issue, Limits, json_depth

from ..config import Settings
from ..db import Database
from ..models import Dataset, LayerFeature
from ..timeutil import is_valid_time_zone, utcnow
from . import outbox, uploads
from .layers import FeatureToStore, feature_row, insert_features

log = logging.getLogger(__name__)

BATCH_SIZE = 2000
# Progress (and the outbox lease) is written at least this often, even while a
# file yields no spots for a long stretch (an OSM extract is mostly roads).
PROGRESS_INTERVAL_S = 2.0
MAX_ERRORS_KEPT = 1000
_MAX_TEXT = 500  # characters of an issue's message or feature label that are kept
_MAX_FEATURE_ID = 300  # the column's length
_MAX_METADATA_BYTES = 64 * 1024
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ImportOutcome:
    """What a run did: ``status`` is the dataset's status afterwards (``gone`` when deleted)."""

    dataset_id: uuid.UUID
    status: str
    ran: bool


class ImportFailed(Exception):
    """The file cannot be imported; the message is the dataset's ``failure``."""


class _RunStopped(Exception):
    """The dataset was deleted, or another run took it over: stop without writing."""


@dataclass(frozen=True)
class _Claim:
    dataset_id: uuid.UUID
    attempt: int
    upload_name: str | None
    file_size: int
    fmt: str | None
    time_zone: str | None


@dataclass
class _Tally:
    """What the run found so far; rows wait here until their batch is written."""

    total: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0
    done: int = 0
    accepted: int = 0
    rejected: int = 0
    repaired: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_total: int = 0
    errors_changed: bool = False
    bbox: list[float] | None = None


def import_limits(settings: Settings) -> Limits:
    """The geodata limits from the ``SMARTSVC_IMPORT_MAX_*`` settings."""
    return Limits(max_features=settings.import_max_features, max_vertices=settings.import_max_vertices,
                  max_depth=settings.import_max_depth)


def storable(value: Any) -> Any:
    """``value`` with what no database here can store replaced.

    NUL and unpaired surrogates (PostgreSQL refuses them in text and jsonb)
    become U+FFFD; infinite or NaN numbers (not JSON) become null.
    """
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value) if _UNSTORABLE.search(value) else value
    if isinstance(value, dict):
        return {storable(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _short(text: str, limit: int = _MAX_TEXT) -> str:
    text = storable(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def issue_entry(issue: Issue) -> dict[str, Any]:
    """An issue as the API shows it: which feature (index or id), which field, what is wrong."""
    feature = issue.feature if isinstance(issue.feature, int) else _short(str(issue.feature), _MAX_FEATURE_ID)
    return {"feature": feature, "field": _short(issue.field, 200), "message": _short(issue.message),
            "level": issue.level}


def run_import(
    database: Database,
    settings: Settings,
    dataset_id: uuid.UUID,
    outbox_id: int | None = None,
    *,
    batch_size: int = BATCH_SIZE,
    progress_interval_s: float = PROGRESS_INTERVAL_S,
    on_progress: ProgressCallback | None = None,
) -> ImportOutcome:
    """Import the dataset's uploaded file; idempotent (see the module docstring).

    Rows are written every ``batch_size`` spots, and at least every
    ``progress_interval_s`` seconds; ``on_progress(done, total)`` is called
    after each write with the bytes of the file read so far. Transient database errors propagate (the outbox
    delivers the message again and the next run restarts cleanly); anything
    else fails the dataset with a readable ``failure``.
    """
    claim = _claim(database, dataset_id, outbox_id)
    if isinstance(claim, ImportOutcome):
        return claim
    try:
        return _import(database, settings, claim, outbox_id, batch_size, progress_interval_s, on_progress)
    except _RunStopped:
        return _stopped(database, claim, outbox_id)
    except (FormatError, ImportFailed) as exc:
        return fail_import(database, settings, claim.dataset_id, str(exc), outbox_id=outbox_id,
                           attempt=claim.attempt)
    except (OperationalError, InterfaceError):
        raise
    except Exception as exc:
        log.exception("import failed unexpectedly", extra={"dataset_id": str(dataset_id)})
        failure = (f"the import stopped unexpectedly ({type(exc).__name__}); upload the file again, "
                   "and report it if this happens again")
        return fail_import(database, settings, claim.dataset_id, failure, outbox_id=outbox_id,
                           attempt=claim.attempt)


def _locked(session: Session, dataset_id: uuid.UUID) -> Dataset | None:
    # FOR UPDATE on PostgreSQL; SQLite's write transaction already excludes other writers.
    return session.get(Dataset, dataset_id, with_for_update=True, populate_existing=True)


def _claim(database: Database, dataset_id: uuid.UUID, outbox_id: int | None) -> _Claim | ImportOutcome:
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
        claim = _Claim(dataset_id, dataset.import_attempts, dataset.upload_path, dataset.file_size,
                       dataset.format, dataset.time_zone)
        uow.commit()
    return claim


def _current(session: Session, claim: _Claim) -> Dataset:
    """The dataset, locked, if this run still owns it; :class:`_RunStopped` otherwise."""
    dataset = _locked(session, claim.dataset_id)
    if dataset is None or dataset.status != "importing" or dataset.import_attempts != claim.attempt:
        raise _RunStopped()
    return dataset


def _import(
    database: Database, settings: Settings, claim: _Claim, outbox_id: int | None, batch_size: int,
    progress_interval_s: float, on_progress: ProgressCallback | None,
) -> ImportOutcome:
    if claim.upload_name is None:
        raise ImportFailed("the uploaded file is no longer there; upload it again")
    try:
        fp = open(uploads.path_of(settings.upload_folder, claim.upload_name), "rb")
    except (OSError, ValueError):
        raise ImportFailed("the uploaded file is no longer there (is SMARTSVC_UPLOAD_DIR shared by the API and "
                           "the workers?); upload it again") from None
    tally = _Tally(total=claim.file_size)
    options = ReadOptions(dataset=str(claim.dataset_id), limits=import_limits(settings),
                          service_area=settings.service_area, timezone=claim.time_zone)
    with fp:
        reader = open_reader(fp, claim.fmt, options)
        written_at = time.monotonic()
        for result in reader:
            _add(tally, claim.dataset_id, result)
            if len(tally.rows) >= batch_size or time.monotonic() - written_at >= progress_interval_s:
                tally.done = reader.position() or tally.done
                _write_batch(database, claim, outbox_id, tally)
                written_at = time.monotonic()
                if on_progress is not None:
                    on_progress(tally.done, tally.total)
        _finish(database, claim, outbox_id, tally, reader)
    uploads.remove(settings.upload_folder, claim.upload_name)
    if on_progress is not None:
        on_progress(tally.total, tally.total)
    log.info("dataset imported", extra={"dataset_id": str(claim.dataset_id), "spots": tally.seq,
                                        "rejected": tally.rejected})
    return ImportOutcome(claim.dataset_id, "ready", True)


def _add(tally: _Tally, dataset_id: uuid.UUID, result: FeatureResult) -> None:
    """Count one input feature and queue its spots for the next batch."""
    if result.spots:
        tally.accepted += 1
    tally.rejected += result.rejected
    tally.repaired += result.repaired
    for spot in result.spots:
        row = feature_row(dataset_id, tally.seq, FeatureToStore(spot, result.index))
        if row["feature_id"] is not None:
            row["feature_id"] = _short(str(row["feature_id"]), _MAX_FEATURE_ID)
        row["properties"] = storable(row["properties"])
        tally.rows.append(row)
        tally.seq += 1
        box = (row["min_lon"], row["min_lat"], row["max_lon"], row["max_lat"])
        if tally.bbox is None:
            tally.bbox = list(box)
        else:
            tally.bbox = [min(tally.bbox[0], box[0]), min(tally.bbox[1], box[1]),
                          max(tally.bbox[2], box[2]), max(tally.bbox[3], box[3])]
    for issue in result.issues:
        tally.errors_total += 1
        if len(tally.errors) < MAX_ERRORS_KEPT:
            tally.errors.append(issue_entry(issue))
            tally.errors_changed = True


def _record(dataset: Dataset, tally: _Tally) -> None:
    """Write what the run found so far onto the dataset row."""
    dataset.progress_done = min(tally.done, tally.total)
    dataset.accepted, dataset.rejected, dataset.repaired = tally.accepted, tally.rejected, tally.repaired
    dataset.spots = tally.seq
    dataset.errors_total = tally.errors_total
    if tally.errors_changed:
        dataset.errors = list(tally.errors)
        tally.errors_changed = False


def _write_batch(database: Database, claim: _Claim, outbox_id: int | None, tally: _Tally) -> None:
    """One short transaction: the waiting rows and the progress."""
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        dataset = _current(session, claim)
        insert_features(session, tally.rows)
        _record(dataset, tally)
        outbox.extend_lease(session, outbox_id)
        uow.commit()
    tally.rows = []


def _time_zone(configured: str | None, from_file: str | None, tally: _Tally) -> str | None:
    """The dataset's time zone: the one given at upload, else the one the file brings (if valid)."""
    if configured:
        return configured
    if not from_file:
        return None
    if isinstance(from_file, str) and is_valid_time_zone(from_file):
        return from_file
    tally.errors_total += 1
    if len(tally.errors) < MAX_ERRORS_KEPT:
        tally.errors.append({
            "feature": "file", "field": "time_zone", "level": "warning",
            "message": _short(f"the file's time zone '{from_file}' is not an IANA time zone and was ignored; "
                              "upload again with time_zone set"),
        })
        tally.errors_changed = True
    return None


def _metadata(metadata: Any, limits: int) -> dict[str, Any]:
    """What the file says about itself, kept when it is small and plain enough to store."""
    if not isinstance(metadata, dict) or not metadata or json_depth(metadata) > limits:
        return {}
    cleaned = storable(metadata)
    if len(json.dumps(cleaned)) > _MAX_METADATA_BYTES:
        return {}
    return cleaned


def _finish(database: Database, claim: _Claim, outbox_id: int | None, tally: _Tally, reader: Reader) -> None:
    """The last batch and the result, with the outbox message completed, in one transaction."""
    time_zone = _time_zone(claim.time_zone, reader.timezone, tally)
    metadata = _metadata(reader.metadata, reader.options.limits.max_depth)
    tally.done = tally.total
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        dataset = _current(session, claim)
        insert_features(session, tally.rows)
        _record(dataset, tally)
        dataset.errors = list(tally.errors)
        dataset.status = "ready"
        dataset.format = reader.format
        dataset.time_zone = time_zone
        dataset.file_metadata = metadata
        if tally.bbox is not None:
            (dataset.bbox_min_lon, dataset.bbox_min_lat, dataset.bbox_max_lon, dataset.bbox_max_lat) = tally.bbox
        dataset.finished_at = utcnow()
        dataset.upload_path = None
        outbox.complete(session, outbox_id)
        uow.commit()
    tally.rows = []


def _stopped(database: Database, claim: _Claim, outbox_id: int | None) -> ImportOutcome:
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
        dataset.failure = _short(failure, 2000)
        dataset.spots = 0
        dataset.bbox_min_lon = dataset.bbox_min_lat = dataset.bbox_max_lon = dataset.bbox_max_lat = None
        dataset.finished_at = utcnow()
        dataset.upload_path = None
        outbox.complete(session, outbox_id)
        uow.commit()
    uploads.remove(settings.upload_folder, upload)
    log.info("dataset import failed", extra={"dataset_id": str(dataset_id), "failure": failure[:200]})
    return ImportOutcome(dataset_id, "failed", True)
