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
"""

from __future__ import annotations

import cProfile
import hashlib
import json
import os
import pstats
import re
import secrets
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from rich.table import Table

from bench.common import Context, ratio, summarize, tool_path
from bench.push_fanout import batch_setup, delivery_setup, fan_out, message, provider_many_setup, provider_setup

NAME = "push"
TITLE = "Benchmark 6 — push fan-out to a loopback FCM-compatible server"
TARGET_NOTIFICATIONS_PER_S = 5_000
PROJECT = "smartsvc-bench"

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


def _cpu_ticks(pid: int | None = None) -> float:
    """CPU seconds used so far: by process ``pid`` (user + system), or busy seconds of the whole machine."""
    hz = os.sysconf("SC_CLK_TCK")
    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / hz
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in cpu]
    return (sum(values) - values[3] - values[4]) / hz  # all but idle and iowait


def _load() -> dict[str, float]:
    return {"load_average_1m": os.getloadavg()[0], "load_average_5m": os.getloadavg()[1]}


# --------------------------------------------------------------------------- the loopback servers


def _write_credentials(directory: Path, token_uri: str) -> tuple[Path, Path]:
    """A fresh RSA key: the service-account file (``token_uri`` → the server) and the public key PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = directory / "fcm-public.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    credentials = directory / "fcm-service-account.json"
    credentials.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "bench-key-1", "private_key": private,
        "client_email": "pusher@smartsvc-bench.iam.gserviceaccount.com", "client_id": "1", "token_uri": token_uri}))
    return credentials, public


class LoopbackServer:
    """A child process serving FCM on 127.0.0.1 (``bench.push_server`` or the tests' fake), own process group."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(argv, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                                     stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        self.url = ""

    def wait_ready(self) -> "LoopbackServer":
        """Block until the server printed its address (both servers start side by side)."""
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        match = re.search(r"(http://127\.0\.0\.1:\d+|127\.0\.0\.1:\d+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {line!r}")
        self.url = match.group(1) if match.group(1).startswith("http") else f"http://{match.group(1)}"
        return self

    def cpu_s(self) -> float:
        return _cpu_ticks(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def lean_server(directory: Path) -> tuple[LoopbackServer, Path]:
    """Start :mod:`bench.push_server`; the credentials file that points at it."""
    from tests.support.servers import free_port

    port = free_port()
    credentials, public = _write_credentials(directory, f"http://127.0.0.1:{port}/token")
    server = LoopbackServer([sys.executable, "-m", "bench.push_server", "--port", str(port), "--public-key",
                             str(public), "--project", PROJECT], "push_server")
    return server, credentials


_FAKE = """
import sys
from pathlib import Path
from tests.support.fake_fcm import FakeFcm
with FakeFcm(project_id=sys.argv[2]) as fake:
    fake.write_credentials(Path(sys.argv[1]))
    print(fake.url, flush=True)
    sys.stdin.read()
"""


def fake_server(directory: Path) -> tuple[LoopbackServer, Path]:
    """Start the test suite's :class:`tests.support.fake_fcm.FakeFcm` in a child process."""
    credentials = directory / "fake-fcm-service-account.json"
    return LoopbackServer([sys.executable, "-c", _FAKE, str(credentials), PROJECT], "fake_fcm"), credentials


def _settings_env(var_dir: Path, database_url: str, fcm_url: str, credentials: Path) -> dict[str, str]:
    return {"SMARTSVC_VAR_DIR": str(var_dir), "SMARTSVC_DATABASE_URL": database_url,
            "SMARTSVC_SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789", "SMARTSVC_LOG_LEVEL": "WARNING",
            "SMARTSVC_LOG_JSON": "0", "SMARTSVC_FCM_URL": fcm_url, "SMARTSVC_FCM_CREDENTIALS": str(credentials),
            "SMARTSVC_FCM_PROJECT_ID": PROJECT}


def _bearer(credentials: Path) -> str:
    import httpx

    from smartsvc.delivery.fcm import FCM_SCOPE
    from smartsvc.delivery.google_oauth import ServiceAccountTokens

    with httpx.Client() as client:
        return ServiceAccountTokens(credentials, [FCM_SCOPE], client).token()


def _sample_body(token: str) -> bytes:
    from smartsvc.delivery.fcm import build_request, fit_fcm

    return json.dumps(build_request(fit_fcm(message(0, token))), ensure_ascii=False).encode()


def wrk_ceiling(server: LoopbackServer, credentials: Path, work: Path, duration: float, connections: int
                ) -> dict[str, Any]:
    """wrk, one thread, posting one real ``messages:send`` body with a valid bearer: the server's own ceiling."""
    script = work / f"wrk-{server.name}.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(_sample_body("bench-wrk-token").decode())}\n'
                      f'wrk.headers["Content-Type"] = "application/json; charset=UTF-8"\n'
                      f'wrk.headers["Authorization"] = "Bearer {_bearer(credentials)}"\n')
    cpu0 = server.cpu_s()
    done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
                           "-s", str(script), f"{server.url}/v1/projects/{PROJECT}/messages:send"],
                          capture_output=True, text=True, timeout=duration + 60)
    cpu, out = server.cpu_s() - cpu0, done.stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"wrk against {server.name} failed ({done.returncode}): {out[-2000:]} {done.stderr[-2000:]}")
    rps = float(found.group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)

    def ms(label: str) -> float | None:
        found = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not found:
            return None
        return float(found.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[found.group(2)]

    return {"requests": requests, "rps": rps, "p50_ms": ms("50%"), "p99_ms": ms("99%"),
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
            "server_cpu_us_per_request": cpu / requests * 1e6 if requests else None, "connections": connections}


# --------------------------------------------------------------------------- the burst: users, devices, suggestions


def store_burst(database: Any, users: int, devices_per_user: int, tag: str) -> list[tuple[Any, int]]:
    """``users`` users (consent given, FCM devices) with one suggestion each, due now, and its outbox message.

    Rows as the API and the engine leave them (``propose`` made the suggestion
    ``new``/``pending`` with ``pushed_at`` and the relay published the message),
    written in bulk: the set-up is not what is measured. Returns
    (suggestion id, outbox message id) per user.
    """
    from sqlalchemy import insert, select

    from smartsvc.ids import new_id
    from smartsvc.models import Consent, Device, OutboxMessage, Suggestion, User
    from smartsvc.services.suggestions import PUSH_TASK
    from smartsvc.timeutil import utcnow

    now = utcnow()
    user_rows, consent_rows, device_rows, suggestion_rows, outbox_rows = [], [], [], [], []
    for u in range(users):
        user_id, suggestion_id = new_id(), new_id()
        user_rows.append({"id": user_id, "external_id": f"{tag}-user-{u}", "time_zone": "Europe/Berlin",
                          "max_pushes_per_day": 50, "token_generation": 0, "created_at": now, "updated_at": now})
        consent_rows.append({"user_id": user_id, "purpose": "proactive_push", "granted": True, "changed_at": now})
        for d in range(devices_per_user):
            token = f"{tag}{u}.{d}:APA91b" + secrets.token_urlsafe(105)  # FCM tokens are ~160 characters
            device_rows.append({"id": new_id(), "user_id": user_id, "platform": "fcm", "token": token,
                                "subscription": None, "token_hash": hashlib.sha256(token.encode()).hexdigest(),
                                "active": True, "created_at": now, "last_seen_at": now})
        title = "3 spots that fit your car"
        body = f"120 m from your destination, free until 18:00 — Torstraße {u % 200 + 1}"
        suggestion_rows.append({
            "id": suggestion_id, "user_id": user_id, "rule_id": None, "trigger_id": new_id(),
            "kind": "spots_near_destination", "title": title, "body": body,
            "payload": {"spots": [{"id": str(new_id()), "distance_m": 120 + s} for s in range(3)]},
            "reason": {"rule": {"id": None, "name": "small spots before arrival"},
                       "trigger": {"event": "trip.approaching", "at": now.isoformat(), "fields": {}}, "facts": {}},
            "collapse_key": f"spots:{tag}-{u}", "content_hash": hashlib.sha256(f"{title}{body}".encode()).hexdigest(),
            "status": "new", "status_reason": None, "created_at": now, "expires_at": now + timedelta(minutes=30),
            "deliver_after": None, "snoozed_until": None, "delivery_status": "pending", "delivered_at": None,
            "dedupe_key": f"{tag}-{u}", "pushed_at": now, "push_round": 0})
        outbox_rows.append({"task": PUSH_TASK, "payload": {"suggestion_id": str(suggestion_id)},
                            "ordering_key": f"user:{user_id}", "user_id": user_id, "created_at": now,
                            "available_at": now, "sent_at": now, "attempts": 1})
    with database.unit_of_work() as uow:
        session = uow.session
        for model, rows in ((User, user_rows), (Consent, consent_rows), (Device, device_rows),
                            (Suggestion, suggestion_rows), (OutboxMessage, outbox_rows)):
            for lo in range(0, len(rows), 2000):
                session.execute(insert(model), rows[lo:lo + 2000])
        uow.commit()
    ids: dict[str, int] = {}
    with database.session() as session:
        for lo in range(0, len(user_rows), 5000):
            ids.update((payload["suggestion_id"], oid) for oid, payload in session.execute(
                select(OutboxMessage.id, OutboxMessage.payload).where(
                    OutboxMessage.user_id.in_([r["id"] for r in user_rows[lo:lo + 5000]]))))
    return [(row["id"], ids[str(row["id"])]) for row in suggestion_rows]


def check_burst(database: Any, burst: list[tuple[Any, int]]) -> dict[str, int]:
    """What the burst left in the database: attempts by status, suggestions delivered, messages completed."""
    from sqlalchemy import func, select

    from smartsvc.models import OutboxMessage, PushAttempt, Suggestion

    suggestion_ids = [s for s, _ in burst]
    outbox_ids = [o for _, o in burst]
    counts: dict[str, int] = {"attempts_sent": 0, "attempts_failed": 0, "attempts_sending": 0}
    with database.session() as session:
        for lo in range(0, len(burst), 5000):
            chunk = suggestion_ids[lo:lo + 5000]
            for status, n in session.execute(select(PushAttempt.status, func.count()).where(
                    PushAttempt.suggestion_id.in_(chunk)).group_by(PushAttempt.status)):
                counts[f"attempts_{status}"] = counts.get(f"attempts_{status}", 0) + n
            counts["suggestions_delivered"] = counts.get("suggestions_delivered", 0) + session.scalar(
                select(func.count()).select_from(Suggestion).where(
                    Suggestion.id.in_(chunk), Suggestion.delivery_status == "delivered",
                    Suggestion.status == "delivered"))
            counts["outbox_completed"] = counts.get("outbox_completed", 0) + session.scalar(
                select(func.count()).select_from(OutboxMessage).where(
                    OutboxMessage.id.in_(outbox_ids[lo:lo + 5000]), OutboxMessage.completed_at.is_not(None)))
    return counts


# --------------------------------------------------------------------------- where the time goes


_PACKAGES = (("http client (httpx, httpcore, h11)", ("/httpx/", "/httpcore/", "/h11/")),
             ("ORM (sqlalchemy)", ("/sqlalchemy/",)), ("database driver (psycopg)", ("/psycopg",)),
             ("oauth (google-auth)", ("/google/",)), ("json", ("/json/",)),
             ("smartsvc", ("/smartsvc/",)), ("sockets and other builtins", ("~",)))


def where_time_goes(database: Any, burst: list[tuple[Any, int]], batch_size: int) -> dict[str, Any]:
    """One worker, one thread, batches of ``batch_size`` as the task runs them: the three stages of a batch
    timed apart and the SQL statements counted (first half), then a profile grouped by package (second half)."""
    from smartsvc.services import delivery_batch as service

    half = len(burst) // 2
    stages = {name: [] for name in ("_claim", "send_claims", "_finish", "_finish_and_settle")}
    originals = {name: getattr(service, name) for name in stages}

    def timing(name: str) -> Callable[..., Any]:
        original = originals[name]

        def timed_stage(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                stages[name].append(time.perf_counter() - t)

        return timed_stage

    from collections import Counter

    from sqlalchemy import event

    statements: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements[" ".join(statement.split())[:70]] += 1

    def batches(items: list[tuple[Any, int]]) -> list[list[tuple[Any, int]]]:
        return [items[lo:lo + batch_size] for lo in range(0, len(items), batch_size)]

    for name in stages:
        setattr(service, name, timing(name))
    event.listen(database.engine, "before_cursor_execute", count)
    try:
        t = time.perf_counter()
        for batch in batches(burst[:half]):
            service.deliver_suggestions(database, batch)
        wall = time.perf_counter() - t
    finally:
        event.remove(database.engine, "before_cursor_execute", count)
        for name, original in originals.items():
            setattr(service, name, original)
    profile = cProfile.Profile()
    profile.enable()
    for batch in batches(burst[half:]):
        service.deliver_suggestions(database, batch)
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in stats.values())
    by_package: dict[str, float] = {name: 0.0 for name, _ in _PACKAGES}
    by_package["other python"] = 0.0
    for (filename, _, _), (_, _, tt, _, _) in stats.items():
        label = next((name for name, marks in _PACKAGES if any(m in filename for m in marks)), "other python")
        by_package[label] += tt
    hottest = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
    n = max(len(burst) - half, 1)
    return {
        "suggestions": half, "batch_size": batch_size, "deliveries_per_s": half / wall if wall else None,
        # Per batch: the claim transaction, the sends, and the finish-and-settle transaction split into
        # recording the tries ("finish") and the rest of it (locks, statuses, retries, outbox, commit: "settle").
        "stages_ms": {"claim": summarize(stages["_claim"]), "send": summarize(stages["send_claims"]),
                      "finish": summarize(stages["_finish"]),
                      "settle": summarize([whole - part for whole, part in
                                           zip(stages["_finish_and_settle"], stages["_finish"])])},
        # SQL sent per delivery (one suggestion), BEGIN/COMMIT and the pool's pings not included.
        "sql_statements_per_delivery": sum(statements.values()) / max(half, 1),
        "sql_statements": {k: v / max(half, 1) for k, v in statements.most_common(15)},
        "profile_share": {k: v / total for k, v in sorted(by_package.items(), key=lambda kv: -kv[1])},
        "profile_us_per_delivery_with_profiler": total / n * 1e6,
        "hottest_functions": [{"function": f"{Path(f).name}:{line}:{func}", "tottime_us_per_delivery": tt / n * 1e6,
                               "calls_per_delivery": nc / n}
                              for (f, line, func), (_, nc, tt, _, _) in hottest],
    }


def client_stages(credentials: Path, url: str, count: int) -> dict[str, Any]:
    """In this process, one thread: what one send costs in the provider's own code and in the HTTP client.

    The same posts with the standard library's ``http.client`` on one kept-alive
    connection show what the HTTP client itself costs.
    """
    import http.client
    from urllib.parse import urlsplit

    import httpx

    from smartsvc.delivery.fcm import build_request, fit_fcm

    messages = [message(i, f"bench-stage-{i}") for i in range(count)]
    t = time.perf_counter()
    bodies = [json.dumps(build_request(fit_fcm(m)), ensure_ascii=False).encode() for m in messages]
    build = (time.perf_counter() - t) / count
    headers = {"Authorization": f"Bearer {_bearer(credentials)}", "Content-Type": "application/json; charset=UTF-8"}
    endpoint = f"{url}/v1/projects/{PROJECT}/messages:send"
    with httpx.Client() as client:
        client.post(endpoint, content=bodies[0], headers=headers)
        cpu, t = time.process_time(), time.perf_counter()
        ok = sum(client.post(endpoint, content=b, headers=headers).status_code == 200 for b in bodies)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    parts = urlsplit(endpoint)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        def post(body: bytes) -> bool:
            connection.request("POST", parts.path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status == 200

        post(bodies[0])
        plain_cpu, t = time.process_time(), time.perf_counter()
        plain_ok = sum(post(b) for b in bodies)
        plain_wall, plain_cpu = time.perf_counter() - t, time.process_time() - plain_cpu
    finally:
        connection.close()
    return {"build_and_fit_us": build * 1e6, "httpx_post_us": wall / count * 1e6,
            "httpx_post_cpu_us": cpu / count * 1e6, "httpx_posts_per_s_one_thread": ok / wall,
            "http_client_post_us": plain_wall / count * 1e6, "http_client_post_cpu_us": plain_cpu / count * 1e6,
            "http_client_posts_per_s_one_thread": plain_ok / plain_wall}


# --------------------------------------------------------------------------- the run


def _stats(url: str) -> dict[str, int]:
    import httpx

    return httpx.get(f"{url}/stats", timeout=10).json()


def _provider_runs(server: LoopbackServer, env: dict[str, str], count: int, layouts: list[list[int]],
                   tag: str) -> list[dict[str, Any]]:
    runs = []
    for processes, threads in layouts:
        messages = [message(i, f"{tag}-{processes}x{threads}-{i}") for i in range(count)]
        cpu0, busy0 = server.cpu_s(), _cpu_ticks()
        run = fan_out(provider_setup(env), messages, processes, threads)
        run["server_cpu_us_per_notification"] = (server.cpu_s() - cpu0) / count * 1e6
        run["worker_cpu_us_per_notification"] = run["worker_cpu_s"] / count * 1e6
        run["machine_busy"] = (_cpu_ticks() - busy0) / (run["wall_s"] * (os.cpu_count() or 1))
        run["load_average_1m_after"] = os.getloadavg()[0]
        runs.append(run)
    return runs


def _end_to_end(ctx: Context, server: LoopbackServer, database: Any, env: dict[str, str], users: int,
                devices_per_user: int, processes: int, threads: int, tag: str,
                batch_size: int | None = None) -> dict[str, Any]:
    """One burst delivered by forked workers: per suggestion (``deliver_suggestion``, the old task), or in
    batches of ``batch_size`` (``deliver_suggestions``, what the ``push_batch`` task runs)."""
    t = time.perf_counter()
    burst = store_burst(database, users, devices_per_user, tag)
    set_up_s = time.perf_counter() - t
    database.engine.dispose()  # the workers fork: none inherits an open connection
    if batch_size:
        items: list[Any] = [burst[lo:lo + batch_size] for lo in range(0, len(burst), batch_size)]
        setup, warm_ups = batch_setup(env, threads), 17
    else:
        items, setup, warm_ups = burst, delivery_setup(env, threads), 1
    accepted0, cpu0, busy0 = _stats(server.url)["accepted"], server.cpu_s(), _cpu_ticks()
    run = fan_out(setup, items, processes, threads)
    server_cpu, busy = server.cpu_s() - cpu0, _cpu_ticks() - busy0
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
        cpu0, busy0 = server.cpu_s(), _cpu_ticks()
        many = fan_out(provider_many_setup(env), [messages[lo:lo + size] for lo in range(0, count, size)], cores, 1)
        many.update(notifications_per_s=count / many["wall_s"], server_cpu_us_per_notification=(
            server.cpu_s() - cpu0) / count * 1e6, worker_cpu_us_per_notification=many["worker_cpu_s"] / count * 1e6,
            machine_busy=(_cpu_ticks() - busy0) / (many["wall_s"] * cores))
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
                            f"b{p}x{t}", batch_size=size) for p, t in cfg["batch_layouts"]]
        best = max(runs, key=lambda r: r["notifications_per_s"] or 0)
        wide = _end_to_end(ctx, server, database, env, max(cfg["batch_users"] // cfg["wide_devices_per_user"], 1),
                           cfg["wide_devices_per_user"], best["processes"], best["threads"], "wide", batch_size=size)
        # The old path for comparison: one task (claim, send, finish, settle) per suggestion.
        single = [_end_to_end(ctx, server, database, env, cfg["users"], cfg["devices_per_user"], p, t, f"e{p}x{t}")
                  for p, t in cfg["layouts"]]
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
    for col in ("what", "layout", "notifications/s", "p50 / p99 ms", "worker CPU µs", "server CPU µs", "busy"):
        t.add_column(col, justify="left" if col in ("what", "layout") else "right")
    for name, c in r["server_ceiling"].items():
        t.add_row(f"server ceiling: wrk → {name}", f"1 thread, {c['connections']} conn", _n(c["rps"]),
                  f"{_n(c['p50_ms'], '.2f')} / {_n(c['p99_ms'], '.2f')}", "—",
                  _n(c["server_cpu_us_per_request"]), "—")
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
                  f"{x['machine_busy']:.0%}")
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
