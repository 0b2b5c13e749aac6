"""The context pipeline survives a killed worker and keeps each user's order, in both deployments.

- ``sqlite-filesystem``: the embedded defaults (SQLite, kombu's filesystem broker);
- ``postgres-redis``: throwaway PostgreSQL + PostGIS and Redis.

Phones send their journeys (``tests/support/journeys.py``: trips, fixes
through a station geofence, three ``message`` rules) through the API (the
Flask test client of an app on the deployment's settings); real
``smartsvc worker`` processes run the engine and the pushes (``log``
provider: ``var/pushes.jsonl``), a real ``smartsvc beat`` the outbox relay.
Nothing here asserts a duration: every wait is for a condition, bounded.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from flask import Flask
from sqlalchemy import func, select

from smartsvc.config import Settings
from smartsvc.db import Database
from smartsvc.models import ContextEvent, OutboxMessage, Suggestion, TriggerRecord
from smartsvc.services.triggers import HANDLE_TASK
from tests.integration.conftest import MIGRATED_TEMPLATE, close_app, unique_name
from tests.support import journeys
from tests.support.factories import TestUser as ApiUser
from tests.support.factories import api_key, bearer, grant, make_app, make_settings, make_user
from tests.support.servers import REPO_ROOT, ServerUnavailable, WorkerProcess

pytestmark = pytest.mark.worker

CONFIGS = [
    pytest.param("sqlite-filesystem", id="sqlite-filesystem"),
    pytest.param("postgres-redis", id="postgres-redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
]
WAIT_S = 90
STEP_S = 4  # one fix every 4 s (40 m at 10 m/s): a leg is ~80 events and five triggers
LEG_EVENTS = journeys.LEG_S // STEP_S
# A sent-but-not-completed message is published again this long after it was sent (the replacement worker).
REDELIVER_AFTER_S = 2
_redis_db = itertools.count(4)  # each deployment its own Redis database (test_worker uses 1)


@dataclass
class Deployment:
    """An app (the API, in this process) and the settings its worker and beat processes share."""

    name: str
    base: Path
    settings: Settings
    app: Flask
    operator: dict[str, str]
    app_key: str
    rules: dict[str, str]
    processes: list[Any] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)  # the test's item.worker_logs: shown when it fails

    @property
    def database(self) -> Database:
        return self.app.extensions["smartsvc"].database

    def env(self, **extra: str) -> dict[str, str]:
        env = {"SMARTSVC_VAR_DIR": str(self.settings.var_dir), "SMARTSVC_DATABASE_URL": self.settings.database_url,
               "SMARTSVC_BROKER_URL": self.settings.broker_url, "SMARTSVC_SECRET_KEY": self.settings.secret_key,
               "SMARTSVC_LOG_JSON": "0", "SMARTSVC_OUTBOX_RELAY_INTERVAL_S": "1"}
        env.update({f"SMARTSVC_{k.upper()}": v for k, v in extra.items()})
        return env

    def worker(self, name: str, concurrency: int = 2, **settings: str) -> WorkerProcess:
        worker = WorkerProcess(self.env(**settings), self.base / f"{name}.log", concurrency=concurrency)
        self.processes.append(worker)
        self.logs.append(worker.log_path)
        try:
            worker.start()
        except ServerUnavailable as exc:
            pytest.fail(f"cannot start the Celery worker ({self.name}): {exc}", pytrace=False)
        return worker

    def beat(self, **settings: str) -> "BeatProcess":
        beat = BeatProcess(self.env(**settings), self.base / "beat.log")
        self.processes.append(beat)
        self.logs.append(beat.log_path)
        beat.start()
        return beat


class BeatProcess:
    """``python -m smartsvc beat`` in its own process group (it sends the relay task every second here)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSVC_")}
        env.update(self.env)
        with open(self.log_path, "wb") as output:
            self.process = subprocess.Popen([sys.executable, "-m", "smartsvc", "beat"], cwd=REPO_ROOT, env=env,
                                            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


@pytest.fixture(params=CONFIGS)
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    var_dir = tmp_path / "var"
    postgres = postgres_db = None
    if request.param == "sqlite-filesystem":
        database_url, broker_url = f"sqlite:///{var_dir / 'smartsvc.db'}", "filesystem://"
    else:
        postgres = request.getfixturevalue("postgres_server")
        redis = request.getfixturevalue("redis_server")
        postgres_db = unique_name("reliability")
        postgres.create_database(postgres_db, template=MIGRATED_TEMPLATE)
        database_url, broker_url = postgres.url(postgres_db), redis.url(next(_redis_db))
    settings = make_settings(var_dir, database_url=database_url, broker_url=broker_url)
    app = make_app(settings)  # migrates SQLite before any worker starts
    deployment: Deployment | None = None
    try:
        client = app.test_client()
        operator = bearer(api_key(app, "operator"))

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = client.post(path, json=body, headers=operator)
            assert response.status_code == 201, response.get_json()
            return response.get_json()

        made = journeys.set_up_operator(post, ROADS)
        deployment = Deployment(request.param, tmp_path, settings, app, operator, api_key(app, "app"), made["rules"])
        request.node.worker_logs = deployment.logs  # conftest's report hook shows them for a failing test
        yield deployment
    finally:
        if deployment is not None:
            for process in reversed(deployment.processes):
                process.stop()
        close_app(app)
        if postgres is not None and postgres_db is not None:
            postgres.drop_database(postgres_db)


# --------------------------------------------------------------------------- helpers

ROADS = 40  # roads with a station fence: user i drives road i
T0 = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(microsecond=0)


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT_S, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def phone(deployment: Deployment, client: Any, name: str) -> ApiUser:
    """A user with consents location and proactive_push and one device."""
    user = make_user(client, deployment.app_key, name)
    grant(client, user, "location", "proactive_push")
    response = client.post("/v1/me/devices", json={"platform": "fcm", "token": f"fcm-{uuid.uuid4().hex * 3}"},
                           headers=user.headers)
    assert response.status_code == 201, response.get_json()
    return user


def send(client: Any, user: ApiUser, events: list[dict[str, Any]]) -> int:
    response = client.post("/v1/me/context", json={"events": events}, headers=user.headers)
    assert response.status_code == 202, response.get_json()
    return int(response.get_json()["accepted"])


def leg(index: int, number: int) -> list[dict[str, Any]]:
    """Leg ``number`` (0: there, 1: back) of road ``index``: the trip event and its fixes."""
    return journeys.events_between(index, T0, number * journeys.LEG_S, (number + 1) * journeys.LEG_S, STEP_S)


def scalar(deployment: Deployment, query: Any) -> Any:
    with deployment.database.session() as session:
        return session.scalar(query)


def handled(deployment: Deployment) -> tuple[int, int]:
    """(triggers processed, triggers)."""
    with deployment.database.session() as session:
        done = session.scalar(select(func.count()).select_from(TriggerRecord)
                              .where(TriggerRecord.processed_at.is_not(None)))
        total = session.scalar(select(func.count()).select_from(TriggerRecord))
    return int(done or 0), int(total or 0)


def settled(deployment: Deployment) -> bool:
    """Every trigger processed, every outbox message completed, no push still pending."""
    with deployment.database.session() as session:
        open_triggers = session.scalar(select(func.count()).select_from(TriggerRecord)
                                       .where(TriggerRecord.processed_at.is_(None)))
        open_messages = session.scalar(select(func.count()).select_from(OutboxMessage)
                                       .where(OutboxMessage.completed_at.is_(None)))
        pending = session.scalar(select(func.count()).select_from(Suggestion)
                                 .where(Suggestion.delivery_status == "pending"))
    return open_triggers == 0 and open_messages == 0 and pending == 0


def push_lines(deployment: Deployment) -> list[dict[str, Any]]:
    path = deployment.settings.pushes_log_path
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def kill(worker: WorkerProcess) -> None:
    """SIGKILL the worker and its pool processes at once: no warm shutdown, nothing acknowledged or finished."""
    process = worker.process
    assert process is not None
    os.killpg(os.getpgid(process.pid), signal.SIGKILL)
    process.wait(timeout=10)
    worker.process = None


def assert_exactly_once(deployment: Deployment, users: list[ApiUser], events_sent: int,
                        killed_at: datetime | None = None) -> None:
    """Events stored once, triggers processed once, one suggestion per (trigger, rule), one push per device.

    With ``killed_at``: a push the killed worker sent but could not record may go once more after its
    claim went stale (services/delivery.py: at least once), and only that.
    """
    with deployment.database.session() as session:
        assert session.scalar(select(func.count()).select_from(ContextEvent)) == events_sent
        triggers = list(session.scalars(select(TriggerRecord)))
        suggestions = list(session.scalars(select(Suggestion)))
        messages = list(session.scalars(select(OutboxMessage)))
    assert triggers and all(t.processed_at is not None for t in triggers)
    assert all(m.completed_at is not None for m in messages)

    rule_of = deployment.rules
    expected = {f"{t.id}:{rule_of[t.event]}" for t in triggers if t.event in rule_of}
    keys = Counter(s.dedupe_key for s in suggestions)
    assert set(keys) == expected and set(keys.values()) == {1}
    assert {(s.trigger_id, s.rule_id) for s in suggestions} == {
        (t.id, uuid.UUID(rule_of[t.event])) for t in triggers if t.event in rule_of}

    lines: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for line in push_lines(deployment):
        lines[(line["suggestion_id"], line["device_id"])].append(datetime.fromisoformat(line["at"]))
    repeated = {pair: sorted(times) for pair, times in lines.items() if len(times) > 1}
    assert lines and all(killed_at is not None and len(times) == 2 and times[0] <= killed_at < times[1]
                         for times in repeated.values()), repeated
    delivered = {str(s.id) for s in suggestions if s.delivery_status == "delivered"}
    assert {suggestion for suggestion, _device in lines} == delivered
    assert {s.delivery_status for s in suggestions} <= {"delivered", "none"}
    assert {line["user_id"] for line in push_lines(deployment)} == {user.id for user in users}


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("users", [16])
def test_a_worker_killed_mid_work_loses_nothing_and_repeats_nothing(deployment, users):
    client = deployment.app.test_client()
    phones = [phone(deployment, client, f"driver-{i}") for i in range(users)]
    sent = 0
    for i, user in enumerate(phones):  # no worker yet: the work waits in the outbox and the broker
        events = leg(i, 0)
        assert send(client, user, events) == len(events)
        sent += len(events)
    _done, total = handled(deployment)
    assert total == 5 * users  # started, entered, approaching, exited, arrived

    # Engine batches of 4 (20 tasks, not 2): the triggers are handled, and committed, over many moments, so
    # that a kill lands mid-work however fast the machine (two batches of 50 once both committed between
    # two polls).
    first = deployment.worker("worker-1", engine_batch_size="4")
    # Mid-work: the engine has handled some triggers (pushes queue behind them) and not all.
    wait_until(lambda: handled(deployment)[0] >= total // 10, "the first triggers to be handled", every=0.02)
    kill(first)
    killed_at = datetime.now(timezone.utc)
    done_at_kill, _ = handled(deployment)
    with deployment.database.session() as session:
        in_flight = session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.task == HANDLE_TASK, OutboxMessage.sent_at.is_not(None),
            OutboxMessage.completed_at.is_(None)))
    assert 0 < done_at_kill < total, (done_at_kill, total)
    assert in_flight, "no engine message was sent and unfinished when the worker died"

    # The API keeps accepting while no worker runs: the way back for a quarter of the users, and a batch again.
    for i, user in enumerate(phones[: users // 4]):
        events = leg(i, 1)
        assert send(client, user, events) == len(events)
        sent += len(events)
    assert send(client, phones[0], leg(0, 0)) == 0

    deployment.beat()  # the relay every second: what the dead worker held is published again
    # A push the dead worker had claimed is taken over once its claim is stale: within the redeliveries'
    # 10 × REDELIVER_AFTER_S, not after the default 2 minutes.
    deployment.worker("worker-2", outbox_redeliver_after_s=str(REDELIVER_AFTER_S), push_stale_claim_s="3")
    wait_until(lambda: settled(deployment), "every trigger, outbox message and push to be done")

    assert_exactly_once(deployment, phones, sent, killed_at)
    # Each user's first leg made three suggestions, all pushed (the daily budget is 3); the way back's
    # have the same content ("already sent").
    pushed = {(line["user_id"], line["suggestion_id"], line["device_id"]) for line in push_lines(deployment)}
    assert Counter(user_id for user_id, _s, _d in pushed) == {user.id: 3 for user in phones}
    assert handled(deployment) == (5 * users + 5 * (users // 4),) * 2
    # Whether the dead worker held a message at the instant of the kill (then the relay published it
    # again) or only had some queued in the broker is up to timing: the outcome above is what must hold.


def interleaved(events: list[dict[str, Any]], count: int) -> list[list[dict[str, Any]]]:
    """``count`` batches taking every ``count``-th event: each spans the whole journey."""
    return [events[j::count] for j in range(count)]


def comparable_context(snapshot: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in snapshot.items() if k not in ("updated_at", "local_time", "weekday")}
    if body.get("trip"):
        body["trip"] = {k: v for k, v in body["trip"].items() if k != "id"}
    return body


def derived(deployment: Deployment, client: Any, user: ApiUser) -> dict[str, Any]:
    """What the user's batches led to: context, triggers, suggestions (ids and times of arrival left out)."""
    response = client.get("/v1/me/context", headers=user.headers)
    assert response.status_code == 200, response.get_json()
    with deployment.database.session() as session:
        triggers = list(session.scalars(select(TriggerRecord).where(TriggerRecord.user_id == uuid.UUID(user.id))))
        by_id = {t.id: t for t in triggers}
        suggestions = list(session.scalars(select(Suggestion).where(Suggestion.user_id == uuid.UUID(user.id))))
    return {
        "context": comparable_context(response.get_json()),
        "triggers": sorted((t.event, t.at, str(t.rule_id), json.dumps(t.fields, sort_keys=True)) for t in triggers),
        "suggestions": sorted((by_id[s.trigger_id].event, by_id[s.trigger_id].at, str(s.rule_id), s.title, s.body)
                              for s in suggestions),
    }


def commit_order(deployment: Deployment, user: ApiUser, batches: list[list[dict[str, Any]]]) -> list[int]:
    """The order the server applied ``user``'s batches in: each batch is one transaction, one arrival time."""
    batch_of = {(e["type"], datetime.fromisoformat(e["at"])): j for j, batch in enumerate(batches) for e in batch}
    arrived: dict[int, set[datetime]] = defaultdict(set)
    with deployment.database.session() as session:
        for kind, at, received in session.execute(select(ContextEvent.type, ContextEvent.at, ContextEvent.received_at)
                                                  .where(ContextEvent.user_id == uuid.UUID(user.id))):
            arrived[batch_of[(kind, at)]].add(received)
    assert sorted(arrived) == list(range(len(batches)))
    assert all(len(times) == 1 for times in arrived.values()), "a batch was applied in pieces"
    return sorted(arrived, key=lambda j: min(arrived[j]))


@pytest.mark.parametrize(("users", "batches_per_user"), [(4, 4)])
def test_batches_sent_in_parallel_give_what_the_same_batches_sent_one_by_one_give(deployment, users,
                                                                                   batches_per_user):
    deployment.worker("worker", concurrency=2)
    deployment.beat()
    client = deployment.app.test_client()
    parallel = [phone(deployment, client, f"parallel-{i}") for i in range(users)]
    serial = [phone(deployment, client, f"serial-{i}") for i in range(users)]
    journeys_ = [leg(i, 0) + leg(i, 1)[: LEG_EVENTS // 2] for i in range(users)]  # there, and half way back
    split = [interleaved(events, batches_per_user) for events in journeys_]

    # Every batch of every parallel user at once, one thread (and one client) each.
    jobs = [(i, j) for i in range(users) for j in range(batches_per_user)]
    start = threading.Barrier(len(jobs))
    accepted: dict[tuple[int, int], int] = {}
    failures: list[BaseException] = []

    def post(i: int, j: int) -> None:
        try:
            own = deployment.app.test_client()
            start.wait(timeout=30)
            accepted[(i, j)] = send(own, parallel[i], split[i][j])
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=post, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_S)
    assert not failures, failures
    assert all(accepted[(i, j)] == len(split[i][j]) for i, j in jobs)

    # The same batches, one at a time, in the order the server applied the parallel ones.
    orders = [commit_order(deployment, parallel[i], split[i]) for i in range(users)]
    for i, order in enumerate(orders):
        for j in order:
            assert send(client, serial[i], split[i][j]) == len(split[i][j])

    wait_until(lambda: settled(deployment), "every trigger, outbox message and push to be done")
    for i in range(users):
        got, expected = derived(deployment, client, parallel[i]), derived(deployment, client, serial[i])
        assert got == expected, f"user {i}, batches applied in the order {orders[i]}"
        assert got["triggers"] and got["context"]["location"] is not None
    assert_exactly_once(deployment, parallel + serial, 2 * sum(len(events) for events in journeys_))
