"""Every size and count a rule may reach (SUGGESTIONS.md "Rules").

One place, because three readers must agree on them: the validator, the
OpenAPI document built from the catalogue, and the tests.
"""

from __future__ import annotations

# The condition tree: nodes on the longest path (the root is 1), children of one
# ``all``/``any``, and nodes in the whole tree.
MAX_DEPTH = 4
MAX_CHILDREN = 16
MAX_NODES = 64

# A leaf's operand.
MAX_TEXT_LENGTH = 200
MAX_LIST_VALUES = 50
# Numbers beyond this are typos, not thresholds; it also keeps them exact in every database's JSON.
MAX_ABS_NUMBER = 1e12

# A fact name: ``geofence.metadata.<key>[.<key>...]`` keys, and the whole name.
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_KEYS = 4
MAX_FACT_LENGTH = 200

# The rule itself. Every process caches every enabled rule: a rule's trigger, conditions
# and action, as compact UTF-8 JSON, stay below this (an example rule takes ~300 bytes).
MAX_RULE_BYTES = 32 * 1024
MAX_NAME_LENGTH = 200
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000
DEFAULT_PRIORITY = 0
MAX_COOLDOWN_S = 30 * 24 * 3600
# An hour, as in SUGGESTIONS.md's example: a rule left without one must not nag.
DEFAULT_COOLDOWN_S = 3600

# Trigger fields.
MAX_TAG_LENGTH = 100

# A message recipe's templates.
MAX_TITLE_LENGTH = 100
MAX_BODY_LENGTH = 500

# How many problems one answer lists (a generated 64-node tree could list hundreds).
MAX_ISSUES = 50
