"""The pipeline with a real Celery worker process, in both deployments.

- ``sqlite-filesystem``: the embedded defaults (SQLite, kombu's filesystem broker);
- ``postgres-redis``: production-like (throwaway PostgreSQL + PostGIS and Redis).

The worker is ``python -m smartsvc worker --concurrency 2`` started once per
configuration; the test drives the API through the Flask test client of an
app built with the same settings, so a commit in the test wakes the relay in
the worker exactly as the API would. The worker's output is attached to the
report of a failing test.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator

import psycopg
import pytest
from flask import Flask
from sqlalchemy import select

from smartsvc.config import Settings
from smartsvc.db import Database
from smartsvc.models import OutboxMessage
from smartsvc.services.datasets import IMPORT_TASK
from smartsvc.services.telemetry import PROCESS_TASK, process_reading, record_reading
from tests.integration.conftest import MIGRATED_TEMPLATE, close_app, unique_name
from tests.support.data import PORTLAND_CURBLR
from tests.support.factories import TestUser as ApiUser
from tests.support.factories import api_key, bearer, grant, make_app, make_settings, make_user
from tests.support.servers import PostgresServer, ServerUnavailable, WorkerProcess
from workers.celery_app import RELAY_TASK

pytestmark = pytest.mark.worker

CONFIGS = [
    pytest.param("sqlite-filesystem", id="sqlite-filesystem"),
    pytest.param("postgres-redis", id="postgres-redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
]
WAIT_S = 30


@dataclass
class Pipeline:
    """An app and a worker process sharing one database and one broker."""

    name: str
    settings: Settings
    app: Flask
    client: Any
    worker: WorkerProcess
    app_key: str
    model_id: str
    postgres: PostgresServer | None = None
    postgres_db: str | None = None

    @property
    def database(self) -> Database:
        return self.app.extensions["smartsvc"].database

    @property
    def celery(self) -> Any:
        return self.app.extensions["celery"]


@pytest.fixture(scope="module", params=CONFIGS)
def pipeline(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    base = tmp_path_factory.mktemp(request.param)
    var_dir = base / "var"
    postgres: PostgresServer | None = None
    postgres_db: str | None = None
    if request.param == "sqlite-filesystem":
        database_url, broker_url = f"sqlite:///{var_dir / 'smartsvc.db'}", "filesystem://"
    else:
        postgres = request.getfixturevalue("postgres_server")
        redis = request.getfixturevalue("redis_server")
        postgres_db = unique_name("worker")
        postgres.create_database(postgres_db, template=MIGRATED_TEMPLATE)
        database_url, broker_url = postgres.url(postgres_db), redis.url(1)
    settings = make_settings(var_dir, database_url=database_url, broker_url=broker_url)
    app: Flask | None = None
    worker = WorkerProcess(
        env={
            "SMARTSVC_VAR_DIR": str(var_dir),
            "SMARTSVC_DATABASE_URL": database_url,
            "SMARTSVC_BROKER_URL": broker_url,
            "SMARTSVC_SECRET_KEY": settings.secret_key,
            "SMARTSVC_LOG_JSON": "0",
        },
        log_path=base / "worker.log",
        concurrency=2,
    )
    try:
        app = make_app(settings)  # migrates SQLite before the worker starts
        try:
            worker.start()
        except ServerUnavailable as exc:
            pytest.fail(f"cannot start the Celery worker ({request.param}): {exc}", pytrace=False)
        client = app.test_client()
        operator_key = api_key(app, "operator")
        model = client.post("/v1/catalog/models", headers=bearer(operator_key),
                            json={"kind": "car", "brand": "smart", "name": "#1", "attributes": {"powertrain": "bev"}})
        assert model.status_code == 201, model.get_json()
        yield Pipeline(request.param, settings, app, client, worker, api_key(app, "app"), model.get_json()["id"],
                       postgres, postgres_db)
    finally:
        worker.stop()
        if app is not None:
            close_app(app)
        if postgres is not None and postgres_db is not None:
            postgres.drop_database(postgres_db)


@pytest.fixture(autouse=True)
def _report_worker_output(request: pytest.FixtureRequest, pipeline: Pipeline) -> None:
    """A failing test shows what the worker logged (see conftest's report hook)."""
    request.node.worker_logs = [pipeline.worker.log_path]


# --------------------------------------------------------------------------- helpers


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``check`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def owner(pipeline: Pipeline) -> tuple[ApiUser, str]:
    """A new user with consent 'telemetry' and one product; returns (user, product id)."""
    client = pipeline.client
    user = make_user(client, pipeline.app_key, f"user-{uuid.uuid4().hex}")
    grant(client, user, "telemetry")
    product = client.post("/v1/me/products", headers=user.headers, json={"model_id": pipeline.model_id})
    assert product.status_code == 201, product.get_json()
    return user, product.get_json()["id"]


def post_reading(pipeline: Pipeline, user: ApiUser, product_id: str, **values: Any) -> str:
    response = pipeline.client.post(f"/v1/me/products/{product_id}/telemetry", headers=user.headers, json=values)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def latest(pipeline: Pipeline, user: ApiUser, product_id: str) -> dict[str, Any]:
    response = pipeline.client.get(f"/v1/me/products/{product_id}", headers=user.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["latest_telemetry"]


def readings(pipeline: Pipeline, user: ApiUser, product_id: str) -> dict[str, dict[str, Any]]:
    response = pipeline.client.get(f"/v1/me/products/{product_id}/telemetry", headers=user.headers)
    assert response.status_code == 200, response.get_json()
    return {r["id"]: r for r in response.get_json()["items"]}


def processed(pipeline: Pipeline, user: ApiUser, product_id: str, reading_id: str) -> bool:
    return readings(pipeline, user, product_id)[reading_id]["processed_at"] is not None


def outbox_rows(pipeline: Pipeline, user: ApiUser) -> list[OutboxMessage]:
    with pipeline.database.session() as session:
        return list(session.scalars(
            select(OutboxMessage).where(OutboxMessage.user_id == uuid.UUID(user.id)).order_by(OutboxMessage.id)
        ))


def outbox_row(pipeline: Pipeline, user: ApiUser, reading_id: str) -> OutboxMessage:
    matching = [m for m in outbox_rows(pipeline, user) if m.payload.get("reading_id") == reading_id]
    assert len(matching) == 1, matching
    return matching[0]


def record_without_wake_up(pipeline: Pipeline, user: ApiUser, product_id: str, **values: Any) -> str:
    """Store a reading through the use case with the relay wake-up lost (never sent)."""
    database = pipeline.database
    notifier, database.outbox_notifier = database.outbox_notifier, None
    try:
        reading = record_reading(database, uuid.UUID(user.id), uuid.UUID(product_id), values)
    finally:
        database.outbox_notifier = notifier
    return str(reading.id)


def task_result(pipeline: Pipeline, task_id: str) -> str:
    """Wait for the worker to finish task ``task_id``; its logged return value."""
    line = pipeline.worker.wait_for_output(f"[{task_id}] succeeded", timeout=WAIT_S)
    return line.rsplit(": ", 1)[1].strip()


def settle(pipeline: Pipeline) -> None:
    """Wait until every relay task the worker received has finished (and nothing new arrives)."""

    def quiet_ids() -> tuple[int, int]:
        lines = pipeline.worker.output().splitlines()
        received = sum(1 for line in lines if f"Task {RELAY_TASK}[" in line and line.endswith("] received"))
        done = sum(1 for line in lines if f"Task {RELAY_TASK}[" in line and " succeeded in " in line)
        return received, done

    stable_since = time.monotonic()
    state = quiet_ids()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = quiet_ids()
        if now != state:
            state, stable_since = now, time.monotonic()
        elif state[0] == state[1] and time.monotonic() - stable_since > 0.5:
            return
    raise AssertionError(f"relay tasks never settled: {state}")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --------------------------------------------------------------------------- tests


def test_lost_wake_up_is_relayed_by_the_relay_task(pipeline):
    user, product_id = owner(pipeline)
    settle(pipeline)
    reading_id = record_without_wake_up(pipeline, user, product_id, at=at("2026-11-24T10:00:00+01:00"),
                                        battery_pct=55.0)
    time.sleep(0.5)
    message = outbox_row(pipeline, user, reading_id)
    assert message.sent_at is None, "something relayed the message without a wake-up"
    assert latest(pipeline, user, product_id) == {}

    pipeline.celery.send_task(RELAY_TASK)
    wait_until(lambda: latest(pipeline, user, product_id).get("battery_pct"), "the reading to be folded in")
    assert latest(pipeline, user, product_id)["battery_pct"]["value"] == 55.0
    message = wait_until(lambda: (m := outbox_row(pipeline, user, reading_id)).completed_at and m,
                         "the outbox row to be completed")
    assert message.sent_at is not None and message.attempts == 1
    assert task_result(pipeline, f"outbox-{message.id}-1") == "True"


def test_telemetry_is_folded_in_by_the_worker(pipeline):
    user, product_id = owner(pipeline)
    reading_id = post_reading(pipeline, user, product_id, at="2026-11-24T10:00:00+01:00", battery_pct=40,
                              odometer_km=1234.5)

    folded = wait_until(lambda: latest(pipeline, user, product_id).get("battery_pct"),
                        "latest_telemetry.battery_pct")
    assert folded["value"] == 40
    assert at(folded["at"]) == at("2026-11-24T10:00:00+01:00")
    assert latest(pipeline, user, product_id)["odometer_km"]["value"] == 1234.5
    message = outbox_row(pipeline, user, reading_id)
    assert message.task == PROCESS_TASK
    assert message.sent_at is not None and message.completed_at is not None and message.attempts == 1
    assert processed(pipeline, user, product_id, reading_id)


def test_processing_a_reading_twice_leaves_one_state(pipeline):
    user, product_id = owner(pipeline)
    reading_id = post_reading(pipeline, user, product_id, at="2026-11-24T10:00:00+00:00", battery_pct=40,
                              odometer_km=1000)
    wait_until(lambda: processed(pipeline, user, product_id, reading_id), "the reading to be processed")
    message = wait_until(lambda: (m := outbox_row(pipeline, user, reading_id)).completed_at and m,
                         "the outbox row to be completed")
    before = (latest(pipeline, user, product_id), readings(pipeline, user, product_id))

    # The broker delivers the same message again, and once more without its outbox id.
    again = [f"again-{uuid.uuid4().hex}", f"again-{uuid.uuid4().hex}"]
    pipeline.celery.send_task(PROCESS_TASK, kwargs={"reading_id": reading_id, "outbox_id": message.id},
                              task_id=again[0])
    pipeline.celery.send_task(PROCESS_TASK, kwargs={"reading_id": reading_id}, task_id=again[1])
    assert [task_result(pipeline, task_id) for task_id in again] == ["False", "False"]
    assert process_reading(pipeline.database, uuid.UUID(reading_id), message.id) is False

    assert (latest(pipeline, user, product_id), readings(pipeline, user, product_id)) == before
    # (The reading also wrote a telemetry.updated trigger, whose engine message is the user's other row.)
    assert [(m.completed_at, m.attempts) for m in outbox_rows(pipeline, user)
            if m.task == PROCESS_TASK] == [(message.completed_at, 1)]


def test_concurrent_duplicates_apply_once(pipeline):
    user, product_id = owner(pipeline)
    reading_id = record_without_wake_up(pipeline, user, product_id, at=at("2026-11-24T11:00:00+00:00"),
                                        fuel_pct=70.0)
    task_ids = [f"dup-{uuid.uuid4().hex}" for _ in range(2)]
    for task_id in task_ids:  # two worker processes take one each at the same time
        pipeline.celery.send_task(PROCESS_TASK, kwargs={"reading_id": reading_id}, task_id=task_id)
    assert sorted(task_result(pipeline, task_id) for task_id in task_ids) == ["False", "True"]
    assert latest(pipeline, user, product_id)["fuel_pct"]["value"] == 70.0

    # The relay delivers the (lost wake-up) message later: already done, nothing changes.
    state = latest(pipeline, user, product_id)
    pipeline.celery.send_task(RELAY_TASK)
    message = wait_until(lambda: (m := outbox_row(pipeline, user, reading_id)).completed_at and m,
                         "the outbox row to be completed")
    assert task_result(pipeline, f"outbox-{message.id}-1") == "False"
    assert latest(pipeline, user, product_id) == state


def test_an_older_reading_arriving_later_does_not_overwrite_newer_values(pipeline):
    user, product_id = owner(pipeline)
    newer = post_reading(pipeline, user, product_id, at="2026-11-24T12:00:00+00:00", battery_pct=80,
                         odometer_km=2000)
    wait_until(lambda: processed(pipeline, user, product_id, newer), "the newer reading to be processed")
    older = post_reading(pipeline, user, product_id, at="2026-11-24T09:00:00+00:00", battery_pct=30,
                         odometer_km=1500, fuel_pct=50)
    wait_until(lambda: processed(pipeline, user, product_id, older), "the older reading to be processed")

    values = latest(pipeline, user, product_id)
    assert (values["battery_pct"]["value"], at(values["battery_pct"]["at"])) == (80, at("2026-11-24T12:00:00+00:00"))
    assert values["odometer_km"]["value"] == 2000
    # A measurement only the older reading has is still the newest known one.
    assert (values["fuel_pct"]["value"], at(values["fuel_pct"]["at"])) == (50, at("2026-11-24T09:00:00+00:00"))

    newest = post_reading(pipeline, user, product_id, at="2026-11-24T13:00:00+00:00", battery_pct=20)
    wait_until(lambda: processed(pipeline, user, product_id, newest), "the newest reading to be processed")
    values = latest(pipeline, user, product_id)
    assert (values["battery_pct"]["value"], values["odometer_km"]["value"], values["fuel_pct"]["value"]) == (20, 2000, 50)


@contextmanager
def product_locked(pipeline: Pipeline, product_id: str) -> Iterator[Callable[[int], None]]:
    """Hold a write lock on the product (PostgreSQL row lock, SQLite database lock).

    Yields a function that waits until ``n`` other transactions are blocked behind it.
    """
    if pipeline.postgres is None:
        path = pipeline.settings.database_url.split("///", 1)[1]
        connection = sqlite3.connect(path, isolation_level=None, timeout=30)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield lambda n: time.sleep(0.5)  # SQLite shows no waiters; they retry on busy
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    server = pipeline.postgres
    with psycopg.connect(server.dsn(pipeline.postgres_db or "")) as holder, \
            psycopg.connect(server.dsn(pipeline.postgres_db or ""), autocommit=True) as observer:
        holder.execute("SELECT id FROM owned_products WHERE id = %s FOR UPDATE", (uuid.UUID(product_id),))

        def wait_for_waiters(n: int) -> None:
            query = ("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                     "AND pid <> pg_backend_pid()")
            wait_until(lambda: observer.execute(query, (pipeline.postgres_db,)).fetchone()[0] >= n,
                       f"{n} transactions waiting for the product lock", timeout=15)

        try:
            yield wait_for_waiters
        finally:
            holder.rollback()


def test_concurrent_readings_of_one_product_lose_nothing(pipeline):
    user, product_id = owner(pipeline)
    first = record_without_wake_up(pipeline, user, product_id, at=at("2026-11-24T10:00:00+00:00"), battery_pct=10.0)
    second = record_without_wake_up(pipeline, user, product_id, at=at("2026-11-24T10:05:00+00:00"), odometer_km=500.0)
    task_ids = [f"both-{uuid.uuid4().hex}" for _ in range(2)]
    with product_locked(pipeline, product_id) as wait_for_waiters:
        for task_id, reading_id in zip(task_ids, (first, second)):
            pipeline.celery.send_task(PROCESS_TASK, kwargs={"reading_id": reading_id}, task_id=task_id)
        wait_for_waiters(2)  # both worker processes are inside process_reading at once
    assert [task_result(pipeline, task_id) for task_id in task_ids] == ["True", "True"]
    values = latest(pipeline, user, product_id)
    assert (values["battery_pct"]["value"], values["odometer_km"]["value"]) == (10.0, 500.0)

    pipeline.celery.send_task(RELAY_TASK)  # deliver the (lost wake-up) messages: nothing changes
    wait_until(lambda: all(m.completed_at for m in outbox_rows(pipeline, user)), "the outbox rows to be completed")
    assert latest(pipeline, user, product_id) == values


def test_an_uploaded_dataset_is_imported_by_the_worker_through_the_outbox(pipeline):
    operator = bearer(api_key(pipeline.app, "operator"))
    portland = PORTLAND_CURBLR
    with open(portland, "rb") as fp:
        response = pipeline.client.post("/v1/datasets", headers=operator, content_type="multipart/form-data",
                                        data={"file": (fp, portland.name), "name": "Portland", "layer": "parking"})
    assert response.status_code == 202, response.get_json()
    dataset_id = response.get_json()["id"]

    def dataset() -> dict[str, Any]:
        found = pipeline.client.get(f"/v1/datasets/{dataset_id}", headers=operator)
        assert found.status_code == 200, found.get_json()
        return found.get_json()

    done = wait_until(lambda: (d := dataset())["status"] in ("ready", "failed") and d, "the import to finish",
                      timeout=120)
    assert done["status"] == "ready", done["failure"]
    assert (done["format"], done["time_zone"]) == ("curblr", "America/Los_Angeles")
    assert done["counts"] == {"accepted": 416, "rejected": 0, "repaired": 0, "spots": 416}
    assert done["progress"]["done"] == done["progress"]["total"] == portland.stat().st_size
    with pipeline.database.session() as session:
        message = session.scalar(select(OutboxMessage).where(
            OutboxMessage.task == IMPORT_TASK, OutboxMessage.payload["dataset_id"].as_string() == dataset_id))
    assert message is not None and message.completed_at is not None and message.attempts == 1
    assert task_result(pipeline, f"outbox-{message.id}-1") == "'ready'"
    assert not (pipeline.settings.upload_folder / f"{dataset_id}.upload").exists()

    published = pipeline.client.post(f"/v1/datasets/{dataset_id}/publish", headers=operator)
    assert published.status_code == 200 and published.get_json()["status"] == "published"
