"""Help on demand through the HTTP API (SQLite and PostgreSQL): the agent sees the context, the user gets a push.

What the agent notices is the case JSON of ``/v1/help/{id}``; what the
user notices is ``/v1/me/help/{id}`` and the push log (``var/pushes.jsonl``,
the log provider), with the push delivered from the outbox as the worker does.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from smartsvc.models import Interaction, OutboxMessage, SharingLedgerEntry
from smartsvc.services.telemetry import PROCESS_TASK, process_reading
from tests.support.factories import api_key, bearer, grant
from tests.support.suggestions import SuggestionWorld, suggestion_world

FORTWO = {"kind": "car", "brand": "smart", "name": "fortwo",
          "attributes": {"length_m": 2.69, "powertrain": "bev", "connectors": ["type2"]}}
BERLIN = (52.520008, 13.404954)


class HelpWorld(SuggestionWorld):
    """The suggestion world plus an agent key and help helpers."""

    agent: str = ""

    def product(self, user, battery_pct: float | None = None) -> str:
        model = self.client.post("/v1/catalog/models", headers=bearer(self.operator), json=FORTWO).get_json()
        product = self.client.post("/v1/me/products", headers=user.headers, json={"model_id": model["id"]})
        assert product.status_code == 201, product.get_json()
        product_id = product.get_json()["id"]
        if battery_pct is not None:
            grant(self.client, user, "telemetry")
            reading = self.client.post(f"/v1/me/products/{product_id}/telemetry", headers=user.headers,
                                       json={"at": "2026-11-24T10:00:00+01:00", "battery_pct": battery_pct})
            assert reading.status_code == 202, reading.get_json()
            with self.database.session() as session:
                messages = session.execute(select(OutboxMessage.id, OutboxMessage.payload).where(
                    OutboxMessage.task == PROCESS_TASK, OutboxMessage.completed_at.is_(None))).all()
            for outbox_id, payload in messages:  # the telemetry worker folds it into latest_telemetry
                process_reading(self.database, uuid.UUID(payload["reading_id"]), outbox_id)
        return product_id

    def context(self, user, *events: dict) -> None:
        response = self.client.post("/v1/me/context", headers=user.headers, json={"events": list(events)})
        assert response.status_code == 202, response.get_json()

    def ask(self, user, expect: int = 201, **body) -> dict:
        body = {"topic": "help", "message": "I need help", **body}  # API.md: topic and message are required
        response = self.client.post("/v1/me/help", headers=user.headers, json=body)
        assert response.status_code == expect, response.get_json()
        return response.get_json()

    def agent_get(self, path: str, expect: int = 200, key: str | None = None, **query) -> dict:
        response = self.client.get(f"/v1/help{path}", headers=bearer(key or self.agent), query_string=query)
        assert response.status_code == expect, response.get_json()
        return response.get_json()

    def agent_close(self, case_id: str, expect: int = 200, key: str | None = None) -> dict:
        response = self.client.patch(f"/v1/help/{case_id}", headers=bearer(key or self.agent),
                                     json={"status": "closed"})
        assert response.status_code == expect, response.get_json()
        return response.get_json()

    def agent_post(self, path: str, expect: int = 201, key: str | None = None, **body) -> dict:
        response = self.client.post(f"/v1/help{path}", headers=bearer(key or self.agent),
                                    json=body if body else None)
        assert response.status_code == expect, response.get_json()
        return response.get_json()

    def my_case(self, user, case_id: str, expect: int = 200) -> dict:
        response = self.client.get(f"/v1/me/help/{case_id}", headers=user.headers)
        assert response.status_code == expect, response.get_json()
        return response.get_json()


@pytest.fixture
def world(db_app) -> HelpWorld:
    base = suggestion_world(db_app)
    world = HelpWorld(base.app, base.client, base.operator, base.app_key)
    world.agent = api_key(db_app, "agent", "Anna (support)")
    return world


def at(minutes: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(minutes=minutes)).isoformat()


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_the_agent_sees_product_telemetry_screen_and_recent_context_and_the_user_gets_the_answer_pushed(world):
    alice = world.user("alice", devices=2)
    product_id = world.product(alice, battery_pct=8)
    suggestion_id = world.propose(alice, None, title="Charger 300 m away")
    world.deliver()
    world.context(alice, {"type": "app", "screen": "charging/flap", "at": at(1)})
    pushed_before = len(world.pushes())

    opened = world.ask(alice, message="The charging flap does not open", topic="charging")
    case_id = opened["id"]
    assert (opened["status"], opened["screen"], opened["product_id"]) == ("open", "charging/flap", product_id)
    assert [(m["author"], m["text"]) for m in opened["messages"]] == [("user", "The charging flap does not open")]

    queue = world.agent_get("", status="open")["items"]
    assert [item["id"] for item in queue] == [case_id]
    assert "charging" not in str(queue) and alice.id not in str(queue)  # nothing about the user until opened

    case = world.agent_get(f"/{case_id}")
    snapshot = case["snapshot"]
    assert case["user_id"] == alice.id
    [product] = snapshot["products"]
    assert (product["id"], product["name"], product["attributes"]["length_m"]) == (product_id, "fortwo", 2.69)
    assert product["latest_telemetry"]["battery_pct"]["value"] == 8
    assert snapshot["product_id"] == product_id
    assert (snapshot["screen"]["name"], snapshot["screen"]["source"]) == ("charging/flap", "context")
    assert [(s["id"], s["title"], s["status"]) for s in snapshot["suggestions"]] == \
        [(suggestion_id, "Charger 300 m away", "delivered")]
    assert "suggestion.created" in [i["kind"] for i in snapshot["interactions"]]
    assert (snapshot["location_shared"], snapshot["location"]) == (False, None)
    assert [m["text"] for m in case["messages"]] == ["The charging flap does not open"]

    answered = world.agent_post(f"/{case_id}/messages", text="Press the flap's left edge firmly.",
                                guidance={"screen": "charging", "highlight": "unlock_flap"})
    assert answered["status"] == "answered"
    assert world.deliver() >= 1
    pushes = world.pushes()[pushed_before:]
    assert len(pushes) == 2 and {p["user_id"] for p in pushes} == {alice.id}
    assert {(p["title"], p["body"]) for p in pushes} == \
        {("Support answered your question", "Press the flap's left edge firmly.")}

    mine = world.my_case(alice, case_id)
    assert [(m["author"], m["text"], m["guidance"]) for m in mine["messages"]] == [
        ("user", "The charging flap does not open", None),
        ("agent", "Press the flap's left edge firmly.", {"screen": "charging", "highlight": "unlock_flap"})]
    answer_push = world.get(alice, pushes[0]["suggestion_id"])
    assert answer_push["kind"] == "help_answer" and answer_push["payload"]["help_case_id"] == case_id
    assert answer_push["payload"]["guidance"] == {"screen": "charging", "highlight": "unlock_flap"}
    assert answer_push["reason"]["help_case"]["id"] == case_id

    first_answer = (parse(mine["metrics"]["first_answered_at"]) - parse(mine["created_at"])).total_seconds()
    assert mine["metrics"]["time_to_first_answer_s"] == pytest.approx(first_answer, abs=0.002)
    assert mine["metrics"]["messages_until_solved"] is None
    closed = world.agent_close(case_id)
    assert (closed["status"], closed["metrics"]["messages_until_solved"]) == ("closed", 2)
    assert world.agent_close(case_id)["closed_at"] == closed["closed_at"]
    assert world.my_case(alice, case_id)["metrics"]["messages_until_solved"] == 2

    with world.database.session() as session:
        kinds = session.scalars(select(Interaction.kind).where(
            Interaction.subject_id == uuid.UUID(case_id)).order_by(Interaction.id)).all()
        ledger = session.scalars(select(SharingLedgerEntry).where(
            SharingLedgerEntry.user_id == uuid.UUID(alice.id), SharingLedgerEntry.channel == "agent")).all()
    assert kinds == ["help.requested", "help.answered", "help.closed"]
    [entry] = ledger  # read, answered and closed by the same agent: data left to them once
    assert entry.recipient == "support agent Anna (support)" and entry.reference_id == case_id
    assert {"snapshot.products[].latest_telemetry.battery_pct.value", "messages[].text"} <= set(entry.fields)


def test_the_location_is_in_the_snapshot_only_with_consent(world):
    alice = world.user("alice")
    grant(world.client, alice, "location")
    world.context(alice, {"type": "location", "lat": BERLIN[0], "lon": BERLIN[1], "accuracy_m": 5, "at": at(2)})
    with_consent = world.ask(alice, screen="map")
    assert with_consent["snapshot"]["location_shared"] is True
    assert (with_consent["snapshot"]["location"]["lat"], with_consent["snapshot"]["location"]["lon"]) == BERLIN
    assert with_consent["snapshot"]["screen"] == {"name": "map", "source": "request", "at": None}

    response = world.client.put("/v1/me/consents/location", headers=alice.headers, json={"granted": False})
    assert response.status_code == 200
    without = world.ask(alice, message="where am I?")
    assert (without["snapshot"]["location_shared"], without["snapshot"]["location"]) == (False, None)
    assert str(BERLIN[0]) not in str(world.agent_get(f"/{without['id']}"))
    # Withdrawn since the first case was opened: agents no longer see it there either.
    earlier = world.agent_get(f"/{with_consent['id']}")
    assert (earlier["snapshot"]["location_shared"], earlier["snapshot"]["location"]) == (False, None)


def test_cases_are_private_and_roles_are_kept_apart(world):
    alice, bob = world.user("alice"), world.user("bob")
    case_id = world.ask(alice, message="help")["id"]
    world.ask(bob, message="me too")

    assert world.my_case(bob, case_id, expect=404)["status"] == 404
    response = world.client.post(f"/v1/me/help/{case_id}/messages", headers=bob.headers, json={"text": "hi"})
    assert response.status_code == 404
    assert [c["id"] for c in world.client.get("/v1/me/help", headers=alice.headers).get_json()["items"]] == [case_id]
    assert world.client.get(f"/v1/help/{uuid.uuid4()}", headers=bearer(world.agent)).status_code == 404

    for path in ("", f"/{case_id}"):
        assert world.client.get(f"/v1/help{path}", headers=alice.headers).status_code == 403
        assert world.client.get(f"/v1/help{path}").status_code == 401
        assert world.client.get(f"/v1/help{path}", headers=bearer(world.operator)).status_code == 403
    assert world.client.post(f"/v1/help/{case_id}/messages", headers=alice.headers,
                             json={"text": "I answer myself"}).status_code == 403
    assert world.client.patch(f"/v1/help/{case_id}", headers=alice.headers,
                              json={"status": "closed"}).status_code == 403
    assert world.client.get("/v1/me/help", headers=bearer(world.agent)).status_code == 403
    assert world.client.post("/v1/me/help", headers=bearer(world.agent), json={}).status_code == 403
    assert len(world.my_case(alice, case_id)["messages"]) == 1  # nobody else wrote to it


def test_the_users_cases_come_newest_first_page_by_page(world):
    alice = world.user("alice")
    asked = [world.ask(alice, message=f"case {n}")["id"] for n in range(3)]

    first = world.client.get("/v1/me/help", headers=alice.headers, query_string={"limit": 2}).get_json()
    rest = world.client.get("/v1/me/help", headers=alice.headers,
                            query_string={"limit": 2, "cursor": first["next_cursor"]}).get_json()

    assert [c["id"] for c in first["items"]] == asked[::-1][:2]
    assert [c["id"] for c in rest["items"]] == asked[:1] and rest["next_cursor"] is None


def test_limits_and_bad_input_are_422_or_409_naming_the_field(world):
    alice, bob = world.user("alice"), world.user("bob")
    bobs_product = world.product(bob)
    for body, field in (({"message": "x" * 4001}, "message"), ({"message": "   "}, "message"),
                        ({"screen": "a\nb"}, "screen"), ({"product_id": bobs_product}, "product_id"),
                        ({"topic": "t" * 101}, "topic"), ({"mesage": "typo"}, "mesage")):
        problem = world.ask(alice, expect=422, **body)
        assert field in problem["errors"], (body, problem)

    for body, field in (({"message": "no topic"}, "topic"), ({"topic": "no message"}, "message")):
        problem = world.client.post("/v1/me/help", headers=alice.headers, json=body).get_json()
        assert problem["status"] == 422 and field in problem["errors"], (body, problem)
    cases = [world.ask(alice)["id"] for _ in range(5)]
    full = world.ask(alice, expect=409)
    assert "5 open help cases" in full["detail"]
    world.agent_close(cases[0])
    world.ask(alice)

    for guidance, field in (({"screen": 7}, "guidance.screen"), ({"screen": "s", "highlight": "h" * 201},
                                                                 "guidance.highlight"),
                            ({"highlight": "x"}, "guidance.screen"), ({"screen": "s", "color": "red"},
                                                                      "guidance.color")):
        problem = world.agent_post(f"/{cases[1]}/messages", expect=422, text="see here", guidance=guidance)
        assert field in problem["errors"], (guidance, problem)
    assert world.agent_post(f"/{cases[1]}/messages", expect=422, text="")["errors"].keys() == {"text"}
    assert [m["author"] for m in world.my_case(alice, cases[1])["messages"]] == ["user"]  # no answer stored


def test_writing_to_a_closed_case_opens_it_again(world):
    alice = world.user("alice")
    case_id = world.ask(alice, message="the app crashes")["id"]
    world.agent_post(f"/{case_id}/messages", text="Update the app, please.")
    assert world.agent_close(case_id)["metrics"]["messages_until_solved"] == 2
    response = world.client.post(f"/v1/me/help/{case_id}/messages", headers=alice.headers,
                                 json={"text": "still crashing"})
    assert response.status_code == 201, response.get_json()
    reopened = response.get_json()
    assert (reopened["status"], reopened["closed_at"], reopened["metrics"]["messages_until_solved"]) == \
        ("open", None, None)
    assert [item["id"] for item in world.agent_get("", status="open")["items"]] == [case_id]
    world.agent_post(f"/{case_id}/messages", text="Fixed in 2.1.")
    assert world.agent_close(case_id)["metrics"]["messages_until_solved"] == 4
