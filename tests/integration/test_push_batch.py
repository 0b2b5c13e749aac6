"""Batched push delivery (SQLite and PostgreSQL) through the real FCM provider against the local FCM stand-in.

A batch of suggestions for several users ends exactly as delivering them one
by one would: pushed to each device once, a withdrawn consent or an expired
suggestion not pushed, a dead token switched off, a throttled push retried
after FCM's ``Retry-After``. A batch run again sends nothing more; a batch
whose worker died after its claim is taken over once the claim is stale.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Iterator

import pytest
from sqlalchemy import event, select, update

from smartsvc.models import Consent, Device, Interaction, OutboxMessage, PushAttempt, Suggestion
from smartsvc.services import delivery_batch, delivery_rows
from smartsvc.services.delivery import deliver_suggestion, stale_after
from smartsvc.services.delivery_batch import deliver_suggestions
from smartsvc.services.suggestions import PUSH_TASK
from tests.integration.test_push_fcm import clock_start
from tests.support.fake_fcm import FakeFcm, throttled
from tests.support.suggestions import SuggestionWorld, suggestion_world


@pytest.fixture
def fcm() -> Iterator[FakeFcm]:
    with FakeFcm(project_id="smartsvc-batch") as fake:
        yield fake


@pytest.fixture
def db_settings(db_settings, fcm, tmp_path):
    return db_settings.replace(fcm_url=fcm.url, fcm_credentials=fcm.write_credentials(tmp_path / "fcm-sa.json"))


@pytest.fixture
def world(db_app) -> SuggestionWorld:
    return suggestion_world(db_app)


ROLES = {  # role → devices (fcm, then apns, which has no credentials here: the log provider)
    "two_phones": 2, "one_phone": 1, "three_phones": 3, "withdrawn": 1, "expired": 1, "dead": 1, "throttled": 1}


def cast(world: SuggestionWorld, fcm: FakeFcm, prefix: str, now: datetime) -> dict[str, tuple[Any, str, str]]:
    """One user per role with one suggestion due now; role → (user, suggestion id, name)."""
    rule = world.rule(f"{prefix}-spots")
    out = {}
    for role, devices in ROLES.items():
        user = world.user(f"{prefix}-{role}", devices=devices)
        expires = now + timedelta(seconds=30) if role == "expired" else now + timedelta(hours=1)
        sid = world.propose(user, rule, now=now - timedelta(minutes=1), expires_at=expires,
                            collapse_key=f"{prefix}-{role}")
        out[role] = (user, sid, f"{prefix}-{role}")
    fcm.unregister(f"{prefix}-dead-phone-0")
    fcm.script(f"{prefix}-throttled-phone-0", throttled(retry_after=120))
    with world.database.unit_of_work() as uow:  # withdrawn after the budget let it through, before the push
        uow.session.execute(update(Consent).where(Consent.user_id == uuid.UUID(out["withdrawn"][0].id))
                            .values(granted=False))
        uow.commit()
    return out


def due_items(world: SuggestionWorld, suggestion_ids: list[str], now: datetime) -> list[tuple[uuid.UUID, int]]:
    """(suggestion id, outbox id) of the open push messages of these suggestions due at ``now``, in order."""
    with world.database.session() as session:
        rows = session.execute(select(OutboxMessage.id, OutboxMessage.payload).where(
            OutboxMessage.task == PUSH_TASK, OutboxMessage.completed_at.is_(None),
            OutboxMessage.available_at <= now).order_by(OutboxMessage.id))
        return [(uuid.UUID(p["suggestion_id"]), oid) for oid, p in rows if p["suggestion_id"] in suggestion_ids]


def snapshot(world: SuggestionWorld, fcm: FakeFcm, cast_: dict[str, tuple[Any, str, str]], now: datetime) -> dict:
    """What the users and the service see, per role, with times relative to ``now``."""
    out: dict[str, Any] = {}
    with world.database.session() as session:
        for role, (user, sid, name) in cast_.items():
            suggestion = session.get(Suggestion, uuid.UUID(sid))
            devices = {d.id: n for n, d in enumerate(session.scalars(
                select(Device).where(Device.user_id == uuid.UUID(user.id)).order_by(Device.id)))}
            actives = [d.active for d in session.scalars(
                select(Device).where(Device.user_id == uuid.UUID(user.id)).order_by(Device.id))]
            attempts = sorted(
                (devices[a.device_id], a.try_number, a.provider, a.status, a.status_code,
                 a.retry_at - now if a.retry_at else None, (a.error or "").split(":")[0])
                for a in session.scalars(select(PushAttempt).where(PushAttempt.suggestion_id == suggestion.id)))
            journal = len(list(session.scalars(select(Interaction.id).where(
                Interaction.subject_id == suggestion.id, Interaction.kind == "suggestion.pushed"))))
            messages = sorted(((m.available_at - now if m.available_at > now else "due", m.completed_at is not None)
                               for m in session.scalars(
                select(OutboxMessage).where(OutboxMessage.task == PUSH_TASK,
                                            OutboxMessage.payload["suggestion_id"].as_string() == sid))), key=str)
            prefix_token = f"{name}-phone-0"
            out[role] = {"status": suggestion.status, "delivery_status": suggestion.delivery_status,
                         "attempts": attempts, "active": actives, "journal": journal,
                         "outbox": messages, "fcm_accepted": len(fcm.sent_to(prefix_token))}
    return out


def test_a_batch_ends_exactly_as_one_by_one_and_a_rerun_sends_nothing(world, fcm):
    now = clock_start()
    single = cast(world, fcm, "one", now)
    batch = cast(world, fcm, "all", now)
    later = now + timedelta(minutes=1)

    for suggestion_id, outbox_id in due_items(world, [s for _, s, _ in single.values()], later):
        deliver_suggestion(world.database, suggestion_id, outbox_id, now=later)
    items = due_items(world, [s for _, s, _ in batch.values()], later)
    assert len(items) == len(ROLES)
    reports = deliver_suggestions(world.database, items, now=later)

    expected = snapshot(world, fcm, single, later)
    got = snapshot(world, fcm, batch, later)
    assert got == expected
    # And what that is, as the users see it:
    assert (got["two_phones"]["status"], got["two_phones"]["delivery_status"]) == ("delivered", "delivered")
    assert [a[2:4] for a in got["two_phones"]["attempts"]] == [("fcm", "sent"), ("log", "sent")]
    assert got["three_phones"]["journal"] == 3 and got["three_phones"]["fcm_accepted"] == 1
    assert (got["withdrawn"]["status"], got["withdrawn"]["delivery_status"], got["withdrawn"]["attempts"]) == \
        ("suppressed", "none", [])
    assert (got["expired"]["status"], got["expired"]["delivery_status"], got["expired"]["attempts"]) == \
        ("expired", "none", [])
    assert got["dead"]["delivery_status"] == "failed" and got["dead"]["active"] == [False]
    assert got["dead"]["attempts"] == [(0, 1, "fcm", "failed", 404, None, "UNREGISTERED (404)")]
    assert got["throttled"]["delivery_status"] == "pending" and got["throttled"]["status"] == "new"
    assert got["throttled"]["attempts"] == [(0, 1, "fcm", "failed", 429, timedelta(seconds=120),
                                             "QUOTA_EXCEEDED (429)")]
    assert sorted(got["throttled"]["outbox"], key=str) == [("due", True), (timedelta(seconds=120), False)]
    assert all(m[1] for role in got if role != "throttled" for m in got[role]["outbox"])
    assert reports[uuid.UUID(batch["two_phones"][1])].sent == 2
    assert reports[uuid.UUID(batch["throttled"][1])].retrying == 1

    # The same batch again (a redelivered task): nothing more is sent or written.
    accepted, pushes = len(fcm.messages), len(world.pushes())
    again = deliver_suggestions(world.database, items, now=later + timedelta(seconds=5))
    assert (len(fcm.messages), len(world.pushes())) == (accepted, pushes)
    assert snapshot(world, fcm, batch, later) == got
    assert sum(r.sent + r.failed for r in again.values()) == 0

    # The throttled push goes out once FCM's Retry-After has passed, with the others' batch.
    retry_time = later + timedelta(seconds=121)
    retry_items = due_items(world, [s for _, s, _ in batch.values()], retry_time)
    assert [s for s, _ in retry_items] == [uuid.UUID(batch["throttled"][1])]
    deliver_suggestions(world.database, retry_items, now=retry_time)
    final = snapshot(world, fcm, batch, later)["throttled"]
    assert (final["status"], final["delivery_status"], final["fcm_accepted"]) == ("delivered", "delivered", 1)
    assert [a[1:4] for a in final["attempts"]] == [(1, "fcm", "failed"), (2, "fcm", "sent")]
    assert all(done for _, done in final["outbox"])


def test_a_batch_whose_worker_died_after_the_claim_is_taken_over_once_stale(world, fcm, monkeypatch):
    users = [world.user(f"user{n}", devices=2) for n in range(3)]
    now = clock_start()
    rule = world.rule("spots")
    sids = [world.propose(user, rule, now=now) for user in users]
    items = due_items(world, sids, now)

    def killed(claims):
        raise SystemExit("worker killed mid-send")

    monkeypatch.setattr(delivery_batch, "send_claims", killed)
    with pytest.raises(SystemExit):
        deliver_suggestions(world.database, items, now=now)
    monkeypatch.undo()
    with world.database.session() as session:
        states = list(session.scalars(select(PushAttempt.status)))
    assert sorted(states) == ["sending"] * 6 and fcm.messages == [] and world.pushes() == []

    # A redelivery while the claim is fresh: another worker may still be sending, so nothing is sent.
    soon = now + timedelta(seconds=30)
    deliver_suggestions(world.database, items, now=soon)
    assert fcm.messages == [] and world.pushes() == []
    assert len(due_items(world, sids, soon)) == 3  # the messages stay open in case that worker died

    stale = now + stale_after(world.database.settings) + timedelta(seconds=1)
    reports = deliver_suggestions(world.database, items, now=stale)
    assert sum(r.sent for r in reports.values()) == 6
    assert len(fcm.messages) == 3 and len(world.pushes()) == 3
    for user, sid in zip(users, sids):
        detail = world.get(user, sid)
        assert (detail["status"], detail["delivery_status"]) == ("delivered", "delivered")
        assert sorted((a["try_number"], a["status"]) for a in detail["push_attempts"]) == [(1, "sent"), (1, "sent")]
    assert due_items(world, sids, stale) == []

    deliver_suggestions(world.database, items, now=stale + timedelta(minutes=5))
    assert len(fcm.messages) == 3 and len(world.pushes()) == 3


def test_two_messages_of_one_suggestion_in_a_batch_push_it_once_and_complete_both(world, fcm):
    alice = world.user("alice")
    now = clock_start()
    sid = world.propose(alice, world.rule("spots"), now=now)
    [(suggestion_id, outbox_id)] = due_items(world, [sid], now)
    reports = deliver_suggestions(world.database, [(suggestion_id, outbox_id), (suggestion_id, None)], now=now)
    assert reports[suggestion_id].sent == 1 and len(fcm.sent_to("alice-phone-0")) == 1
    assert due_items(world, [sid], now) == []


def test_pushes_left_when_the_batch_runs_out_of_time_are_retried_later(world, fcm, monkeypatch):
    from smartsvc.delivery import fcm as fcm_module
    from smartsvc.services import delivery

    users = [world.user(f"late{n}", devices=2) for n in range(2)]  # an FCM phone (send_many) and a log one
    now = clock_start()
    rule = world.rule("spots")
    sids = [world.propose(user, rule, now=now, expires_at=now + timedelta(hours=1)) for user in users]
    monkeypatch.setattr(fcm_module, "SEND_MANY_BUDGET_S", 0.0)
    monkeypatch.setattr(delivery, "SEND_BUDGET_S", 0.0)
    deliver_suggestions(world.database, due_items(world, sids, now), now=now)
    assert fcm.messages == [] and world.pushes() == []
    for user, sid in zip(users, sids):
        detail = world.get(user, sid)
        assert (detail["status"], detail["delivery_status"]) == ("new", "pending")
        assert {(a["status"], a["error"]) for a in detail["push_attempts"]} == \
            {("failed", "not sent: the batch ran out of time")}
    monkeypatch.undo()

    later = now + timedelta(seconds=31)  # the first backoff step
    deliver_suggestions(world.database, due_items(world, sids, later), now=later)
    assert len(fcm.messages) == 2 and len(world.pushes()) == 2
    for user, sid in zip(users, sids):
        assert world.get(user, sid)["delivery_status"] == "delivered"


def test_what_a_batch_sets_on_its_rows_is_written_back_once_and_only_that(world):
    now = clock_start()
    rule = world.rule("rows-spots")
    sids = [uuid.UUID(world.propose(world.user(f"rows-{n}"), rule, now=now, collapse_key=f"rows-{n}"))
            for n in range(3)]
    updates: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("UPDATE SUGGESTIONS"):
            updates.append(statement)

    database = world.database
    with database.unit_of_work() as uow:
        rows = delivery_rows.load_locked(uow.session, sids)
        first, second, third = (rows[sid] for sid in sids)
        first.status, first.delivery_status = "delivered", "delivered"
        second.delivery_status = "failed"
        event.listen(database.engine, "before_cursor_execute", record)
        try:
            delivery_rows.write_changes(uow.session, Suggestion.__table__, rows.values())
            written = len(updates)
            delivery_rows.write_changes(uow.session, Suggestion.__table__, rows.values())  # nothing new set
        finally:
            event.remove(database.engine, "before_cursor_execute", record)
        uow.commit()

    assert written == len(updates) == 2  # one statement per set of changed columns, then none
    assert first.changed == second.changed == third.changed == set()
    with database.session() as session:
        stored = {s.id: (s.status, s.delivery_status, s.title) for s in session.scalars(
            select(Suggestion).where(Suggestion.id.in_(sids)))}
    assert stored == {sids[0]: ("delivered", "delivered", "Parking"), sids[1]: ("new", "failed", "Parking"),
                      sids[2]: ("new", "pending", "Parking")}
