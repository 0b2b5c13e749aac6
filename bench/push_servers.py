"""Benchmark 6's loopback FCM servers (:mod:`bench.push_server`, the tests' fake), their credentials, and
wrk against them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import cpu_ticks
from bench.push_fanout import message

PROJECT = "smartsvc-bench"


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
        return cpu_ticks(self.proc.pid)

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


def bearer_of(credentials: Path) -> str:
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
                      f'wrk.headers["Authorization"] = "Bearer {bearer_of(credentials)}"\n')
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
