"""The real server (gunicorn via ``python -m smartsvc api``) over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 30


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSVC_")}
    # Logs as deployed (JSON lines, INFO): a test reads the access lines.
    env.update(SMARTSVC_VAR_DIR=str(var_dir), SMARTSVC_LOG_JSON="1", SMARTSVC_LOG_LEVEL="INFO",
               SMARTSVC_MAX_BODY_BYTES="4096")
    return env


@dataclass
class Server:
    base_url: str
    app_key: str
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    root = tmp_path_factory.mktemp("e2e")
    env = _environment(root / "var")
    port = _free_port()
    log_path = root / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "smartsvc", "api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{base_url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not healthy after {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()}")
            time.sleep(0.1)
        created = subprocess.run(
            [sys.executable, "-m", "smartsvc", "keys", "create", "--role", "app", "--name", "e2e"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
        )
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip()
        assert key.startswith("ssk_") and "\n" not in key, created.stdout
        assert key not in created.stderr
        yield Server(base_url=base_url, app_key=key, log=log_path)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


def test_create_a_user_and_read_me(http, server):
    created = http.post("/v1/users", json={"external_id": "e2e-user", "time_zone": "Europe/Berlin"},
                        headers={"Authorization": f"Bearer {server.app_key}"})

    assert created.status_code == 201, created.text
    body = created.json()
    me = http.get("/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == body["id"]
    assert me.json()["external_id"] == "e2e-user"


def test_an_unknown_route_is_a_404_problem_with_the_request_id(http):
    response = http.get("/v1/no-such-thing", headers={"X-Request-Id": "e2e-req-1"})

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["x-request-id"] == "e2e-req-1"
    assert response.json()["request_id"] == "e2e-req-1"
    assert response.json()["status"] == 404


def test_no_token_is_a_401_problem(http):
    response = http.get("/v1/me")

    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_body_over_the_configured_limit_is_a_413_problem(http, server):
    response = http.post("/v1/users", json={"external_id": "x" * 10_000, "time_zone": "UTC"},
                         headers={"Authorization": f"Bearer {server.app_key}"})

    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_chunked_body_over_the_limit_is_a_413_problem_too(http, server):
    def chunks():
        yield b'{"external_id": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'", "time_zone": "UTC"}'

    response = http.post("/v1/users", content=chunks(), headers={
        "Authorization": f"Bearer {server.app_key}", "Content-Type": "application/json"})

    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_chunked_body_within_the_limit_is_read_whole(http, server):
    def chunks():
        yield b'{"external_id": "chunked-'
        yield b"y" * 100
        yield b'", "time_zone": "UTC"}'

    response = http.post("/v1/users", content=chunks(), headers={
        "Authorization": f"Bearer {server.app_key}", "Content-Type": "application/json"})

    assert response.status_code == 201, response.text


def test_ready(http):
    response = http.get("/v1/ready")

    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_docs_and_openapi(http):
    docs = http.get("/docs")
    spec = http.get("/v1/openapi.json")

    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in docs.text
    assert spec.status_code == 200
    assert spec.json()["info"]["title"] == "smartsvc"
    assert "/v1/users" in spec.json()["paths"]


def test_each_request_reaches_the_server_log_as_one_json_line(http, server):
    """The workers keep access lines and write them together (logging_setup.LineHandler): none is lost."""
    ids = [f"e2e-log-{n}" for n in range(30)]
    for request_id in ids:
        assert http.get("/v1/health", headers={"X-Request-Id": request_id}).status_code == 200
    deadline = time.monotonic() + 10
    while True:  # polled: the lines arrive within the writer's interval
        logged = {}
        for line in server.log.read_text().splitlines():
            if line.startswith("{") and '"e2e-log-' in line:
                entry = json.loads(line)
                logged[entry["request_id"]] = entry
        if len(logged) == len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sorted(logged) == sorted(ids)
    assert {(entry["path"], entry["status"]) for entry in logged.values()} == {("/v1/health", 200)}
