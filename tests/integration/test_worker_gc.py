"""A worker process keeps what it started with out of the cyclic collector's walks (BENCHMARKS.md, 7)."""

from __future__ import annotations

import gc

import pytest
from celery.signals import worker_process_init, worker_ready


# A forked pool process freezes what it inherited; the main process freezes once it is ready.
@pytest.mark.parametrize("signal", [worker_process_init, worker_ready], ids=["pool process", "main process"])
def test_a_worker_process_freezes_what_it_started_with(app, signal):
    gc.unfreeze()
    try:
        signal.send(sender=None)
        # Modules, the app, SQLAlchemy's mappers: far more than a handful of objects.
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
