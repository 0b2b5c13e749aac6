"""``message``: a fixed title and body, their ``{fact}`` placeholders filled from the facts.

A placeholder whose fact the context does not have when the rule fires
leaves the message unsent (None), as :mod:`smartsvc.rules.templates` says:
"Battery at  %" is worse than no message.
"""

from __future__ import annotations

from typing import Any, Mapping

from sqlalchemy.orm import Session

from ...rules import render
from ..proposals import RecipeResult


def run(session: Session, container: Any, params: Mapping[str, Any], facts: Mapping[str, Any],
        trigger: Any) -> RecipeResult | None:
    """The rendered title and body; None when a placeholder cannot be filled."""
    title, body = render(params["title"], facts), render(params["body"], facts)
    if title is None or body is None:
        return None
    return RecipeResult(title=title, body=body, payload={})
