"""Benchmark 4 — context ingest end to end: phones' location batches in, triggers handled, pushes out.

Two deployments, each started fresh in this run:

- ``postgres-redis``: a database of the run's throwaway PostgreSQL+PostGIS
  (:meth:`bench.common.Context.postgres`) and a throwaway Redis
  (:class:`tests.support.servers.RedisServer`) as the broker;
- ``embedded``: the defaults (SQLite under a temporary ``SMARTSVC_VAR_DIR``,
  kombu's filesystem broker).

Processes, as deployed: ``smartsvc api --workers <cores>`` (gunicorn gthread,
started like benchmark 2's, :class:`bench.http_servers.Server`), ``smartsvc
worker --concurrency <cores>`` and ``smartsvc beat`` (the outbox relay every
2 s besides the wake-ups after each commit).

Data (``tests/support/journeys.py``): ``users`` users (consents ``location``
and ``proactive_push``, one device each, made through the use cases) drive
3 km roads back and forth at 10 m/s, one fix every ``step_s`` (2) seconds, each
road's users starting at their own point of a leg; a station geofence on each
road; three rules (``trip.approaching`` within 1,500 m, entering a station,
arriving), each a ``message`` recipe. A leg (200 events: two batches) makes
five triggers (2.5 % of the events) and up to three suggestions; the daily push
budget (3) suppresses the later ones, as in production.

Load: a closed loop of ``connections`` keep-alive HTTP connections (threads
of this process, bodies built before the clock starts); user ``u`` is served
by connection ``u % connections`` only, so each user's batches go one after
the other in time order, as a phone sends them. Each ``POST /v1/me/context``
carries 100 events. The client's own CPU time is measured to show it is not
the bottleneck.

Reported: accepted events/s over the load, request latency, and after the
load the processing lag per trigger — from the trigger's ``created_at`` (in
the batch's transaction: the event's arrival) to the end of everything it
caused: ``processed_at`` (the engine's commit) and, when it made a
suggestion that was pushed, the push's outbox message ``completed_at`` — and
the losses: events sent vs ``context_events`` stored, triggers not processed,
outbox messages not completed after the drain.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from bench.http_servers import Server, api_argv, in_process_app, service_env
from bench.common import REPO_ROOT, Context, python, ratio, summarize
from bench.context_lag import drain, lags, row_counts
from bench.context_load import Load

NAME = "context"
TITLE = "Benchmark 4 — context ingest end to end (API + workers)"

FULL = {"users": 1000, "roads": 200, "batch": 100, "step_s": 2, "connections": 8, "drain_timeout_s": 90, "warmup_s": 5,
        "duration_s": {"postgres-redis": 60, "embedded": 60}, "profile_batches": 40}
SMOKE = {"users": 12, "roads": 6, "batch": 100, "step_s": 2, "connections": 4, "drain_timeout_s": 60, "warmup_s": 0.5,
         "duration_s": {"postgres-redis": 1, "embedded": 1}, "profile_batches": 4}
TARGET_EVENTS_PER_S = {"postgres-redis": 5000, "embedded": 1000}
TARGET_LAG_P99_S = 2.0


# --------------------------------------------------------------------------- set-up


def _t0(seconds: int) -> datetime:
    """A journey start such that ``seconds`` of events (and a leg's phase) all lie in the past."""
    from tests.support.journeys import LEG_S

    return (datetime.now(timezone.utc) - timedelta(seconds=seconds + LEG_S + 120)).replace(microsecond=0)


def add_users(container: Any, count: int) -> list[tuple[uuid.UUID, str]]:
    """``count`` users with consents location and proactive_push and one device, in one transaction.

    The rows ``create_user``, ``set_consent`` and ``register_device`` write (4,000 transactions for 1,000
    users took 30 s of the run's budget on PostgreSQL here); (user id, access token) each.
    """
    from smartsvc.models import Consent, ConsentEvent, Device, User
    from smartsvc.services.devices import _identity
    from smartsvc.timeutil import utcnow

    now = utcnow()
    with container.database.unit_of_work() as uow:
        session = uow.session
        users = [User(external_id=f"bench-phone-{uuid.uuid4().hex}", time_zone="Europe/Berlin") for _ in range(count)]
        session.add_all(users)
        session.flush()
        for user in users:
            for purpose in ("location", "proactive_push"):
                session.add(Consent(user_id=user.id, purpose=purpose, granted=True, changed_at=now))
                session.add(ConsentEvent(user_id=user.id, purpose=purpose, granted=True, at=now))
            token = f"bench-{uuid.uuid4().hex}"
            session.add(Device(user_id=user.id, platform="fcm", token=token, subscription=None,
                               token_hash=_identity("fcm", token, None)))
        uow.commit()
    return [(user.id, container.tokens.issue(user.id, user.token_generation)) for user in users]


def set_up(app: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Fences and rules through the API; the users (see :func:`add_users`)."""
    from smartsvc.services.keys import create_key
    from tests.support import journeys

    container = app.extensions["smartsvc"]
    operator = create_key(container.database, "operator", "bench operator").plaintext
    client = app.test_client()

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = client.post(path, json=body, headers={"Authorization": f"Bearer {operator}"})
        if response.status_code != 201:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.get_data(as_text=True)[:500]}")
        return response.get_json()

    t = time.perf_counter()
    made = journeys.set_up_operator(post, cfg["roads"])
    users = [{"id": str(user_id), "token": token, "road": u % cfg["roads"]}
             for u, (user_id, token) in enumerate(add_users(container, cfg["users"]))]
    return {"users": users, "rules": made["rules"], "fences": len(made["fences"]),
            "set_up_s": round(time.perf_counter() - t, 1)}


def bodies(cfg: dict[str, Any], t0: datetime, batches: int) -> list[list[bytes]]:
    """The request bodies, per road and batch: users on one road send the same events (their own rows).

    Each road's journey starts at its own point of a leg (the fleet is not all starting a trip at once).
    """
    from tests.support import journeys

    step, span = cfg["step_s"], cfg["batch"] * cfg["step_s"]
    out = []
    for road in range(cfg["roads"]):
        phase = (road * 97 * step) % journeys.LEG_S
        out.append([json.dumps({"events": journeys.events_between(
            road, t0, phase + k * span, phase + (k + 1) * span, step)}).encode() for k in range(batches)])
    return out




# --------------------------------------------------------------------------- in-process profile


def profile(app: Any, users: list[dict[str, Any]], all_bodies: list[list[bytes]], count: int) -> dict[str, Any]:
    """CPU per 100-event batch in this process (thread time): whole request, schema load, the use case."""
    from smartsvc.http.context import ContextBatchSchema
    from smartsvc.services.context_ingest import ingest_context

    container = app.extensions["smartsvc"]
    client = app.test_client()
    # Fresh users' first batches: the same work as under load (users of the load are past them).
    fresh = add_users(container, count)
    whole, schema, use_case = [], [], []
    clock = time.thread_time
    for n, (user_id, token) in enumerate(fresh):
        road = users[n % len(users)]["road"]
        body = all_bodies[road][0]
        t = clock()
        response = client.post("/v1/me/context", data=body, content_type="application/json",
                               headers={"Authorization": f"Bearer {token}"})
        whole.append(clock() - t)
        if response.status_code != 202:
            raise RuntimeError(f"profile batch answered {response.status_code}")
        raw = json.loads(all_bodies[road][1])
        with app.test_request_context():
            t = clock()
            loaded = ContextBatchSchema().load(raw)
            schema.append(clock() - t)
        t = clock()
        ingest_context(container, user_id, loaded["events"])
        use_case.append(clock() - t)
    return {"batches": count, "whole_request_cpu": summarize(whole), "schema_load_cpu": summarize(schema),
            "ingest_context_cpu": summarize(use_case)}


# --------------------------------------------------------------------------- one deployment


class Beat:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([python(), "-m", "smartsvc", "beat"], env=self.env, cwd=REPO_ROOT,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def stop(self, graceful: bool = True) -> None:
        """SIGTERM and wait (SIGKILL after 20 s); ``graceful=False``: SIGKILL at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _stop_all(servers: list[Any], graceful: bool = True) -> None:
    """Stop the API, the workers and beat at once: each waits for its own graceful shutdown.

    ``graceful=False`` (the smoke run, after the drain: nothing is left to do) kills them instead:
    their shutdown, a second or more of CPU for each of the seven processes, is not what it measures.
    """
    from tests.support.servers import WorkerProcess

    def stop(server: Any) -> None:
        if graceful:
            server.stop()
        elif isinstance(server, WorkerProcess):
            server.stop(grace=0)  # SIGTERM, then at once SIGKILL to its process group
        else:
            server.stop(graceful=False)

    with ThreadPoolExecutor(max(1, len(servers))) as pool:
        list(pool.map(stop, servers))


def deployment(ctx: Context, cfg: dict[str, Any], name: str, root: Path) -> dict[str, Any]:
    from tests.support.servers import RedisServer, WorkerProcess, free_port

    cores = os.cpu_count() or 1
    var = root / name
    redis: RedisServer | None = None
    pg_db: str | None = None
    settings: dict[str, str] = {}
    if name == "postgres-redis":
        pg = ctx.postgres()
        pg_db = f"bench_context_{os.getpid()}"
        pg.create_database(pg_db)
        redis = RedisServer()
        redis.start()
        settings = {"database_url": pg.server.url(pg_db), "broker_url": redis.url(0)}
    env = service_env(var, **settings)  # default INFO logs, as deployed
    duration = float(cfg["duration_s"][name])
    servers: list[Any] = []
    try:
        app = in_process_app(env)  # migrates
        made = set_up(app, cfg)
        database = app.extensions["smartsvc"].database
        ctx.log(f"{name}: {cfg['users']} users, {made['fences']} fences, 3 rules in {made['set_up_s']} s")
        # Enough batches that no user runs out at 2× the target rate.
        per_user = int(np.ceil(2 * TARGET_EVENTS_PER_S["postgres-redis"] * (duration + cfg["warmup_s"])
                                / cfg["users"] / cfg["batch"])) + 2
        per_user = min(per_user, 30)
        t0 = _t0(cfg["batch"] * cfg["step_s"] * per_user)
        built = bodies(cfg, t0, per_user)

        port = free_port()
        api = Server(f"api ({name})", api_argv(port, cores), env, root / f"api-{name}.log", port)
        servers.append(api)
        api.launch()
        worker = WorkerProcess({k: v for k, v in env.items() if k.startswith("SMARTSVC_")},
                               root / f"worker-{name}.log", concurrency=cores)
        servers.append(worker)
        worker.start(timeout=120)
        beat = Beat(env, root / f"beat-{name}.log")
        servers.append(beat)
        beat.start()
        api.wait_ready("/v1/health")

        client = Load(port, made["users"], built, cfg["connections"])
        warm = client.run(cfg["warmup_s"])  # every API process past its first requests (imports, caches)
        ctx.log(f"{name}: warm-up {warm['events_accepted']:,} events in {warm['wall_s']} s")
        timed_from = datetime.now(timezone.utc)
        load = client.run(duration)
        ctx.log(f"{name}: {load['events_accepted']:,} events accepted in {load['wall_s']} s = "
                f"{load['events_per_s']:,.0f}/s; request p50 {load['latency']['p50_ms']:.0f} ms, "
                f"p99 {load['latency']['p99_ms']:.0f} ms; errors {load['errors']}; client CPU "
                f"{load['client_cpu_share_of_one_core']:.1%} of a core")
        at_end = row_counts(database)
        counts, drain_s = drain(database, cfg["drain_timeout_s"])
        lag = lags(database, timed_from)
        ctx.log(f"{name}: backlog at the end of the load {at_end['triggers_unprocessed']} triggers, "
                f"{at_end['outbox_uncompleted']} outbox messages; drained in {drain_s} s; lag p99 "
                f"{lag['end_to_end_lag_s']['p99_s']:.2f} s (engine {lag['engine_lag_s']['p99_s']:.2f} s)")
        _stop_all(servers, graceful=not ctx.smoke)
        servers.clear()
        profiled = profile(app, made["users"], built, cfg["profile_batches"])
        database.engine.dispose()
    finally:
        for server in reversed(servers):
            server.stop()
        if redis is not None:
            redis.stop()
        if pg_db is not None:
            ctx.postgres().server.drop_database(pg_db)
    lost = {  # the warm-up's events count too: they are stored with the others
        "events_sent_minus_stored": client.total_sent - counts["context_events"],
        "events_sent_minus_accepted": client.total_sent - client.total_accepted,
        "triggers_unprocessed": counts["triggers_unprocessed"],
        "outbox_uncompleted": counts["outbox_uncompleted"],
        "suggestions_pending_push": counts["suggestions_pending_push"],
    }
    return {"duration_s": duration, "warm_up": warm, "events_sent_in_all": client.total_sent,
            "load": load, "backlog_at_end_of_load": at_end, "drain_s": drain_s,
            "counts": counts, "lag": lag, "lost": lost, "in_process": profiled,
            "set_up_s": made["set_up_s"], "fences": made["fences"]}


def run(ctx: Context) -> dict[str, Any]:
    cfg = dict(SMOKE if ctx.smoke else FULL)
    load_before = os.getloadavg()
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is missing: run `make bench-sysdeps`")
    root = ctx.tmp / "context"
    root.mkdir(parents=True, exist_ok=True)
    results = {name: deployment(ctx, cfg, name, root) for name in ("postgres-redis", "embedded")}
    targets: dict[str, Any] = {}
    for name, res in results.items():
        rate, p99 = res["load"]["events_per_s"], res["lag"]["end_to_end_lag_s"]["p99_s"]
        lost = sum(res["lost"].values())
        targets[f"{name}_events_per_s"] = {"target_min": TARGET_EVENTS_PER_S[name], "measured": rate,
                                            "met": rate >= TARGET_EVENTS_PER_S[name]}
        targets[f"{name}_lag_p99_s"] = {"target_max": TARGET_LAG_P99_S, "measured": p99,
                                        "met": bool(p99 == p99 and p99 <= TARGET_LAG_P99_S)}
        targets[f"{name}_lost"] = {"target_max": 0, "measured": lost, "met": lost == 0}
    return {
        "params": {**cfg, "workers": os.cpu_count(), "load_average_before": load_before},
        "results": results,
        "ratios": {"embedded_over_postgres_events_per_s": ratio(results["embedded"]["load"]["events_per_s"],
                                                                results["postgres-redis"]["load"]["events_per_s"])},
        "targets": targets,
        "load_average_after": os.getloadavg(),
    }


# --------------------------------------------------------------------------- tables


def tables(result: dict[str, Any]) -> list[Table]:
    t = Table(title=f"POST /v1/me/context, {result['params']['users']} users, batches of "
                    f"{result['params']['batch']}, {result['params']['connections']} connections")
    for col in ("deployment", "s", "events/s", "req p50 ms", "req p99 ms", "errors", "client CPU",
                "backlog (triggers)", "drain s", "engine lag p99 s", "lag p50 s", "lag p99 s", "lost"):
        t.add_column(col, justify="left" if col == "deployment" else "right")
    for name, res in result["results"].items():
        load, lag = res["load"], res["lag"]
        t.add_row(name, f"{load['wall_s']:.0f}", f"{load['events_per_s']:,.0f}", f"{load['latency']['p50_ms']:.0f}",
                  f"{load['latency']['p99_ms']:.0f}", str(sum(load["errors"].values())),
                  f"{load['client_cpu_share_of_one_core']:.1%}", str(res["backlog_at_end_of_load"]["triggers_unprocessed"]),
                  f"{res['drain_s']:.1f}", f"{lag['engine_lag_s']['p99_s']:.2f}",
                  f"{lag['end_to_end_lag_s']['p50_s']:.2f}", f"{lag['end_to_end_lag_s']['p99_s']:.2f}",
                  str(sum(res["lost"].values())))
    p = Table(title="One 100-event batch in-process, CPU ms (p50 / p99)")
    for col in ("deployment", "whole request", "schema load", "ingest_context"):
        p.add_column(col)
    for name, res in result["results"].items():
        ip = res["in_process"]
        p.add_row(name, *(f"{ip[k]['p50_ms']:.1f} / {ip[k]['p99_ms']:.1f}"
                          for k in ("whole_request_cpu", "schema_load_cpu", "ingest_context_cpu")))
    r = Table(title="Targets")
    r.add_column("what")
    r.add_column("measured", justify="right")
    for k, v in result["targets"].items():
        bound = f"≤ {v['target_max']}" if "target_max" in v else f"≥ {v['target_min']}"
        measured = v["measured"]
        r.add_row(f"{k} ({bound})", f"{measured:,.2f} {'met' if v['met'] else 'NOT met'}"
                  if isinstance(measured, float) else f"{measured} {'met' if v['met'] else 'NOT met'}")
    return [t, p, r]
