"""The writing stage of an import: the spots read so far, cut into batches, each written with the run's progress.

:class:`Tally` counts what the reader yields and holds the spots until
:func:`cut` makes them a :class:`Batch`; :class:`BatchWriter` writes each batch
in a short transaction of its own (the rows, and the progress on the dataset
row), optionally in a thread while the file goes on being read.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from geodata.model import Spot
from geodata.readers import FeatureResult
from geodata.validate import Issue

from ..db import Database
from ..models import Dataset
from . import outbox
from .import_claim import Claim, current
from .import_rows import MAX_FEATURE_ID, feature_values, short
from .layers import insert_feature_values

MAX_ERRORS_KEPT = 1000

ProgressCallback = Callable[[int, int], None]


@dataclass
class Tally:
    """What the run found so far; rows wait here until their batch is written."""

    total: int
    # (spot, index of its feature in the file), waiting for the next batch
    rows: list[tuple[Spot, int]] = field(default_factory=list)
    seq: int = 0
    done: int = 0
    accepted: int = 0
    rejected: int = 0
    repaired: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_total: int = 0
    errors_changed: bool = False
    bbox: list[float] | None = None


def issue_entry(issue: Issue) -> dict[str, Any]:
    """An issue as the API shows it: which feature (index or id), which field, what is wrong."""
    feature = issue.feature if isinstance(issue.feature, int) else short(str(issue.feature), MAX_FEATURE_ID)
    return {"feature": feature, "field": short(issue.field, 200), "message": short(issue.message),
            "level": issue.level}


def add(tally: Tally, result: FeatureResult) -> None:
    """Count one input feature and queue its spots for the next batch."""
    spots = result.spots
    if spots:
        tally.accepted += 1
        for spot in spots:
            tally.rows.append((spot, result.index))
        tally.seq += len(spots)
    if result.issues:
        tally.rejected += result.rejected
        tally.repaired += result.repaired
        for issue in result.issues:
            tally.errors_total += 1
            if len(tally.errors) < MAX_ERRORS_KEPT:
                tally.errors.append(issue_entry(issue))
                tally.errors_changed = True


@dataclass(frozen=True)
class Progress:
    """What the run had found when a batch was cut, as :func:`record` writes it."""

    done: int
    total: int
    accepted: int
    rejected: int
    repaired: int
    spots: int
    errors_total: int
    errors: list[dict[str, Any]] | None  # a copy when they changed since the last batch


@dataclass(frozen=True)
class Batch:
    """Spots to write (with the ``seq`` of the first) and the progress to record with them."""

    spots: list[tuple[Spot, int]]
    first_seq: int
    progress: Progress


def _snapshot(tally: Tally) -> Progress:
    errors = None
    if tally.errors_changed:
        errors = list(tally.errors)
        tally.errors_changed = False
    return Progress(tally.done, tally.total, tally.accepted, tally.rejected, tally.repaired, tally.seq,
                    tally.errors_total, errors)


def cut(tally: Tally) -> Batch:
    """The waiting spots and the progress so far, as one batch; the tally starts a new one."""
    spots, tally.rows = tally.rows, []
    return Batch(spots, tally.seq - len(spots), _snapshot(tally))


def batch_rows(batch: Batch, tally: Tally) -> tuple[list[tuple[Any, ...]], list[Any]]:
    """The batch's stored rows and their geometries; the dataset's bbox (``tally.bbox``) grows by them."""
    rows, geometries = feature_values(batch.spots, batch.first_seq)
    box = tally.bbox
    for row in rows:
        min_lon, min_lat, max_lon, max_lat = row[6:]
        if box is None:
            box = [min_lon, min_lat, max_lon, max_lat]
            continue
        # min()/max() one box at a time, as before (the same result even for a NaN bound)
        if min_lon < box[0]:
            box[0] = min_lon
        if min_lat < box[1]:
            box[1] = min_lat
        if max_lon > box[2]:
            box[2] = max_lon
        if max_lat > box[3]:
            box[3] = max_lat
    tally.bbox = box
    return rows, geometries


def record(dataset: Dataset, progress: Progress) -> None:
    """Write what the run found so far onto the dataset row."""
    dataset.progress_done = min(progress.done, progress.total)
    dataset.accepted, dataset.rejected, dataset.repaired = progress.accepted, progress.rejected, progress.repaired
    dataset.spots = progress.spots
    dataset.errors_total = progress.errors_total
    if progress.errors is not None:
        dataset.errors = progress.errors


class BatchWriter:
    """Writes the batches of one run, each in a short transaction of its own, then calls ``on_progress``.

    With ``threaded``, a thread of its own writes while the file goes on being
    read (the database work, in SQLite's C code or in the PostgreSQL server,
    overlaps the parsing); at most one batch waits for it, so memory stays
    bounded. ``on_progress`` then runs in that thread, still right after its
    batch is committed. An error in the thread is raised again in the reading
    thread at its next :meth:`submit` (or when the block ends). Leaving the
    block waits for the thread: batches already handed over are written
    (as they were before the reader failed), except after a
    ``BaseException`` (Ctrl-C, a worker shutting down), when waiting ones
    are dropped — the caller then fails the import and removes its rows.
    """

    def __init__(self, database: Database, claim: Claim, outbox_id: int | None,
                 on_progress: ProgressCallback | None, tally: Tally, *, threaded: bool) -> None:
        self._database = database
        self._claim = claim
        self._outbox_id = outbox_id
        self._on_progress = on_progress
        self._tally = tally
        self._threaded = threaded
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._drop = False

    def __enter__(self) -> BatchWriter:
        if self._threaded:
            self._thread = threading.Thread(target=self._run, name=f"import-writer-{self._claim.dataset_id}",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, _tb: Any) -> None:
        if self._thread is None:
            return
        if exc_type is not None and not issubclass(exc_type, Exception):
            self._drop = True
        self._put(None, raise_error=False)
        self._thread.join()
        self._thread = None
        if exc_type is None and self._error is not None:
            raise self._error

    def submit(self, batch: Batch) -> None:
        """Write ``batch`` (in the thread: hand it over, waiting while another batch waits)."""
        if self._thread is None:
            self._write(batch)
        else:
            self._put(batch, raise_error=True)

    def _put(self, item: Batch | None, *, raise_error: bool) -> None:
        while True:
            if raise_error and self._error is not None:
                raise self._error
            if self._drop:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._drop or self._error is not None:
                continue  # taken off the queue, not written: the reading thread stops or drops them
            try:
                self._write(batch)
            except BaseException as exc:  # noqa: BLE001 — raised again in the reading thread
                self._error = exc

    def _write(self, batch: Batch) -> None:
        rows, geometries = batch_rows(batch, self._tally)
        with self._database.unit_of_work() as uow:
            session = uow.session
            assert session is not None
            dataset = current(session, self._claim)
            insert_feature_values(session, self._claim.dataset_id, rows, geometries)
            record(dataset, batch.progress)
            outbox.extend_lease(session, self._outbox_id)
            uow.commit()
        if self._on_progress is not None:
            self._on_progress(batch.progress.done, batch.progress.total)
