"""Error documents: field names users can act on."""

from __future__ import annotations

import marshmallow as ma
import pytest

from smartsvc.errors import InvalidInput, Unauthorized, flatten_messages, problem


class _Keys(ma.Schema):
    p256dh = ma.fields.String(required=True)


class _Sub(ma.Schema):
    endpoint = ma.fields.Url(required=True)
    keys = ma.fields.Nested(_Keys, required=True)


class _Body(ma.Schema):
    name = ma.fields.String(required=True)
    subscription = ma.fields.Nested(_Sub)
    pressures = ma.fields.List(ma.fields.Float())
    items = ma.fields.List(ma.fields.Nested(_Keys))

    @ma.validates_schema
    def _check(self, data, **kwargs):
        if data.get("name") == "forbidden":
            raise ma.ValidationError("name and subscription do not go together")


def _errors(payload):
    with pytest.raises(ma.ValidationError) as excinfo:
        _Body().load(payload)
    return flatten_messages(excinfo.value.messages)


def test_nested_marshmallow_errors_become_dotted_field_names():
    errors = _errors({
        "subscription": {"endpoint": "not a url", "keys": {}},
        "pressures": [2.1, "flat"],
        "items": [{}, {"p256dh": "x"}],
        "typo": 1,
    })

    assert set(errors) == {
        "name", "subscription.endpoint", "subscription.keys.p256dh", "pressures.1", "items.0.p256dh", "typo",
    }
    assert errors["typo"] == ["Unknown field."]
    assert errors["name"] == ["Missing data for required field."]
    assert all(isinstance(m, str) for msgs in errors.values() for m in msgs)


def test_schema_level_errors_are_reported_on_the_body():
    assert _errors({"name": "forbidden"}) == {"body": ["name and subscription do not go together"]}


def test_schema_level_errors_of_a_nested_object_name_that_object():
    assert flatten_messages({"quiet_hours": {"_schema": ["end before start"]}}) == {
        "quiet_hours": ["end before start"]
    }


def test_a_plain_message_or_list_is_about_the_body():
    assert flatten_messages(["Invalid input type."]) == {"body": ["Invalid input type."]}
    assert flatten_messages("boom") == {"body": ["boom"]}


def test_problem_document_shape():
    body = problem(422, "Unprocessable Content", "limit: too big", errors={"limit": ["too big"]}, request_id="r1")

    assert body == {
        "type": "about:blank", "title": "Unprocessable Content", "status": 422, "detail": "limit: too big",
        "errors": {"limit": ["too big"]}, "request_id": "r1",
    }
    assert "errors" not in problem(404, "Not Found", "gone")


def test_invalid_input_names_its_field():
    error = InvalidInput("time_zone", "is not an IANA time zone")

    assert error.status == 422
    assert error.errors == {"time_zone": ["is not an IANA time zone"]}
    assert "time_zone" in error.detail


def test_unauthorized_asks_for_a_bearer_token():
    error = Unauthorized("missing token")

    assert error.status == 401
    assert error.headers["WWW-Authenticate"].startswith("Bearer")
