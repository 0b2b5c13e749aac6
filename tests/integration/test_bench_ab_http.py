"""bench/ab_http.py compares two sides on benchmark 2's load and says which used less CPU per request.

Tiny sizes, in a child process as a developer runs it; never a timing assert: only that both sides
served the alternating rounds and that the summary reports them (and a bad setting is refused).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.support.servers import REPO_ROOT


def _ab(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is missing: run `make test` (it installs wrk via bench-sysdeps)", pytrace=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSVC_")}
    return subprocess.run([sys.executable, "-m", "bench.ab_http", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_both_sides_serve_alternating_rounds_and_the_summary_counts_them():
    result = _ab("--spots", "1500", "--urls", "100", "--rounds", "2", "--duration", "1", "--warmup", "1",
                 "--b-first", "--b-env", "SMARTSVC_LOG_LEVEL=WARNING")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    runs = re.findall(r"^([AB]): ([\d.]+) ms CPU/request, ([\d,]+) req/s", result.stdout, re.MULTILINE)
    assert [side for side, _, _ in runs] == ["A", "B", "B", "A"]  # the rounds start with A whatever the launch order
    assert all(float(cpu) > 0 and int(rps.replace(",", "")) > 0 for _, cpu, rps in runs)
    assert re.search(r"^A: median [\d.]+ ms CPU/request", result.stdout, re.MULTILINE)
    assert re.search(r"^B used less CPU in [012] of 2 paired rounds$", result.stdout, re.MULTILINE)


def test_a_setting_without_a_value_is_refused_before_anything_starts():
    result = _ab("--b-env", "SMARTSVC_LOG_LEVEL")
    assert result.returncode != 0
    assert "NAME=VALUE" in result.stderr
