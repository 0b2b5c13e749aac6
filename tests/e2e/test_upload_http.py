"""Dataset uploads through the real server (gunicorn): the upload route's own body limit, chunked or not."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.e2e.test_http_server import REPO, STARTUP_TIMEOUT_S, _free_port

BODY_LIMIT = 4096
UPLOAD_LIMIT = 64 * 1024


def _features(count: int) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": f"s{i}", "geometry": {"type": "Point", "coordinates": [2.35, 48.85]},
         "properties": {"kind": "space", "name": "x" * 100, "rules": [{"activity": "parking"}]}}
        for i in range(count)]}).encode()


@pytest.fixture(scope="module")
def upload_server(tmp_path_factory) -> Iterator[tuple[str, str, Path]]:
    root = tmp_path_factory.mktemp("e2e-upload")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSVC_")}
    env.update(SMARTSVC_VAR_DIR=str(root / "var"), SMARTSVC_LOG_JSON="0", SMARTSVC_LOG_LEVEL="WARNING",
               SMARTSVC_MAX_BODY_BYTES=str(BODY_LIMIT), SMARTSVC_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT))
    port = _free_port()
    log_path = root / "server.log"
    with log_path.open("wb") as log:
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
            [sys.executable, "-m", "smartsvc", "keys", "create", "--role", "operator", "--name", "e2e uploads"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
        )
        assert created.returncode == 0, created.stderr
        yield base_url, created.stdout.strip(), root / "var" / "uploads"
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _multipart(content: bytes) -> tuple[bytes, str]:
    boundary = "e2eboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\ne2e\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="layer"\r\n\r\nparking\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.geojson"\r\n\r\n').encode()
    return body + content + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_upload_larger_than_the_body_limit_is_accepted_up_to_the_upload_limit(upload_server, chunked):
    base_url, key, _ = upload_server
    body, content_type = _multipart(_features(100))
    assert BODY_LIMIT < len(body) < UPLOAD_LIMIT

    response = httpx.post(f"{base_url}/v1/datasets", content=_chunks(body) if chunked else body, timeout=30,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})

    assert response.status_code == 202, response.text
    assert response.headers["location"].endswith(response.json()["id"])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_upload_over_the_upload_limit_is_a_413_problem_and_keeps_nothing(upload_server, chunked):
    base_url, key, uploads = upload_server
    before = sorted(uploads.iterdir()) if uploads.exists() else []
    body, content_type = _multipart(_features(300))
    assert UPLOAD_LIMIT < len(body) < 2 * UPLOAD_LIMIT

    response = httpx.post(f"{base_url}/v1/datasets", content=_chunks(body) if chunked else body, timeout=30,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})

    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    after = sorted(uploads.iterdir()) if uploads.exists() else []
    assert after == before


def test_other_routes_keep_the_small_body_limit(upload_server):
    base_url, key, _ = upload_server

    response = httpx.post(f"{base_url}/v1/catalog/models", timeout=30, headers={"Authorization": f"Bearer {key}"},
                          json={"kind": "car", "brand": "b", "name": "x" * (2 * BODY_LIMIT)})

    assert response.status_code == 413
