"""The outbox relay task: publish committed work to the broker."""

from __future__ import annotations

from datetime import timedelta

from celery import current_app as current_celery
from celery import shared_task
from flask import current_app

from smartsvc.models import OutboxMessage
from smartsvc.services.outbox import relay_pending


def _publish(message: OutboxMessage) -> None:
    current_celery.send_task(
        message.task,
        kwargs={**message.payload, "outbox_id": message.id},
        task_id=f"outbox-{message.id}-{message.attempts + 1}",
    )


@shared_task(name="smartsvc.outbox.relay", ignore_result=True, acks_late=False)
def relay() -> int:
    """Publish due outbox messages; safe to run concurrently and repeatedly."""
    settings = current_app.extensions["smartsvc"].settings
    return relay_pending(current_app.extensions["smartsvc"].database, _publish,
                         batch_size=settings.outbox_batch_size,
                         redeliver_after=timedelta(seconds=settings.outbox_redeliver_after_s))
