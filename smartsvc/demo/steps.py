"""The scenario's steps, each through the service's public paths; they return what happened, they print nothing.

1. the operator uploads the Portland CurbLR feed (``POST /v1/datasets``), the
   import task reads it, the operator publishes it;
2. the operator adds the two car models and the rules (``POST /v1/rules``);
3. each driver gets a user, consents, a phone and a car through the app's API;
4. each drives: the phone's events go to ``POST /v1/me/context`` as they
   happen; triggers, the engine, suggestions and pushes run from the outbox;
5. the same events sent again change nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import scenario
from .data import PORTLAND_FEED
from .scenario import Driver
from .world import DemoFailed, World

ENGINE_TASK = "smartsvc.engine.handle_trigger"
PUSH_TASK = "smartsvc.delivery.push"


@dataclass(frozen=True)
class Imported:
    """The published dataset as ``GET /v1/datasets/{id}`` shows it, and the features the file has."""

    features_in_file: int
    dataset: dict[str, Any]


@dataclass(frozen=True)
class Setup:
    """What the operator made: keys, car models by label, rules as stored."""

    operator: str
    app_key: str
    models: dict[str, str]
    rules: list[dict[str, Any]]


@dataclass(frozen=True)
class Account:
    """A driver's user, token, car and phone."""

    driver: Driver
    user_id: str
    token: str
    product_id: str
    device_id: str
    consents: list[str]


@dataclass(frozen=True)
class Fix:
    """One position the phone sent, and what the service did with it."""

    at: datetime
    distance_left_m: float
    accepted: int
    tasks: list[str]
    new_suggestions: list[str]


@dataclass
class Trip:
    """A drive: its fixes, the suggestion it brought, the push line, and what the API says about it."""

    account: Account
    started: int = 0
    fixes: list[Fix] = field(default_factory=list)
    suggestion: dict[str, Any] | None = None
    push: dict[str, Any] | None = None
    context: dict[str, Any] | None = None

    @property
    def fired(self) -> Fix | None:
        """The fix after which the suggestion appeared."""
        return next((fix for fix in self.fixes if fix.new_suggestions), None)

    @property
    def spots(self) -> list[dict[str, Any]]:
        return list((self.suggestion or {}).get("payload", {}).get("spots", []))


@dataclass(frozen=True)
class Replay:
    """The same events sent again: what the API accepted and whether anything new happened."""

    events: int
    accepted: int
    suggestions_before: int
    suggestions_after: int
    pushes_before: int
    pushes_after: int


@dataclass(frozen=True)
class Difference:
    """Checked facts about the two drivers' spots."""

    only_small: list[dict[str, Any]]  # in the small car's push, too short for the long one
    shared: list[tuple[dict[str, Any], dict[str, Any]]]  # the same curb in both: (small's item, long's item)
    long_needs_m: float


# --------------------------------------------------------------------------- operator


def load_parking_data(world: World, operator: str) -> Imported:
    """Upload the feed, let the import task read it, publish it; fails unless it is published."""
    features = len(json.loads(PORTLAND_FEED.read_text(encoding="utf-8")).get("features", []))
    with open(PORTLAND_FEED, "rb") as handle:
        accepted = world.call("POST", "/v1/datasets", operator, expect=202, content_type="multipart/form-data",
                              data={"file": (handle, PORTLAND_FEED.name), "name": "Portland downtown curbs",
                                    "layer": "parking"})
    world.run_outbox()
    dataset = world.call("GET", f"/v1/datasets/{accepted['id']}", operator, expect=200)
    if dataset["status"] != "ready":
        raise DemoFailed(f"the import ended {dataset['status']}: {dataset.get('failure')}")
    world.call("POST", f"/v1/datasets/{accepted['id']}/publish", operator, expect=200)
    world.run_outbox()
    return Imported(features, world.call("GET", f"/v1/datasets/{accepted['id']}", operator, expect=200))


def set_up_operator(world: World) -> Setup:
    """Keys, the two car models and the rules, as the operator makes them."""
    operator = world.key("operator", "demo operator")
    app_key = world.key("app", "demo app backend")
    models = {}
    for car in (scenario.FORTWO, scenario.F150):
        models[car.label] = world.call("POST", "/v1/catalog/models", operator, expect=201, json=car.body())["id"]
    rules = [world.call("POST", "/v1/rules", operator, expect=201, json=body) for body in scenario.RULES]
    return Setup(operator, app_key, models, rules)


# --------------------------------------------------------------------------- users


def sign_up(world: World, setup: Setup, driver: Driver) -> Account:
    """The app's backend creates the user; on the phone the user consents, registers it, and adds the car."""
    user = world.call("POST", "/v1/users", setup.app_key, expect=201,
                      json={"external_id": driver.external_id, "time_zone": scenario.TIME_ZONE, "locale": "en-US"})
    token = user["access_token"]
    for purpose in ("location", "proactive_push"):
        world.call("PUT", f"/v1/me/consents/{purpose}", token, expect=200, json={"granted": True})
    device = world.call("POST", "/v1/me/devices", token, expect=201,
                        json={"platform": "fcm", "token": driver.device_token})
    product = world.call("POST", "/v1/me/products", token, expect=201,
                         json={"model_id": setup.models[driver.car.label], "nickname": f"{driver.name}'s car"})
    consents = world.call("GET", "/v1/me/consents", token, expect=200)
    granted = sorted(item["purpose"] for item in _items(consents) if item.get("granted"))
    return Account(driver, user["id"], token, product["id"], device["id"], granted)


def _items(body: Any) -> list[dict[str, Any]]:
    return list(body.get("items", [])) if isinstance(body, dict) else list(body or [])


# --------------------------------------------------------------------------- the drive


def _suggestion_ids(world: World, account: Account) -> list[str]:
    listed = world.call("GET", "/v1/me/suggestions?limit=100", account.token, expect=200)
    return [item["id"] for item in listed["items"]]


def trip_events(account: Account) -> list[dict[str, Any]]:
    """Every event of the drive, in the order the phone sends them."""
    events = [scenario.trip_event(account.product_id)]
    events += [scenario.fix_event(at, lat, lon, speed) for at, lat, lon, _left, speed in scenario.route()]
    return events


def drive(world: World, accounts: list[Account]) -> list[Trip]:
    """The drivers set off together: each phone starts its trip, then sends one fix every 30 s as it happens.

    After every request the worker's tasks run (triggers, the engine, pushes), so each fix's effect is seen
    before the next one is sent.
    """
    trips = [Trip(account) for account in accounts]
    world.clock.set(scenario.TRIP_START)
    for trip in trips:
        started = world.call("POST", "/v1/me/context", trip.account.token, expect=202,
                             json={"events": [scenario.trip_event(trip.account.product_id)]})
        trip.started = started["accepted"]
        world.run_outbox()
    known = {trip.account.user_id: set(_suggestion_ids(world, trip.account)) for trip in trips}
    for at, lat, lon, left, speed in scenario.route():
        world.clock.set(at)
        for trip in trips:
            body = world.call("POST", "/v1/me/context", trip.account.token, expect=202,
                              json={"events": [scenario.fix_event(at, lat, lon, speed)]})
            tasks = world.run_outbox()
            now = _suggestion_ids(world, trip.account)
            seen = known[trip.account.user_id]
            trip.fixes.append(Fix(at, left, body["accepted"], tasks, [i for i in now if i not in seen]))
            seen.update(now)
    for trip in trips:
        _read_outcome(world, trip, known[trip.account.user_id])
    return trips


def _read_outcome(world: World, trip: Trip, suggestion_ids: set[str]) -> None:
    """The drive's one suggestion (with its reason) and the push line the log provider wrote for it."""
    name = trip.account.driver.name
    if len(suggestion_ids) != 1:
        raise DemoFailed(f"{name}'s drive made {len(suggestion_ids)} suggestions, the scenario expects one "
                         f"(tasks run: {world.tasks_run[-20:]})")
    (suggestion_id,) = suggestion_ids
    trip.suggestion = world.call("GET", f"/v1/me/suggestions/{suggestion_id}", trip.account.token, expect=200)
    trip.context = world.call("GET", "/v1/me/context", trip.account.token, expect=200)
    lines = [line for line in world.pushes() if line.get("suggestion_id") == suggestion_id]
    if len(lines) != 1:
        raise DemoFailed(f"expected one push line for {name}'s suggestion in {world.settings.pushes_log_path}, "
                         f"found {len(lines)} (status {trip.suggestion['status']}: {trip.suggestion['status_reason']})")
    trip.push = lines[0]


def replay(world: World, account: Account) -> Replay:
    """Send the whole drive again in one batch (a phone retrying after a lost answer)."""
    events = trip_events(account)
    before_s, before_p = len(_suggestion_ids(world, account)), len(world.pushes())
    body = world.call("POST", "/v1/me/context", account.token, expect=202, json={"events": events})
    world.run_outbox()
    return Replay(len(events), body["accepted"], before_s, len(_suggestion_ids(world, account)), before_p,
                  len(world.pushes()))


# --------------------------------------------------------------------------- checks


def compare(small: Trip, long: Trip) -> Difference:
    """What differs between the two pushes, checked: fails when the data does not show a difference."""
    needs = long.account.driver.car.length_m + scenario.MANOEUVRE_MARGIN_M
    long_ids = {spot["id"] for spot in long.spots}
    too_short = [spot for spot in long.spots if spot.get("length_m") is not None and spot["length_m"] < needs]
    if too_short:
        raise DemoFailed(f"the {long.account.driver.car.label} was offered curbs shorter than the {needs:g} m "
                         f"it needs: {[spot['id'] for spot in too_short]}")
    only_small = [spot for spot in small.spots if spot["id"] not in long_ids
                  and spot.get("length_m") is not None and spot["length_m"] < needs]
    if not only_small:
        raise DemoFailed("the data does not show what the scenario claims: every curb offered to the "
                         f"{small.account.driver.car.label} also takes the {long.account.driver.car.label} here")
    by_id = {spot["id"]: spot for spot in long.spots}
    shared = [(spot, by_id[spot["id"]]) for spot in small.spots if spot["id"] in by_id]
    return Difference(only_small, shared, needs)


def where_things_are(world: World) -> dict[str, Path]:
    """The files the demo left."""
    settings = world.settings
    database = settings.database_url.removeprefix("sqlite:///")
    return {"var dir": settings.var_dir.resolve(), "database": Path(database),
            "pushes": settings.pushes_log_path.resolve()}
