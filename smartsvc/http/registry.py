"""Every blueprint of the public API, in the order the docs list them."""

from __future__ import annotations

from .api import Api


def register_blueprints(api: Api) -> None:
    """Register all resources on ``api`` (imported here, not at module load)."""
    from . import collections, consents, datasets, devices, health, keys, products, spots, users
    from . import context, geofences, rules
    from . import suggestions
    from . import webhooks
    from . import me_erase
    from . import agent_help, help
    from . import me_data

    for module in (health, users, consents, devices, products, keys, datasets, collections, spots, geofences,
                   rules, context, suggestions, webhooks, me_erase, help, agent_help, me_data):
        api.register_blueprint(module.blp)
