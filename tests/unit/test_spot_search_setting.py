"""SMARTSVC_SPOT_SEARCH: which storage path answers spot searches."""

from __future__ import annotations

import pytest

from smartsvc.config import ConfigError, load_settings
from smartsvc.services.postgis_spots import PostgisSpotFinder
from smartsvc.services.spot_index import IndexSpotFinder
from smartsvc.services.spots import build_spot_finder, spot_search_path

POSTGRES = "postgresql+psycopg://u:p@localhost/db"


@pytest.mark.parametrize(
    ("environ", "path"),
    [
        ({}, "index"),
        ({"SMARTSVC_DATABASE_URL": POSTGRES}, "postgis"),
        ({"SMARTSVC_DATABASE_URL": POSTGRES, "SMARTSVC_SPOT_SEARCH": "index"}, "index"),
        ({"SMARTSVC_DATABASE_URL": POSTGRES, "SMARTSVC_SPOT_SEARCH": " PostGIS "}, "postgis"),
        ({"SMARTSVC_SPOT_SEARCH": "index"}, "index"),
        ({"SMARTSVC_SPOT_SEARCH": "auto"}, "index"),
    ],
)
def test_the_database_decides_unless_told(environ, path):
    settings = load_settings(environ)

    assert spot_search_path(settings) == path
    finder = build_spot_finder(settings)
    assert isinstance(finder, IndexSpotFinder if path == "index" else PostgisSpotFinder) and finder.name == path


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SMARTSVC_SPOT_SEARCH": "fast"}, "SMARTSVC_SPOT_SEARCH='fast' must be one of"),
        ({"SMARTSVC_SPOT_SEARCH": "postgis"}, "SMARTSVC_SPOT_SEARCH=postgis needs a PostgreSQL"),
    ],
)
def test_a_bad_choice_stops_the_start_naming_the_variable(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ)


def test_postgis_on_sqlite_is_refused_even_when_settings_are_built_in_code():
    settings = load_settings({}).replace(spot_search="postgis")

    with pytest.raises(ConfigError, match="PostgreSQL"):
        build_spot_finder(settings)
