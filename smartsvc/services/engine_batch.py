"""The engine in batches: the triggers the relay groups, run in one transaction (docs/engine.md, 3).

:func:`handle_triggers` does for many triggers what
:func:`~smartsvc.services.engine.handle_trigger` does for one, with the same
rules and results, but with the plumbing read and written once per batch:
the triggers, the users' locks (in id order, so batches sharing users wait
rather than deadlock), each user's earlier triggers still waiting, the
outbox messages' delivery counts, the users' context rows and products, the
rule set, and the outbox messages completed. What stays per trigger is its own work: the
facts, the rules, the recipes and the proposals.

One failing trigger must not hold up the others: when the batch raises
anything but a database error, it is rolled back and its triggers are
handled one by one with :func:`~smartsvc.services.engine.handle_trigger`,
each in its own transaction (one that raises again is logged and left
unprocessed: its message is delivered again, as a failed task's would be).
A database error (down, a deadlock) rolls the whole batch back and is
raised, so the task fails and the relay delivers its messages again.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from typing import Any, Sequence

from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ..models import ContextEvent, OutboxMessage, Suggestion, TriggerRecord, User, UserContext
from ..timeutil import utcnow
from .bulk import among, chunks
from .outbox import complete_many
from .context_facts import owned_products
from .engine import handle_trigger, process_trigger, trip_of_trigger_id
from .suggestions import BatchKnowledge

log = logging.getLogger(__name__)

HANDLE_BATCH_TASK = "smartsvc.engine.handle_triggers"

TriggerItem = tuple[uuid.UUID, "int | None"]


def handle_triggers(container: Any, items: Sequence[TriggerItem]) -> int:
    """Run the rules on each ``(trigger_id, outbox_id)``; the number of suggestions proposed.

    Idempotent like :func:`~smartsvc.services.engine.handle_trigger`: a
    trigger already processed only has its message completed, and each
    user's triggers run in the order they were noticed.
    """
    if not items:
        return 0
    try:
        return _handle_batch(container, items)
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        log.exception("trigger batch failed; handling its triggers one by one", extra={"triggers": len(items)})
    proposed = 0
    for trigger_id, outbox_id in items:
        try:
            proposed += handle_trigger(container, trigger_id, outbox_id)
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            log.exception("trigger failed", extra={"trigger_id": str(trigger_id), "outbox_id": outbox_id})
    return proposed


def _handle_batch(container: Any, items: Sequence[TriggerItem]) -> int:
    messages: dict[uuid.UUID, list[int]] = defaultdict(list)
    for trigger_id, outbox_id in items:
        if outbox_id is not None:
            messages[trigger_id].append(outbox_id)
    with container.database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        owners = _open_owners(session, list({trigger_id for trigger_id, _ in items}))
        # Held for the batch: the session's identity map keeps only weak references, and the facts read these.
        held = _lock_and_load_users(session, set(owners.values()))
        locked = frozenset(user.id for user in held if isinstance(user, User))
        waiting = _waiting(session, owners)
        # The batch's own triggers still open after the locks (another batch may have run some meanwhile).
        still_open = {trigger.id for trigger in waiting} & owners.keys()
        held.extend(_trip_events(session, waiting))
        batch = BatchKnowledge(locked_users=locked, fresh_triggers=_without_suggestions(session, waiting))
        attempts = _attempts(session, [outbox_id for ids in messages.values() for outbox_id in ids])
        owned = owned_products(session, sorted({trigger.user_id for trigger in waiting}))
        rule_set = container.rule_cache.current(session)
        proposed = 0
        done: list[int] = []
        processed: list[dict[str, Any]] = []

        def mark_processed(trigger: TriggerRecord) -> None:
            at = utcnow()
            set_committed_value(trigger, "processed_at", at)  # written below, all in one statement
            processed.append({"id": trigger.id, "processed_at": at})

        for trigger in waiting:
            own = messages.get(trigger.id, [])
            # A trigger of the batch counts its message's deliveries; an earlier one whose message has not
            # run yet retries a failing rule when that message comes (attempts 0), as handle_trigger does.
            tries: int | None = 0
            if trigger.id in still_open:  # no message (a direct call): nothing would retry a failing rule
                tries = max(attempts.get(outbox_id, 0) for outbox_id in own) if own else None
            proposed += process_trigger(uow, container, rule_set, trigger, tries, None, owned[trigger.user_id],
                                        mark_processed, savepoints=False, batch=batch)
            if trigger.processed_at is not None:
                done.extend(own)
        # Gone, or processed before (a redelivery, or by a later trigger's run): only completed.
        done.extend(outbox_id for trigger_id, ids in messages.items() if trigger_id not in still_open
                    for outbox_id in ids)
        if processed:
            session.execute(update(TriggerRecord), processed)  # by primary key, one executemany
        complete_many(session, done)
        uow.commit()
        del held
    return proposed


def _open_owners(session: Session, trigger_ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """The batch's triggers not processed yet, with their users."""
    owners: dict[uuid.UUID, uuid.UUID] = {}
    for chunk in chunks(trigger_ids):
        owners.update((trigger_id, user_id) for trigger_id, user_id in session.execute(
            select(TriggerRecord.id, TriggerRecord.user_id)
            .where(among(session, TriggerRecord.id, chunk), TriggerRecord.processed_at.is_(None))))
    return owners


def _lock_and_load_users(session: Session, user_ids: set[uuid.UUID]) -> list[Any]:
    """Lock the users in id order and load them and their context rows into the session (the facts read them).

    NO KEY UPDATE: the API inserting these users' triggers (a foreign key to users) is not held up.
    """
    ordered = sorted(user_ids)
    loaded: list[Any] = []
    for chunk in chunks(ordered):
        loaded.extend(session.scalars(select(User).where(among(session, User.id, chunk)).order_by(User.id)
                                      .with_for_update(key_share=True).execution_options(populate_existing=True)))
    for chunk in chunks(ordered):
        loaded.extend(session.scalars(select(UserContext).where(among(session, UserContext.user_id, chunk))
                                      .execution_options(populate_existing=True)))
    return loaded


def _waiting(session: Session, owners: dict[uuid.UUID, uuid.UUID]) -> list[TriggerRecord]:
    """Read after the locks: each user's unprocessed triggers up to the last of the batch, per user in id order.

    A trigger of the batch already processed by then (another batch ran it while this one waited for a
    lock) is left out; its message is completed with the gone ones.
    """
    last: dict[uuid.UUID, uuid.UUID] = {}
    for trigger_id, user_id in owners.items():
        last[user_id] = max(trigger_id, last.get(user_id, trigger_id))
    waiting: list[TriggerRecord] = []
    for chunk in chunks(sorted(last)):
        for trigger in session.scalars(
                select(TriggerRecord)
                .where(among(session, TriggerRecord.user_id, chunk), TriggerRecord.processed_at.is_(None))
                .order_by(TriggerRecord.user_id, TriggerRecord.id)
                .execution_options(populate_existing=True)):
            if trigger.id <= last[trigger.user_id]:
                waiting.append(trigger)
    return waiting


def _without_suggestions(session: Session, triggers: list[TriggerRecord]) -> frozenset[uuid.UUID]:
    """The triggers no suggestion names yet (read under the users' locks: only this batch can add one)."""
    trigger_ids = [trigger.id for trigger in triggers]
    user_ids = sorted({trigger.user_id for trigger in triggers})
    named: set[uuid.UUID] = set()
    for users in chunks(user_ids):
        for chunk in chunks(trigger_ids):
            named.update(session.scalars(select(Suggestion.trigger_id).where(
                among(session, Suggestion.user_id, users), among(session, Suggestion.trigger_id, chunk))))
    return frozenset(trigger_ids) - named


def _trip_events(session: Session, triggers: list[TriggerRecord]) -> list[ContextEvent]:
    """The trip events the batch's ``trip.*`` triggers name, loaded once (the facts read each by id)."""
    trip_ids = {trip_id for trigger in triggers if (trip_id := trip_of_trigger_id(trigger)) is not None}
    loaded: list[ContextEvent] = []
    for chunk in chunks(sorted(trip_ids)):
        loaded.extend(session.scalars(select(ContextEvent).where(among(session, ContextEvent.id, chunk))))
    return loaded


def _attempts(session: Session, outbox_ids: list[int]) -> dict[int, int]:
    """How many times each message has been delivered."""
    found: dict[int, int] = {}
    for chunk in chunks(sorted(set(outbox_ids))):
        found.update((outbox_id, attempts) for outbox_id, attempts in session.execute(
            select(OutboxMessage.id, OutboxMessage.attempts).where(among(session, OutboxMessage.id, chunk))))
    return found
