"""Partner webhooks: where they may go (:mod:`.ssrf`), how they are signed
(:mod:`.signing`, Standard Webhooks) and how they are sent (:mod:`.transport`).

The modules are imported where used; importing this package loads nothing else.
"""
