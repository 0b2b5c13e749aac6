"""The suggestion settings: defaults, parsing, and refusals naming the variable."""

from __future__ import annotations

import pytest

from smartsvc.config import ConfigError, load_settings


def test_defaults():
    settings = load_settings({})
    assert (settings.mute_after_dismissals, settings.suggestion_ttl_s) == (3, 21600)


def test_values_are_read():
    settings = load_settings({"SMARTSVC_MUTE_AFTER_DISMISSALS": "5", "SMARTSVC_SUGGESTION_TTL_S": "3600"})
    assert (settings.mute_after_dismissals, settings.suggestion_ttl_s) == (5, 3600)


@pytest.mark.parametrize(("name", "value"), [("MUTE_AFTER_DISMISSALS", "0"), ("MUTE_AFTER_DISMISSALS", "three"),
                                             ("SUGGESTION_TTL_S", "10"), ("SUGGESTION_TTL_S", "99999999")])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=f"SMARTSVC_{name}"):
        load_settings({f"SMARTSVC_{name}": value})
