"""Spot search: the nearest spots the caller's product fits and may park at for the stay (API.md "Spot search").

The vehicle is the owned product's catalogue model (``length_m`` is needed;
width, height and weight are checked against limits when known). Two ways
answer with the same results (same spots, order, fields; distances within
centimetres): the in-process index (:mod:`.spot_index`) and PostGIS
(:mod:`.postgis_spots`). ``SMARTSVC_SPOT_SEARCH`` chooses; ``auto`` (the
default) takes the index on SQLite and PostGIS on PostgreSQL, where many
processes then share the database's index instead of each holding a copy of
the layer in memory. ``index`` on PostgreSQL trades that memory for speed.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.orm import Session

from geodata.model import Vehicle
from geodata.search import SpotResult

from ..config import ConfigError, Settings
from ..db import Database
from ..errors import InvalidInput, NotFound, Unauthorized
from ..models import ProductModel
from .auth import REVOKED_TOKEN_MESSAGE
from .layers import LiveVersion
from .postgis_spots import PostgisSpotFinder
from .spot_index import IndexSpotFinder
from .spot_query import PARKING, SpotFinder, SpotQuery


def spot_search_path(settings: Settings) -> str:
    """``index`` or ``postgis``: how this service answers spot searches."""
    if settings.spot_search == "auto":
        return "index" if settings.is_sqlite else "postgis"
    if settings.spot_search == "postgis" and settings.is_sqlite:
        raise ConfigError("SMARTSVC_SPOT_SEARCH=postgis needs a PostgreSQL database (SQLite has no PostGIS)")
    return settings.spot_search


def build_spot_finder(settings: Settings) -> SpotFinder:
    """The finder for ``settings`` (nothing is read until the first search)."""
    return IndexSpotFinder() if spot_search_path(settings) == "index" else PostgisSpotFinder()


def _dimension(attributes: dict[str, Any], name: str) -> float | None:
    value = attributes.get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def vehicle_of(model: ProductModel | Any) -> Vehicle:
    """The vehicle a catalogue model describes; 422 naming ``product_id`` when its length is unknown."""
    attributes = model.attributes or {}
    length = _dimension(attributes, "length_m")
    if length is None:
        raise InvalidInput(
            "product_id",
            f"the product's catalogue model ({model.brand} {model.name}) has no length_m, and spot search "
            "needs the vehicle's length to tell which spots it fits",
        )
    return Vehicle(length, _dimension(attributes, "width_m"), _dimension(attributes, "height_m"),
                   _dimension(attributes, "weight_kg"))


# Read on every search: plain SQL with typed columns costs about half of the equivalent ORM query.
_OWNED_MODEL = (
    text("SELECT m.brand, m.name, m.attributes FROM owned_products AS p"
         " JOIN product_models AS m ON m.id = p.model_id WHERE p.id = :product_id AND p.user_id = :user_id")
    .bindparams(bindparam("product_id", type_=Uuid), bindparam("user_id", type_=Uuid))
    .columns(ProductModel.brand, ProductModel.name, ProductModel.attributes)
)


def owned_product_model(session: Session, user_id: uuid.UUID, product_id: uuid.UUID) -> Any:
    """Brand, name and attributes of the catalogue model of one of the user's products (one query).

    Someone else's product, or none, is 404 as in :func:`.products.get_owned_product`.
    """
    model = session.execute(_OWNED_MODEL, {"product_id": product_id, "user_id": user_id}).first()
    if model is None:
        raise NotFound(f"product {product_id} does not exist")
    return model


# The hot path of GET /v1/spots (search_spots_for_token): the token's generation, the product's
# catalogue model and the live version of the layer in one statement, on a raw pooled DB-API
# connection — ~50 µs on SQLite, against ~0.9 ms for the three reads through SQLAlchemy
# (BENCHMARKS.md, 2). Every request still reads all three, so a revoked token, a deleted user or
# product and a publish are seen at once, in every process.
_TOKEN_PRODUCT_LIVE = (
    "SELECT u.token_generation, m.brand, m.name, m.attributes, l.dataset_id, l.version FROM users AS u"
    " LEFT JOIN owned_products AS p ON p.id = {p} AND p.user_id = u.id"
    " LEFT JOIN product_models AS m ON m.id = p.model_id"
    " LEFT JOIN live_layers AS l ON l.layer = {p} WHERE u.id = {p}"
)
_SQLITE_TOKEN_PRODUCT_LIVE = _TOKEN_PRODUCT_LIVE.format(p="?")
_PG_TOKEN_PRODUCT_LIVE = _TOKEN_PRODUCT_LIVE.format(p="%s")


@dataclass(frozen=True)
class _OwnedModel:
    brand: str
    name: str
    attributes: dict[str, Any] | None


def _read_token_product_live(database: Database, user_id: uuid.UUID, product_id: uuid.UUID,
                             layer: str, session: Session | None = None) -> tuple[Any, ...] | None:
    """(generation, brand, name, attributes, live dataset id, live version), typed; None: no such user.

    With ``session``, the statement runs on its connection (PostGIS then searches in the same read
    transaction: one pool checkout per request, not two).
    """
    engine = database.engine
    sqlite = engine.dialect.name == "sqlite"
    if session is not None:
        params = (product_id.hex, layer, user_id.hex) if sqlite else (product_id, layer, user_id)
        row = session.connection().exec_driver_sql(
            _SQLITE_TOKEN_PRODUCT_LIVE if sqlite else _PG_TOKEN_PRODUCT_LIVE, params).fetchone()
    elif sqlite:  # Uuid columns are 32 hex digits there, JSON is text
        row = _read_on_held_sqlite_connection(engine, (product_id.hex, layer, user_id.hex))
    else:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(_PG_TOKEN_PRODUCT_LIVE, (product_id, layer, user_id))
                row = cursor.fetchone()
            finally:
                cursor.close()
        finally:
            connection.close()  # back to the pool (which rolls the read transaction back)
    if row is None:
        return None
    generation, brand, name, attributes, dataset_id, version = row
    if sqlite:
        attributes = _parsed_json(attributes) if isinstance(attributes, str) else attributes
        dataset_id = _uuid_of_hex(dataset_id) if isinstance(dataset_id, str) else dataset_id
    return generation, brand, name, attributes, dataset_id, version


# (engine, process id, connection) per thread: see _read_on_held_sqlite_connection.
_held = threading.local()


def _read_on_held_sqlite_connection(engine: Any, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The hot path's one statement on SQLite, on a pooled connection this thread keeps between searches.

    A pool checkout and return (the return rolls back and runs the engine's checkin hook) cost about as
    much as the statement itself. Keeping the connection is safe there: SQLite connections run in
    autocommit mode (``smartsvc.db``), so each statement reads the latest commit, and a plain SELECT
    leaves no transaction open. The connection is given back when the thread meets another engine (a
    new app in the same process), and dropped after any error; a forked child opens its own.
    """
    held = getattr(_held, "entry", None)
    pid = os.getpid()
    if held is None or held[0] is not engine or held[1] != pid:
        if held is not None and held[1] == pid:
            _give_back(held[2])
        _held.entry = held = (engine, pid, engine.raw_connection())
    connection = held[2]
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(_SQLITE_TOKEN_PRODUCT_LIVE, params)
            return cursor.fetchone()
        finally:
            cursor.close()
    except BaseException:
        _held.entry = None
        _give_back(connection)
        raise


def _give_back(connection: Any) -> None:
    try:
        connection.close()  # back to its pool
    except Exception:  # its engine was disposed of: nothing to give back to
        pass


# Pure functions of the text read, kept for the few distinct texts the hot path sees (the catalogue models
# users search with, the live dataset): parsing them was ~10 % of the statement's cost. Bounded; emptied when
# full. The parsed attributes are shared: callers only read them.
_PARSED_MAX = 1024
_parsed_json_cache: dict[str, Any] = {}
_uuid_cache: dict[str, uuid.UUID] = {}


def _parsed_json(text: str) -> Any:
    value = _parsed_json_cache.get(text)
    if value is None:
        value = json.loads(text)
        if len(_parsed_json_cache) >= _PARSED_MAX:
            _parsed_json_cache.clear()
        _parsed_json_cache[text] = value
    return value


def _uuid_of_hex(text: str) -> uuid.UUID:
    value = _uuid_cache.get(text)
    if value is None:
        value = uuid.UUID(hex=text)
        if len(_uuid_cache) >= _PARSED_MAX:
            _uuid_cache.clear()
        _uuid_cache[text] = value
    return value


def search_spots_for_token(database: Database, finder: SpotFinder, user_id: uuid.UUID, token_generation: int,
                           query: SpotQuery) -> Sequence[SpotResult]:
    """:func:`search_spots` for a user access token whose signature and expiry were checked, not yet its
    generation: one statement checks the token (401 when revoked or the user is gone), finds the product
    (404) and reads the live layer version; the search then needs no session while the index is current.

    Same answers and errors as ``authenticate`` followed by :func:`search_spots`; from a current index, the
    results are a :class:`~geodata.search.FoundSpots` (made when read).
    """
    find_current = getattr(finder, "find_current", None)
    if find_current is None:  # PostGIS: the check and the search in one session
        with database.session() as session:
            row = _read_token_product_live(database, user_id, query.product_id, PARKING, session)
            return finder.find(session, query, _checked_vehicle(row, token_generation, query))
    row = _read_token_product_live(database, user_id, query.product_id, PARKING)
    vehicle = _checked_vehicle(row, token_generation, query)
    results = find_current(LiveVersion(PARKING, row[4], row[5] or 0), query, vehicle)
    if results is not None:
        return results
    with database.session() as session:  # a stale index: a publish since it was built
        return finder.find(session, query, vehicle)


def _checked_vehicle(row: tuple[Any, ...] | None, token_generation: int, query: SpotQuery) -> Vehicle:
    """The product's vehicle, after the token's generation (401) and the product (404) are checked."""
    if row is None or row[0] != token_generation:
        raise Unauthorized(REVOKED_TOKEN_MESSAGE)
    _, brand, name, attributes, _dataset_id, _version = row
    if brand is None:
        raise NotFound(f"product {query.product_id} does not exist")
    return vehicle_of(_OwnedModel(brand, name, attributes))


def search_spots(database: Database, finder: SpotFinder, user_id: uuid.UUID, query: SpotQuery) -> list[SpotResult]:
    """Spots for one of the user's products (someone else's product is 404), nearest first.

    One session (one connection, one read transaction) for the product, the live layer and the search.
    """
    with database.session() as session:
        vehicle = vehicle_of(owned_product_model(session, user_id, query.product_id))
        return finder.find(session, query, vehicle)
