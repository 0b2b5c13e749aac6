"""Benchmark 7 — partner webhooks to a loopback receiver: signed deliveries/s, event → delivery latency, isolation.

``python -m bench --only webhooks [--smoke]`` (``bench/results/webhooks.json``).

The service's own pipeline, as deployed, on PostgreSQL (a database of the
run's throwaway PostgreSQL) with a throwaway Redis as the broker:
:func:`smartsvc.services.webhook_events.emit_events` writes one delivery and
one outbox message per subscribed endpoint in the caller's transaction; the
commit wakes the outbox relay (``smartsvc worker --queues smartsvc``, and
``smartsvc beat`` sweeping every 2 s), which publishes to the ``webhooks``
queue; a worker of its own consumes it (``smartsvc worker --queues webhooks
--concurrency 16``, the layout ``docs/webhooks.md`` recommends), each task
claiming, signing, POSTing through
:func:`smartsvc.webhooks.transport.send_webhook` and recording the attempt.
``SMARTSVC_WEBHOOK_ALLOW_PRIVATE=1`` and ``SMARTSVC_WEBHOOK_ALLOW_HTTP=1`` let
it reach 127.0.0.1; the timeout is the default 15 s.

Events are ``suggestion.created`` about users who granted
``partner_sharing`` (personal data: the consent is checked when the event is
emitted and again at the send, and each delivery writes the user's sharing
ledger), ``batch`` events per transaction, emitted by a thread of this
process at a fixed offered rate (or as fast as it can for the burst).
Subjects cycle over ``users`` users, so deliveries about one user keep their
order as in production.

The receiver (:mod:`bench.webhook_sink`, one asyncio process) records every
request with its arrival time; afterwards every recorded signature is
verified with ``standardwebhooks`` (the partner's library, unchanged) and
latency is event → delivery: the event's ``timestamp`` in the body (the
delivery's ``created_at``, written in the emitting transaction) to the
receiver's arrival time (same clock). Its own ceiling (a client of this
process on keep-alive connections) is measured too, to show it is not the
bottleneck.

Phases, each with endpoints of its own (the previous ones disabled):

1. ``burst`` — ``burst_events`` emitted as fast as the producer can, one healthy
   endpoint: the pipeline's capacity (deliveries/s from the first event to
   the last delivery);
2. ``paced`` — an offered rate (the target, or less when the backlogs showed
   the pipeline cannot take it: 70 % of their drain rate) for ``duration_s``: rate
   and p50/p99 latency with one healthy endpoint;
3. ``with-refusing`` — the same, plus an endpoint whose port refuses connections;
4. ``with-hanging`` — the same, plus an endpoint that reads the request and
   never answers (each attempt holds a worker until the 15 s timeout).

Isolation is the healthy endpoint's rate and p99 in 3 and 4 against 2.
The load average (the machine is shared) is recorded before and after.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from rich.table import Table

from bench.common import Context, ratio
from bench.webhook_pipeline import (EVENT, add_endpoint, add_users, db_state, disable_endpoints, measure, produce,
                                    quiet, sink_ceiling, stages)
from bench.webhook_procs import Service, Sink, wait_for

NAME = "webhooks"
TITLE = "Benchmark 7 — partner webhooks to a loopback receiver"
TARGET_DELIVERIES_PER_S = 2000
TARGET_P99_S = 1.0
# Isolation: the healthy endpoint beside a dead one keeps at least this share of its rate, and p99 within the target.
ISOLATION_MIN_RATE_SHARE = 0.9
# The paced phase's healthy deliveries/s must reach this share of the target for its p99 to count.
KEPT_PACE = 0.95

FULL = {"users": 6000, "batch": 100, "burst_events": 500, "duration_s": 10.0, "webhook_concurrency": 16,
        "relay_concurrency": 2, "drain_timeout_s": 60.0, "hang_drain_timeout_s": 20.0, "stage_deliveries": 400,
        "sink_ceiling_requests": 20000, "sink_ceiling_threads": 4, "warmup_events": 320, "backlog_events": 3000,
        "backlog_runs": 3}
SMOKE = {"users": 200, "batch": 10, "burst_events": 20, "duration_s": 1.0, "webhook_concurrency": 2,
         "relay_concurrency": 1, "drain_timeout_s": 20.0, "hang_drain_timeout_s": 1.0, "stage_deliveries": 10,
         "sink_ceiling_requests": 200, "sink_ceiling_threads": 2, "warmup_events": 4, "backlog_events": 20,
         "backlog_runs": 1}


# --------------------------------------------------------------------------- one phase


def phase(ctx: Context, name: str, database: Any, sink: Sink, users: list[uuid.UUID], start: int,
          cfg: dict[str, Any], *, events: int, rate: float | None, dead: str | None,
          procs: list[Any], tmp: Path, pg_cpu: Callable[[], float | None]) -> dict[str, Any]:
    """One phase: fresh endpoints, emit, wait for the healthy deliveries, measure.

    CPU is read for the service's processes and the sink (``cpu_ms_per_delivery`` sums those), and apart
    for the producer (this process) and PostgreSQL: on 2 cores they compete with the pipeline."""
    disable_endpoints(database)
    quiet(database, cfg["drain_timeout_s"])
    healthy_path = f"/ok/{name}"
    healthy_id, secret = add_endpoint(database, sink.url(healthy_path))
    dead_id = None
    if dead == "hang":
        dead_id, _ = add_endpoint(database, sink.url(f"/hang/{name}"))
    elif dead == "refuse":
        from tests.support.servers import free_port

        dead_id, _ = add_endpoint(database, f"http://127.0.0.1:{free_port()}/refused/{name}")
    cpu_before = {p.log_path.stem: p.cpu_s() for p in procs}
    around = {"producer": time.process_time(), "postgresql": pg_cpu()}
    t0 = time.perf_counter()
    produced = produce(database, users, start, events, cfg["batch"], rate)
    # Every healthy delivery arrives (or the drain gives up): the rate spans the first event to the last arrival.
    deadline = time.monotonic() + cfg["hang_drain_timeout_s" if dead == "hang" else "drain_timeout_s"]
    while time.monotonic() < deadline and sink.counts().get(healthy_path, 0) < events:
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    cpu = {k: round(p.cpu_s() - cpu_before[k], 2) for k, p in zip(cpu_before, procs)}
    pg_after = pg_cpu()
    beside = {"producer": round(time.process_time() - around["producer"], 2),
              "postgresql": round(pg_after - around["postgresql"], 2)
              if pg_after is not None and around["postgresql"] is not None else None}
    records = sink.dump(tmp / f"{name}.jsonl")
    healthy = measure(records, healthy_path, secret, verify_all=True)
    # The receiver answers before the worker's finishing commit: give the last ones a moment (bounded).
    if healthy["received"]:
        wait_for(lambda: db_state(database, healthy_id).get("delivered", 0) >= healthy["received"], 15, "")
    result: dict[str, Any] = {
        "offered_events_per_s": rate, "dead_endpoint": dead, "producer": produced, "wall_s": round(wall, 2),
        "healthy": healthy, "healthy_db": db_state(database, healthy_id), "cpu_s": cpu, "cpu_s_beside": beside,
        "cpu_ms_per_delivery": round(1000 * sum(cpu.values()) / healthy["received"], 2)
        if healthy["received"] else None,
    }
    if dead_id is not None:
        result["dead_received"] = sum(v for k, v in sink.counts().items() if k.startswith(f"/hang/{name}"))
        result["dead_db"] = db_state(database, dead_id)
    lat = healthy["latency"]
    ctx.log(f"{name}: {healthy['received']:,}/{events:,} delivered, {healthy['deliveries_per_s'] or 0:,.0f}/s, "
            f"latency p50 {lat['p50_ms']:.0f} ms p99 {lat['p99_ms']:.0f} ms; producer "
            f"{produced['events_per_s']:,.0f} events/s; signatures bad {healthy['signatures_bad']}/"
            f"{healthy['signatures_checked']}; CPU {cpu}, {beside}")
    return result


# --------------------------------------------------------------------------- the sink's ceiling


def backlogs(ctx: Context, database: Any, sink: Sink, users: list[uuid.UUID], start: int, cfg: dict[str, Any],
             hooks: Any, relay: Any, tmp: Path) -> dict[str, Any]:
    """:func:`backlog` ``backlog_runs`` times: the run of the median rate, with every run's rate.

    One drain lasts 1–2 s, and runs of the same code on the same machine swing by ±20 % (BENCHMARKS.md, 7)."""
    runs = []
    for n in range(cfg["backlog_runs"]):
        runs.append(backlog(ctx, database, sink, users, start + n * cfg["backlog_events"], cfg, hooks, relay, tmp,
                            f"/ok/backlog-{n}"))
    rates = [r["drain_deliveries_per_s"] or 0.0 for r in runs]
    median = sorted(range(len(runs)), key=lambda i: rates[i])[len(runs) // 2]
    return {**runs[median], "runs": len(runs), "drain_deliveries_per_s_runs": rates,
            "signatures_checked": sum(r["signatures_checked"] for r in runs),
            "signatures_bad": sum(r["signatures_bad"] for r in runs)}


def backlog(ctx: Context, database: Any, sink: Sink, users: list[uuid.UUID], start: int, cfg: dict[str, Any],
            hooks: Any, relay: Any, tmp: Path, path: str) -> dict[str, Any]:
    """The delivery pipeline's capacity without the producer's pace (one thread of this process emits
    ~200 events/s at most): ``backlog_events`` are emitted and relayed while the webhook worker is
    stopped, then the worker is started and drains them; rate = deliveries / (last arrival − first)."""
    from sqlalchemy import func, select

    from smartsvc.models import OutboxMessage
    from smartsvc.services.webhook_events import DELIVER_TASK

    disable_endpoints(database)
    quiet(database, cfg["drain_timeout_s"])
    webhook_id, secret = add_endpoint(database, sink.url(path))
    events = cfg["backlog_events"]
    hooks.stop()
    produced = produce(database, users, start, events, cfg["batch"], None)

    def relayed() -> bool:
        with database.session() as session:
            return not session.scalar(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.task == DELIVER_TASK, OutboxMessage.sent_at.is_(None)))

    wait_for(relayed, cfg["drain_timeout_s"], "the relay did not publish the backlog")
    relay_cpu = relay.cpu_s()
    t0 = time.perf_counter()
    hooks.launch()
    hooks.wait_ready()
    started_s = time.perf_counter() - t0
    deadline = time.monotonic() + cfg["drain_timeout_s"]
    while time.monotonic() < deadline and sink.counts().get(path, 0) < events:
        time.sleep(0.2)
    cpu = {"worker-webhooks": round(hooks.cpu_s(), 2), "worker-relay": round(relay.cpu_s() - relay_cpu, 2)}
    records = sink.dump(tmp / f"{path.rsplit('/', 1)[-1]}.jsonl")
    healthy = measure(records, path, secret, verify_all=True)
    arrived = sorted(r["at"] for r in records if r["path"] == path)
    span = arrived[-1] - arrived[0] if len(arrived) > 1 else 0.0
    drain = round((len(arrived) - 1) / span, 1) if span > 0 else None
    if healthy["received"]:
        wait_for(lambda: db_state(database, webhook_id).get("delivered", 0) >= healthy["received"], 15, "")
    result = {"events": events, "producer": produced, "worker_start_s": round(started_s, 2),
              "received": healthy["received"], "unique": healthy["unique"], "drain_span_s": round(span, 3),
              "drain_deliveries_per_s": drain, "signatures_checked": healthy["signatures_checked"],
              "signatures_bad": healthy["signatures_bad"], "db": db_state(database, webhook_id), "cpu_s": cpu,
              "cpu_ms_per_delivery": round(1000 * sum(cpu.values()) / healthy["received"], 2)
              if healthy["received"] else None}
    ctx.log(f"backlog: {healthy['received']:,}/{events:,} delivered from a queue the worker found full: "
            f"{drain or 0:,.0f} deliveries/s over {span:.1f} s (worker start {started_s:.1f} s, not counted); "
            f"CPU {cpu}")
    return result


# --------------------------------------------------------------------------- run


def run(ctx: Context) -> dict[str, Any]:
    from bench.http_servers import in_process_app, service_env
    from tests.support.servers import RedisServer, free_port

    cfg = dict(SMOKE if ctx.smoke else FULL)
    load_before = os.getloadavg()
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is missing: run `make bench-sysdeps`")
    root = ctx.tmp / "webhooks"
    root.mkdir(parents=True, exist_ok=True)
    pg = ctx.postgres()
    db_name = f"bench_webhooks_{os.getpid()}"
    pg.create_database(db_name)
    redis = RedisServer()
    redis.start()
    procs: list[Any] = []
    sink = Sink(free_port(), root / "sink.log")
    try:
        env = service_env(root / "var", database_url=pg.server.url(db_name), broker_url=redis.url(0),
                          webhook_allow_private="1", webhook_allow_http="1")
        app = in_process_app(env)
        database = app.extensions["smartsvc"].database
        t = time.perf_counter()
        users = add_users(database, cfg["users"])
        ctx.log(f"{len(users):,} users granting partner_sharing in {time.perf_counter() - t:.1f} s")
        sink.start()
        procs.append(sink)
        ceiling = sink_ceiling(sink, cfg["sink_ceiling_requests"], cfg["sink_ceiling_threads"])
        sink.dump(root / "ceiling.jsonl")
        ctx.log(f"sink ceiling {ceiling['requests_per_s']:,.0f} requests/s "
                f"({ceiling['sink_cpu_ms_per_request']} ms CPU each)")
        service_env_only = {k: v for k, v in env.items()}
        hooks = Service(["worker", "--queues", "webhooks", "--concurrency", str(cfg["webhook_concurrency"])],
                        service_env_only, root / "worker-webhooks.log", " ready.")
        relay = Service(["worker", "--queues", "smartsvc", "--concurrency", str(cfg["relay_concurrency"])],
                        service_env_only, root / "worker-relay.log", " ready.")
        beat = Service(["beat"], service_env_only, root / "beat.log", None)
        for p in (hooks, relay, beat):  # started together: each takes seconds to import
            p.launch()
            procs.append(p)
        for p in (hooks, relay, beat):
            p.wait_ready()
        # Warm-up: every pool process past its imports and first connections.
        phases: dict[str, Any] = {}
        start = 0
        warm = phase(ctx, "warmup", database, sink, users, start, cfg, events=cfg["warmup_events"],
                     rate=None, dead=None, procs=procs, tmp=root, pg_cpu=pg.cpu_s)
        start += warm["producer"]["events"]
        burst = phase(ctx, "burst", database, sink, users, start, cfg, events=cfg["burst_events"], rate=None,
                      dead=None, procs=procs, tmp=root, pg_cpu=pg.cpu_s)
        phases["burst"] = burst
        start += cfg["burst_events"]
        drained = backlogs(ctx, database, sink, users, start, cfg, hooks, relay, root)
        start += cfg["backlog_events"] * cfg["backlog_runs"]
        # The pipeline's capacity is the backlog's drain; a burst of a few hundred events is mostly its latency.
        capacity = burst["healthy"]["deliveries_per_s"] or 1.0
        pipeline = drained["drain_deliveries_per_s"] or capacity
        offered = float(TARGET_DELIVERIES_PER_S) if pipeline >= TARGET_DELIVERIES_PER_S else round(0.7 * pipeline, 1)
        events = max(cfg["batch"], int(offered * cfg["duration_s"]))
        ctx.log(f"capacity {pipeline:,.0f} deliveries/s: the next phases offer {offered:,.0f} events/s for "
                f"{events / offered:.0f} s")
        for name, dead in (("paced", None), ("with-refusing", "refuse"), ("with-hanging", "hang")):
            phases[name] = phase(ctx, name, database, sink, users, start, cfg, events=events, rate=offered,
                                 dead=dead, procs=procs, tmp=root, pg_cpu=pg.cpu_s)
            start += events
        for p in (beat, relay, hooks):
            p.stop()
        breakdown = stages(database, sink, users, start, cfg["stage_deliveries"])
        ctx.log(f"in-process: emit {breakdown['emit']['one_by_one']['cpu_ms_per_event']} ms CPU/event one by one, "
                f"{breakdown['emit']['batched']['cpu_ms_per_event']} batched; deliver_webhook "
                f"{breakdown['one_by_one']['cpu_ms_per_delivery']} ms CPU and "
                f"{breakdown['one_by_one']['statements_per_delivery']} SQL statements one by one, "
                f"{breakdown['batched']['cpu_ms_per_delivery']} ms and "
                f"{breakdown['batched']['statements_per_delivery']} batched")
        disable_endpoints(database)
        database.engine.dispose()
    finally:
        for p in reversed(procs):
            p.stop()
        redis.stop()
        pg.server.drop_database(db_name)

    paced = phases["paced"]["healthy"]
    drain_rate = drained["drain_deliveries_per_s"] or 0.0
    # The p99 counts at the target rate only: offered, and delivered (the producer and the pipeline kept up).
    kept_pace = (offered >= TARGET_DELIVERIES_PER_S
                 and (paced["deliveries_per_s"] or 0) >= KEPT_PACE * TARGET_DELIVERIES_PER_S)
    targets: dict[str, Any] = {
        "deliveries_per_s": {"target_min": TARGET_DELIVERIES_PER_S, "measured": drain_rate,
                             "met": drain_rate >= TARGET_DELIVERIES_PER_S,
                             "note": f"capacity: the median of {drained['runs']} backlogs drained by a freshly "
                                     "started webhook worker (first to last arrival; each: "
                                     f"{', '.join(f'{r:,.0f}' for r in drained['drain_deliveries_per_s_runs'])}); "
                                     f"end to end with this process's one-thread producer: {capacity:,.0f}/s"},
        "p99_event_to_delivery_s": {"target_max": TARGET_P99_S, "measured": paced["latency"]["p99_ms"] / 1000,
                                    "met": paced["latency"]["p99_ms"] / 1000 <= TARGET_P99_S and kept_pace,
                                    "note": f"offered {offered:,.0f} events/s, delivered "
                                            f"{paced['deliveries_per_s'] or 0:,.0f}/s"
                                    + ("" if kept_pace else
                                       f" (not {KEPT_PACE:.0%} of the target rate: not met whatever the p99)")},
    }
    for name in ("with-refusing", "with-hanging"):
        h = phases[name]["healthy"]
        share = ratio(h["deliveries_per_s"] or 0, paced["deliveries_per_s"] or 0)
        p99 = h["latency"]["p99_ms"] / 1000
        targets[f"isolation_{name}"] = {
            "target_min": ISOLATION_MIN_RATE_SHARE,
            "measured": share,
            "what": f"the healthy endpoint's deliveries/s beside the dead one over without; with p99 ≤ {TARGET_P99_S} s "
                    "and every healthy delivery made",
            "p99_s": p99, "delivered": h["received"], "expected": phases[name]["producer"]["events"],
            "met": bool(share is not None and share >= ISOLATION_MIN_RATE_SHARE and p99 == p99 and p99 <= TARGET_P99_S
                        and h["received"] >= phases[name]["producer"]["events"]),
        }
    signatures_bad = sum(p["healthy"]["signatures_bad"] for p in phases.values()) + drained["signatures_bad"]
    targets["signatures_bad"] = {"target_max": 0, "measured": signatures_bad,
                                 "checked": sum(p["healthy"]["signatures_checked"] for p in phases.values())
                                 + drained["signatures_checked"],
                                 "what": "recorded deliveries that standardwebhooks.Webhook(secret).verify rejects",
                                 "met": signatures_bad == 0}
    return {
        "params": {**cfg, "event": EVENT, "offered_events_per_s": offered, "webhook_timeout_s": 15,
                   "load_average_before": load_before},
        "results": {"sink_ceiling": ceiling, "phases": phases, "backlog": drained, "in_process": breakdown},
        "ratios": {
            "capacity_over_target": ratio(drain_rate, TARGET_DELIVERIES_PER_S),
            "capacity_over_sink_ceiling": ratio(drain_rate, ceiling["requests_per_s"]),
            "end_to_end_burst_over_target": ratio(capacity, TARGET_DELIVERIES_PER_S),
            "healthy_rate_with_refusing_over_without": targets["isolation_with-refusing"]["measured"],
            "healthy_rate_with_hanging_over_without": targets["isolation_with-hanging"]["measured"],
        },
        "targets": targets,
        "load_average_after": os.getloadavg(),
    }


# --------------------------------------------------------------------------- tables


def tables(result: dict[str, Any]) -> list[Table]:
    p = result["params"]
    t = Table(title=f"Webhooks: {EVENT}, batches of {p['batch']}, webhooks worker --concurrency "
                    f"{p['webhook_concurrency']}; sink ceiling "
                    f"{result['results']['sink_ceiling']['requests_per_s']:,.0f} req/s")
    for col in ("phase", "offered/s", "dead endpoint", "delivered", "deliveries/s", "p50 ms", "p99 ms",
                "CPU ms/delivery", "signatures bad", "dead attempts"):
        t.add_column(col, justify="left" if col == "phase" else "right")
    for name, ph in result["results"]["phases"].items():
        h = ph["healthy"]
        t.add_row(name, "max" if ph["offered_events_per_s"] is None else f"{ph['offered_events_per_s']:,.0f}",
                  ph["dead_endpoint"] or "-", f"{h['received']:,}/{ph['producer']['events']:,}",
                  f"{h['deliveries_per_s'] or 0:,.0f}", f"{h['latency']['p50_ms']:.0f}",
                  f"{h['latency']['p99_ms']:.0f}", str(ph["cpu_ms_per_delivery"]),
                  f"{h['signatures_bad']}/{h['signatures_checked']}",
                  str(ph.get("dead_db", {}).get("attempts", "-")))
    r = Table(title="Targets")
    r.add_column("what")
    r.add_column("measured", justify="right")
    r.add_column("met")
    for k, v in result["targets"].items():
        bound = f"≤ {v['target_max']}" if "target_max" in v else f"≥ {v['target_min']}"
        measured = v["measured"]
        shown = f"{measured:,.2f}" if isinstance(measured, float) else str(measured)
        if "p99_s" in v:
            shown += f" (p99 {v['p99_s']:.2f} s, {v['delivered']}/{v['expected']} delivered)"
        r.add_row(f"{k} ({bound})", shown, "met" if v["met"] else "NOT met")
    return [t, r]
