"""FCM HTTP v1: the message FCM gets (checked against Google's discovery document), the 4 KB limit, the answers."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from smartsvc.delivery import PushMessage
from smartsvc.delivery.fcm import apns_collapse_id, build_request, fit_fcm, fitted_request, interpret, payload_size
from tests.support.fcm_discovery import discovery_document, validate_send_request

AT = datetime(2025, 6, 2, 16, 30, tzinfo=timezone.utc)


def message(**changes) -> PushMessage:
    values = dict(user_id=uuid.uuid4(), device_id=uuid.uuid4(), platform="fcm", suggestion_id=uuid.uuid4(),
                  kind="spots_near_destination", title="3 spots that fit your car",
                  body="120 m from your destination, free until 18:00", collapse_key="spots:destination",
                  expires_at=AT + timedelta(minutes=45), at=AT, token="fcm-registration-token-1")
    values.update(changes)
    return PushMessage(**values)


def test_the_discovery_document_is_googles_fcm_v1():
    document = discovery_document()
    assert (document["name"], document["version"]) == ("fcm", "v1")
    assert document["resources"]["projects"]["resources"]["messages"]["methods"]["send"]["request"] == \
        {"$ref": "SendMessageRequest"}


def test_the_request_is_a_valid_send_request_with_collapse_key_ttl_and_priority():
    push = message()
    body = build_request(push)
    assert validate_send_request(body) == []
    sent = body["message"]
    assert sent["token"] == "fcm-registration-token-1"
    assert sent["notification"] == {"title": "3 spots that fit your car",
                                     "body": "120 m from your destination, free until 18:00"}
    assert sent["android"] == {"collapseKey": "spots:destination", "ttl": "2700s", "priority": "HIGH"}
    assert sent["apns"]["headers"] == {
        "apns-collapse-id": "spots:destination", "apns-expiration": str(int(push.expires_at.timestamp())),
        "apns-priority": "10", "apns-push-type": "alert"}
    assert sent["data"]["suggestion_id"] == str(push.suggestion_id)
    assert all(isinstance(value, str) for value in sent["data"].values())


def test_the_validator_refuses_what_google_refuses():
    good = build_request(message())
    cases = {
        "unknown field": ("android", {"collapseKey": "k", "colapse_key": "typo"}),
        "a number where a string goes": ("data", {"suggestion_id": 42}),
        "a priority FCM does not know": ("android", {"priority": "URGENT"}),
        "a TTL that is not a duration": ("android", {"ttl": "45 minutes"}),
        "a TTL as a number": ("android", {"ttl": 2700}),
        "an APNs header that is not a string": ("apns", {"headers": {"apns-priority": 10}}),
    }
    for case, (field, value) in cases.items():
        body = copy.deepcopy(good)
        body["message"][field] = value
        assert validate_send_request(body), case
    body = copy.deepcopy(good)
    body["message"]["topic"] = "news"  # a second target
    assert validate_send_request(body)
    # Google's JSON mapping takes the proto field names too.
    body = copy.deepcopy(good)
    body["message"]["android"] = {"collapse_key": "k", "ttl": "60s"}
    assert validate_send_request(body) == []


def test_a_collapse_key_longer_than_apns_allows_becomes_a_stable_64_byte_id():
    key = "spots:" + "ü" * 100
    first, again = apns_collapse_id(key), apns_collapse_id(key)
    assert first == again and len(first.encode()) <= 64
    assert apns_collapse_id(key + "x") != first
    assert validate_send_request(build_request(message(collapse_key=key))) == []


def test_a_long_body_is_trimmed_so_the_payload_stays_within_4_kb():
    push = message(body="Parkplatz in der Nähe " * 600, title="🚗 " * 10)
    fitted = fit_fcm(push)
    body = build_request(fitted)
    assert payload_size(body) <= 4096 < payload_size(build_request(push))
    assert validate_send_request(body) == []
    assert fitted.body.endswith("…") and push.body.startswith(fitted.body[:-1]) and len(fitted.body) > 1000
    assert fitted.title == push.title  # the body goes first
    data = body["message"]["data"]
    assert (data["suggestion_id"], data["collapse_key"]) == (str(push.suggestion_id), push.collapse_key)


@pytest.mark.parametrize("body", ["120 m from your destination", "Parkplatz in der Nähe " * 600])
def test_the_sent_request_is_the_fitted_message_s_request(body):
    push = message(body=body)
    assert fitted_request(push) == build_request(fit_fcm(push))
    assert payload_size(fitted_request(push)) <= 4096


def test_a_message_over_4_kb_is_refused_by_the_validator():
    assert validate_send_request(build_request(message(body="x" * 5000)))


def test_ttl_is_what_is_left_until_expiry_and_never_negative():
    assert build_request(message(at=AT + timedelta(minutes=44, seconds=30)))["message"]["android"]["ttl"] == "30s"
    assert build_request(message(at=AT + timedelta(hours=2)))["message"]["android"]["ttl"] == "0s"


def google_error(status: int, code: str, error_code: str | None = None, message: str = "",
                 violations: list[str] | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    details: list[dict] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                            "errorCode": error_code}] if error_code else []
    if violations:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": f, "description": "bad"} for f in violations]})
    return httpx.Response(status, headers=headers or {}, content=json.dumps(
        {"error": {"code": status, "message": message, "status": code, "details": details}}).encode())


@pytest.mark.parametrize(("response", "dead", "retryable", "retry_after"), [
    (httpx.Response(200, json={"name": "projects/p/messages/1"}), False, False, None),
    (google_error(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found."), True, False, None),
    (google_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                  "The registration token is not a valid FCM registration token"), True, False, None),
    (google_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Invalid value", ["message.token"]),
     True, False, None),
    (google_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Invalid value", ["message.android.ttl"]),
     False, False, None),
    (google_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", headers={"Retry-After": "120"}), False, True, 120.0),
    (google_error(503, "UNAVAILABLE", "UNAVAILABLE"), False, True, None),
    (google_error(500, "INTERNAL", "INTERNAL", headers={"Retry-After": "7"}), False, True, 7.0),
    (google_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"), False, False, None),
    (httpx.Response(404, text="<html>Not Found</html>"), False, False, None),  # a wrong URL kills no token
])
def test_answers_map_to_dead_token_retry_or_failure(response, dead, retryable, retry_after):
    result = interpret(response, 12)
    assert result.ok is (response.status_code == 200)
    assert (result.token_dead, result.retryable, result.retry_after_s) == (dead, retryable, retry_after)
    assert (result.status_code, result.latency_ms) == (response.status_code, 12)
    if not result.ok:
        assert str(response.status_code) in result.error


def test_retry_after_as_an_http_date_is_honoured():
    when = datetime.now(timezone.utc) + timedelta(minutes=10)
    result = interpret(google_error(503, "UNAVAILABLE", headers={
        "Retry-After": when.strftime("%a, %d %b %Y %H:%M:%S GMT")}), 5)
    assert result.retryable and 500 < result.retry_after_s <= 600


def test_a_request_over_the_size_bound_but_within_4_kb_is_sent_whole():
    push = message(body="b" * 700)  # the quick bound cannot vouch for it; the encoding is well within 4 KB
    assert fitted_request(push)["message"]["notification"]["body"] == push.body
