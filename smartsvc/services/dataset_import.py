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

Which run holds the dataset is :mod:`.import_claim`'s; the batches and the
progress written with them are :mod:`.import_batches`'s.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from geodata.readers import Reader, ReadOptions, open_reader
from geodata.validate import FormatError, Limits, json_depth

from ..config import Settings
from ..db import Database
from ..timeutil import is_valid_time_zone, utcnow
from . import outbox, uploads
from .import_batches import (
    MAX_ERRORS_KEPT,
    BatchWriter,
    ProgressCallback,
    Tally,
    add,
    batch_rows,
    cut,
    record,
)
from .import_claim import (
    Claim,
    ImportOutcome,
    RunStopped,
    current,
    fail_import,
    stopped,
    take_dataset,
)
from .import_rows import short, storable
from .layers import insert_feature_values

log = logging.getLogger(__name__)

BATCH_SIZE = 10_000
# Batches are written by a thread of their own while the file is read (see BatchWriter).
WRITE_IN_THREAD = True
# Progress (and the outbox lease) is written at least this often, even while a
# file yields no spots for a long stretch (an OSM extract is mostly roads).
PROGRESS_INTERVAL_S = 2.0
_MAX_METADATA_BYTES = 64 * 1024


class ImportFailed(Exception):
    """The file cannot be imported; the message is the dataset's ``failure``."""


def import_limits(settings: Settings) -> Limits:
    """The geodata limits from the ``SMARTSVC_IMPORT_MAX_*`` settings."""
    return Limits(max_features=settings.import_max_features, max_vertices=settings.import_max_vertices,
                  max_depth=settings.import_max_depth)


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
    claim = take_dataset(database, dataset_id, outbox_id)
    if isinstance(claim, ImportOutcome):
        return claim
    try:
        return _import(database, settings, claim, outbox_id, batch_size, progress_interval_s, on_progress)
    except RunStopped:
        return stopped(database, claim, outbox_id)
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


def _import(
    database: Database, settings: Settings, claim: Claim, outbox_id: int | None, batch_size: int,
    progress_interval_s: float, on_progress: ProgressCallback | None,
) -> ImportOutcome:
    if claim.upload_name is None:
        raise ImportFailed("the uploaded file is no longer there; upload it again")
    try:
        fp = open(uploads.path_of(settings.upload_folder, claim.upload_name), "rb")
    except (OSError, ValueError):
        raise ImportFailed("the uploaded file is no longer there (is SMARTSVC_UPLOAD_DIR shared by the API and "
                           "the workers?); upload it again") from None
    tally = Tally(total=claim.file_size)
    options = ReadOptions(dataset=str(claim.dataset_id), limits=import_limits(settings),
                          service_area=settings.service_area, timezone=claim.time_zone)
    with fp:
        reader = open_reader(fp, claim.fmt, options)
        with BatchWriter(database, claim, outbox_id, on_progress, tally, threaded=WRITE_IN_THREAD) as writer:
            monotonic = time.monotonic
            written_at = monotonic()
            for result in reader:
                add(tally, result)
                if len(tally.rows) >= batch_size or monotonic() - written_at >= progress_interval_s:
                    tally.done = reader.position() or tally.done
                    writer.submit(cut(tally))
                    written_at = monotonic()
        _finish(database, claim, outbox_id, tally, reader)
    uploads.remove(settings.upload_folder, claim.upload_name)
    if on_progress is not None:
        on_progress(tally.total, tally.total)
    log.info("dataset imported", extra={"dataset_id": str(claim.dataset_id), "spots": tally.seq,
                                        "rejected": tally.rejected})
    return ImportOutcome(claim.dataset_id, "ready", True)


def _time_zone(configured: str | None, from_file: str | None, tally: Tally) -> str | None:
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
            "message": short(f"the file's time zone '{from_file}' is not an IANA time zone and was ignored; "
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


def _finish(database: Database, claim: Claim, outbox_id: int | None, tally: Tally, reader: Reader) -> None:
    """The last batch and the result, with the outbox message completed, in one transaction."""
    time_zone = _time_zone(claim.time_zone, reader.timezone, tally)
    metadata = _metadata(reader.metadata, reader.options.limits.max_depth)
    tally.done = tally.total
    batch = cut(tally)
    rows, geometries = batch_rows(batch, tally)
    with database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        dataset = current(session, claim)
        insert_feature_values(session, claim.dataset_id, rows, geometries)
        record(dataset, batch.progress)
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

