"""What the demo tells the person watching: numbered steps in plain words, tables for the spots.

Only presentation: every function takes the results of :mod:`.steps` and
prints them; nothing here calls the service.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import scenario
from .steps import Account, Difference, Imported, Replay, Setup, Trip

ZONE = scenario.ZONE


def local_time(value: str | datetime | None, fmt: str = "%H:%M") -> str:
    """A time (ISO text or datetime) as the scenario's local clock time; "—" for none."""
    if value is None:
        return "—"
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.astimezone(ZONE).strftime(fmt)


def _km(metres: float) -> str:
    return f"{metres / 1000:.1f} km" if metres >= 1000 else f"{metres:.0f} m"


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


class Narrator:
    """Prints the scenario's steps, numbered in the order they are told."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.number = 0

    def step(self, title: str) -> None:
        """A new numbered step."""
        self.number += 1
        self.console.print()
        self._wrapped(f"[bold]{self.number}. {title}[/bold]", indent=0, hanging=len(f"{self.number}. "))

    def say(self, text: str, *, style: str = "") -> None:
        """A line of the current step (rich markup allowed), indented under it even when it wraps."""
        self._wrapped(text, indent=3, hanging=3, style=style)

    def _wrapped(self, text: str, *, indent: int, hanging: int, style: str = "") -> None:
        # Wrapped lines keep the indentation (rich would start them at the margin) and no trailing spaces.
        lines = Text.from_markup(text, style=style).wrap(self.console, max(self.console.width - hanging, 20))
        for number, line in enumerate(lines):
            line.rstrip()
            self.console.print(Text(" " * (indent if number == 0 else hanging)) + line)

    def raw(self, text: str) -> None:
        """Text shown exactly as it is (a file's line: no markup, no highlighting, not wrapped)."""
        self.console.print(f"   {text}", markup=False, highlight=False, soft_wrap=True)

    # ------------------------------------------------------------------ the story

    def opening(self, var_dir: Path) -> None:
        self.console.print("[bold]smartsvc demo[/bold] — a smart fortwo, a pickup truck and the curbs of "
                           "downtown Portland")
        self.say(f"Simulated time: {scenario.TRIP_START:%A %d %B %Y} in Portland ({scenario.TIME_ZONE}); the drive "
                 f"starts at {scenario.TRIP_START:%H:%M}. Every run replays the same morning, so the answers are "
                 "the same every day.")
        self.say(f"A fresh smartsvc in {var_dir} (SQLite, the log push provider). Every step goes through "
                 "its HTTP API; the worker's tasks (import, engine, push) run in this process from the outbox.")

    def imported(self, data: Imported) -> None:
        dataset = data.dataset
        counts = dataset["counts"]
        self.step(f"The operator uploads Portland's curb regulations (CurbLR, {data.features_in_file} features)")
        self.say(f"POST /v1/datasets  {dataset['file_name']}  ({dataset['file_size'] / 1024:.0f} KiB, "
                 f"layer {dataset['layer']}) → queued")
        self.say(f"the import task read it as {dataset['format']} in time zone {dataset['time_zone']}: "
                 f"imported {counts['accepted']}, rejected {counts['rejected']}, repaired {counts['repaired']} "
                 f"→ {counts['spots']} curb segments")
        self.say(f"POST /v1/datasets/{{id}}/publish → {dataset['status']}: the live parking layer")

    def operator_setup(self, setup: Setup) -> None:
        self.step("The operator adds two car models and the rules (POST /v1/catalog/models, POST /v1/rules)")
        for car in (scenario.FORTWO, scenario.F150):
            self.say(f"{car.label}: {car.length_m:g} m long, {car.width_m:g} m wide")
        for rule in setup.rules:
            trigger, params = rule["trigger"], rule["action"]["params"]
            leaf = rule["conditions"]["all"][0]
            self.say(f"rule [bold]'{rule['name']}'[/bold]: when a trip is within {trigger['within_m']} m of its "
                     f"destination, if {leaf['fact']} {leaf['op']} {leaf['value']:g} → {rule['action']['recipe']} "
                     f"({params['limit']} spots within {params['radius_m']} m, a {params['duration_min']}-minute "
                     f"stay), at most one push per {rule['cooldown_s'] // 60} min")

    def driver(self, account: Account, *, pronoun: str) -> None:
        driver = account.driver
        self.step(f"{driver.name} owns a {driver.car.label} ({driver.car.length_m:g} m)")
        self.say(f"the app's backend creates {pronoun} account (POST /v1/users, time zone {scenario.TIME_ZONE}); "
                 f"{pronoun} consents: {', '.join(account.consents)}; {pronoun} phone is registered for pushes "
                 f"(POST /v1/me/devices, fcm); {pronoun} car is added (POST /v1/me/products)")

    def trip(self, trip: Trip, *, subject: str, pronoun: str) -> None:
        self.step(f"{subject} starts a trip to "
                  f"{scenario.DESTINATION_LABEL}; {pronoun} phone sends {pronoun} position every "
                  f"{scenario.FIX_EVERY_S} s (POST /v1/me/context)")
        fired = trip.fired
        for fix in trip.fixes:
            line = f"{local_time(fix.at, '%H:%M:%S')}  {_km(fix.distance_left_m):>7} to go"
            if fix.distance_left_m == 0:
                line = f"{local_time(fix.at, '%H:%M:%S')}  arrived"
            if fix is fired:
                line += "  [bold]→ trip.approaching → rule fired → push[/bold]"
            self.say(line)
        if fired is not None and trip.suggestion is not None:
            fields = trip.suggestion["reason"]["trigger"]["fields"]
            rule = trip.suggestion["reason"]["rule"]["name"]
            self.step(f"{_km(fields['distance_m'])} before arrival the rule '{rule}' fires")
            self.say(f"the first fix within {scenario.APPROACH_WITHIN_M} m of the destination "
                     f"({fields['distance_m']:.0f} m left) made a trip.approaching trigger for each rule watching "
                     "that distance; the engine evaluated their conditions, ran the recipe "
                     f"{trip.suggestion['kind']} of the one that matched (the spot search at {pronoun} ETA, "
                     f"{local_time(trip.suggestion['payload']['eta'], '%H:%M:%S')}), and the attention budget "
                     "(consent, quiet hours, daily cap, cooldown) let it through to the push task")

    def push(self, trip: Trip, pushes_path: Path) -> None:
        line = trip.push or {}
        self.step(f"The push, as the log provider wrote it ({pushes_path.name})")
        self.raw(json.dumps(line, ensure_ascii=False))
        self.say(f"[bold]{line.get('title')}[/bold]")
        self.say(str(line.get("body")))
        suggestion = trip.suggestion or {}
        self.say(f"delivery: {suggestion.get('delivery_status')} to {len(suggestion.get('push_attempts', []))} "
                 f"device(s); it expires at {local_time(suggestion.get('expires_at'))}, when the stay would end",
                 style="dim")

    def why(self, trip: Trip) -> None:
        reason = (trip.suggestion or {}).get("reason", {})
        trigger = reason.get("trigger", {})
        fields = trigger.get("fields", {})
        self.step("Why (GET /v1/me/suggestions/{id} → reason)")
        self.say(f"rule: '{reason.get('rule', {}).get('name')}'")
        self.say(f"trigger: {trigger.get('event')} at {local_time(trigger.get('at'), '%H:%M:%S')}: "
                 f"{_km(fields.get('distance_m', 0))} and {_minutes(fields.get('eta_s', 0))} from the destination")
        for fact, value in reason.get("facts", {}).items():
            self.say(f"matched: {fact} = {value}")

    def spots(self, trip: Trip, *, pronoun: str) -> None:
        eta = local_time((trip.suggestion or {}).get("payload", {}).get("eta"), "%H:%M:%S")
        stay = scenario.SMALL_SPOTS_RULE["action"]["params"]["duration_min"]
        self.step(f"The spots (at {pronoun} ETA, {eta}, for a {stay}-minute stay)")
        self.console.print(spot_table(trip.spots, trip.account.driver.car.label))

    def second_driver(self, trip: Trip, difference: Difference, account: Account) -> None:
        car = account.driver.car
        line = trip.push or {}
        rule = (trip.suggestion or {}).get("reason", {}).get("rule", {}).get("name")
        fired = trip.fired
        self.step(f"{account.driver.name} drives a {car.label} ({car.length_m:g} m) to the same place at the "
                  "same time")
        self.say("his account, consents, phone and truck were set up the same way; his phone's events went in "
                 f"alongside Lena's; at {_km(fired.distance_left_m) if fired else '?'} "
                 f"to go the rule '{rule}' fired ('small spots before arrival' did not: his car is "
                 f"{car.length_m:g} m, not ≤ 3 m)")
        self.say(f"his push: [bold]{line.get('title')}[/bold] — {line.get('body')}")
        self.console.print(spot_table(trip.spots, car.label))
        for spot in difference.only_small:
            self.say(f"[bold]only the fortwo fits[/bold] curb #{spot['source']['feature_id']}: "
                     f"{spot['length_m']:g} m, {spot['distance_m']:.0f} m from the destination — the {car.label} "
                     f"needs {difference.long_needs_m:g} m ({car.length_m:g} m + 1 m to manoeuvre); "
                     "checked: it is not in his push")
        for small, long in difference.shared:
            if small["spaces_for_vehicle"] != long["spaces_for_vehicle"]:
                self.say(f"curb #{small['source']['feature_id']} ({small['length_m']:g} m) is in both: room for "
                         f"{small['spaces_for_vehicle']} fortwos, {long['spaces_for_vehicle']} {car.label}")

    def replayed(self, replay: Replay, name: str) -> None:
        self.step("The same events sent again change nothing")
        self.say(f"{name}'s phone sends its {replay.events} events again (a retry after a lost answer): "
                 f"accepted {replay.accepted}; suggestions {replay.suggestions_before} → "
                 f"{replay.suggestions_after}; push lines {replay.pushes_before} → {replay.pushes_after}")

    def files(self, where: Mapping[str, Path], kept: bool) -> None:
        self.console.print()
        self.console.print("[bold]Files[/bold]" + ("" if kept else " (a temporary folder, removed now: "
                                                                  "use --var-dir to keep them)"))
        for label, path in where.items():
            self.say(f"{label:9} {path}")


def spot_table(spots: list[dict[str, Any]], vehicle: str) -> Table:
    """The spots of a push as a table: distance, allowed until, max stay, fee, and why it fits."""
    table = Table(title=f"spots for the {vehicle}", title_justify="left", pad_edge=False)
    for column, justify in (("#", "right"), ("curb", "left"), ("distance", "right"), ("allowed until", "left"),
                            ("max stay", "right"), ("fee", "left"), ("why it fits", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for number, spot in enumerate(spots, 1):
        stay = spot.get("max_stay_min")
        why = list(spot.get("why") or [])
        table.add_row(str(number), f"#{spot['source']['feature_id']}", f"{spot['distance_m']:.0f} m",
                      local_time(spot.get("allowed_until")), f"{stay:.0f} min" if stay is not None else "none",
                      _fee(why) if spot.get("fee") else "free", why[0] if why else "")
    return table


def _fee(why: list[str]) -> str:
    """The rate as the spot's reasons state it ("0.50 USD per 15 min"), else "paid"."""
    for reason in why:
        if reason.startswith("paid") and reason.endswith(")") and "(" in reason:
            return reason[reason.rindex("(") + 1:-1]
    return "paid"
