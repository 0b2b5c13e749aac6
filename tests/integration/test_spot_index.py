"""The in-process spot index: built once however many requests ask, rebuilt after a publish, never half-built."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest
from shapely.geometry import Point

from geodata.model import Rule, Spot
from smartsvc.config import Settings
from smartsvc.db import Database
from smartsvc.migrate import upgrade
from smartsvc.services.layers import iter_spots
from smartsvc.services.spot_index import IndexedLayer, LiveSpotIndex, read_layer_spots
from tests.support.geodata import fixture_spots, publish_dataset, store_dataset

FREE = (Rule(None, "parking"),)
# Waits for the other thread, generous: a build ends with a full garbage collection, which in a test process
# that has run a thousand tests before (and on a loaded CI machine) took more than 10 s once.
WAIT_S = 120


def spots(count: int, name: str) -> list[Spot]:
    return [Spot(Point(2.35 + i * 1e-4, 48.85), kind="space", rules=FREE, source_feature_id=f"{name}-{i}")
            for i in range(count)]


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database(Settings(database_url=f"sqlite:///{tmp_path / 'index.db'}"))
    upgrade(database)
    yield database
    database.engine.dispose()


class CountingIndex(LiveSpotIndex):
    """Counts builds; a build waits for ``release`` once ``hold`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.builds = 0
        self.hold = False
        self.building = threading.Event()
        self.release = threading.Event()

    def _build(self, session, live) -> IndexedLayer:
        self.builds += 1
        self.building.set()
        if self.hold:
            assert self.release.wait(WAIT_S)
        return super()._build(session, live)


def current(database: Database, live_index: LiveSpotIndex) -> IndexedLayer:
    with database.session() as session:
        return live_index.current(session)


def test_concurrent_first_requests_build_the_index_once(database):
    store_dataset(database, spots(500, "a"))
    live_index = CountingIndex()
    live_index.hold = True
    results: list[IndexedLayer] = []
    threads = [threading.Thread(target=lambda: results.append(current(database, live_index))) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert live_index.building.wait(WAIT_S)
    live_index.release.set()
    for thread in threads:
        thread.join(WAIT_S)

    assert live_index.builds == 1
    assert len(results) == 8 and all(result is results[0] for result in results)
    assert len(results[0].index) == 500


def test_while_a_new_version_builds_the_previous_one_answers(database):
    first = store_dataset(database, spots(3, "a"))
    live_index = CountingIndex()
    old = current(database, live_index)
    second = store_dataset(database, spots(5, "b"))
    live_index.hold = True
    live_index.building.clear()
    rebuilt: list[IndexedLayer] = []
    builder = threading.Thread(target=lambda: rebuilt.append(current(database, live_index)))
    builder.start()
    assert live_index.building.wait(WAIT_S)

    meanwhile = current(database, live_index)
    live_index.release.set()
    builder.join(WAIT_S)
    assert not builder.is_alive()

    assert meanwhile is old and old.dataset_id == first
    assert rebuilt[0].dataset_id == second and len(rebuilt[0].index) == 5
    assert current(database, live_index) is rebuilt[0]
    assert live_index.builds == 2


def test_an_unchanged_layer_is_not_rebuilt_and_an_empty_one_has_no_index(database):
    live_index = CountingIndex()

    assert current(database, live_index).index is None
    dataset = store_dataset(database, spots(2, "a"))
    built = current(database, live_index)
    assert current(database, live_index) is built
    publish_dataset(database, dataset)  # published again: a new version of the same dataset
    assert current(database, live_index) is not built
    assert live_index.builds == 3


def test_the_fast_layer_reader_gives_what_iter_spots_gives(database):
    # Every kind of geometry and rule list the fixture file has, plus a spot without rules.
    stored = [*fixture_spots(), Spot(Point(2.36, 48.86), kind="space", source_feature_id="no-rules")]
    dataset = store_dataset(database, stored)
    with database.session() as session:
        expected = list(iter_spots(session, dataset))
        ids, got = read_layer_spots(session, dataset, batch=7)

    assert ids == [public_id for public_id, _ in expected] and len(ids) == len(stored)
    for (_, want), spot in zip(expected, got):
        assert spot.to_properties() == want.to_properties()
        assert spot.geometry.equals_exact(want.geometry, 0) and spot.geometry.geom_type == want.geometry.geom_type
    # Equal rule lists are one tuple, shared.
    by_value: dict = {}
    assert all(by_value.setdefault(spot.rules, spot.rules) is spot.rules for spot in got)
