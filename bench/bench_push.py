"""Benchmark 6 — push fan-out: notifications per second to a loopback FCM-compatible server.

``python -m bench --only push [--smoke]`` (``bench/results/push.json``).

**What "fan-out" is here.** smartsvc pushes suggestions, one user at a time;
there is no broadcast. The burst a deployment must absorb is *many users'
suggestions due at once* (a match ends, a rule fires for a whole district):
the outbox then holds one ``smartsvc.delivery.push`` message per suggestion
and the delivery workers drain it, each message pushing the suggestion to
each active FCM device of its user. So the benchmark stores N users (consent
given, ``devices_per_user`` FCM devices each) with one suggestion each, due
now, and one outbox message per suggestion, and runs exactly what the Celery
task runs. The relay groups due push messages (``batch_size``, as
``SMARTSVC_PUSH_BATCH_SIZE``) into one ``smartsvc.delivery.push_batch`` task,
which runs :func:`smartsvc.services.delivery_batch.deliver_suggestions` (one
claim transaction, ``FcmProvider.send_many``, one finish-and-settle
transaction, a ``push_attempts`` row per notification); the old path, one
task per suggestion (:func:`smartsvc.services.delivery.deliver_suggestion`),
is measured beside it on a smaller burst. Both run in worker processes
forked like Celery's prefork pool (``processes`` × ``threads``), on
PostgreSQL, and (batched) on SQLite for the embedded deployment. The
FCM provider is the real one, configured through settings only:
``SMARTSVC_FCM_URL`` is the loopback server,
``SMARTSVC_FCM_CREDENTIALS`` a service-account file written here whose
``token_uri`` is that server, ``SMARTSVC_FCM_PROJECT_ID`` its project.

Measured in the same run, on the same machine:

- **server ceiling** — wrk (1 thread) posting a real ``messages:send`` body
  with the bearer to the lean server (:mod:`bench.push_server`), and the same
  against the test suite's fake (:mod:`tests.support.fake_fcm`, which
  validates every message against the discovery document): is the target the
  bottleneck?
- **provider alone** — ``FcmProvider.send`` in the worker layout, and
  ``send_many`` with batches, no database;
- **end to end** — notifications/s with every attempt row written, checked
  afterwards (attempts ``sent``, suggestions ``delivered``, outbox messages
  completed, the server's count of accepted messages);
- **where the time goes** — one worker, one thread, batches as the task runs
  them: the three stages of a batch timed separately, the SQL statements per
  delivery, and a profile by package (HTTP client, ORM, database driver,
  JSON, smartsvc).

CPU seconds per notification (workers, server) are recorded beside the
rates, with the load average at start and end: the machine is shared.

Where the parts are: the loopback servers, their credentials and wrk in :mod:`bench.push_servers`;
the workers in :mod:`bench.push_fanout`; the burst's rows and checks in :mod:`bench.push_burst`; where
the time goes and the client's stages in :mod:`bench.push_profile`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.common import Context, cpu_ticks, ratio, tool_path
from bench.push_burst import check_burst, store_burst
from bench.push_fanout import batch_setup, delivery_setup, fan_out, message, provider_many_setup, provider_setup
from bench.push_profile import client_stages, where_time_goes
from bench.push_servers import PROJECT, LoopbackServer, fake_server, lean_server, wrk_ceiling

NAME = "push"
TITLE = "Benchmark 6 — push fan-out to a loopback FCM-compatible server"
TARGET_NOTIFICATIONS_PER_S = 5_000

FULL = {"users": 1_000, "devices_per_user": 1, "layouts": [[2, 1], [2, 4]], "wide_devices_per_user": 4,
        "batch_users": 10_000, "batch_size": 200, "batch_layouts": [[2, 1], [2, 2]],
        "provider_messages": 5_000, "fake_fcm_messages": 300, "profile_suggestions": 2_000, "client_requests": 2_000,
        "sqlite_users": 3_000,
        "wrk_duration_s": 5.0, "wrk_connections": 32, "fake_wrk": True}
SMOKE = {"users": 24, "devices_per_user": 1, "layouts": [[2, 2]], "wide_devices_per_user": 2,
         "batch_users": 96, "batch_size": 8, "batch_layouts": [[2, 1]],
         "provider_messages": 100, "fake_fcm_messages": 16, "profile_suggestions": 32, "client_requests": 100,
         "sqlite_users": 24,
         "wrk_duration_s": 1.0, "wrk_connections": 8, "fake_wrk": False}


# --------------------------------------------------------------------------- machine load


def _load() -> dict[str, float]:
    return {"load_average_1m": os.getloadavg()[0], "load_average_5m": os.getloadavg()[1]}


# --------------------------------------------------------------------------- the run


def _settings_env(var_dir: Path, database_url: str, fcm_url: str, credentials: Path) -> dict[str, str]:
    return {"SMARTSVC_VAR_DIR": str(var_dir), "SMARTSVC_DATABASE_URL": database_url,
            "SMARTSVC_SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789", "SMARTSVC_LOG_LEVEL": "WARNING",
            "SMARTSVC_LOG_JSON": "0", "SMARTSVC_FCM_URL": fcm_url, "SMARTSVC_FCM_CREDENTIALS": str(credentials),
            "SMARTSVC_FCM_PROJECT_ID": PROJECT}


def _stats(url: str) -> dict[str, int]:
    import httpx

    return httpx.get(f"{url}/stats", timeout=10).json()


def _provider_runs(server: LoopbackServer, env: dict[str, str], count: int, layouts: list[list[int]],
                   tag: str) -> list[dict[str, Any]]:
    runs = []
    for processes, threads in layouts:
        messages = [message(i, f"{tag}-{processes}x{threads}-{i}") for i in range(count)]
        cpu0, busy0 = server.cpu_s(), cpu_ticks()
        run = fan_out(provider_setup(env), messages, processes, threads)
        run["server_cpu_us_per_notification"] = (server.cpu_s() - cpu0) / count * 1e6
        run["worker_cpu_us_per_notification"] = run["worker_cpu_s"] / count * 1e6
        run["machine_busy"] = (cpu_ticks() - busy0) / (run["wall_s"] * (os.cpu_count() or 1))
        run["load_average_1m_after"] = os.getloadavg()[0]
        runs.append(run)
    return runs


def _end_to_end(ctx: Context, server: LoopbackServer, database: Any, env: dict[str, str], users: int,
                devices_per_user: int, processes: int, threads: int, tag: str,
                batch_size: int | None = None, pg: Any = None) -> dict[str, Any]:
    """One burst delivered by forked workers: per suggestion (``deliver_suggestion``, the old task), or in
    batches of ``batch_size`` (``deliver_suggestions``, what the ``push_batch`` task runs). With ``pg``
    (the PostgreSQL server), its CPU per notification too."""
    t = time.perf_counter()
    burst = store_burst(database, users, devices_per_user, tag)
    set_up_s = time.perf_counter() - t
    database.engine.dispose()  # the workers fork: none inherits an open connection
    if batch_size:
        items: list[Any] = [burst[lo:lo + batch_size] for lo in range(0, len(burst), batch_size)]
        setup, warm_ups = batch_setup(env, threads), 17
    else:
        items, setup, warm_ups = burst, delivery_setup(env, threads), 1
    accepted0, cpu0, busy0 = _stats(server.url)["accepted"], server.cpu_s(), cpu_ticks()
    db_cpu0 = pg.cpu_s() if pg is not None else None
    run = fan_out(setup, items, processes, threads)
    server_cpu, busy = server.cpu_s() - cpu0, cpu_ticks() - busy0
    db_cpu = pg.cpu_s() - db_cpu0 if db_cpu0 is not None else None
    accepted = _stats(server.url)["accepted"] - accepted0 - processes * warm_ups  # each worker's warm-up sends
    counts = check_burst(database, burst)
    sent = counts["attempts_sent"]
    out = {
        "path": f"batched ({batch_size} per task)" if batch_size else "per suggestion",
        "batch_size": batch_size,
        "users": users, "devices_per_user": devices_per_user, "suggestions": len(burst),
        "set_up_s": set_up_s, **run, "notifications": sent,
        "notifications_per_s": sent / run["wall_s"] if run["wall_s"] else None,
        "deliveries_per_s": len(burst) / run["wall_s"] if run["wall_s"] else None,
        "server_accepted": accepted, "counts": counts,
        "complete": (sent == users * devices_per_user == accepted and counts["suggestions_delivered"] == users
                     == counts["outbox_completed"] and counts["attempts_failed"] == counts["attempts_sending"] == 0),
        "worker_cpu_us_per_notification": run["worker_cpu_s"] / max(sent, 1) * 1e6,
        "server_cpu_us_per_notification": server_cpu / max(sent, 1) * 1e6,
        "database_cpu_us_per_notification": db_cpu / max(sent, 1) * 1e6 if db_cpu is not None else None,
        "machine_busy": busy / (run["wall_s"] * (os.cpu_count() or 1)),
        "load_average_1m_after": os.getloadavg()[0],
    }
    ctx.log(f"push: end to end {out['path']} {processes}×{threads}, {devices_per_user} device(s)/user: "
            f"{out['notifications_per_s']:,.0f} notifications/s ({sent:,} in {run['wall_s']:.1f} s), "
            f"complete={out['complete']}")
    return out


def run(ctx: Context) -> dict[str, Any]:
    """Measure everything (see the module docstring); a JSON-able dict with params, results, ratios, targets."""
    from smartsvc.config import load_settings
    from smartsvc.db import Database
    from smartsvc.migrate import upgrade

    if tool_path("wrk") is None:
        raise RuntimeError("wrk is missing: `make bench-sysdeps` installs it")
    cfg = dict(SMOKE if ctx.smoke else FULL)
    cores = os.cpu_count() or 1
    load: dict[str, Any] = {"start": _load()}
    results: dict[str, Any] = {}
    work = ctx.tmp / "push"
    (work / "fake").mkdir(parents=True, exist_ok=True)
    server, credentials = lean_server(work)
    fake, fake_credentials = fake_server(work / "fake")
    try:
        # 1. The targets' own ceilings (wrk), and the provider alone against the tests' fake.
        server.wait_ready()
        results["server_ceiling"] = {"push_server": wrk_ceiling(server, credentials, work, cfg["wrk_duration_s"],
                                                                cfg["wrk_connections"])}
        try:
            fake.wait_ready()
            if cfg["fake_wrk"]:  # a second second of wrk: only in the full run
                results["server_ceiling"]["fake_fcm"] = wrk_ceiling(fake, fake_credentials, work,
                                                                    cfg["wrk_duration_s"], cfg["wrk_connections"])
            fake_env = _settings_env(work / "fake", "sqlite:///" + str(work / "unused.db"), fake.url,
                                     fake_credentials)
            results["provider_alone_fake_fcm"] = _provider_runs(fake, fake_env, cfg["fake_fcm_messages"],
                                                                [[cores, 2]], "fake")[0]
        finally:
            fake.stop()
        ceiling = results["server_ceiling"]
        ctx.log("push: server ceiling (wrk) " + ", ".join(f"{name} {c['rps']:,.0f}/s" for name, c in ceiling.items()))

        # 2. The provider alone, in the workers' layouts, against the lean server.
        env = _settings_env(work, "sqlite:///" + str(work / "unused.db"), server.url, credentials)
        results["provider_alone"] = _provider_runs(server, env, cfg["provider_messages"], cfg["layouts"], "alone")
        count, size = cfg["provider_messages"], cfg["batch_size"]
        messages = [message(i, f"many-{i}") for i in range(count)]
        cpu0, busy0 = server.cpu_s(), cpu_ticks()
        many = fan_out(provider_many_setup(env), [messages[lo:lo + size] for lo in range(0, count, size)], cores, 1)
        many.update(notifications_per_s=count / many["wall_s"], server_cpu_us_per_notification=(
            server.cpu_s() - cpu0) / count * 1e6, worker_cpu_us_per_notification=many["worker_cpu_s"] / count * 1e6,
            machine_busy=(cpu_ticks() - busy0) / (many["wall_s"] * cores))
        results["provider_send_many"] = many
        results["client_stages"] = client_stages(credentials, server.url, cfg["client_requests"])
        best_provider = max([r["items_per_s"] for r in results["provider_alone"]] + [many["notifications_per_s"]])
        ctx.log(f"push: provider alone {best_provider:,.0f} notifications/s; httpx alone (one thread) "
                f"{results['client_stages']['httpx_posts_per_s_one_thread']:,.0f}/s")

        # 3. End to end on PostgreSQL: deliver_suggestion in forked workers.
        pg = ctx.postgres()
        db_name = f"bench_push_{os.getpid()}"
        pg.create_database(db_name)
        env = _settings_env(work, pg.server.url(db_name), server.url, credentials)
        database = Database(load_settings(env))
        upgrade(database)
        size = cfg["batch_size"]
        runs = [_end_to_end(ctx, server, database, env, cfg["batch_users"], cfg["devices_per_user"], p, t,
                            f"b{p}x{t}", batch_size=size, pg=pg) for p, t in cfg["batch_layouts"]]
        best = max(runs, key=lambda r: r["notifications_per_s"] or 0)
        wide = _end_to_end(ctx, server, database, env, max(cfg["batch_users"] // cfg["wide_devices_per_user"], 1),
                           cfg["wide_devices_per_user"], best["processes"], best["threads"], "wide", batch_size=size,
                           pg=pg)
        # The old path for comparison: one task (claim, send, finish, settle) per suggestion.
        single = [_end_to_end(ctx, server, database, env, cfg["users"], cfg["devices_per_user"], p, t, f"e{p}x{t}",
                              pg=pg) for p, t in cfg["layouts"]]
        results["end_to_end_postgres"] = {"layouts": runs, "wide_users": wide, "per_suggestion": single}

        # 3b. The embedded deployment: the same on SQLite, two worker processes (they share its write lock).
        sqlite_env = _settings_env(work, "sqlite:///" + str(work / "push.db"), server.url, credentials)
        sqlite_db = Database(load_settings(sqlite_env))
        upgrade(sqlite_db)
        results["end_to_end_sqlite"] = _end_to_end(ctx, server, sqlite_db, sqlite_env, cfg["sqlite_users"],
                                                   cfg["devices_per_user"], cores, 1, "sqlite", batch_size=size)
        sqlite_db.engine.dispose()

        # 4. Where the time goes: one worker, one thread, batches as the task runs them.
        burst = store_burst(database, cfg["profile_suggestions"], cfg["devices_per_user"], "profile")
        results["where_time_goes"] = where_time_goes(database, burst, size)
        results["where_time_goes"]["counts"] = check_burst(database, burst)
        database.engine.dispose()
        results["versions"] = pg.versions()
    finally:
        fake.stop()
        server.stop()
    load["end"] = _load()

    e2e = best["notifications_per_s"] or 0.0
    old_path = max(r["notifications_per_s"] or 0 for r in results["end_to_end_postgres"]["per_suggestion"])
    lean = ceiling["push_server"]["rps"]
    ratios = {
        "end_to_end_over_server_ceiling": ratio(e2e, lean),
        "provider_alone_over_server_ceiling": ratio(best_provider, lean),
        "end_to_end_over_provider_alone": ratio(e2e, best_provider),
        "fake_fcm_ceiling_over_push_server_ceiling": ratio(ceiling.get("fake_fcm", {}).get("rps"), lean),
        "wide_users_over_one_device_per_user": ratio(wide["notifications_per_s"], e2e),
        "sqlite_over_postgres": ratio(results["end_to_end_sqlite"]["notifications_per_s"], e2e),
        "end_to_end_over_target": ratio(e2e, TARGET_NOTIFICATIONS_PER_S),
        "batched_over_per_suggestion": ratio(e2e, old_path),
        "batched_cpu_over_per_suggestion_cpu": ratio(
            best["worker_cpu_us_per_notification"],
            min(r["worker_cpu_us_per_notification"] for r in results["end_to_end_postgres"]["per_suggestion"])),
        "httpx_cpu_over_http_client_cpu": ratio(results["client_stages"]["httpx_post_cpu_us"],
                                                results["client_stages"]["http_client_post_cpu_us"]),
    }
    targets = {
        "notifications_per_s": {"target_min": TARGET_NOTIFICATIONS_PER_S, "measured": e2e,
                                "met": e2e >= TARGET_NOTIFICATIONS_PER_S and best["complete"],
                                "what": f"end to end, batched ({size} per task), PostgreSQL, {best['processes']} "
                                        f"processes × {best['threads']} threads, {cfg['devices_per_user']} FCM device "
                                        f"per user"},
        "provider_alone_notifications_per_s": {"target_min": TARGET_NOTIFICATIONS_PER_S, "measured": best_provider,
                                               "met": best_provider >= TARGET_NOTIFICATIONS_PER_S},
        "server_ceiling_rps": {"target_min": TARGET_NOTIFICATIONS_PER_S, "measured": lean,
                               "met": lean >= TARGET_NOTIFICATIONS_PER_S},
    }
    return {"params": {**cfg, "project": PROJECT, "database": "postgresql", "cores": cores,
                       "fan_out": "many users' suggestions due at once: one outbox push message per suggestion, "
                                  "each pushed to every active FCM device of its user"},
            "load": load, "results": results, "ratios": ratios, "targets": targets}


# --------------------------------------------------------------------------- printing


def _n(value: Any, fmt: str = ",.0f") -> str:
    return "—" if value is None else format(value, fmt)


def tables(result: dict[str, Any]) -> list[Table]:
    """The tables to print for a result."""
    r = result["results"]
    t = Table(title="Push fan-out — notifications/s (p50 / p99 ms per item: a push, a suggestion or a batch), "
                    "CPU µs per notification")
    for col in ("what", "layout", "notifications/s", "p50 / p99 ms", "worker CPU µs", "server CPU µs",
                "PostgreSQL CPU µs", "busy"):
        t.add_column(col, justify="left" if col in ("what", "layout") else "right")
    for name, c in r["server_ceiling"].items():
        t.add_row(f"server ceiling: wrk → {name}", f"1 thread, {c['connections']} conn", _n(c["rps"]),
                  f"{_n(c['p50_ms'], '.2f')} / {_n(c['p99_ms'], '.2f')}", "—",
                  _n(c["server_cpu_us_per_request"]), "—", "—")
    rows = [("provider alone → fake_fcm", r["provider_alone_fake_fcm"])]
    rows += [("provider alone (send) → push_server", x) for x in r["provider_alone"]]
    if "provider_send_many" in r:
        rows.append((f"provider alone (send_many, {result['params'].get('batch_size')}) → push_server",
                     r["provider_send_many"]))
    e2e = r["end_to_end_postgres"]
    rows += [(f"end to end, batched, PostgreSQL, {x['devices_per_user']} device/user", x) for x in e2e["layouts"]]
    rows.append((f"end to end, batched, PostgreSQL, {e2e['wide_users']['devices_per_user']} devices/user",
                 e2e["wide_users"]))
    rows += [(f"end to end, per suggestion, PostgreSQL, {x['devices_per_user']} device/user", x)
             for x in e2e.get("per_suggestion", [])]
    rows.append(("end to end, batched, SQLite (embedded), 1 device/user", r["end_to_end_sqlite"]))
    for label, x in rows:
        lat = x["latency"]
        t.add_row(label, f"{x['processes']} proc × {x['threads']} thr",
                  _n(x.get("notifications_per_s", x["items_per_s"])), f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f}",
                  _n(x["worker_cpu_us_per_notification"]), _n(x["server_cpu_us_per_notification"]),
                  _n(x.get("database_cpu_us_per_notification")), f"{x['machine_busy']:.0%}")
    w = r["where_time_goes"]
    s = Table(title=f"Where the time goes — one worker, one thread, {w['suggestions']} deliveries in batches of "
                    f"{w.get('batch_size', 1)} ({_n(w['deliveries_per_s'])}/s)")
    s.add_column("what")
    s.add_column("value", justify="right")
    for name, stage in w["stages_ms"].items():
        s.add_row(f"stage {name} p50 / p99 ms per batch", f"{stage['p50_ms']:.2f} / {stage['p99_ms']:.2f}")
    cs = r["client_stages"]
    s.add_row("provider: build + fit the request µs", f"{cs['build_and_fit_us']:.0f}")
    s.add_row("bare httpx post µs (CPU µs), one thread", f"{cs['httpx_post_us']:.0f} ({cs['httpx_post_cpu_us']:.0f})")
    s.add_row("same with http.client µs (CPU µs)",
              f"{cs['http_client_post_us']:.0f} ({cs['http_client_post_cpu_us']:.0f})")
    s.add_row("SQL statements per delivery (without BEGIN/COMMIT)", f"{w['sql_statements_per_delivery']:.1f}")
    for name, share in w["profile_share"].items():
        s.add_row(f"profile: {name}", f"{share:.0%}")
    rt = Table(title="Ratios and targets")
    rt.add_column("what")
    rt.add_column("value", justify="right")
    for k, v in result["ratios"].items():
        rt.add_row(k, "—" if v is None else f"{v:.2f}")
    for k, v in result["targets"].items():
        rt.add_row(f"target {k} (≥ {v['target_min']:,})", f"{v['measured']:,.0f} {'met' if v['met'] else 'NOT met'}")
    ld = result["load"]
    rt.add_row("load average 1 min (start → end)",
               f"{ld['start']['load_average_1m']:.1f} → {ld['end']['load_average_1m']:.1f}")
    return [t, s, rt]
