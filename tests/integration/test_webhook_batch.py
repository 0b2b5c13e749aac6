"""Webhook deliveries in batches per endpoint (SQLite and PostgreSQL): what a partner and a user notice.

The relay groups due deliveries per endpoint into one task (tests/support/
webhook_world.py drains exactly that way); a batch claims, sends over one
kept-alive connection and finishes together, counts as one of its
endpoint's slots, and stops sending to an endpoint that does not answer —
the deliveries it did not send give their attempt back and wait.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from smartsvc.models import OutboxMessage, WebhookDelivery
from smartsvc.services import webhook_batch
from smartsvc.services.webhook_events import DELIVER_TASK
from smartsvc.timeutil import simulated_clock, utcnow
from tests.support.factories import make_app
from tests.support.webhook_receiver import Reply, WebhookReceiver
from tests.support.webhook_world import WebhookWorld, webhook_settings, webhook_world

EVENTS = 6


@pytest.fixture
def db_settings(database_url, tmp_path):
    return webhook_settings(tmp_path / "var", database_url=database_url, webhook_timeout_s=2.0,
                            webhook_retry_schedule=(0, 600))


@pytest.fixture
def world(db_app) -> WebhookWorld:
    return webhook_world(db_app)


@pytest.fixture
def pg_world(tmp_path, postgres_url):
    """A world on PostgreSQL only (tests of row locks: SQLite writes one transaction at a time)."""
    world = webhook_world(make_app(webhook_settings(tmp_path / "var", database_url=postgres_url)))
    try:
        yield world
    finally:
        world.database.engine.dispose()


def _due_items(world: WebhookWorld) -> list[tuple[uuid.UUID, int]]:
    """The due webhook messages as one batch's items (without stamping them: the relay is not run)."""
    with world.database.session() as session:
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.task == DELIVER_TASK,
                                                           OutboxMessage.completed_at.is_(None))
                               .order_by(OutboxMessage.id)).all()
        return [(uuid.UUID(m.payload["delivery_id"]), m.id) for m in rows]


def _sharing(world: WebhookWorld, user) -> list[dict[str, Any]]:
    return world.client.get("/v1/me/sharing", headers=user.headers).get_json()["items"]


def _emit_alone_then_together(world: WebhookWorld, user: Any, now: Any, n: int) -> None:
    """Event ``n`` about ``user`` through ``emit_event``, event ``n + 1`` through ``emit_events``, a transaction each."""
    from smartsvc.services.webhook_events import emit_event, emit_events

    user_id = uuid.UUID(user.id)
    with world.database.unit_of_work() as uow:
        emit_event(uow, "geofence.entered", f"user:{user.id}", {"n": n}, user_id=user_id, now=now)
        uow.commit()
    with world.database.unit_of_work() as uow:
        emit_events(uow, "geofence.entered", [(f"user:{user.id}", {"n": n + 1}, user_id)], now=now)
        uow.commit()


def test_a_batch_delivers_every_event_signed_once_and_a_rerun_sends_nothing(world):
    with WebhookReceiver() as receiver:
        hook = world.register(receiver.url(), ["suggestion.created"])
        users = [world.user(f"user{n}") for n in range(EVENTS)]
        ids = [world.suggest(user, title=f"event {n}") for n, user in enumerate(users)]
        items = _due_items(world)
        assert len(items) == EVENTS

        with world.app.app_context():
            statuses = webhook_batch.deliver_webhooks(world.app.extensions["smartsvc"], items)
        assert sorted(statuses.values()) == ["delivered"] * EVENTS
        received = [Webhook(hook["secret"]).verify(r.body, r.headers) for r in receiver.requests]
        assert sorted(p["data"]["id"] for p in received) == sorted(ids)  # one request each (several in flight)
        assert len({r.headers["webhook-id"] for r in receiver.requests}) == EVENTS
        for user in users:  # each user's ledger names the partner once
            assert [e["reference_id"] for e in _sharing(world, user)] != []
            assert len(_sharing(world, user)) == 1

        with world.app.app_context():  # the same task again (a redelivered message)
            again = webhook_batch.deliver_webhooks(world.app.extensions["smartsvc"], items)
        assert sorted(again.values()) == ["skipped"] * EVENTS and len(receiver.requests) == EVENTS
        world.drain()
        assert len(receiver.requests) == EVENTS


def test_a_hanging_endpoint_costs_a_batch_one_timeout_and_the_rest_wait_with_nothing_recorded(world):
    with WebhookReceiver(default=Reply.hang()) as dead:
        hook = world.register(dead.url(), ["suggestion.created"])
        users = [world.user(f"user{n}") for n in range(EVENTS)]
        for user in users:
            world.suggest(user)
        items = _due_items(world)

        with world.app.app_context():
            statuses = webhook_batch.deliver_webhooks(world.app.extensions["smartsvc"], items)
        assert len(dead.requests) == 1  # the first timed out: nothing more was sent to it (one timeout, not six)
        assert sorted(statuses.values()) == ["pending"] + ["skipped"] * (EVENTS - 1)

        deliveries = world.deliveries(hook["id"])
        tried = [d for d in deliveries if d["attempts"]]
        assert len(tried) == 1 and tried[0]["attempts"][0]["status"] == "failed"
        # The exchange's deadline (2 s) ended it, not a longer wait: read from the attempt. A wall clock around
        # the whole batch read 13 s once in a full-suite run (session 17; not reproduced in 11 runs, loaded or
        # not), and a test must not time the machine.
        assert 1900 <= tried[0]["attempts"][0]["latency_ms"] < 4000
        assert tried[0]["attempts"][0]["next_retry_at"] is not None
        untried = [d for d in deliveries if not d["attempts"]]
        assert len(untried) == EVENTS - 1 and all(d["status"] == "pending" for d in untried)
        # Nothing left the service for the others: no ledger entry names the partner for them.
        assert sorted(len(_sharing(world, user)) for user in users) == [0] * (EVENTS - 1) + [1]

        dead.set_default(200)  # it answers again: the ones given back go out, the timed-out one at its retry
        world.drain()
        assert sorted(d["status"] for d in world.deliveries(hook["id"])) == ["delivered"] * (EVENTS - 1) + ["pending"]
        assert sorted(len(_sharing(world, user)) for user in users) == [1] * EVENTS


def test_a_batch_is_one_slot_of_its_endpoint(tmp_path, database_url):
    app = make_app(webhook_settings(tmp_path / "var", database_url=database_url, webhook_max_in_flight=2))
    world = webhook_world(app)
    try:
        with WebhookReceiver() as receiver:
            world.register(receiver.url(), ["suggestion.created"])
            for n in range(5):
                world.suggest(world.user(f"user{n}"))
            items = _due_items(world)
            database = app.extensions["smartsvc"].database
            now = utcnow()
            first, _ = webhook_batch.claim(database, items[:3], now)  # a worker is sending these three: one slot
            second, _ = webhook_batch.claim(database, items[3:4], now)  # another worker: the second slot
            assert (len(first), len(second)) == (3, 1)
            third, statuses = webhook_batch.claim(database, items[4:], now)
            assert third == [] and list(statuses.values()) == ["skipped"]  # both slots are taken: it waits
            with database.session() as session:
                waiting = session.scalars(select(WebhookDelivery.id).where(
                    WebhookDelivery.waiting_since.is_not(None))).all()
            assert waiting == [items[4][0]]

            sent, unsent = webhook_batch.send(first, app.extensions["smartsvc"].settings, utcnow)
            webhook_batch.finish(database, sent, unsent, [o for _, o in items[:3]], utcnow())
            assert len(receiver.requests) == 3
            world.drain()  # finishing released the waiting one
            assert len(receiver.requests) == 4
    finally:
        app.extensions["smartsvc"].database.engine.dispose()


def test_a_batch_past_its_time_budget_gives_the_rest_back_for_another_turn(world):
    with WebhookReceiver() as receiver:
        hook = world.register(receiver.url(), ["suggestion.created"])
        for n in range(EVENTS):
            world.suggest(world.user(f"user{n}"))
        items = _due_items(world)
        database = world.app.extensions["smartsvc"].database
        claims, _ = webhook_batch.claim(database, items, utcnow())

        def slow(url, body, headers, **options):
            from smartsvc.webhooks.transport import send_webhook

            time.sleep(0.2)
            return send_webhook(url, body, headers, **options)

        sent, unsent = webhook_batch.send(claims, database.settings, utcnow, sender=slow, budget_s=0.3, concurrency=1)
        assert (len(sent), len(unsent)) == (2, EVENTS - 2)
        webhook_batch.finish(database, sent, unsent, [o for _, o in items], utcnow())
        states = world.deliveries(hook["id"])
        assert sorted(d["status"] for d in states) == ["delivered"] * 2 + ["pending"] * (EVENTS - 2)
        assert all(len(d["attempts"]) == (1 if d["status"] == "delivered" else 0) for d in states)
        world.drain()  # the ones given back were released at once: the endpoint is healthy
        assert [d["status"] for d in world.deliveries(hook["id"])] == ["delivered"] * EVENTS
        assert len(receiver.requests) == EVENTS


def test_deliveries_about_one_subject_in_one_batch_still_go_out_in_order(world):
    with WebhookReceiver() as receiver:
        hook = world.register(receiver.url(), ["suggestion.created"])
        alice = world.user("alice")
        ids = [world.suggest(alice, title=f"event {n}") for n in range(3)]
        world.drain()
        received = [Webhook(hook["secret"]).verify(r.body, r.headers)["data"]["id"] for r in receiver.requests]
        assert received == ids


def test_a_subject_with_many_waiting_goes_on_one_delivery_at_a_time_after_a_retry(world):
    # Settling a delivery releases only the earliest waiting one of its subject, however many wait.
    with WebhookReceiver() as receiver:
        hook = world.register(receiver.url(), ["suggestion.created"])
        alice, bob = world.user("alice"), world.user("bob")
        receiver.script(500)
        ids = [world.suggest(alice, title=f"event {n}") for n in range(4)]
        other = world.suggest(bob)
        world.drain()

        def received() -> list[str]:  # not verified: the retries are signed at the simulated time, 15 min ahead
            return [json.loads(r.body)["data"]["id"] for r in receiver.requests]

        assert received() == [ids[0], other]  # alice's others wait for her first, which waits for its retry
        later = utcnow() + timedelta(minutes=15)
        with simulated_clock(lambda: later):
            world.drain()
        assert received() == [ids[0], other, *ids]
        assert [d["status"] for d in world.deliveries(hook["id"])] == ["delivered"] * 5


def test_410_in_a_batch_disables_the_endpoint_and_fails_the_rest_without_sending(world):
    with WebhookReceiver(default=410) as gone:
        hook = world.register(gone.url(), ["suggestion.created"])
        for n in range(EVENTS):
            world.suggest(world.user(f"user{n}"))
        world.drain()
        assert len(gone.requests) == 1
        assert world.webhook(hook["id"])["enabled"] is False
        states = world.deliveries(hook["id"])
        assert [d["status"] for d in states] == ["failed"] * EVENTS
        assert all("410" in (d["status_reason"] or "") for d in states)
        assert world.drain() == 0 and len(gone.requests) == 1


def test_a_batch_left_by_a_dead_worker_is_taken_over_once_stale(world):
    with WebhookReceiver() as receiver:
        hook = world.register(receiver.url(), ["suggestion.created"])
        for n in range(3):
            world.suggest(world.user(f"user{n}"))
        items = _due_items(world)
        database = world.app.extensions["smartsvc"].database
        now = utcnow()
        claims, _ = webhook_batch.claim(database, items, now)  # ... and the worker died before sending
        assert len(claims) == 3
        with world.app.app_context():
            assert set(webhook_batch.deliver_webhooks(database, items, now=now + timedelta(seconds=30)).values()) \
                == {"skipped"}  # still being sent, as far as anyone knows
            later = webhook_batch.deliver_webhooks(database, items, now=now + timedelta(minutes=3))
        assert set(later.values()) == {"delivered"} and len(receiver.requests) == 3
        for delivery in world.deliveries(hook["id"]):
            assert [a["status"] for a in delivery["attempts"]] in (["failed", "succeeded"], ["succeeded", "failed"])


def test_what_the_partner_accepted_stays_delivered_when_a_later_answer_disables_the_endpoint(world):
    with WebhookReceiver(default=410) as receiver:
        receiver.script(200)  # the batch's first send (alone) is accepted, the next ones answer 410 Gone
        hook = world.register(receiver.url(), ["suggestion.created"])
        for n in range(EVENTS):
            world.suggest(world.user(f"user{n}"))
        world.drain()
        assert world.webhook(hook["id"])["enabled"] is False
        states = world.deliveries(hook["id"])
        accepted = [d for d in states if any(a["status"] == "succeeded" for a in d["attempts"])]
        assert len(accepted) == 1 and accepted[0]["status"] == "delivered"
        rest = [d for d in states if d is not accepted[0]]
        assert [d["status"] for d in rest] == ["failed"] * (EVENTS - 1)
        assert all("410" in d["status_reason"] for d in rest)
        assert 2 <= len(receiver.requests) <= EVENTS


def _delivery_rows(world: WebhookWorld, webhook_id: str) -> list[WebhookDelivery]:
    with world.database.session() as session:
        return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.webhook_id == uuid.UUID(webhook_id))
                                    .order_by(WebhookDelivery.created_at, WebhookDelivery.id)))


def test_events_emitted_together_reach_partners_as_each_emitted_alone_would(world):
    """``emit_events`` (a source of many events at once) writes what ``emit_event`` writes for each: only for
    users who share, coarsened per endpoint, each queued, in their order, and signed on arrival."""
    from smartsvc.services.webhook_events import emit_event, emit_events

    with WebhookReceiver() as receiver:
        fine = world.register(receiver.url("/fine"), ["geofence.entered"])
        coarse = world.register(receiver.url("/coarse"), ["geofence.entered"], coordinate_decimals=2)
        sharing = [world.user(f"sharing{n}") for n in range(3)]
        private = world.user("private", sharing=False)
        about = [sharing[0], private, sharing[1], sharing[2], sharing[0]]
        data = [{"user_id": u.id, "n": n, "location": {"lat": 52.520008 + n, "lon": 13.404954}}
                for n, u in enumerate(about)]
        now = utcnow()
        with world.database.unit_of_work() as uow:
            emit_event(uow, "geofence.entered", "user:first", {"n": -1}, now=now)  # pending in the session
            written = emit_events(uow, "geofence.entered", [(f"user:{u.id}", d, uuid.UUID(u.id))
                                                             for u, d in zip(about, data)], now=now)
            uow.commit()
        assert written == 2 * 5 - 2  # two endpoints, four events of users who share (and the one alone above)
        for hook in (fine, coarse):
            rows = _delivery_rows(world, hook["id"])
            assert [r.payload["data"].get("n") for r in rows] == [-1, 0, 2, 3, 4]
            assert all(r.status == "pending" and r.waiting_since is None for r in rows)
        assert _delivery_rows(world, coarse["id"])[1].payload["data"]["location"] == {"lat": 52.52, "lon": 13.4}
        # Queued, to each endpoint, in the order they were emitted: the one emitted alone first.
        with world.database.session() as session:
            emitted = {d.id: (str(d.webhook_id), d.payload["data"]["n"]) for d in session.scalars(select(WebhookDelivery))}
        for hook in (fine, coarse):
            assert [emitted[d][1] for d, _o in _due_items(world) if emitted[d][0] == hook["id"]] == [-1, 0, 2, 3, 4]
        world.drain()
        for path, hook in (("/fine", fine), ("/coarse", coarse)):
            arrived = [json.loads(r.body)["data"]["n"] for r in receiver.requests if r.path == path]
            assert arrived == [-1, 0, 2, 3, 4]
            for r in receiver.requests:
                if r.path == path:
                    Webhook(hook["secret"]).verify(r.body, r.headers)


def test_events_emitted_together_to_an_endpoint_whose_breaker_is_open_wait_unqueued(world):
    from smartsvc.models import WebhookEndpoint
    from smartsvc.services.webhook_events import BREAKER_FAILURES, emit_events

    hook = world.register("http://127.0.0.1:9/hook", ["geofence.entered"])
    user = world.user("sharing")
    with world.database.unit_of_work() as uow:
        uow.session.get(WebhookEndpoint, uuid.UUID(hook["id"])).consecutive_failures = BREAKER_FAILURES
        uow.commit()
    with world.database.unit_of_work() as uow:
        assert emit_events(uow, "geofence.entered", [(f"user:{user.id}", {"n": n}, uuid.UUID(user.id))
                                                     for n in range(3)]) == 3
        uow.commit()
    rows = _delivery_rows(world, hook["id"])
    assert len(rows) == 3 and all(r.waiting_since is not None for r in rows)
    assert _due_items(world) == []  # nothing for the workers until the endpoint answers again


@pytest.mark.parametrize("waited_s, busy", [(1.0, True), (0.05, False)])
def test_new_events_to_an_endpoint_whose_deliveries_wait_long_for_a_slot_wait_behind_them(world, waited_s, busy):
    """All of an endpoint's slots taken for a while (slow or hanging): new deliveries wait, unqueued, and go out
    in order when a slot frees. Slots full for a moment (a healthy endpoint under load): queued as usual."""
    from smartsvc.services.webhook_delivery import release_waiting, set_waiting
    from smartsvc.services.webhook_events import emit_event

    hook = world.register("http://127.0.0.1:9/hook", ["geofence.entered"])
    user = world.user("sharing")
    user_id = uuid.UUID(user.id)
    now = utcnow()
    with world.database.unit_of_work() as uow:
        emit_event(uow, "geofence.entered", f"user:{user.id}", {"n": 0}, user_id=user_id, now=now)
        uow.commit()
    [first] = _delivery_rows(world, hook["id"])
    with world.database.unit_of_work() as uow:  # a batch found no free slot for it, ``waited_s`` ago
        set_waiting(uow.session, [first.id], now - timedelta(seconds=waited_s))
        uow.commit()
    _emit_alone_then_together(world, user, now, 1)
    later = _delivery_rows(world, hook["id"])[1:]
    assert [r.waiting_since is not None for r in later] == [busy, busy]
    queued = {d for d, _o in _due_items(world)}
    assert {r.id for r in later} & queued == (set() if busy else {r.id for r in later})
    if busy:  # a slot frees: the waiting ones are queued, the earliest first
        with world.database.unit_of_work() as uow:
            assert release_waiting(uow, uuid.UUID(hook["id"]), now) == 3
            uow.commit()
        order = [d for d, _o in _due_items(world)]
        assert [d for d in order if d in {first.id, *(r.id for r in later)}][-3:] == [first.id, *(r.id for r in later)]


def _waits_for_a_finish(monkeypatch, finish_args: tuple[Any, ...], other: Any) -> bool:
    """Run ``webhook_batch.finish(*finish_args)``, held open just after it locked its deliveries, and ``other()``
    meanwhile; whether ``other`` had to wait (10 s) for that finish to commit."""
    import threading

    from smartsvc.services import webhook_outcomes

    locked, go = threading.Event(), threading.Event()
    lock_deliveries = webhook_outcomes.lock_deliveries
    paused: list[bool] = []

    def pausing(session, ids):  # the first finish holds its transaction open here until the main thread says go
        found = lock_deliveries(session, ids)
        if not paused:
            paused.append(True)
            locked.set()
            go.wait(30)
        return found

    monkeypatch.setattr(webhook_outcomes, "lock_deliveries", pausing)
    holding = threading.Thread(target=webhook_batch.finish, args=finish_args)
    holding.start()
    try:
        assert locked.wait(30)
        waiting = threading.Thread(target=other, daemon=True)
        waiting.start()
        waiting.join(10)
        blocked = waiting.is_alive()
    finally:
        go.set()
        holding.join(30)
    waiting.join(30)
    return blocked


def test_events_for_an_endpoint_are_emitted_while_a_worker_finishes_a_batch_to_it(pg_world, monkeypatch):
    """A finish does not hold up the app writing new deliveries to its endpoint (PostgreSQL: SQLite writes one
    transaction at a time anyway)."""
    world = pg_world
    app, database = world.app, world.database
    with WebhookReceiver() as receiver:
        hook = world.register(receiver.url(), ["suggestion.created"])
        first, second = world.user("first"), world.user("second")
        world.suggest(first)
        items = _due_items(world)
        claims, _ = webhook_batch.claim(database, items, utcnow())
        sent, unsent = webhook_batch.send(claims, app.extensions["smartsvc"].settings, utcnow)
        emitted: list[str] = []
        blocked = _waits_for_a_finish(monkeypatch, (database, sent, unsent, [o for _, o in items], utcnow()),
                                      lambda: emitted.append(world.suggest(second)))
        assert not blocked, "emitting an event waited for the worker's finish to commit"
        assert len(emitted) == 1
        world.drain()
        assert sorted(d["status"] for d in world.deliveries(hook["id"])) == ["delivered", "delivered"]
        assert len(receiver.requests) == 2


@pytest.mark.postgres
def test_a_subject_s_next_delivery_is_looked_up_by_subject_not_read_from_the_endpoint_s_history(pg_world):
    """Each settle releases the next delivery of its subjects. Read with a window over the endpoint's rows not
    being sent, it scanned the endpoint's whole history (every delivered row) per batch; it is one look-up in
    the subject index per subject, on a table never analysed too."""
    from sqlalchemy import text

    from smartsvc.services.webhook_delivery import _EARLIEST_PENDING
    from smartsvc.services.webhook_events import emit_events

    world = pg_world
    database = world.database
    with WebhookReceiver() as receiver:
        hook = world.register(receiver.url(), ["suggestion.created"])
    subjects = [f"device:{n}" for n in range(300)]
    with database.unit_of_work() as uow:
        emit_events(uow, "suggestion.created", [(subjects[n % 300], {"n": n}, None) for n in range(6000)])
        uow.commit()
    with database.unit_of_work() as uow:  # the history: all but each subject's last two delivered
        uow.session.execute(text("UPDATE webhook_deliveries SET status = 'delivered', waiting_since = NULL "
                                 "WHERE id IN (SELECT id FROM webhook_deliveries ORDER BY id LIMIT 5400)"))
        uow.commit()
    with database.session() as session:
        statement = _EARLIEST_PENDING[True]
        parameters = {"webhook_id": uuid.UUID(hook["id"]), "subjects": subjects[:200]}
        found = session.execute(statement, parameters).all()
        compiled = statement.compile(dialect=session.get_bind().dialect)
        cursor = session.connection().connection.dbapi_connection.cursor()
        cursor.execute(f"EXPLAIN {compiled}", {**compiled.params, **parameters})
        plan = "\n".join(row[0] for row in cursor.fetchall())
        first_pending = session.execute(text(
            "SELECT DISTINCT ON (subject) id FROM webhook_deliveries WHERE status = 'pending' "
            "AND subject = ANY(:subjects) ORDER BY subject, id"), {"subjects": subjects[:200]}).scalars().all()
    assert sorted(row.id for row in found) == sorted(first_pending) and len(found) == 200
    assert "ix_webhook_deliveries_webhook_id_subject_status" in plan, plan
    assert "sending_since" not in plan and "Seq Scan on webhook_deliveries" not in plan, plan


@pytest.mark.parametrize("failing_for_s, waits", [(0.5, True), (0.05, False)])
def test_new_events_to_an_endpoint_failing_for_a_moment_wait_unqueued_before_its_breaker_opens(world, failing_for_s,
                                                                                              waits):
    """One failed attempt a moment ago (a healthy endpoint's hiccup): new events are queued. Every attempt failed
    for a quarter of a second or more: they wait for the endpoint's next success, as behind an open breaker."""
    from smartsvc.models import WebhookEndpoint
    from smartsvc.services.webhook_events import BREAKER_FAILURES

    hook = world.register("http://127.0.0.1:9/hook", ["geofence.entered"])
    user = world.user("sharing")
    now = utcnow()
    with world.database.unit_of_work() as uow:
        endpoint = uow.session.get(WebhookEndpoint, uuid.UUID(hook["id"]))
        endpoint.consecutive_failures = BREAKER_FAILURES - 3
        endpoint.failing_since = now - timedelta(seconds=failing_for_s)
        uow.commit()
    _emit_alone_then_together(world, user, now, 0)
    rows = _delivery_rows(world, hook["id"])
    assert [r.waiting_since is not None for r in rows] == [waits, waits]
    assert len(_due_items(world)) == (0 if waits else 2)


def test_a_failure_sends_one_waiting_delivery_as_a_probe_and_its_success_the_rest(world):
    """An endpoint that failed: a batch sends one delivery and parks the rest. Its failure queues only the
    earliest waiting one (not a batch per free slot: those would be parked again, and again); that one's
    success queues all the others."""
    from smartsvc.models import WebhookEndpoint

    with WebhookReceiver() as receiver:
        hook = world.register(receiver.url(), ["suggestion.created"])
        webhook_id = uuid.UUID(hook["id"])
        with world.database.unit_of_work() as uow:
            uow.session.get(WebhookEndpoint, webhook_id).consecutive_failures = 1
            uow.commit()
        ids = [world.suggest(world.user(f"user{n}"), title=f"event {n}") for n in range(EVENTS)]
        receiver.script(500)
        with world.app.app_context():
            statuses = webhook_batch.deliver_webhooks(world.app.extensions["smartsvc"], _due_items(world))
        assert sorted(statuses.values()) == ["pending"] + ["skipped"] * (EVENTS - 1)
        rows = _delivery_rows(world, hook["id"])
        parked = sorted(r.id for r in rows if r.attempts == 0)
        assert len(parked) == EVENTS - 1
        assert [d for d, _o in _due_items(world) if d in parked] == [parked[0]]  # the probe
        assert [r.id for r in rows if r.waiting_since is not None] == parked[1:]  # the others still wait
        world.drain()
        received = [json.loads(r.body)["data"]["id"] for r in receiver.requests]
        assert len(received) == EVENTS and sorted(received) == sorted(ids)
        assert sorted(d["status"] for d in world.deliveries(hook["id"])) == ["delivered"] * (EVENTS - 1) + ["pending"]


def test_finishes_of_two_failing_batches_to_one_endpoint_run_side_by_side_and_both_count(pg_world, monkeypatch):
    """A finish does not lock its endpoint's row: the finishes to a refusing endpoint do not queue on it (each
    holding a worker slot). The failure streak is written after, atomically: both failures count."""
    from smartsvc.models import WebhookEndpoint

    world = pg_world
    app, database = world.app, world.database
    with WebhookReceiver(default=500) as receiver:
        hook = world.register(receiver.url(), ["suggestion.created"])
        for name in ("first", "second"):
            world.suggest(world.user(name))
        items = _due_items(world)
        assert len(items) == 2
        batches = []
        for item in items:  # two batches, claimed before either failed: two slots
            claims, _ = webhook_batch.claim(database, [item], utcnow())
            sent, unsent = webhook_batch.send(claims, app.extensions["smartsvc"].settings, utcnow)
            assert [outcome.status_code for _, outcome in sent] == [500]
            batches.append((database, sent, unsent, [item[1]], utcnow()))
        blocked = _waits_for_a_finish(monkeypatch, batches[0], lambda: webhook_batch.finish(*batches[1]))
        assert not blocked, "a finish waited for another finish to the same endpoint"
        with database.session() as session:
            endpoint = session.get(WebhookEndpoint, uuid.UUID(hook["id"]))
            assert endpoint.consecutive_failures == 2 and endpoint.failing_since is not None
        assert [d["status"] for d in world.deliveries(hook["id"])] == ["pending", "pending"]
