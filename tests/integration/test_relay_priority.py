"""On Redis, work that finishes what the engine started is handed out before the engine's queued batches.

A push or a relay run published after engine batches must not wait behind
them (BENCHMARKS.md, section 4: the push's wait was a third of the lag).
The messages go through the relay's own publishing code to a real Redis
and are read back the way a worker reads the queue.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from smartsvc.models import OutboxMessage
from smartsvc.services.delivery_batch import PUSH_BATCH_TASK
from smartsvc.services.engine_batch import HANDLE_BATCH_TASK
from smartsvc.services.suggestions import PUSH_TASK
from smartsvc.services.triggers import HANDLE_TASK
from tests.integration.conftest import close_app
from tests.support.factories import make_app, make_settings
from workers.celery_app import QUEUE, RELAY_TASK
from workers.tasks import outbox as relay_task

REDIS_DB = 15  # the pipeline tests count up from 4, the worker tests use 1


def _messages(task: str, payload_key: str, first_id: int, n: int) -> list[OutboxMessage]:
    return [OutboxMessage(id=first_id + i, task=task, payload={payload_key: str(uuid.uuid4())}, attempts=0)
            for i in range(n)]


def test_pushes_and_relay_runs_are_taken_before_engine_batches_queued_earlier(redis_server, tmp_path: Path):
    app = make_app(make_settings(tmp_path / "var", broker_url=redis_server.url(REDIS_DB)))
    celery = app.extensions["celery"]
    try:
        with celery.connection_for_write() as connection:
            connection.default_channel.client.flushdb()
        with app.app_context():
            relay_task._publish_triggers(_messages(HANDLE_TASK, "trigger_id", 1, 50))
            relay_task._publish_triggers(_messages(HANDLE_TASK, "trigger_id", 51, 50))
            relay_task._publish_pushes(_messages(PUSH_TASK, "suggestion_id", 101, 3))
            celery.send_task(RELAY_TASK)  # as the relay waker sends it

        taken = []
        with celery.connection_for_read() as connection:
            queue = connection.SimpleQueue(QUEUE)
            for _ in range(4):
                message = queue.get(timeout=5)
                taken.append((message.headers["task"], len(message.decode()[1].get("items", []))))
                message.ack()
            queue.close()
        # Among equals, arrival order: the push before the relay run, the engine's batches in turn.
        assert taken == [(PUSH_BATCH_TASK, 3), (RELAY_TASK, 0), (HANDLE_BATCH_TASK, 50), (HANDLE_BATCH_TASK, 50)]
    finally:
        close_app(app)
