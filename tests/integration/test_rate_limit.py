"""The API's rate limit as a caller sees it: per credential and endpoint, headers, 429 with Retry-After."""

from __future__ import annotations

import time

from tests.support.checks import problem
from tests.support.factories import api_key, bearer, make_app, make_settings


def test_every_counted_answer_says_the_budget_left(tmp_path):
    app = make_app(make_settings(tmp_path / "var", rate_limit="5/minute"))
    client = app.test_client()
    key = api_key(app, "app")

    first = client.get("/v1/users", headers=bearer(key))
    second = client.get("/v1/users", headers=bearer(key))

    assert first.headers["X-RateLimit-Limit"] == "5"
    assert [first.headers["X-RateLimit-Remaining"], second.headers["X-RateLimit-Remaining"]] == ["4", "3"]
    assert time.time() < int(first.headers["X-RateLimit-Reset"]) <= time.time() + 61
    assert "Retry-After" not in second.headers


def test_each_endpoint_has_its_own_budget_and_unknown_routes_cost_nothing(tmp_path):
    app = make_app(make_settings(tmp_path / "var", rate_limit="2/minute"))
    client = app.test_client()
    key = api_key(app, "app")

    assert [client.get("/nope", headers=bearer(key)).status_code for _ in range(3)] == [404] * 3
    assert [client.get("/v1/users", headers=bearer(key)).status_code for _ in range(3)] == [200, 200, 429]
    # another endpoint, same credential: a budget of its own
    assert client.get("/v1/health", headers=bearer(key)).status_code == 200


def test_the_tightest_limit_answers_and_the_429_says_when_to_retry(tmp_path):
    app = make_app(make_settings(tmp_path / "var", rate_limit="3/minute;100/hour"))
    client = app.test_client()
    key = api_key(app, "app")

    ok = [client.get("/v1/users", headers=bearer(key)) for _ in range(3)]
    limited = client.get("/v1/users", headers=bearer(key))

    assert [r.headers["X-RateLimit-Limit"] for r in ok] == ["3", "3", "3"]
    problem(limited, 429)
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-Request-Id"]


def test_anonymous_callers_are_counted_by_address(tmp_path):
    app = make_app(make_settings(tmp_path / "var", rate_limit="2/minute"))
    client = app.test_client()
    here = {"REMOTE_ADDR": "10.0.0.1"}

    statuses = [client.get("/v1/health", environ_base=here).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert client.get("/v1/health", environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code == 200


def test_no_cookie_session_is_kept(tmp_path):
    app = make_app(make_settings(tmp_path / "var"))
    client = app.test_client()

    response = client.get("/v1/users", headers=bearer(api_key(app, "app")))

    assert response.status_code == 200 and "Set-Cookie" not in response.headers
