"""``python -m smartsvc demo`` as a person runs it: the story, the pushes it wrote, the spots behind them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FORTWO_NEEDS_M = 2.69 + 1.0
F150_NEEDS_M = 5.89 + 1.0


def _environment() -> dict[str, str]:
    # A user's own settings must not leak in (the demo ignores them; this proves it never needs them).
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSVC_")}
    env["SMARTSVC_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/not-used"  # would fail if the demo read it
    return env


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smartsvc", "demo", *args], cwd=REPO, env=_environment(),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Any]:
    var_dir = tmp_path_factory.mktemp("demo") / "var"
    done = _demo("--var-dir", str(var_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    pushes = [json.loads(line) for line in (var_dir / "pushes.jsonl").read_text().splitlines()]
    with sqlite3.connect(var_dir / "smartsvc.db") as db:
        rows = db.execute("SELECT id, title, payload, reason, status FROM suggestions").fetchall()
    suggestions = {uuid.UUID(str(row[0])): {"title": row[1], "payload": json.loads(row[2]), "reason": json.loads(row[3]),
                            "status": row[4]} for row in rows}
    return {"out": done.stdout, "pushes": pushes, "suggestions": suggestions, "var_dir": var_dir}


def _push_of(run: dict[str, Any], car: str) -> tuple[dict[str, Any], dict[str, Any]]:
    found = [push for push in run["pushes"] if car in push["title"]]
    assert len(found) == 1, run["pushes"]
    return found[0], run["suggestions"][uuid.UUID(found[0]["suggestion_id"])]


def test_the_fortwo_gets_a_push_with_its_spots_and_the_rule_as_reason(run):
    push, suggestion = _push_of(run, "smart fortwo")
    assert push["title"] == suggestion["title"] == "5 spots your smart fortwo fits near your destination"
    assert push["body"].startswith("The nearest is 8 m from it")
    assert suggestion["status"] == "delivered"
    assert suggestion["reason"]["rule"]["name"] == "small spots before arrival"
    assert suggestion["reason"]["trigger"]["event"] == "trip.approaching"
    assert suggestion["reason"]["facts"] == {"product.attributes.length_m": 2.69}
    spots = suggestion["payload"]["spots"]
    assert len(spots) == 5 and all(spot["length_m"] >= FORTWO_NEEDS_M for spot in spots)
    assert [spot["distance_m"] for spot in spots] == sorted(spot["distance_m"] for spot in spots)
    assert "small spots before arrival" in run["out"]
    assert push["title"] in run["out"] and push["body"] in run["out"]


def test_the_long_vehicle_gets_other_spots_without_the_short_curbs(run):
    _, small = _push_of(run, "smart fortwo")
    push, long = _push_of(run, "Ford F-150")
    assert long["reason"]["rule"]["name"] == "spots before arrival"
    small_ids = [spot["id"] for spot in small["payload"]["spots"]]
    long_spots = long["payload"]["spots"]
    assert [spot["id"] for spot in long_spots] != small_ids
    assert all(spot["length_m"] >= F150_NEEDS_M for spot in long_spots)
    only_small = [spot for spot in small["payload"]["spots"] if spot["length_m"] < F150_NEEDS_M]
    assert only_small, "the fortwo's push should hold a curb too short for the F-150"
    assert not {spot["id"] for spot in only_small} & {spot["id"] for spot in long_spots}
    for spot in only_small:
        assert f"only the fortwo fits curb #{spot['source']['feature_id']}" in run["out"]


def test_sending_the_same_events_again_changes_nothing_and_the_files_are_named(run):
    assert len(run["pushes"]) == 2 and len(run["suggestions"]) == 2
    assert "accepted 0; suggestions 1 → 1; push lines 2 → 2" in run["out"]
    assert str(run["var_dir"] / "pushes.jsonl") in run["out"]


def test_it_refuses_a_var_dir_that_is_not_empty(tmp_path):
    (tmp_path / "smartsvc.db").write_text("someone's data")
    done = _demo("--var-dir", str(tmp_path))
    assert done.returncode != 0
    assert "not empty" in done.stderr
    assert (tmp_path / "smartsvc.db").read_text() == "someone's data"
