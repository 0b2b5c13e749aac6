"""The recipes: a rule's action computes its suggestion's content from live data (SUGGESTIONS.md "Actions").

:func:`run_recipe` runs one by name with the rule's parameters (stored with
their defaults, see :mod:`smartsvc.rules.recipes`), the facts of the trigger
and the trigger itself. A recipe that finds nothing useful returns None: no
suggestion (no "0 spots found" push). Each recipe is a module with
``run(session, container, params, facts, trigger)``:

- :mod:`.spots_near_destination` — the spot search at the trip's destination at the ETA;
- :mod:`.charger_on_route` — chargers when the battery will not last the trip;
- :mod:`.service_due` — dealers and workshops when the service is due;
- :mod:`.message` — a fixed text with placeholders.

Recipes read in the caller's session (the engine's transaction) and write nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from sqlalchemy.orm import Session

from ...rules.params import with_defaults
from ...rules.recipes import RECIPES as RECIPE_PARAMS
from ..proposals import RecipeResult
from . import charger_on_route, message, service_due, spots_near_destination

Recipe = Callable[[Session, Any, Mapping[str, Any], Mapping[str, Any], Any], "RecipeResult | None"]

RECIPES: dict[str, Recipe] = {
    "spots_near_destination": spots_near_destination.run,
    "charger_on_route": charger_on_route.run,
    "service_due": service_due.run,
    "message": message.run,
}


class UnknownRecipe(LookupError):
    """A rule names a recipe this version does not have (saved by a newer one)."""


def run_recipe(session: Session, container: Any, name: str, params: Mapping[str, Any] | None,
               facts: Mapping[str, Any], trigger: Any) -> RecipeResult | None:
    """Run recipe ``name``: the suggestion's content, or None when it found nothing useful.

    ``trigger`` is the :class:`~smartsvc.models.triggers.TriggerRecord` (its ``at``,
    ``product_id`` and ``fields`` are read); ``container`` gives the spot finder.
    """
    recipe = RECIPES.get(name)
    if recipe is None:
        raise UnknownRecipe(f"unknown recipe {name!r}")
    # Stored rules have their defaults already; filling them again keeps a rule saved before a parameter
    # was added working.
    return recipe(session, container, with_defaults(params or {}, RECIPE_PARAMS[name].params), facts, trigger)


__all__ = ["RECIPES", "UnknownRecipe", "run_recipe"]
