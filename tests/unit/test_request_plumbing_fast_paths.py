"""The cheaper request plumbing of GET /v1/spots gives exactly what the general code gives (BENCHMARKS.md, 2)."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import random
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from werkzeug.datastructures import MultiDict

from smartsvc.http.requests import new_request_id
from smartsvc.logging_setup import (JsonFormatter, LineHandler, PseudonymFilter, request_id_var, user_pseudonym,
                                    utc_timestamp_ms)

KEY = "unit-test-secret-0123456789abcdef0123456789"


def _iso_ms(created: float) -> str:
    return datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds")


def test_log_timestamps_are_those_of_datetime_isoformat_including_rounding_at_the_edges():
    rng = random.Random(7)
    base = 1_764_248_235
    stamps = [rng.uniform(0, 4e9) for _ in range(20_000)] + [rng.uniform(-1e6, 0) for _ in range(500)]
    for second in range(base - 2, base + 3):
        for fraction in (0.0, 0.0005, 0.0000004999, 0.0000005, 0.5, 0.999, 0.9995, 0.9999994999, 0.9999995,
                         0.9999996):
            stamps.append(second + fraction)
    stamps += [math.nextafter(float(base), 0.0), math.nextafter(float(base), math.inf), 0.0, 86_399.9999996]

    assert [utc_timestamp_ms(t) for t in stamps] == [_iso_ms(t) for t in stamps]


def test_log_timestamps_are_right_in_every_thread():
    stamps = [1_764_248_235.5 + i for i in range(200)]
    seen: list[bool] = []

    def write() -> None:
        seen.append([utc_timestamp_ms(t) for t in stamps] == [_iso_ms(t) for t in stamps])

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [True] * 4


def test_the_pseudonym_filter_writes_user_pseudonym():
    filter_ = PseudonymFilter(KEY)
    for user_id in (uuid.uuid4(), uuid.uuid4(), "not-a-uuid", "ünïcode"):
        record = logging.makeLogRecord({"principal": f"user:{user_id}", "user_id": user_id})
        filter_.filter(record)
        assert record.principal == record.user_id == user_pseudonym(KEY, user_id)


def _handler(stream: io.StringIO) -> LineHandler:
    handler = LineHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(PseudonymFilter(KEY))
    return handler


def test_the_line_handler_writes_what_a_stream_handler_writes():
    ours, theirs = io.StringIO(), io.StringIO()
    reference = logging.StreamHandler(theirs)
    reference.setFormatter(JsonFormatter())
    reference.addFilter(PseudonymFilter(KEY))
    record = logging.makeLogRecord({"name": "smartsvc.access", "levelno": logging.INFO, "levelname": "INFO",
                                    "msg": "request", "method": "GET", "path": "/v1/spots", "status": 200,
                                    "principal": f"user:{uuid.uuid4()}", "created": 1_764_248_235.25})

    assert _handler(ours).handle(logging.makeLogRecord(record.__dict__))
    assert reference.handle(logging.makeLogRecord(record.__dict__))
    assert ours.getvalue() == theirs.getvalue()
    assert ours.getvalue().endswith("}\n") and json.loads(ours.getvalue())["ts"] == _iso_ms(1_764_248_235.25)


def test_the_line_handler_keeps_each_line_whole_under_threads():
    stream = io.StringIO()
    logger = logging.getLogger(f"test.lines.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(_handler(stream))

    def log_many(n: int) -> None:
        for i in range(300):
            logger.warning("line", extra={"writer": n, "i": i, "pad": "x" * 200})

    threads = [threading.Thread(target=log_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1200
    assert sorted((line["writer"], line["i"]) for line in lines) == [(n, i) for n in range(4) for i in range(300)]


class _CountingStream(io.StringIO):
    """Counts the writes: buffered lines are written together."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _record(level: int, n: int) -> logging.LogRecord:
    return logging.makeLogRecord({"name": "smartsvc.access", "levelno": level, "levelname": logging.getLevelName(level),
                                  "msg": "request", "n": n})


def test_buffered_lines_are_written_together_in_order_and_warnings_at_once():
    stream = _CountingStream()
    handler = _handler(stream)
    handler.buffer_lines(interval_s=3600)  # the flusher never runs here: only warnings and write_kept write
    for n in range(50):
        handler.handle(_record(logging.INFO, n))
    assert stream.getvalue() == "" and stream.writes == 0  # kept, not written one by one

    handler.handle(_record(logging.WARNING, 50))  # written at once, after what was kept
    assert [json.loads(line)["n"] for line in stream.getvalue().splitlines()] == list(range(51))
    assert stream.writes == 1

    handler.handle(_record(logging.INFO, 51))
    handler.close()  # a replaced handler writes what it kept
    assert [json.loads(line)["n"] for line in stream.getvalue().splitlines()] == list(range(52))


def test_a_kept_record_is_written_as_it_was_when_logged():
    # Kept records are formatted by the flusher, in another thread and later: the request id, the message's
    # arguments and the pseudonym must still be those of the moment of logging.
    stream = io.StringIO()
    handler = _handler(stream)
    handler.buffer_lines(interval_s=3600)
    logger = logging.getLogger(f"test.kept.{uuid.uuid4().hex}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    user_id = uuid.uuid4()
    found = ["a"]
    token = request_id_var.set("req-1")
    try:
        logger.info("found %s", found, extra={"principal": f"user:{user_id}"})
    finally:
        request_id_var.reset(token)
    found.append("b")  # changed after logging
    with pytest.raises(ZeroDivisionError):
        try:
            1 / 0
        except ZeroDivisionError:
            logger.info("failed", exc_info=True)  # an exception is formatted at once, after what is kept
            raise
    assert [json.loads(line)["msg"] for line in stream.getvalue().splitlines()] == ["found ['a']", "failed"]

    handler.close()
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["request_id"] == "req-1" and "request_id" not in second
    assert first["principal"] == user_pseudonym(KEY, user_id)
    assert "_request_id" not in first and "ZeroDivisionError" in second["exc"]


def test_no_kept_line_is_lost_while_the_flusher_takes_them_out():
    # Request threads keep records while the flusher swaps the list out every millisecond.
    stream = io.StringIO()
    handler = _handler(stream)
    handler.buffer_lines(interval_s=0.001)

    def log_many(n: int) -> None:
        for i in range(3000):
            handler.handle(logging.makeLogRecord({"name": "smartsvc.access", "levelno": logging.INFO,
                                                  "levelname": "INFO", "msg": "request", "writer": n, "i": i}))

    threads = [threading.Thread(target=log_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert sorted((line["writer"], line["i"]) for line in lines) == [(n, i) for n in range(4) for i in range(3000)]
    for n in range(4):
        assert [line["i"] for line in lines if line["writer"] == n] == list(range(3000))  # in order


def test_a_forked_child_writes_its_kept_lines():
    stream_path = Path(tempfile.mkdtemp()) / "lines"
    with open(stream_path, "w") as stream:
        handler = _handler(stream)  # type: ignore[arg-type]
        handler.buffer_lines(interval_s=3600)
        handler._write_lock.acquire()  # as if the parent's flusher was writing at the fork
        child = os.fork()
        if child == 0:
            try:
                handler.handle(_record(logging.INFO, 1))
                handler.write_kept()
                stream.flush()
            finally:
                os._exit(0)
        handler._write_lock.release()
        for _ in range(500):  # polled: a child stuck on the inherited lock is killed, not waited for forever
            done, status = os.waitpid(child, os.WNOHANG)
            if done:
                break
            time.sleep(0.02)
        else:
            os.kill(child, 9)
            os.waitpid(child, 0)
            pytest.fail("the forked child hung on the write lock held at the fork")
    assert status == 0
    assert [json.loads(line)["n"] for line in stream_path.read_text().splitlines()] == [1]


def test_buffered_lines_reach_the_stream_within_the_interval_without_a_warning():
    stream = _CountingStream()
    handler = _handler(stream)
    handler.buffer_lines(interval_s=0.05)
    for n in range(20):
        handler.handle(_record(logging.INFO, n))
    for _ in range(200):  # polled, not timed
        if stream.getvalue().count("\n") == 20:
            break
        time.sleep(0.02)
    assert [json.loads(line)["n"] for line in stream.getvalue().splitlines()] == list(range(20))
    assert stream.writes < 20
    handler.close()


def test_a_filter_that_refuses_a_record_writes_nothing():
    stream = io.StringIO()
    handler = _handler(stream)
    handler.addFilter(lambda record: False)

    assert not handler.handle(logging.makeLogRecord({"msg": "dropped"}))
    assert stream.getvalue() == ""


def test_a_kept_record_whose_arguments_do_not_fit_is_reported_not_raised(capsys):
    # A logging call is never allowed to fail the code that logs: a StreamHandler reports the error on stderr.
    stream = io.StringIO()
    handler = _handler(stream)
    handler.buffer_lines(interval_s=3600)
    record = logging.makeLogRecord({"levelno": logging.INFO, "levelname": "INFO", "msg": "%s and %s", "args": (1,)})

    assert handler.handle(record) is False
    handler.handle(_record(logging.INFO, 1))
    handler.close()
    assert [json.loads(line)["n"] for line in stream.getvalue().splitlines()] == [1]
    assert "Logging error" in capsys.readouterr().err


def test_request_ids_look_like_uuid4_hex():
    ids = {new_request_id() for _ in range(2000)}

    assert len(ids) == 2000
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert value == parsed.hex and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize("query", [
    {"lat": "٤٨.٨٥", "lon": "2.35"},  # float() reads other scripts' digits, as marshmallow does
    {"lat": "48.85", "lon": "2.35", "product_id": "{0190f2c4-5e2b-7cc1-9a3e-3c1f7d2b9a10}"},
    {"lat": "48.85", "lon": "2.35", "product_id": "urn:uuid:0190f2c4-5e2b-7cc1-9a3e-3c1f7d2b9a10"},
    {"lat": "48.85", "lon": "2.35", "product_id": "0190f2c45e2b7cc19a3e3c1f7d2b9a10"},
    {"lat": "48.85", "lon": "2.35", "at": "20250603T100000+0200"},
    {"lat": "48.85", "lon": "2.35", "at": "2025-06-03 10:00:00.123456-03:30"},
    {"lat": "48.85", "lon": "2.35", "at": "2999-12-31T23:59:59+14:00"},
    {"lat": "48.85", "lon": "2.35", "at": "3000-01-01T00:00:00Z"},
    {"lat": "48.85", "lon": "2.35", "at": "2025-06-03"},
    {"lat": "48.85", "lon": "2.35", "duration_min": " 60 ", "limit": "1_0"},
    {"lat": "48.85", "lon": "2.35", "duration_min": "0"}, {"lat": "48.85", "lon": "2.35", "duration_min": "-1"},
    {"lat": "48.85", "lon": "2.35", "radius_m": "5000.0000001"}, {"lat": "48.85", "lon": "2.35", "radius_m": "-0"},
    {"lat": "48.85", "lon": "2.35", "radius_m": "1e-300"}, {"lat": "1e999", "lon": "2.35"},
    {"lat": "-inf", "lon": "2.35"}, {"lat": "", "lon": "2.35"}, {"lat": "48.85", "lon": "0x10"},
    {"lat": "48.85", "lon": "2.35", "limit": "1e2"}, {"lat": "48.85", "lon": "2.35", "limit": "+100"},
    {"lat": "48.85", "lon": "2.35", "product_id": ""}, {"lat": "48.85", "lon": "2.35", "at": "now"},
    {"lat": "48.85", "lon": "2.35\ud800"},
])
def test_the_hot_path_arguments_match_the_schema_on_odd_input(query):
    import marshmallow as ma

    from smartsvc.http.spots import SpotSearchArgs, _fast_args

    query = {"product_id": "0190F2C4-5E2B-7CC1-9A3E-3C1F7D2B9A10", **query}
    try:
        expected = SpotSearchArgs().load({k: v for k, v in query.items() if k in SpotSearchArgs().fields})
    except ma.ValidationError:
        expected = None
    if any("\ud800" in value for value in query.values()):
        expected = None  # the standard parser answers 422 naming the field

    assert _fast_args(MultiDict(query)) == expected


def test_the_hot_path_arguments_match_the_schema_on_random_input():
    import marshmallow as ma

    from smartsvc.http.spots import SpotSearchArgs, _fast_args

    rng = random.Random(11)
    pieces = ["0", "1", "-", "+", ".", "e", "5", "9", "_", " ", "inf", "nan", "T", ":", "Z", "2025-06-03", "x"]
    fields = list(SpotSearchArgs().fields)
    schema = SpotSearchArgs()
    for _ in range(3000):
        query = {"lat": "48.85", "lon": "2.35", "product_id": str(uuid.UUID(int=rng.getrandbits(128)))}
        name = rng.choice(fields)
        query[name] = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        try:
            expected = schema.load(query)
        except ma.ValidationError:
            expected = None
        assert _fast_args(MultiDict(query)) == expected, query


def test_the_access_record_is_the_record_log_info_would_write(monkeypatch):
    from smartsvc.http import requests as plumbing

    monkeypatch.setattr(logging, "_srcfile", None)  # as configure_logging sets it: no caller look-up
    fields = {"method": "GET", "path": "/v1/spots", "status": 200, "duration_ms": 0.25, "principal": "user:x"}
    before = time.time()
    record = plumbing._access_record(*fields.values())
    expected = plumbing.log.makeRecord(plumbing.log.name, logging.INFO, "(unknown file)", 0, "request", None, None,
                                       "(unknown function)", fields)
    times = ("created", "msecs", "relativeCreated")

    assert {k: v for k, v in record.__dict__.items() if k not in times} == \
        {k: v for k, v in expected.__dict__.items() if k not in times}
    assert before <= record.created <= time.time()
    assert record.msecs == int((record.created - int(record.created)) * 1000)
    assert record.getMessage() == "request" and record.process == os.getpid()
    line = json.loads(JsonFormatter().format(record))
    assert {k: line[k] for k in fields} == fields and line["level"] == "INFO" and line["logger"] == "smartsvc.access"


def test_the_hot_path_reads_a_query_string_as_werkzeug_does_or_leaves_it_to_werkzeug():
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from smartsvc.http.spots import _single_valued_query

    rng = random.Random(5)
    pieces = ["lat", "lon", "=", "=", "&", "&&", "+", "%", "%2B", "%3A", "%3a", "%00", "%C3%A9", "%FF", "%E2%82",
              "%zz", "%2", "1", "52.5", "-", ";", "?", "#", " ", "é", "x", "at", "2026-11-27T10:11:00"]
    queries = ["lat=52.51&lon=13.42&at=2026-11-27T10%3A11%3A00%2B01%3A00&limit=20", "", "&", "a", "a=", "=a",
               "a=1&a=2", "a=1&&b=2", "a+b=c+d", "a=%FF%FE", "a=%C3%A9", "a=é"]
    queries += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(4000)]
    for query in queries:
        environ = EnvironBuilder(path="/v1/spots").get_environ()
        environ["QUERY_STRING"] = query.encode("utf-8").decode("latin-1")  # what a WSGI server hands over
        expected = Request(environ).args
        got = _single_valued_query(environ["QUERY_STRING"])
        if got is None:  # left to werkzeug: only for a repeated name or bytes outside ASCII
            assert not query.isascii() or any(len(values) > 1 for values in expected.listvalues()), query
        else:
            assert list(got.items()) == list(expected.items()), query


def test_the_hot_path_answers_a_repeated_or_non_ascii_query_through_werkzeug(monkeypatch):
    from smartsvc.http import spots

    query = {"product_id": "0190F2C4-5E2B-7CC1-9A3E-3C1F7D2B9A10", "lat": "48.85", "lon": "2.35"}
    expected = spots.SpotSearchArgs().load(query)
    assert spots._fast_args(spots._single_valued_query("&".join(f"{k}={v}" for k, v in query.items()))) == expected
    assert spots._single_valued_query("lat=48.85&lat=1") is None
    assert spots._single_valued_query("lat=48.85&note=\xc3\xa9") is None


def test_the_rate_limiter_counts_under_the_keys_limits_builds_and_forgets_callers(monkeypatch):
    from limits import parse_many

    from smartsvc import ratelimit

    limiter = ratelimit.RequestRateLimiter("100/hour;10/minute", "memory://", lambda: "unused")
    expected = tuple((item.key_for("cred:abc", "spots.Spots"), item.get_expiry(), item.amount)
                     for item in sorted(parse_many("100/hour;10/minute")))

    assert limiter._keys_for("cred:abc", "spots.Spots") == expected
    assert limiter._keys_for("cred:abc", "spots.Spots") is limiter._keys_for("cred:abc", "spots.Spots")
    later = time.monotonic() + ratelimit.KEYS_KEEP_S + 1
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: later)
    limiter._keys_for("addr:192.0.2.1", "spots.Spots")
    assert list(limiter._keys) == [("addr:192.0.2.1", "spots.Spots")]


def test_hooks_and_views_are_checked_for_async_once_not_on_every_request(client, monkeypatch):
    import flask.app

    checks: list[object] = []
    original = flask.app.iscoroutinefunction

    def counting(func: object) -> bool:
        checks.append(func)
        return original(func)

    monkeypatch.setattr(flask.app, "iscoroutinefunction", counting)
    assert client.get("/v1/health").status_code == 200
    first = len(checks)
    assert first > 0
    for _ in range(3):
        assert client.get("/v1/health").status_code == 200
    assert len(checks) == first  # the same hooks and view: nothing asked again


def test_an_async_view_is_still_run_as_flask_runs_it(app):
    async def coroutine_view() -> str:
        return "ran"

    def plain_view() -> str:
        return "ran"

    assert app.ensure_sync(plain_view) is plain_view and app.ensure_sync(plain_view) is plain_view
    try:
        wrapped = app.ensure_sync(coroutine_view)
    except RuntimeError as exc:  # Flask without its "async" extra refuses it, as it always did
        assert "async" in str(exc)
    else:
        assert wrapped is not coroutine_view and app.ensure_sync(coroutine_view) is not coroutine_view
