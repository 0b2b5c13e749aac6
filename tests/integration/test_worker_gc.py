"""A worker process keeps what it started with out of the cyclic collector's walks (BENCHMARKS.md, 7)."""

from __future__ import annotations

import gc

from celery.signals import worker_process_init, worker_ready


def test_a_forked_worker_process_freezes_what_it_inherited(app):
    gc.unfreeze()
    try:
        worker_process_init.send(sender=None)
        # Modules, the app, SQLAlchemy's mappers: far more than a handful of objects.
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


def test_the_worker_main_process_freezes_once_ready(app):
    gc.unfreeze()
    try:
        worker_ready.send(sender=None)
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
