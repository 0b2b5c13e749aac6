"""``smartsvc beat`` on a production-like setup: its var folder does not exist yet.

With PostgreSQL and Redis nothing else creates the var folder (the embedded
broker's folder lives there, so the embedded defaults always had one). The
scheduler keeps its schedule file in it, and must not die on a fresh machine:
without it no outbox relay sweep runs, and what a killed worker held is
never published again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.support.servers import REPO_ROOT
from workers.celery_app import QUEUE

pytestmark = pytest.mark.redis

REDIS_DB = 15  # test_worker uses 1, the pipeline tests 4 and up
WAIT_S = 30


def test_beat_creates_its_var_folder_and_sends_the_relay_sweep(redis_server, tmp_path: Path):
    var_dir = tmp_path / "fresh" / "var"
    broker = redis.Redis.from_url(redis_server.url(REDIS_DB))
    broker.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSVC_")}
    env.update({"SMARTSVC_VAR_DIR": str(var_dir), "SMARTSVC_BROKER_URL": redis_server.url(REDIS_DB),
                "SMARTSVC_DATABASE_URL": f"sqlite:///{tmp_path / 'smartsvc.db'}", "SMARTSVC_LOG_JSON": "0",
                "SMARTSVC_SECRET_KEY": "s" * 40, "SMARTSVC_OUTBOX_RELAY_INTERVAL_S": "1"})
    log_path = tmp_path / "beat.log"
    with open(log_path, "wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "smartsvc", "beat"], cwd=REPO_ROOT, env=env,
                                   stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT_S
        while not broker.llen(QUEUE):
            assert process.poll() is None, f"beat exited ({process.returncode}):\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"no relay sweep sent in {WAIT_S} s:\n{log_path.read_text()}"
            time.sleep(0.1)
        assert process.poll() is None, log_path.read_text()
        assert any(var_dir.glob("celerybeat-schedule*"))
        assert "Removing corrupted schedule file" not in log_path.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        broker.flushdb()
        broker.close()
