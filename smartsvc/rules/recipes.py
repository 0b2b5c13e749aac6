"""Actions: the recipes that compute a suggestion's content from live data, and their parameters.

- ``spots_near_destination``: fitting, allowed spots near the trip's
  destination at the ETA (``radius_m`` ≤ 5000, ``limit`` ≤ 20, for
  ``duration_min``);
- ``charger_on_route``: for an electric product whose battery will not last
  the trip (keeping ``reserve_pct``), the nearest compatible chargers within
  ``radius_m`` of the route (at least ``min_power_kw``);
- ``service_due``: service due within ``within_days`` or ``within_km`` → the
  nearest dealers or workshops within ``radius_m``;
- ``message``: a fixed ``title`` and ``body`` with ``{fact}`` placeholders.

Left-out parameters take their defaults when the rule is saved, so a stored
rule shows what it will do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .limits import MAX_BODY_LENGTH, MAX_TITLE_LENGTH
from .params import INTEGER, NUMBER, TEMPLATE, Param, check_fields, with_defaults
from .templates import check_template
from .values import shown


@dataclass(frozen=True)
class Recipe:
    """One recipe: what it does and its parameters (``params_required``: the action needs a params object)."""

    description: str
    params: dict[str, Param]
    params_required: bool = False


def _limit(maximum: int, default: int) -> Param:
    return Param(INTEGER, "How many results at most", 1, maximum, default=default)


RECIPES: dict[str, Recipe] = {
    "spots_near_destination": Recipe(
        "Fitting, allowed spots near the trip's destination at the ETA (the spot search)",
        {"radius_m": Param(INTEGER, "Search radius around the destination, metres", 50, 5000, default=400),
         "limit": _limit(20, 5),
         "duration_min": Param(INTEGER, "How long the user will park, minutes", 5, 24 * 60, default=60)},
    ),
    "charger_on_route": Recipe(
        "The nearest compatible chargers when the battery will not last the trip",
        {"radius_m": Param(INTEGER, "Search radius around the route and destination, metres", 100, 20_000,
                           default=2000),
         "limit": _limit(10, 3),
         "reserve_pct": Param(NUMBER, "Battery % that must be left on arrival", 0, 50, default=15),
         "min_power_kw": Param(NUMBER, "Only chargers of at least this power, kW", 0, 1000, default=0)},
    ),
    "service_due": Recipe(
        "Service due soon (date or km) → the nearest dealers or workshops with their opening hours",
        {"within_days": Param(INTEGER, "Due within this many days", 1, 365, default=14),
         "within_km": Param(INTEGER, "Due within this many kilometres", 1, 50_000, default=1000),
         "radius_m": Param(INTEGER, "Search radius around the user, metres", 500, 50_000, default=10_000),
         "limit": _limit(10, 3)},
    ),
    "message": Recipe(
        "A fixed title and body; {fact} placeholders are filled from the context",
        {"title": Param(TEMPLATE, "Title, e.g. 'Battery at {product.telemetry.battery_pct} %'", required=True,
                        max_length=MAX_TITLE_LENGTH),
         "body": Param(TEMPLATE, "Body text, with {fact} placeholders", required=True, max_length=MAX_BODY_LENGTH)},
        params_required=True,
    ),
}
RECIPE_NAMES = tuple(RECIPES)
ACTION_FIELDS = ("recipe", "params")


def check_action(action: Any, event: str | None, path: str = "action") -> list[tuple[str, str]]:
    """Problems of an action for a rule triggered by ``event`` (None: the trigger is invalid)."""
    if not isinstance(action, Mapping):
        return [(path, 'must be an object such as {"recipe": "spots_near_destination", "params": {...}}')]
    issues = [(f"{path}.{str(key)[:50]}", "unknown field: an action has recipe and params")
              for key in action if key not in ACTION_FIELDS]
    name = action.get("recipe")
    if "recipe" not in action:
        return [*issues, (f"{path}.recipe", f"is required: one of {', '.join(RECIPE_NAMES)}")]
    if not isinstance(name, str) or name not in RECIPES:
        return [*issues, (f"{path}.recipe", f"unknown recipe {shown(name)}; use one of {', '.join(RECIPE_NAMES)}")]
    recipe = RECIPES[name]
    if "params" not in action:
        if recipe.params_required:
            issues.append((f"{path}.params", f"is required for recipe '{name}'"))
        return issues
    params = action["params"]
    issues.extend(check_fields(params, recipe.params, f"{path}.params", f"recipe '{name}'"))
    if isinstance(params, Mapping):
        for field_name, param in recipe.params.items():
            if param.type == TEMPLATE and field_name in params:
                issues.extend((f"{path}.params.{field_name}", problem)
                              for problem in check_template(params[field_name], event, param.max_length))
    return issues


def normalize_action(action: Mapping[str, Any]) -> dict[str, Any]:
    """A valid action with every left-out parameter at its default."""
    recipe = RECIPES[action["recipe"]]
    return {"recipe": action["recipe"], "params": with_defaults(action.get("params") or {}, recipe.params)}
