"""What the engine hands to the suggestions service: a recipe's result with its reason and budget inputs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping


@dataclass(frozen=True)
class RecipeResult:
    """A recipe's content for one suggestion (a recipe that finds nothing useful returns None instead)."""

    title: str
    body: str
    payload: Mapping[str, Any]
    # A newer suggestion with the same key replaces the older one (on the phone too); None: the rule's id.
    collapse_key: str | None = None
    # When the content stops being useful (e.g. after the ETA); None: the default lifetime.
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Proposal:
    """One suggestion the engine wants to make, before the attention budget decides whether it is pushed.

    ``dedupe_key`` (``"{trigger_id}:{rule_id}"``) makes proposing twice create
    one suggestion. ``reason`` is what the user reads as *why*:
    ``{"rule": {"id", "name"}, "trigger": {"event", "at", "fields"}, "facts": {name: value}}``.
    """

    user_id: uuid.UUID
    kind: str  # the recipe's name
    content: RecipeResult
    reason: Mapping[str, Any]
    dedupe_key: str
    rule_id: uuid.UUID | None = None
    trigger_id: uuid.UUID | None = None
    cooldown_s: int = 0
    priority: int = 0
    # When the triggering situation happened (the budget itself is judged at the time of proposing).
    at: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
