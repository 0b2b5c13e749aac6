"""StorableDateTime: the years its OpenAPI pattern documents are exactly the years it accepts."""

from __future__ import annotations

import re
from datetime import timezone

import marshmallow as ma
import pytest

from smartsvc.http.fields import STORABLE_YEAR_PATTERN, StorableDateTime


class _Schema(ma.Schema):
    since = StorableDateTime(required=True)


@pytest.mark.parametrize("year", [1, 2, 9, 10, 99, 100, 999, 1000, 1970, 2026, 8999, 9000, 9899, 9900, 9989,
                                  9990, 9998, 9999])
@pytest.mark.parametrize("offset", ["+14:00", "-14:00", "Z"])
def test_the_pattern_and_the_field_agree_and_every_accepted_time_has_a_utc_equivalent(year, offset):
    text = f"{year:04d}-01-01T00:30:00{offset}" if year < 5000 else f"{year:04d}-12-31T23:30:00{offset}"
    documented = re.match(STORABLE_YEAR_PATTERN, text) is not None
    try:
        loaded = _Schema().load({"since": text})["since"]
    except ma.ValidationError as error:
        assert not documented, error.messages
        assert "between the years 2 and 9998" in error.messages["since"][0]
        return
    assert documented
    assert loaded.astimezone(timezone.utc).tzinfo is timezone.utc  # no OverflowError


def test_the_openapi_document_carries_the_pattern():
    from apispec import APISpec
    from apispec.ext.marshmallow import MarshmallowPlugin

    spec = APISpec("t", "1", "3.0.3", plugins=[MarshmallowPlugin()])
    spec.components.schema("S", schema=_Schema)
    assert spec.to_dict()["components"]["schemas"]["S"]["properties"]["since"]["pattern"] == STORABLE_YEAR_PATTERN
