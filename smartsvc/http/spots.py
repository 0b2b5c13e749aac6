"""``GET /v1/spots``: spots near a point that the caller's product fits and may park at for the stay."""

from __future__ import annotations

import functools
import math
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import marshmallow as ma
from flask import Response, current_app, g, request
from flask.views import MethodView
from werkzeug.datastructures import MultiDict

from geodata.model import KINDS, ORIENTATIONS
from geodata.answer_json import answer_json

from ..credentials import ACCESS_TOKEN_PREFIX, InvalidToken
from ..errors import Unauthorized
from ..services.auth import USER_ROLE, Principal
from ..services.spot_query import SpotQuery
from ..services.spots import search_spots, search_spots_for_token
from ..timeutil import utcnow
from .api import _UNSTORABLE_TEXT, Blueprint, current_user_id
from .geojson import GeometrySchema

blp = Blueprint("spots", __name__, url_prefix="/v1", description="Spot search for the caller's vehicle")

MAX_RADIUS_M = 5000
DEFAULT_RADIUS_M = 500
MAX_DURATION_MIN = 7 * 24 * 60  # allowed-now looks one week ahead
DEFAULT_DURATION_MIN = 60
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
# Rules are opening_hours windows; far past or future years only produce nonsense (or overflow).
FIRST_YEAR, LAST_YEAR = 1970, 2999
_AT_PATTERN = r"^(19[7-9][0-9]|2[0-9]{3})-"


def _supported_year(value: datetime) -> None:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ma.ValidationError(f"must be a time between the years {FIRST_YEAR} and {LAST_YEAR}")


class SpotSearchArgs(ma.Schema):
    lat = ma.fields.Float(required=True, validate=ma.validate.Range(min=-90, max=90),
                          metadata={"description": "Latitude of the point to search around (WGS 84)",
                                    "example": 48.85})
    lon = ma.fields.Float(required=True, validate=ma.validate.Range(min=-180, max=180),
                          metadata={"description": "Longitude of the point to search around (WGS 84)",
                                    "example": 2.35})
    radius_m = ma.fields.Float(
        load_default=DEFAULT_RADIUS_M,
        validate=ma.validate.Range(min=0, max=MAX_RADIUS_M, min_inclusive=False),
        metadata={"description": f"Search radius in geodesic metres (up to {MAX_RADIUS_M}, "
                                 f"default {DEFAULT_RADIUS_M})"},
    )
    product_id = ma.fields.UUID(
        required=True,
        metadata={"description": "One of the caller's products; its catalogue model's length_m (and width_m, "
                                 "height_m, weight_kg when known) decide what fits"},
    )
    at = ma.fields.AwareDateTime(
        load_default=None, validate=_supported_year,
        metadata={"description": f"Start of the stay, RFC 3339 with offset (default: now); "
                                 f"years {FIRST_YEAR}–{LAST_YEAR}",
                  "pattern": _AT_PATTERN, "example": "2026-11-24T10:00:00+01:00"},
    )
    duration_min = ma.fields.Integer(
        load_default=DEFAULT_DURATION_MIN, validate=ma.validate.Range(min=1, max=MAX_DURATION_MIN),
        metadata={"description": f"Length of the stay in minutes (default {DEFAULT_DURATION_MIN}); a spot must "
                                 "allow parking for all of it"},
    )
    limit = ma.fields.Integer(
        load_default=DEFAULT_LIMIT, validate=ma.validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"At most this many spots (1–{MAX_LIMIT}, default {DEFAULT_LIMIT})"},
    )


class SpotSourceSchema(ma.Schema):
    dataset = ma.fields.String(required=True, allow_none=True, metadata={"description": "Dataset id"})
    feature_id = ma.fields.String(required=True, allow_none=True,
                                  metadata={"description": "The feature's own id in the uploaded file"})


class SpotSchema(ma.Schema):
    id = ma.fields.String(required=True, metadata={"description": "Public id: <dataset id>.<position>"})
    geometry = ma.fields.Nested(GeometrySchema, required=True)
    distance_m = ma.fields.Float(required=True, metadata={
        "description": "Geodesic metres from the point to the nearest point of the spot (0 inside a lot)"})
    kind = ma.fields.String(required=True, allow_none=True, validate=ma.validate.OneOf(KINDS))
    orientation = ma.fields.String(required=True, allow_none=True, validate=ma.validate.OneOf(ORIENTATIONS))
    length_m = ma.fields.Float(required=True, allow_none=True)
    fits = ma.fields.Boolean(required=True, metadata={"description": "Always true: only fitting spots are listed"})
    spaces_for_vehicle = ma.fields.Integer(required=True, metadata={
        "description": "How many vehicles like the product the spot holds"})
    allowed_until = ma.fields.String(required=True, allow_none=True, metadata={
        "format": "date-time",
        "description": "When parking started at `at` stops being allowed, in the dataset's time zone "
                       "(null: allowed for at least the next 7 days)"})
    max_stay_min = ma.fields.Float(required=True, allow_none=True)
    fee = ma.fields.Boolean(required=True, metadata={"description": "Whether parking costs during the stay"})
    why = ma.fields.List(ma.fields.String(), required=True, metadata={
        "description": "Reasons in words: the fit, then the rules over the stay"})
    source = ma.fields.Nested(SpotSourceSchema, required=True)


class SpotsSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(SpotSchema), required=True,
                           metadata={"description": "Sorted by distance"})


def _container() -> Any:
    return current_app.extensions["smartsvc"]


# ---------------------------------------------------------------- the hot path (BENCHMARKS.md, 2)
#
# GET /v1/spots is the request a client sends most, and marshmallow/webargs, a session per read and
# three separate reads were most of its cost. When the credential is a user access token and every
# query argument is well-formed, the view below answers without them: the arguments go through
# SpotSearchArgs' own fields (same values, same validators), the token's generation, the product and
# the live layer version are one statement. Anything else — a key, a malformed argument (→ the
# standard 422), text no database can store — takes the standard, documented path, whose errors are
# therefore exactly those of the schema, in the same order (401 before 422 before 404).

_ARGS_SCHEMA = SpotSearchArgs()


def _finite_float(text: str) -> float:
    # ma.fields.Float(allow_nan=False): float(), then no nan or infinity.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _aware_iso_datetime(text: str) -> datetime:
    # ma.fields.AwareDateTime (ISO format, no default time zone): datetime.fromisoformat, then an offset.
    value = datetime.fromisoformat(text)
    if not ma.utils.is_aware(value):
        raise ValueError(text)
    return value


def _converter(name: str, field: ma.fields.Field) -> tuple[Any, tuple[Any, ...]]:
    """What ``field.deserialize`` does to a query string for the fields this schema uses, as (convert,
    validators): the same builtin conversion and the field's own validators, without marshmallow's
    per-call machinery. Any other field is deserialized by marshmallow itself."""
    kind = type(field)
    plain = not getattr(field, "pre_load", None) and not getattr(field, "post_load", None)
    if plain and kind is ma.fields.Float and not field.allow_nan:
        return _finite_float, tuple(field.validators)
    if plain and kind is ma.fields.Integer and not field.strict:
        return int, tuple(field.validators)
    if plain and kind is ma.fields.UUID:
        return uuid.UUID, tuple(field.validators)
    if (plain and kind is ma.fields.AwareDateTime and field.format in (None, "iso", "iso8601")
            and field.default_timezone is None):
        return _aware_iso_datetime, tuple(field.validators)
    return functools.partial(field.deserialize, attr=name), ()


# (name, convert, validators, required, default) per argument of SpotSearchArgs, in its order.
_ARG_READERS = tuple((name, *_converter(name, field), field.required, field.load_default)
                     for name, field in _ARGS_SCHEMA.fields.items())


def _single_valued_query(query_string: str) -> dict[str, str] | None:
    """The query string's arguments, as werkzeug's ``request.args`` decodes them, when it holds ASCII only
    and no name twice; else None (``request.args`` then reads it).

    ``request.args`` builds its MultiDict through ``parse_qsl`` on every request: ~16 µs of the ~35 µs the
    hot path spent on its arguments (BENCHMARKS.md, 2). The decoding here is parse_qsl's: parts split on
    ``&``, empty parts skipped, a part without ``=`` is a blank value, ``+`` is a space, then percent-decoding
    with werkzeug's error handler (undecodable bytes stay percent-encoded).
    """
    if not query_string.isascii():
        return None  # werkzeug decodes the raw bytes first; leave every such case to it
    out: dict[str, str] = {}
    for part in query_string.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "+" in part:
            name, value = name.replace("+", " "), value.replace("+", " ")
        if "%" in part:
            name, value = unquote(name, errors="werkzeug.url_quote"), unquote(value, errors="werkzeug.url_quote")
        if name in out:
            return None
        out[name] = value
    return out


def _fast_args(raw: Any) -> dict[str, Any] | None:
    """The query arguments as ``SpotSearchArgs().load`` gives them, or None when that would not succeed
    (or might differ: unstorable text anywhere, which the standard parser names in its 422).

    ``raw``: the request's MultiDict, or the dict of :func:`_single_valued_query`.
    """
    items = raw.items(multi=True) if isinstance(raw, MultiDict) else raw.items()
    # One search over all names and values: the pattern matches single characters, so joining changes nothing.
    if _UNSTORABLE_TEXT.search("".join([text for item in items for text in item])):
        return None
    out: dict[str, Any] = {}
    get = raw.get
    try:
        for name, convert, validators, required, default in _ARG_READERS:
            text = get(name)  # webargs reads the first value of a repeated single-valued argument
            if text is None:
                if required:
                    return None
                out[name] = default() if callable(default) else default
                continue
            value = convert(text)
            for validate in validators:
                if validate(value) is False:
                    return None
            out[name] = value
    except (ValueError, TypeError, OverflowError, AttributeError, ma.ValidationError):
        return None  # the standard path answers with the schema's own 422
    return out


def _fast_search() -> Response | None:
    """The answer without marshmallow or sessions, or None when the standard path must answer."""
    req = request._get_current_object()  # type: ignore[attr-defined]
    header = req.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential.startswith(ACCESS_TOKEN_PREFIX):
        return None  # no header, an API key, a malformed header: the standard path says which
    plain = _single_valued_query(req.environ.get("QUERY_STRING", ""))
    args = _fast_args(req.args if plain is None else plain)
    if args is None:
        return None
    container = _container()
    try:
        claims = container.tokens.verify(credential)
    except InvalidToken as exc:
        raise Unauthorized(str(exc)) from None
    g.principal = Principal(role=USER_ROLE, user_id=claims.user_id)
    query = _query(args)
    try:
        results = search_spots_for_token(container.database, container.spot_finder, claims.user_id,
                                         claims.generation, query)
    except Unauthorized:
        g.pop("principal", None)
        raise
    _journal(container, claims.user_id, query, results)
    return _answer(results)


def _journal(container: Any, user_id: Any, query: SpotQuery, results: list[Any]) -> None:
    # A touchpoint (TRUST.md): buffered, never a write on this path (services/journal_buffer.py).
    container.search_journal.add_search(container.database, user_id, utcnow(), query, len(results))


def _answer(results: list[Any]) -> Response:
    # The JSON text is joined from pieces kept per spot and decision (geodata.answer_json): the same
    # document jsonify would give, without building 20 dicts and encoding them on every request.
    return current_app.response_class(answer_json(results), mimetype="application/json")


def _query(args: dict[str, Any]) -> SpotQuery:
    at = args["at"] if args["at"] is not None else utcnow().replace(microsecond=0)
    return SpotQuery(lat=args["lat"], lon=args["lon"], radius_m=args["radius_m"], product_id=args["product_id"],
                     at=at, duration_min=args["duration_min"], limit=args["limit"])


def _fast_path_first(view: Any) -> Any:
    """Answer from :func:`_fast_search` when it can; else the standard view (documented by its decorators)."""

    @functools.wraps(view)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        answer = _fast_search()
        return answer if answer is not None else view(self, *args, **kwargs)

    return wrapper


@blp.route("/spots")
class Spots(MethodView):
    @_fast_path_first
    @blp.auth("user")
    @blp.arguments(SpotSearchArgs, location="query")
    @blp.response(200, SpotsSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args):
        """Spots near a point that the product fits and may park at for the whole stay, nearest first

        Only the live version of the `parking` layer is searched (no live version: no items).
        Another user's product is 404; a product whose catalogue model has no `length_m` is 422.
        """
        container = _container()
        query = _query(args)
        results = search_spots(container.database, container.spot_finder, current_user_id(), query)
        _journal(container, current_user_id(), query, results)
        # The items are exactly what SpotsSchema describes (test_api_spots dumps an answer through the schema
        # and compares): answering with the JSON directly skips marshmallow's field-by-field dump of each item.
        return _answer(results)
