"""The outbox relay task: publish committed work to the broker (due triggers, due pushes, and due webhook
deliveries per endpoint, grouped into batch tasks)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import current_app as current_celery
from celery import shared_task
from flask import current_app

from smartsvc.models import OutboxMessage
from smartsvc.services.delivery_batch import PUSH_BATCH_TASK
from smartsvc.services.engine_batch import HANDLE_BATCH_TASK
from smartsvc.services.outbox import relay_all
from smartsvc.services.suggestions import PUSH_TASK
from smartsvc.services.triggers import HANDLE_TASK
from smartsvc.services.webhook_batch import DELIVER_BATCH_TASK, batches_per_endpoint
from smartsvc.services.webhook_events import DELIVER_TASK

# Redis hands out a queue's messages of priority 0 (the default: relay runs, pushes, timers) before those of
# a higher number. The engine's batches take ~0.1–0.5 s each; a relay run or a push that finishes work the
# engine already did would otherwise wait behind every batch queued before it (BENCHMARKS.md, section 4).
# Ignored by the embedded (filesystem) broker, which keeps arrival order.
ENGINE_PRIORITY = 6


def _publish(message: OutboxMessage) -> None:
    current_celery.send_task(
        message.task,
        kwargs={**message.payload, "outbox_id": message.id},
        task_id=f"outbox-{message.id}-{message.attempts + 1}",
    )


def _publish_batch(task: str, messages: list[OutboxMessage], **options: Any) -> None:
    """``messages`` (due, in commit order) as one ``task`` whose ``items`` are their payloads."""
    first, last = messages[0], messages[-1]
    current_celery.send_task(
        task,
        kwargs={"items": [{**message.payload, "outbox_id": message.id} for message in messages]},
        task_id=f"outbox-{first.id}-{last.id}-{first.attempts + 1}",
        **options,
    )


def _publish_triggers(messages: list[OutboxMessage]) -> None:
    """Due trigger messages as one engine task (one transaction for all of them), behind the short tasks."""
    _publish_batch(HANDLE_BATCH_TASK, messages, priority=ENGINE_PRIORITY)


def _publish_pushes(messages: list[OutboxMessage]) -> None:
    """Due push messages as one batch task (one claim and one settle for all of them)."""
    _publish_batch(PUSH_BATCH_TASK, messages)


def _publish_webhooks(messages: list[OutboxMessage]) -> None:
    """Due webhook deliveries, one batch task per endpoint (its ordering key)."""
    for group in batches_per_endpoint(messages):
        _publish_batch(DELIVER_BATCH_TASK, group)


@shared_task(name="smartsvc.outbox.relay", ignore_result=True, acks_late=False)
def relay() -> int:
    """Publish due outbox messages, a backlog too (sweep after sweep); safe to run concurrently and repeatedly."""
    settings = current_app.extensions["smartsvc"].settings
    return relay_all(current_app.extensions["smartsvc"].database, _publish,
                         batch_size=settings.outbox_batch_size,
                         redeliver_after=timedelta(seconds=settings.outbox_redeliver_after_s),
                         groups={HANDLE_TASK: (settings.engine_batch_size, _publish_triggers),
                                 PUSH_TASK: (settings.push_batch_size, _publish_pushes),
                                 DELIVER_TASK: (settings.webhook_batch_size, _publish_webhooks)})
