"""The rule language (SUGGESTIONS.md "Rules"): triggers, facts, conditions, recipes.

Pure Python — no Flask, no database — so the API (validating a rule when it
is saved) and the workers (evaluating rules on events) share one definition.

- :func:`validate_rule` — every problem of a rule, as ``(field path, message)``;
- :func:`normalize_rule` — a valid rule with its defaults, as stored;
- :func:`evaluate` — whether a condition tree holds for a context, and the
  facts that decided it (the suggestion's ``reason``);
- :func:`render` — a ``message`` template filled from a context.

The catalogues: :data:`~smartsvc.rules.triggers.TRIGGERS`,
:data:`~smartsvc.rules.facts.FACTS` and :data:`~smartsvc.rules.facts.EVENT_FACTS`,
:data:`~smartsvc.rules.ops.OPS`, :data:`~smartsvc.rules.recipes.RECIPES`;
every size limit is in :mod:`smartsvc.rules.limits`.
"""

from .conditions import evaluate
from .rule import normalize_rule, validate_rule
from .templates import render

__all__ = ["evaluate", "normalize_rule", "render", "validate_rule"]
