"""The benchmarks run (tiny sizes) and write their results: CI keeps bench/ from rotting.

Runs ``python -m bench --smoke`` exactly as ``make bench-smoke`` does, in a
child process, with the results written to a temporary directory. It checks
that every benchmark ran and wrote the keys BENCHMARKS.md asks for — never a
timing: figures on a shared machine are for BENCHMARKS.md, not for asserts.

ogr2ogr (Debian ``gdal-bin``), wrk and PostgreSQL+PostGIS are installed by
``make test`` (its ``bench-sysdeps`` prerequisite); when they are missing this
test fails and says so, it does not skip.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.servers import REPO_ROOT

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    for program, package in (("ogr2ogr", "gdal-bin"), ("wrk", "wrk")):
        if shutil.which(program) is None:
            pytest.fail(f"{program} is missing: run `make test` (it installs {package} via bench-sysdeps)",
                        pytrace=False)
    out = tmp_path_factory.mktemp("bench-results")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSVC_")}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--no-install", "--out", str(out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=480, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"python -m bench --smoke failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    found = {path.name: json.loads(path.read_text()) for path in out.glob("*.json")}
    # Every registered benchmark writes one file; these are checked in detail below.
    assert {"search-smoke.json", "import-smoke.json", "http-smoke.json", "geofences-smoke.json",
            "context-smoke.json", "push-smoke.json", "webhooks-smoke.json"} <= set(found), \
        sorted(found)
    return found


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _latency(summary: dict) -> None:
    assert summary["n"] > 0
    assert _finite(summary["p50_ms"]) and _finite(summary["p99_ms"])


def _common(record: dict, name: str) -> None:
    assert record["benchmark"] == name and record["smoke"] is True
    machine = record["machine"]
    assert machine["cores"] >= 1 and machine["memory_gib"] > 0 and "cpu_model" in machine
    assert {"params", "results", "ratios", "targets"} <= set(record)
    for target in record["targets"].values():
        assert {"measured", "met"} <= set(target) and ({"target_max", "target_min"} & set(target))


def test_search_benchmark_ran_against_every_reference(smoke_results):
    record = smoke_results["search-smoke.json"]
    _common(record, "search")
    assert record["versions"]["postgis"]
    sizes = record["results"]["sizes"]
    assert [int(n) for n in sizes] == record["params"]["sizes"]
    for size in sizes.values():
        assert size["hits_mean"] > 0
        for vehicle in ("smart_fortwo", "normal_car"):
            _latency(size["ours"][vehicle])
            assert size["ours"][vehicle]["results_mean"] > 0
            _latency(size["naive_numpy"][vehicle])
            _latency(size["postgis"][vehicle])
        _latency(size["ours_cold_cache"]["smart_fortwo"])
        _latency(size["postgis"]["server_execution"]["smart_fortwo"])
        # The references answer the same question: the naive scan gives our exact top 20, PostGIS nearly.
        assert size["naive_numpy"]["same_results_as_ours"] is True
        assert size["postgis"]["result_overlap_with_ours"] > 0.8
        stages = size["stages"]
        for key in ("lookup_ms", "distance_and_cut_ms", "rank_fit_allowed_results_ms", "serialize_20_dicts_ms"):
            assert _finite(stages[key])
    smallest = sizes[str(min(record["params"]["sizes"]))]
    _latency(smallest["naive_geopy"]["smart_fortwo"])
    for vehicle in ("smart_fortwo", "normal_car"):
        ratios = record["ratios"][vehicle]
        for key in ("postgis_p50_over_ours_p50", "naive_numpy_p50_over_ours_p50", "ours_p50_largest_over_smallest"):
            assert _finite(ratios[key])
    assert {"p50_ms_at_largest", "scale_largest_over_smallest", "speedup_vs_postgis_p50"} <= set(record["targets"])


def test_import_benchmark_read_every_feature_and_ran_ogr2ogr(smoke_results):
    record = smoke_results["import-smoke.json"]
    _common(record, "import")
    n = record["params"]["features"]
    results = record["results"]
    ours = results["ours"]
    assert ours["features"] == ours["spots"] == n and ours["rejected"] == 0
    assert _finite(ours["read_s"]) and ours["peak_rss_bytes"] > 0
    ogr = results["ogr2ogr_postgis"]
    assert ogr["rows"] == n and ogr["gist_index"] is True and ogr["peak_rss_bytes"] > 0
    assert results["service_import"]["status"] in ("pending", "measured", "failed", "skipped")
    # The documented `smartsvc import` into the embedded database, end to end, every feature stored.
    assert results["service_import_sqlite"]["status"] == "measured"
    assert results["service_import_sqlite"]["rows"] == min(n, record["params"]["service_features"])
    assert _finite(record["ratios"]["ours_read_over_ogr2ogr_wall"])
    assert {"read_seconds_per_million", "peak_rss_bytes"} <= set(record["targets"])



def _load(summary: dict) -> None:
    assert summary["requests"] > 0 and _finite(summary["rps"]) and summary["rps"] > 0
    assert _finite(summary["p50_ms"]) and _finite(summary["p99_ms"])
    assert sum(summary["errors"].values()) == 0, summary["errors"]  # no refused, failed or non-2xx request


def test_http_benchmark_served_the_search_and_the_ceiling_with_every_worker_warm(smoke_results):
    record = smoke_results["http-smoke.json"]
    _common(record, "http")
    params, results = record["params"], record["results"]
    sqlite = results["sqlite"]
    assert sqlite["stored"]["spots"] == params["spots"]
    # The index was built once, in the gunicorn master before it forked; the workers answered from the
    # copy they inherited (none built its own), and none was rebuilt during the runs.
    warm = sqlite["warm_up"]
    assert warm["built_in_master"] is True and warm["worker_builds"] == 0
    assert [b["spots"] for b in warm["builds"]] == [params["spots"]]
    assert len(results["index_build_s_per_process"]) == 1
    assert sqlite["during_load"]["index_rebuilds"] == 0
    assert all(0 < n <= params["limit"] for n in sqlite["items_per_answer_first_20"])
    # The ceiling answers a body of the same size as ours.
    assert abs(sqlite["ceiling_response_bytes"] - sqlite["response_bytes"]) < 0.2 * sqlite["response_bytes"]
    for level in sqlite["load"].values():
        _load(level["ceiling"])
        _load(level["ours"])
    stages = sqlite["in_process"]["stages"]
    for key in ("authenticate", "product_lookup", "index_staleness_check", "search", "serialise_to_dicts",
                "json_encode", "whole_request_test_client", "ceiling_whole_request_test_client",
                "hot_path_args", "hot_path_search_spots_for_token"):
        _latency(stages[key])
    postgres = results["postgres"]
    assert postgres["stored"]["spots"] == params["postgis_spots"] and record["versions"]["postgis"]
    for name in ("ceiling", "postgis", "index"):
        _load(postgres["load"]["saturated"][name])
    # Both search paths give the same spots (the order of equidistant ones may differ, and a near-tie
    # on the sphere and the spheroid may swap the 20th).
    compared = postgres["answers_compared"]
    assert compared["queries"] > 0 and compared["same_set"] >= 0.8 * compared["queries"]
    for key in ("ours_over_ceiling_rps_saturated", "postgres_postgis_over_ceiling_rps",
                "postgres_index_over_ceiling_rps"):
        assert _finite(record["ratios"][key])
    assert {"rps_over_ceiling", "p99_ms"} <= set(record["targets"])


def test_geofence_benchmark_evaluated_points_beside_postgis(smoke_results):
    record = smoke_results["geofences-smoke.json"]
    _common(record, "geofences")
    results = record["results"]
    assert results["vertices_total"] > 0
    for key in ("evaluate", "containing"):
        _latency(results["ours"][key])
    assert _finite(results["ours"]["evaluate"]["evals_per_s"]) and results["ours"]["evaluate"]["evals_per_s"] > 0
    _latency(results["postgis"]["evaluate"])
    _latency(results["postgis"]["contains"])
    assert _finite(record["ratios"]["postgis_contains_p50_over_ours_containing_p50"])
    assert {"evaluate_evals_per_s", "evaluate_many_evals_per_s"} <= set(record["targets"])


def test_context_benchmark_ran_end_to_end_on_both_deployments_and_lost_nothing(smoke_results):
    record = smoke_results["context-smoke.json"]
    _common(record, "context")
    for deployment in ("postgres-redis", "embedded"):
        result = record["results"][deployment]
        assert result["load"]["events_accepted"] == result["load"]["events_sent"] > 0
        _latency(result["load"]["latency"])
        counts = result["counts"]
        assert counts["context_events"] == result["events_sent_in_all"]
        assert counts["triggers"] > 0 and counts["triggers_unprocessed"] == 0 and counts["outbox_uncompleted"] == 0
        assert record["targets"][f"{deployment}_lost"]["measured"] == 0


def test_push_benchmark_delivered_every_notification_through_the_fcm_provider(smoke_results):
    record = smoke_results["push-smoke.json"]
    _common(record, "push")
    results = record["results"]
    for ceiling in results["server_ceiling"].values():  # the lean server and the tests' fake, both under wrk
        assert ceiling["requests"] > 0 and ceiling["non_2xx"] == 0 and _finite(ceiling["rps"])
    for run in [*results["provider_alone"], results["provider_alone_fake_fcm"]]:
        assert run["ok"] == run["items"] > 0  # FCM accepted every message the provider sent
    e2e = results["end_to_end_postgres"]
    for run in [*e2e["layouts"], e2e["wide_users"], results["end_to_end_sqlite"]]:
        # Every device got its push: an attempt row `sent` per notification, each suggestion delivered, each
        # outbox message completed, and the server accepted exactly that many messages.
        assert run["complete"] is True
        assert run["notifications"] == run["users"] * run["devices_per_user"] == run["server_accepted"]
        _latency(run["latency"])
    profile = results["where_time_goes"]
    assert profile["counts"]["attempts_sent"] == \
        record["params"]["profile_suggestions"] * record["params"]["devices_per_user"]
    for stage in ("claim", "send", "finish", "settle"):
        _latency(profile["stages_ms"][stage])
    assert _finite(record["ratios"]["end_to_end_over_server_ceiling"])
    assert {"notifications_per_s", "provider_alone_notifications_per_s"} <= set(record["targets"])


def test_webhooks_benchmark_delivered_signed_webhooks_through_the_workers(smoke_results):
    record = smoke_results["webhooks-smoke.json"]
    _common(record, "webhooks")
    phases = record["results"]["phases"]
    for name in ("burst", "paced", "with-refusing"):
        # Every event reached the healthy endpoint once, through the outbox, Celery and send_webhook.
        healthy = phases[name]["healthy"]
        assert healthy["received"] == healthy["unique"] == phases[name]["producer"]["events"] > 0
        assert phases[name]["healthy_db"].get("delivered") == healthy["received"]
        _latency(healthy["latency"])
    assert phases["with-refusing"]["dead_db"]["attempts"] > 0
    backlog = record["results"]["backlog"]  # a queue drained by a freshly started worker: the capacity
    assert backlog["received"] == backlog["unique"] == backlog["events"] == backlog["db"]["delivered"] > 0
    assert backlog["drain_deliveries_per_s"] > 0
    assert record["targets"]["signatures_bad"]["checked"] > 0 and record["targets"]["signatures_bad"]["measured"] == 0
    in_process = record["results"]["in_process"]
    for mode in ("one_by_one", "batched"):  # deliver_webhook, and the batches webhook_batch delivers
        assert in_process[mode]["delivered"] == in_process[mode]["deliveries"] > 0
    assert {"deliveries_per_s", "p99_event_to_delivery_s", "isolation_with-hanging"} <= set(record["targets"])
