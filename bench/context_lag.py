"""Benchmark 4 after the load: the service's outstanding work, the drain, and the processing lag per trigger.

Read from the database: rows per table (:func:`row_counts`), waiting until nothing is left to do
(:func:`drain`), and each trigger's lag to its processing and to its pushes' completion (:func:`lags`).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from bench.common import summarize

PUSH_TASK = "smartsvc.delivery.push"


def row_counts(database: Any) -> dict[str, int]:
    """Rows of the tables the backlog and the losses are read from (events, triggers, outbox, suggestions)."""
    from sqlalchemy import func, select

    from smartsvc.models import ContextEvent, OutboxMessage, Suggestion, TriggerRecord

    with database.session() as session:
        def count(model: Any, *where: Any) -> int:
            return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

        return {
            "context_events": count(ContextEvent),
            "triggers": count(TriggerRecord),
            "triggers_unprocessed": count(TriggerRecord, TriggerRecord.processed_at.is_(None)),
            "outbox_messages": count(OutboxMessage),
            "outbox_uncompleted": count(OutboxMessage, OutboxMessage.completed_at.is_(None)),
            "suggestions": count(Suggestion),
            "suggestions_pending_push": count(Suggestion, Suggestion.delivery_status == "pending"),
        }


def drain(database: Any, timeout_s: float) -> tuple[dict[str, int], float]:
    """Wait until nothing is left to do (bounded); the final counts and the seconds it took."""
    t = time.perf_counter()
    while True:
        counts = row_counts(database)
        done = not (counts["triggers_unprocessed"] or counts["outbox_uncompleted"]
                    or counts["suggestions_pending_push"])
        if done or time.perf_counter() - t > timeout_s:
            return counts, round(time.perf_counter() - t, 1)
        time.sleep(0.2)


def lags(database: Any, since: datetime) -> dict[str, Any]:
    """Processing lag per trigger created ``since``: → processed (engine), and → its pushes completed (end to end)."""
    from sqlalchemy import select

    from smartsvc.models import OutboxMessage, Suggestion, TriggerRecord

    with database.session() as session:
        triggers = session.execute(select(TriggerRecord.id, TriggerRecord.event, TriggerRecord.created_at,
                                          TriggerRecord.processed_at)).all()
        made = dict(session.execute(select(Suggestion.id, Suggestion.trigger_id)).all())
        pushes = session.execute(select(OutboxMessage.payload, OutboxMessage.completed_at, OutboxMessage.attempts)
                                 .where(OutboxMessage.task == PUSH_TASK)).all()
        handle_rows = session.execute(select(OutboxMessage.payload, OutboxMessage.sent_at, OutboxMessage.attempts)
                                      .where(OutboxMessage.task == "smartsvc.engine.handle_trigger")).all()
    handles = [attempts for _, _, attempts in handle_rows]
    sent_at = {uuid.UUID(payload["trigger_id"]): sent for payload, sent, _ in handle_rows}
    pushed_at: dict[Any, list[datetime]] = {}
    for payload, completed, _attempts in pushes:
        trigger = made.get(uuid.UUID(payload["suggestion_id"]))
        if trigger is not None and completed is not None:
            pushed_at.setdefault(trigger, []).append(completed)
    engine, end_to_end, relayed, queued = [], [], [], []
    by_event: dict[str, int] = {}
    for trigger_id, event, created, processed in triggers:
        by_event[event] = by_event.get(event, 0) + 1
        if processed is None or created < since:
            continue
        engine.append((processed - created).total_seconds())
        if sent_at.get(trigger_id) is not None:  # the last publication (a redelivery's, if any)
            relayed.append((sent_at[trigger_id] - created).total_seconds())
            queued.append((processed - sent_at[trigger_id]).total_seconds())
        end = max([processed, *pushed_at.get(trigger_id, [])])
        end_to_end.append((end - created).total_seconds())
    to_s = {k: (v / 1000 if k.endswith("_ms") else v) for k, v in summarize(end_to_end).items()}
    return {
        "triggers_by_event": by_event,
        "engine_lag_s": {k.replace("_ms", "_s"): (v / 1000 if k.endswith("_ms") else v)
                         for k, v in summarize(engine).items()},
        "end_to_end_lag_s": {k.replace("_ms", "_s"): v for k, v in to_s.items()},
        "end_to_end_lag_max_s": max(end_to_end) if end_to_end else None,
        # The engine lag in two: created → published by the relay, published → processed (broker queue + task).
        "created_to_relayed_s": {k.replace("_ms", "_s"): (v / 1000 if k.endswith("_ms") else v)
                                 for k, v in summarize(relayed).items()},
        "relayed_to_processed_s": {k.replace("_ms", "_s"): (v / 1000 if k.endswith("_ms") else v)
                                   for k, v in summarize(queued).items()},
        "redelivered_messages": int(sum(1 for a in handles if a > 1) + sum(1 for _, _, a in pushes if a > 1)),
    }
