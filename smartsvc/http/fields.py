"""Request-body fields and validators that accept exactly what the document says."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import marshmallow as ma

# Python's whitespace (str.isspace / str.strip), spelled out: ``\s`` means
# different characters in Python and in the ECMA regexes OpenAPI patterns use.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK_PATTERN = rf"^[{_SPACE}]*[^{_SPACE}]"
# For patterns built elsewhere that must agree with str.strip() (rule templates).
SPACE_CLASS = _SPACE


def not_blank() -> ma.validate.Regexp:
    """The text has at least one character that is not whitespace."""
    return ma.validate.Regexp(NOT_BLANK_PATTERN, error="must not be blank")


class JsonFloat(ma.fields.Float):
    """A JSON number, never a string ("1.5"), which marshmallow's Float would convert."""

    def _validated(self, value: Any) -> Any:
        if isinstance(value, (str, bytes)):
            raise self.make_error("invalid")
        return super()._validated(value)


class JsonInteger(ma.fields.Integer):
    """A JSON integer: neither a string ("7") nor a number with a fraction (7.5)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)


class JsonBoolean(ma.fields.Boolean):
    """A JSON true or false; not 0/1 or "yes" (``0 in {False}`` holds in Python)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


# Years a StorableDateTime may name: with any offset (under a day) the UTC time is then within Python's
# years 1-9999. The pattern says so in the OpenAPI document, so that a client (and schemathesis) knows
# year 1 and 9999 are refused.
STORABLE_FIRST_YEAR, STORABLE_LAST_YEAR = 2, 9998
STORABLE_YEAR_PATTERN = r"^(000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"


class StorableDateTime(ma.fields.AwareDateTime):
    """An RFC 3339 time with an offset, in the years 2-9998: its UTC equivalent always exists (the database
    stores UTC).

    ``0001-01-01T00:30:00+01:00`` is a valid ISO time whose UTC form falls before year 1: Python cannot
    represent it, and storing or comparing it failed with a 500. Such times are a 422 naming the field;
    years 1 and 9999 are refused whole, which the field's pattern documents.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["metadata"] = {"pattern": STORABLE_YEAR_PATTERN, **(kwargs.get("metadata") or {})}
        super().__init__(*args, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        if not STORABLE_FIRST_YEAR <= moment.year <= STORABLE_LAST_YEAR:
            raise ma.ValidationError(
                f"must be a time between the years {STORABLE_FIRST_YEAR} and {STORABLE_LAST_YEAR}")
        return moment
