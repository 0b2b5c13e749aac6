"""The engine in batches (SQLite and PostgreSQL): what the relay groups runs in one transaction and
proposes exactly what the triggers run one by one would, in each user's order.

The world (alice with a smart and a golf, a 5.4 m gap near the destination) is
:mod:`tests.integration.test_engine`'s; bob is a second user with a smart.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from smartsvc.models import Interaction, OutboxMessage, TriggerRecord
from smartsvc.services import engine
from smartsvc.services.delivery_rows import lock_users
from smartsvc.services.engine import MAX_RECIPE_ATTEMPTS
from smartsvc.services.engine_batch import HANDLE_BATCH_TASK, handle_triggers
from smartsvc.services.suggestions import lock_user
from smartsvc.services.triggers import HANDLE_TASK
from tests.integration import test_engine as base
from tests.integration.test_engine import (
    _set_attempts, add_rule, approaching_with_a_broken_spots_recipe, at, drive, message_of, model, own, processed,
    south_of_destination, suggestions, triggers)
from tests.support.factories import api_key, grant, make_user
from tests.support.rules import example_rule
from workers.tasks import outbox as relay_task

recent_start, world = base.recent_start, base.world  # the fixtures of the engine's tests

STARTED = example_rule(name="trip started", trigger={"event": "trip.started"}, conditions={"all": []},
                       action={"recipe": "message", "params": {"title": "Have a good trip", "body": "Drive safely."}})


def bob_drives(world: dict[str, Any]) -> Any:
    """Bob (a smart) starts a trip and drives to 1.4 km of the destination, as alice does in ``drive``."""
    client = world["client"]
    bob = make_user(client, api_key(world["app"], "app"), "bob", "Europe/Paris")
    grant(client, bob, "location", "proactive_push")
    product = own(client, bob, model(client, world["operator"], "fortwo bob", length_m=2.69, width_m=1.66))
    far, near = south_of_destination(3000), south_of_destination(1400)
    events = [{"type": "trip", "at": at(0), "destination": {"lat": 48.85, "lon": 2.35}, "product_id": product},
              {"type": "location", "at": at(10), "lat": far[0], "lon": far[1], "accuracy_m": 5, "speed_mps": 12.0},
              {"type": "location", "at": at(140), "lat": near[0], "lon": near[1], "accuracy_m": 5,
               "speed_mps": 12.0}]
    response = client.post("/v1/me/context", json={"events": events}, headers=bob.headers)
    assert response.status_code == 202, response.get_json()
    return bob


def items(world: dict[str, Any], *found: TriggerRecord) -> list[tuple[Any, int]]:
    return [(trigger.id, message_of(world, trigger.id).id) for trigger in found]


def every_trigger(world: dict[str, Any]) -> list[TriggerRecord]:
    with world["container"].database.session() as session:
        return list(session.scalars(select(TriggerRecord).order_by(TriggerRecord.id)))


def summary(world: dict[str, Any]) -> list[tuple[str, str, str, str | None, str]]:
    return sorted((str(s.user_id), s.kind, s.status, s.status_reason, s.title) for s in suggestions(world))


def test_a_batch_of_two_users_triggers_proposes_what_one_by_one_does(world):
    add_rule(world["client"], world["operator"], example_rule())
    add_rule(world["client"], world["operator"], STARTED)
    drive(world, "smart")
    bob = bob_drives(world)
    batch = every_trigger(world)
    assert {t.event for t in batch} == {"trip.started", "trip.approaching"} and len(batch) == 4

    # Bob's triggers first, the later before the earlier: each user's order still holds.
    ordered = sorted(batch, key=lambda t: (str(t.user_id) != bob.id, -t.id.int))
    assert handle_triggers(world["container"], items(world, *ordered)) == 4

    made = summary(world)
    assert sorted((user, kind) for user, kind, *_ in made) == sorted(
        [(user, kind) for user in (world["alice"].id, bob.id) for kind in ("message", "spots_near_destination")])
    assert all(processed(world, t) and message_of(world, t.id).completed_at is not None for t in batch)
    for user in (world["alice"].id, bob.id):
        mine = [s for s in suggestions(world) if str(s.user_id) == user]  # in creation order
        assert [s.kind for s in mine] == ["message", "spots_near_destination"]

    # Again, as a redelivered batch or one by one: nothing more.
    assert handle_triggers(world["container"], items(world, *ordered)) == 0
    assert engine.handle_trigger(world["container"], batch[0].id) == 0
    assert summary(world) == made


def test_a_batch_runs_a_users_earlier_trigger_first_and_leaves_its_message_to_it(world):
    add_rule(world["client"], world["operator"], example_rule())
    add_rule(world["client"], world["operator"], STARTED)
    drive(world, "smart")
    [started], [approaching] = triggers(world, "trip.started"), triggers(world, "trip.approaching")

    assert handle_triggers(world["container"], items(world, approaching)) == 2
    assert processed(world, started) and processed(world, approaching)
    assert [s.kind for s in suggestions(world)] == ["message", "spots_near_destination"]
    assert message_of(world, approaching.id).completed_at is not None
    assert message_of(world, started.id).completed_at is None  # its own message comes later …

    assert handle_triggers(world["container"], items(world, started)) == 0  # … and only completes
    assert message_of(world, started.id).completed_at is not None


def test_a_trigger_that_breaks_the_batch_is_left_alone_and_the_others_are_handled(world, monkeypatch, caplog):
    add_rule(world["client"], world["operator"], example_rule())
    add_rule(world["client"], world["operator"], STARTED)
    drive(world, "smart")
    bob = bob_drives(world)
    [bobs_started] = [t for t in triggers(world, "trip.started") if str(t.user_id) == bob.id]
    real_facts = engine.build_facts

    def facts(session: Any, trigger: TriggerRecord, owned: Any = None, product_id: Any = None) -> dict[str, Any]:
        if trigger.id == bobs_started.id:
            raise KeyError("a bug met by this trigger only")
        return real_facts(session, trigger, owned, product_id)

    monkeypatch.setattr(engine, "build_facts", facts)
    batch = every_trigger(world)
    with caplog.at_level(logging.ERROR, logger="smartsvc.services.engine_batch"):
        assert handle_triggers(world["container"], items(world, *batch)) == 2

    assert "trigger batch failed; handling its triggers one by one" in caplog.text
    assert [t for t in batch if not processed(world, t)] == [t for t in batch if str(t.user_id) == bob.id]
    assert all(message_of(world, t.id).completed_at is None for t in batch if str(t.user_id) == bob.id)
    assert {str(s.user_id) for s in suggestions(world)} == {world["alice"].id}

    monkeypatch.setattr(engine, "build_facts", real_facts)  # fixed: the redelivered batch does the rest
    assert handle_triggers(world["container"], items(world, *batch)) == 2
    assert all(processed(world, t) for t in batch)


def test_a_proposal_failing_half_written_in_a_batch_leaves_nothing_and_the_triggers_run_one_by_one(
        world, monkeypatch, caplog):
    # A batch runs its rules without savepoints: a failure after the proposal's first writes must not keep
    # them (a suggestion without its interaction) nor lose the others; the batch is rolled back whole.
    add_rule(world["client"], world["operator"], example_rule())
    add_rule(world["client"], world["operator"], STARTED)
    drive(world, "smart")
    bob_drives(world)
    real_propose, calls = engine.propose, []

    def propose_then_fail_once(uow: Any, proposal: Any, **kwargs: Any) -> Any:
        suggestion = real_propose(uow, proposal, **kwargs)
        calls.append(proposal.dedupe_key)
        if len(calls) == 2:
            uow.session.flush()  # its rows are written: only a rollback undoes them
            raise RuntimeError("a bug after the suggestion was written")
        return suggestion

    monkeypatch.setattr(engine, "propose", propose_then_fail_once)
    batch = every_trigger(world)
    with caplog.at_level(logging.ERROR, logger="smartsvc.services.engine_batch"):
        assert handle_triggers(world["container"], items(world, *batch)) == 4

    assert "trigger batch failed; handling its triggers one by one" in caplog.text
    assert all(processed(world, t) and message_of(world, t.id).completed_at is not None for t in batch)
    made = suggestions(world)
    assert sorted((str(s.user_id), s.kind) for s in made) == sorted(
        (user, kind) for user in {str(t.user_id) for t in batch} for kind in ("message", "spots_near_destination"))
    with world["container"].database.session() as session:
        created = session.scalars(select(Interaction.subject_id).where(Interaction.kind == "suggestion.created"))
        assert sorted(created) == sorted(s.id for s in made)  # one each: nothing of the failed try is left


def test_a_failing_recipe_in_a_batch_is_retried_until_its_attempts_are_spent(world, monkeypatch):
    both = approaching_with_a_broken_spots_recipe(world, monkeypatch)
    spots = both[0]
    _set_attempts(world, message_of(world, spots.id).id, 1)

    assert handle_triggers(world["container"], items(world, *both)) == 1  # the other rule is not held back
    assert not processed(world, spots) and message_of(world, spots.id).completed_at is None

    _set_attempts(world, message_of(world, spots.id).id, MAX_RECIPE_ATTEMPTS)
    assert handle_triggers(world["container"], items(world, spots)) == 0
    assert processed(world, spots) and message_of(world, spots.id).completed_at is not None
    assert [s.kind for s in suggestions(world)] == ["message"]


def test_the_relay_hands_due_triggers_to_the_engine_in_batches_of_the_configured_size(world, monkeypatch):
    add_rule(world["client"], world["operator"], example_rule())
    add_rule(world["client"], world["operator"], STARTED)
    drive(world, "smart")
    bob_drives(world)
    container = world["container"]
    monkeypatch.setattr(container, "settings", dataclasses.replace(container.settings, engine_batch_size=3))
    published: list[tuple[str, dict[str, Any]]] = []

    class Celery:
        def send_task(self, name: str, kwargs: dict[str, Any], task_id: str, **options: Any) -> None:
            published.append((name, kwargs))

    monkeypatch.setattr(relay_task, "current_celery", Celery())
    with world["app"].app_context():
        relay_task.relay.run()

    batches = [kwargs["items"] for name, kwargs in published if name == HANDLE_BATCH_TASK]
    assert [len(batch) for batch in batches] == [3, 1] and not [p for p in published if p[0] == HANDLE_TASK]
    with world["container"].database.session() as session:
        messages = list(session.scalars(select(OutboxMessage).where(OutboxMessage.task == HANDLE_TASK)
                                        .order_by(OutboxMessage.id)))
    assert [item for batch in batches for item in batch] == [
        {"trigger_id": m.payload["trigger_id"], "outbox_id": m.id} for m in messages]
    assert all(m.sent_at is not None for m in messages)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # SQLite has no row locks: writers take turns
def test_a_budget_decision_locks_out_other_deciders_but_not_inserts_that_reference_the_user(world):
    """NO KEY UPDATE: the API can store a user's triggers while the engine decides; a push batch waits."""
    database = world["container"].database
    drive(world, "smart")
    user_id = every_trigger(world)[0].user_id
    with database.unit_of_work() as deciding:
        assert lock_user(deciding.session, user_id) is not None
        with database.unit_of_work() as api:
            api.session.execute(text("SET LOCAL lock_timeout = '2s'"))
            api.session.execute(text(
                "INSERT INTO triggers (id, user_id, event, fields, at, dedupe_key, created_at) "
                "VALUES (gen_random_uuid(), :user, 'trip.started', '{}', now(), 'lock-test', now())"),
                {"user": user_id})
            api.commit()
        with database.unit_of_work() as pushing:
            pushing.session.execute(text("SET LOCAL lock_timeout = '200ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                lock_users(pushing.session, [user_id])
