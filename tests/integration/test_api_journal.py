"""``GET /v1/me/interactions`` and ``GET /v1/me/sharing`` (SQLite and PostgreSQL): what the user can see.

Every touchpoint — a spot search, a push, feedback, data sent to a partner —
shows in the journal with its channel and time, newest first; the sharing
ledger lists each time data left the system; nobody sees another user's.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from shapely.geometry import LineString

from geodata.model import Rule, Spot
from smartsvc.timeutil import utcnow
from tests.support.factories import TestUser as ApiUser
from tests.support.geodata import add_vehicle_model, own, store_dataset
from tests.support.suggestions import SuggestionWorld, suggestion_world
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.webhook_world import webhook_settings, webhook_world

HERE = (48.8500, 2.3500)


@pytest.fixture
def db_settings(database_url, tmp_path):
    """The integration settings, letting webhooks reach the local receiver."""
    return webhook_settings(tmp_path / "var", database_url=database_url)


@pytest.fixture
def world(db_app) -> SuggestionWorld:
    world = suggestion_world(db_app)
    gap = Spot(LineString([(2.35010, 48.85005), (2.35020, 48.85005)]), kind="curb", orientation="parallel",
               length_m=8.0, rules=(Rule(None, "parking"),), source_feature_id="gap")
    store_dataset(world.database, [gap], time_zone="Europe/Paris")
    return world


def search(world: SuggestionWorld, user: ApiUser) -> dict[str, Any]:
    model = add_vehicle_model(world.client, world.operator, f"fortwo {uuid.uuid4()}", length_m=2.69)
    product = own(world.client, user, model)
    response = world.client.get("/v1/spots", headers=user.headers,
                                query_string={"lat": 48.850123456, "lon": 2.350987654, "product_id": product})
    assert response.status_code == 200, response.get_json()
    assert len(response.get_json()["items"]) == 1
    return {"product_id": product}


def journal(world: Any, user: ApiUser, expect: int = 200, **query: Any) -> Any:
    response = world.client.get("/v1/me/interactions", headers=user.headers, query_string=query)
    assert response.status_code == expect, response.get_json()
    return response.get_json()


def test_the_journal_shows_a_search_a_push_and_feedback_with_channel_time_and_effort(world):
    alice = world.user("alice")
    searched = search(world, alice)
    sid = world.propose(alice, world.rule("spots"))
    assert world.deliver() == 1
    world.feedback(alice, sid, action="opened")

    items = journal(world, alice)["items"]
    assert [(item["kind"], item["channel"]) for item in items] == [
        ("suggestion.opened", "api"), ("suggestion.pushed", "push"), ("suggestion.created", "inbox"),
        ("spot.searched", "api")]
    assert [item["at"] for item in items] == sorted((item["at"] for item in items), reverse=True)
    opened, pushed, created, searched_item = items
    for item in (opened, pushed, created):
        assert item["subject"] == {"type": "suggestion", "id": sid}
    # The point is kept coarse (the journal is not a location history); what was searched is there.
    assert searched_item["data"] == {**searched_item["data"], "lat": 48.85, "lon": 2.351, "results": 1,
                                     "product_id": searched["product_id"]}
    assert searched_item["subject"] == {"type": None, "id": None} and searched_item["metrics"] is None
    device = world.client.get("/v1/me/devices", headers=alice.headers).get_json()["items"][0]
    assert (pushed["data"]["device_id"], pushed["data"]["platform"]) == (device["id"], device["platform"])
    # Time to action: from the push to the first opening, on every item of the suggestion.
    metrics = opened["metrics"]
    assert (metrics["action"], metrics["measured_from"], metrics["pushed_at"]) == ("opened", "pushed", pushed["at"])
    assert metrics["action_at"] == opened["at"] and metrics["time_to_action_s"] >= 0
    assert created["metrics"] == pushed["metrics"] == metrics


def test_a_suggestion_never_pushed_is_measured_from_its_creation(world):
    alice = world.user("alice", consent=False)
    sid = world.propose(alice, world.rule("spots"))
    world.feedback(alice, sid, action="dismissed")
    [dismissed, created] = journal(world, alice)["items"]
    assert (dismissed["metrics"]["action"], dismissed["metrics"]["measured_from"]) == ("dismissed", "created")
    assert dismissed["metrics"]["pushed_at"] is None


def test_kind_since_and_cursor_filter_and_page_the_journal(world):
    alice = world.user("alice")
    search(world, alice)
    sid = world.propose(alice, world.rule("spots"))
    world.deliver()
    world.feedback(alice, sid, action="snoozed", snooze_min=30)
    everything = journal(world, alice)["items"]
    assert len(everything) == 4

    assert [i["kind"] for i in journal(world, alice, kind="spot.searched")["items"]] == ["spot.searched"]
    assert [i["kind"] for i in journal(world, alice, kind="suggestion")["items"]] == \
        ["suggestion.snoozed", "suggestion.pushed", "suggestion.created"]
    assert journal(world, alice, kind="help")["items"] == []
    assert journal(world, alice, since=(utcnow() + timedelta(minutes=1)).isoformat())["items"] == []
    assert len(journal(world, alice, since=(utcnow() - timedelta(minutes=5)).isoformat())["items"]) == 4

    seen, cursor = [], None
    while True:
        page = journal(world, alice, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [item["id"] for item in everything]


@pytest.mark.parametrize("query, field", [({"kind": "Robert'); DROP"}, "kind"), ({"since": "yesterday"}, "since"),
                                          ({"since": "2025-01-01T10:00:00"}, "since"), ({"limit": 0}, "limit"),
                                          ({"cursor": "nope"}, "cursor")])
def test_bad_filters_are_422_naming_the_field(world, query, field):
    body = journal(world, world.user("alice"), expect=422, **query)
    assert field in body["errors"], body


def test_another_users_touchpoints_never_appear(world):
    alice, bob = world.user("alice"), world.user("bob")
    search(world, bob)
    bob_sid = world.propose(bob, world.rule("bob's"))
    world.deliver()
    world.feedback(bob, bob_sid, action="accepted")
    alice_sid = world.propose(alice, world.rule("alice's"))
    world.deliver()

    alice_items = journal(world, alice)["items"]
    assert [i["kind"] for i in alice_items] == ["suggestion.pushed", "suggestion.created"]
    assert all(i["subject"]["id"] == alice_sid for i in alice_items)
    text = world.client.get("/v1/me/interactions", headers=alice.headers).get_data(as_text=True)
    assert bob_sid not in text and bob.id not in text
    assert {i["kind"] for i in journal(world, bob)["items"]} == \
        {"spot.searched", "suggestion.created", "suggestion.pushed", "suggestion.accepted"}
    assert alice_sid not in world.client.get("/v1/me/interactions", headers=bob.headers).get_data(as_text=True)


def test_a_webhook_delivery_is_in_the_sharing_ledger_and_the_journal(db_app):
    world = webhook_world(db_app)
    with WebhookReceiver() as receiver:
        hook = world.register(receiver.url("/crm"), ["suggestion.created"], description="CRM")
        alice, bob = world.user("alice"), world.user("bob", sharing=False)
        sid = world.suggest(alice)
        world.suggest(bob)  # bob did not consent: nothing of his leaves
        assert world.drain() == 1
        [request] = receiver.requests

    response = world.client.get("/v1/me/sharing", headers=alice.headers)
    assert response.status_code == 200, response.get_json()
    [entry] = response.get_json()["items"]
    assert response.get_json()["next_cursor"] is None
    assert (entry["channel"], entry["event_type"], entry["recipient_id"]) == ("webhook", "suggestion.created",
                                                                               hook["id"])
    assert "127.0.0.1" in entry["recipient"] and "test partner" in entry["recipient"]
    [delivery] = world.deliveries(hook["id"])
    assert entry["reference_id"] == delivery["id"] and delivery["message_id"] == request.headers["webhook-id"]
    assert {"title", "payload.spots[].lat"} <= set(entry["fields"]) and entry["at"]

    shared = journal(world, alice, kind="data")["items"]
    assert [(i["kind"], i["channel"], i["subject"]) for i in shared] == \
        [("data.shared", "webhook", {"type": "sharing", "id": entry["id"]})]
    assert shared[0]["data"]["recipient"] == entry["recipient"]
    kinds = [i["kind"] for i in journal(world, alice)["items"]]
    assert kinds == ["data.shared", "suggestion.created"]
    assert journal(world, alice, kind="suggestion")["items"][0]["subject"]["id"] == sid

    assert world.client.get("/v1/me/sharing", headers=bob.headers).get_json() == {"items": [],
                                                                                 "next_cursor": None}
    assert [i["kind"] for i in journal(world, bob)["items"]] == ["suggestion.created"]
