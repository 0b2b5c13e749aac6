"""The engine: run the rules on one trigger and propose the suggestions they make (docs/engine.md, 3).

:func:`handle_trigger` works in one write transaction:

1. the trigger; already processed → the outbox message is completed, nothing else; else the
   user's row is locked and the user's earlier unprocessed triggers run first (order per user);
2. the facts: :func:`~smartsvc.services.context_facts.context_facts` (``user``,
   ``product``, ``trip``) plus ``geofence`` (``tag``, ``metadata``, for
   geofence triggers) and ``event`` (the trigger's own fields); for a
   ``trip.*`` trigger, ``trip`` is the trigger's trip even when the user has
   arrived or started another since (from the trip event); the user's
   last fix is added as ``user.location`` ``{lat, lon}`` for the recipes
   that search around the user (it is not a fact rules can test);
3. the rules: only ``rule_id`` when the trigger names one, else the enabled
   rules of its event; a ``telemetry.updated`` trigger also runs each
   ``telemetry.threshold`` rule whose comparison the reading made true while
   the previous value did not (its ``event`` facts are then ``product_id``,
   ``fact``, ``value``, ``previous_value``); a geofence rule with a ``tag``
   only runs for fences with that tag;
4. per rule, highest priority first: the conditions
   (:func:`smartsvc.rules.evaluate`), the recipe
   (:func:`~smartsvc.services.recipes.run_recipe`; None: no suggestion), and
   :func:`~smartsvc.services.suggestions.propose` with dedupe key
   ``"{trigger_id}:{rule_id}"``. A ``schedule`` trigger (the daily checks) names no
   product: for a user with several products, a rule about the product (a product
   recipe, or a condition or template naming ``product.`` facts) runs once per
   product (``product`` the one checked; dedupe key ``"{trigger_id}:{rule_id}:{product_id}"``),
   so a service due on the second car is noticed too; any other rule runs once;
5. ``processed_at`` set and the outbox message completed, in the same commit.

A recipe that raises: each rule's recipe and proposal run in a savepoint, so
one failing rule does not stop the others. The others' suggestions are
committed, but the trigger stays unprocessed and its outbox message
uncompleted, so the relay delivers it again (after its redelivery delay); the
rules that worked then find their suggestion already proposed (idempotent)
and only the failing ones run for real. From the
:data:`MAX_RECIPE_ATTEMPTS`-th delivery on, failing rules are given up (logged
with the trigger and the rule) and the trigger is processed, so a rule that
keeps failing never blocks a trigger, or the relay's retries, for good. A
database that is down is not a recipe failure: the whole transaction rolls
back and the message is delivered again. Called without an outbox message
(tests, a CLI) nothing would deliver it again, so failing rules are given up
at once.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from ..models import ContextEvent, OutboxMessage, TriggerRecord, User, UserContext
from ..rules import evaluate
from ..rules.ops import apply
from ..timeutil import utcnow
from . import outbox
from .context_facts import Owned, context_facts, owned_products
from .proposals import Proposal
from .recipes import UnknownRecipe, run_recipe
from .rule_set import ActiveRule, RuleSet
from .schedule import EVENT as SCHEDULE_EVENT
from .suggestions import BatchKnowledge, propose

log = logging.getLogger(__name__)

# Deliveries of a trigger's message after which rules whose recipe keeps raising are given up.
MAX_RECIPE_ATTEMPTS = 3
THRESHOLD = "telemetry.threshold"
# Trigger fields that are geofence facts, not event facts (docs/engine.md, 2).
_GEOFENCE_FIELDS = ("tag", "metadata")


class BatchBroken(Exception):
    """A rule run without a savepoint failed where only rolling the whole transaction back is safe."""


@dataclass(frozen=True)
class Candidate:
    """A rule to run on the trigger, with the ``event`` facts and trigger description it sees."""

    rule: ActiveRule
    event: str
    event_facts: Mapping[str, Any]


def json_safe(value: Any) -> Any:
    """``value`` with what JSON cannot hold made text (datetimes, UUIDs) and tuples made lists."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def crossed(rule: ActiveRule, changes: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``event`` facts of a ``telemetry.threshold`` rule when the reading crossed its threshold, else None.

    Crossed: ``value op threshold`` holds for the new value and did not for the
    previous one (no previous value: it did not).
    """
    fact, op, threshold = rule.trigger.get("fact"), rule.trigger.get("op"), rule.trigger.get("value")
    change = changes.get(fact) if isinstance(fact, str) else None
    if not isinstance(change, Mapping):
        return None
    value, previous = change.get("value"), change.get("previous_value")
    if not apply(str(op), value, threshold) or (previous is not None and apply(str(op), previous, threshold)):
        return None
    return {"fact": fact, "value": value, "previous_value": previous}


def _tag_matches(rule: ActiveRule, fields: Mapping[str, Any]) -> bool:
    wanted = rule.trigger.get("tag")
    return wanted is None or fields.get("tag") == wanted


def candidates(rule_set: RuleSet, trigger: TriggerRecord) -> list[Candidate]:
    """The rules to run on ``trigger``, highest priority first, with the event facts each sees."""
    fields = dict(trigger.fields or {})
    event_facts = {k: v for k, v in fields.items() if k not in _GEOFENCE_FIELDS} \
        if trigger.event.startswith("geofence.") else {k: v for k, v in fields.items() if k != "changes"}
    found: list[Candidate] = []
    events: Iterable[str] = (trigger.event, THRESHOLD) if trigger.event == "telemetry.updated" else (trigger.event,)
    for event in events:
        for rule in rule_set.rules_for(event):
            if trigger.rule_id is not None and rule.id != trigger.rule_id:
                continue
            if event == THRESHOLD:
                threshold_facts = crossed(rule, fields.get("changes") or {})
                if threshold_facts is None:
                    continue
                found.append(Candidate(rule, THRESHOLD, {"product_id": fields.get("product_id"), **threshold_facts}))
            elif event.startswith("geofence.") and not _tag_matches(rule, fields):
                continue
            else:
                found.append(Candidate(rule, event, event_facts))
    found.sort(key=lambda c: (-c.rule.priority, c.rule.id))
    return found


def build_facts(session: Session, trigger: TriggerRecord, owned: Sequence[Owned] | None = None,
                product_id: uuid.UUID | None = None) -> dict[str, Any]:
    """The facts every rule on ``trigger`` sees, without ``event`` (which may differ per rule).

    ``owned``: the user's products, when the caller read them already (a batch); ``product_id``: the
    product checked (default: the trigger's)."""
    facts = dict(context_facts(session, trigger.user_id, product_id=product_id or trigger.product_id,
                               now=trigger.at, owned=owned))
    context = session.get(UserContext, trigger.user_id)
    fix = context.fix if context is not None else None
    if "user" in facts and isinstance(fix, Mapping) and fix.get("lat") is not None and fix.get("lon") is not None:
        # Where the user was last seen, for the recipes that search around them (not a rule fact).
        facts["user"] = {**facts["user"], "location": {"lat": fix["lat"], "lon": fix["lon"]}}
    fields = trigger.fields or {}
    if trigger.event.startswith("trip."):
        _trip_of_trigger(session, trigger, facts)
    if trigger.event.startswith("geofence."):
        facts["geofence"] = {"tag": fields.get("tag"), "metadata": fields.get("metadata") or {}}
    return facts


def trip_of_trigger_id(trigger: TriggerRecord) -> uuid.UUID | None:
    """The id of a ``trip.*`` trigger's trip (its start event): in the dedupe key, ``trip.{kind}:{trip_id}[:…]``."""
    if not trigger.event.startswith("trip."):
        return None
    parts = trigger.dedupe_key.split(":")
    try:
        return uuid.UUID(parts[1]) if len(parts) > 1 else None
    except ValueError:
        return None


def _trip_of_trigger(session: Session, trigger: TriggerRecord, facts: dict[str, Any]) -> None:
    """Make ``trip`` the trigger's trip: by the time it runs the user may have arrived (no trip) or started
    another (:func:`trip_of_trigger_id`)."""
    trip_id = trip_of_trigger_id(trigger)
    current = facts.get("trip") or {}
    if trip_id is None or current.get("id") == str(trip_id):
        return
    started = session.get(ContextEvent, trip_id)
    if started is None or started.user_id != trigger.user_id or not isinstance(started.data, Mapping):
        return
    fields = trigger.fields or {}
    trip = {"id": str(trip_id), "destination": started.data.get("destination"), "mode": started.data.get("mode"),
            "product_id": started.data.get("product_id"), "distance_m": fields.get("distance_m"),
            "eta_s": fields.get("eta_s")}
    facts["trip"] = {name: value for name, value in trip.items() if value is not None}


def _attempts(session: Session, outbox_id: int | None) -> int | None:
    if outbox_id is None:
        return None
    return session.scalar(select(OutboxMessage.attempts).where(OutboxMessage.id == outbox_id))


def _reason(candidate: Candidate, trigger: TriggerRecord, matched: Mapping[str, Any]) -> dict[str, Any]:
    rule = candidate.rule
    return json_safe({
        "rule": {"id": rule.id, "name": rule.name},
        "trigger": {"event": candidate.event, "at": trigger.at, "fields": candidate.event_facts},
        "facts": matched,
    })


def handle_trigger(container: Any, trigger_id: uuid.UUID, outbox_id: int | None = None) -> int:
    """Run the rules on a trigger; the number of suggestions proposed (see the module docstring).

    Idempotent: a trigger already processed only completes its outbox
    message; a trigger handled twice concurrently is processed once.
    One user's triggers run in the order they were noticed, whichever worker
    takes which message: the user's row is locked (PostgreSQL; SQLite's write
    transaction excludes the others) and any earlier trigger of the user still
    waiting runs first, in this transaction (its own message then finds it
    done).
    """
    with container.database.unit_of_work() as uow:
        session = uow.session
        assert session is not None
        trigger = session.get(TriggerRecord, trigger_id)
        if trigger is None or trigger.processed_at is not None:
            outbox.complete(session, outbox_id)
            uow.commit()
            return 0
        # NO KEY UPDATE: the API inserting this user's triggers (a foreign key to users) is not held up.
        # Held for the transaction: the identity map keeps rows weakly, and the facts read the user again.
        _locked_user = session.get(User, trigger.user_id, with_for_update={"key_share": True})
        session.refresh(trigger)
        if trigger.processed_at is not None:
            # Run, while this task waited for the lock, by the task of a later trigger of the user.
            outbox.complete(session, outbox_id)
            uow.commit()
            return 0
        waiting = session.scalars(
            select(TriggerRecord)
            .where(TriggerRecord.user_id == trigger.user_id, TriggerRecord.processed_at.is_(None),
                   TriggerRecord.id <= trigger.id)
            .order_by(TriggerRecord.id)
            .execution_options(populate_existing=True)
        ).all()
        rule_set = container.rule_cache.current(session)
        proposed = 0
        for item in waiting:
            if item.id == trigger.id:
                proposed += process_trigger(uow, container, rule_set, item, _attempts(session, outbox_id), outbox_id)
            else:
                # An earlier trigger whose own message has not run yet: a rule failing on it is retried
                # when that message comes (attempts 0), not given up here.
                process_trigger(uow, container, rule_set, item, 0, None)
        uow.commit()
    return proposed


def process_trigger(uow: Any, container: Any, rule_set: RuleSet, trigger: TriggerRecord, attempts: int | None,
                    outbox_id: int | None, owned: Sequence[Owned] | None = None,
                    mark_processed: Callable[[TriggerRecord], None] | None = None, savepoints: bool = True,
                    batch: BatchKnowledge | None = None) -> int:
    """Run the rules on one unprocessed trigger in the caller's transaction; the suggestions proposed.

    The trigger is marked processed (and ``outbox_id`` completed) unless a
    rule failed and ``attempts`` (None: no message will retry it) is below
    :data:`MAX_RECIPE_ATTEMPTS`. ``owned``: as for :func:`build_facts`;
    ``mark_processed``: sets ``processed_at`` instead (a batch writes them together);
    ``savepoints=False``: see :func:`_run_rule` (raises :class:`BatchBroken`); ``batch``: what the calling
    engine batch already did in this transaction (:func:`~smartsvc.services.suggestions.propose`).
    """
    session = uow.session
    proposed, failed = 0, []
    found = candidates(rule_set, trigger)
    products = _products_checked(session, trigger, owned) if found else ()
    facts_of: dict[uuid.UUID | None, dict[str, Any]] = {}
    for candidate in found:
        each = len(products) > 1 and _about_the_product(candidate.rule)
        for product_id in products if each else (None,):
            facts = facts_of.get(product_id)
            if facts is None:
                facts = facts_of[product_id] = build_facts(session, trigger, owned, product_id)
            rule_facts = {**facts, "event": dict(candidate.event_facts)}
            holds, matched = evaluate(candidate.rule.conditions, rule_facts)
            if not holds:
                continue
            try:
                proposed += _run_rule(uow, container, trigger, candidate, rule_facts, matched, savepoints,
                                      product_id, batch)
            except (OperationalError, InterfaceError, BatchBroken):
                raise  # the database, not the rule: deliver the whole trigger again
            except UnknownRecipe:
                log.error("rule names an unknown recipe", extra={"rule_id": str(candidate.rule.id),
                                                                  "recipe": candidate.rule.action.get("recipe")})
            except Exception:
                log.exception("recipe failed", extra={"trigger_id": str(trigger.id),
                                                      "rule_id": str(candidate.rule.id)})
                failed.append(candidate.rule.id)
    if failed and attempts is not None and attempts < MAX_RECIPE_ATTEMPTS:
        return proposed  # the other rules' suggestions stay; the message is delivered again for the failed ones
    if failed:
        log.error("giving up failing rules for a trigger", extra={
            "trigger_id": str(trigger.id), "rule_ids": [str(rule_id) for rule_id in failed],
            "attempts": attempts})
    if mark_processed is not None:
        mark_processed(trigger)
    else:
        trigger.processed_at = utcnow()
    outbox.complete(session, outbox_id)
    return proposed


# Recipes whose answer is about the product the facts name (its battery, its service, its size).
_PRODUCT_RECIPES = frozenset({"charger_on_route", "service_due", "spots_near_destination"})


def _about_the_product(rule: ActiveRule) -> bool:
    """Whether the rule reads the product: a product recipe, or a condition or template naming ``product.``
    facts. A daily check runs such a rule once per product, any other rule once."""
    if rule.action.get("recipe") in _PRODUCT_RECIPES:
        return True
    return "product." in json.dumps([rule.conditions, rule.action.get("params")], default=str)


def _products_checked(session: Session, trigger: TriggerRecord,
                      owned: Sequence[Owned] | None) -> Sequence[uuid.UUID | None]:
    """The products the rules run for: each of the user's for a daily check that names none (None: the
    product the facts pick by themselves — the trigger's, the trip's or the only one)."""
    if trigger.event != SCHEDULE_EVENT or trigger.product_id is not None:
        return (None,)
    products = owned if owned is not None else owned_products(session, [trigger.user_id])[trigger.user_id]
    return [product.id for product, _model in products] if len(products) > 1 else (None,)


def _run_rule(uow: Any, container: Any, trigger: TriggerRecord, candidate: Candidate,
              facts: Mapping[str, Any], matched: Mapping[str, Any], savepoint: bool = True,
              product_id: uuid.UUID | None = None, batch: BatchKnowledge | None = None) -> int:
    """Run one rule's recipe and propose its result; 1 when a suggestion was proposed.

    In a savepoint, so that a failing rule leaves nothing behind and the
    transaction goes on. Without one (an engine batch: the pair of round
    trips was a quarter of a trigger's statements), a recipe's own failure
    still leaves nothing (recipes only read), but a database error in it or
    any failure while proposing raises :class:`BatchBroken`: the batch is
    rolled back whole and its triggers run one by one, in savepoints.
    """
    session = uow.session
    rule = candidate.rule
    if savepoint:
        with session.begin_nested():
            return _recipe_and_proposal(uow, container, trigger, candidate, facts, matched, product_id, batch)
    try:
        result = _recipe(session, container, rule, facts, trigger)
    except (OperationalError, InterfaceError):
        raise
    except DBAPIError as exc:  # the transaction may be aborted (PostgreSQL): only a rollback helps
        raise BatchBroken(f"rule {rule.id}: {exc}") from exc
    if result is None:
        return 0
    try:
        _propose(uow, trigger, candidate, matched, result, product_id, batch)
    except (OperationalError, InterfaceError):
        raise
    except Exception as exc:
        raise BatchBroken(f"rule {rule.id}: proposing failed: {exc!r}") from exc
    return 1


def _recipe_and_proposal(uow: Any, container: Any, trigger: TriggerRecord, candidate: Candidate,
                         facts: Mapping[str, Any], matched: Mapping[str, Any], product_id: uuid.UUID | None,
                         batch: BatchKnowledge | None) -> int:
    result = _recipe(uow.session, container, candidate.rule, facts, trigger)
    if result is None:
        return 0
    _propose(uow, trigger, candidate, matched, result, product_id, batch)
    return 1


def _recipe(session: Session, container: Any, rule: ActiveRule, facts: Mapping[str, Any],
            trigger: TriggerRecord) -> Any:
    return run_recipe(session, container, str(rule.action.get("recipe")), rule.action.get("params"), facts, trigger)


def _propose(uow: Any, trigger: TriggerRecord, candidate: Candidate, matched: Mapping[str, Any],
             result: Any, product_id: uuid.UUID | None, batch: BatchKnowledge | None) -> None:
    rule = candidate.rule
    dedupe_key = f"{trigger.id}:{rule.id}" if product_id is None else f"{trigger.id}:{rule.id}:{product_id}"
    propose(uow, Proposal(
        user_id=trigger.user_id, kind=str(rule.action["recipe"]), content=result,
        reason=_reason(candidate, trigger, matched), dedupe_key=dedupe_key, rule_id=rule.id,
        trigger_id=trigger.id, cooldown_s=rule.cooldown_s, priority=rule.priority, at=trigger.at,
    ), batch=batch)
