"""``smartsvc import FILE --layer parking [--publish]``: the API's import, in-process, on both databases."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from smartsvc.cli import main
from smartsvc.db import Database
from smartsvc.migrate import upgrade
from smartsvc.models import Dataset, LayerFeature, OutboxMessage
from smartsvc.services.layers import live_layer
from tests.support.data import PORTLAND_CURBLR
from tests.support.factories import make_settings

FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "geodata" / "fixtures"
PORTLAND = PORTLAND_CURBLR


@pytest.fixture
def cli(database_url, tmp_path):
    """Run ``smartsvc`` with settings in the environment, as an operator would."""
    settings = make_settings(tmp_path / "var", database_url=database_url)
    env = {"SMARTSVC_VAR_DIR": str(settings.var_dir), "SMARTSVC_DATABASE_URL": database_url,
           "SMARTSVC_SECRET_KEY": settings.secret_key, "SMARTSVC_LOG_JSON": "0", "SMARTSVC_LOG_LEVEL": "WARNING"}
    database = Database(settings)
    upgrade(database)  # as `smartsvc db upgrade` would; the command checks it is at head

    def run(*args: str):
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    run.database = database  # type: ignore[attr-defined]
    run.settings = settings  # type: ignore[attr-defined]
    yield run
    database.engine.dispose()


def datasets(database: Database) -> list[Dataset]:
    with database.session() as session:
        return list(session.scalars(select(Dataset).order_by(Dataset.id)))


def test_import_and_publish_the_real_portland_feed(cli):
    result = cli("import", str(PORTLAND), "--layer", "parking", "--name", "Portland downtown", "--publish")

    assert result.exit_code == 0, result.output
    assert "ready: 416 features accepted, 0 rejected, 0 repaired; 416 spots stored" in result.stdout
    assert "time zone America/Los_Angeles" in result.stdout
    [dataset] = datasets(cli.database)
    assert (dataset.name, dataset.status, dataset.format, dataset.spots) == (
        "Portland downtown", "published", "curblr", 416)
    assert dataset.progress_done == dataset.progress_total == PORTLAND.stat().st_size
    assert f"published: dataset {dataset.id} is now the live version of layer parking" in result.stdout
    with cli.database.session() as session:
        assert live_layer(session, "parking").dataset_id == dataset.id
        assert session.scalar(select(func.count()).select_from(LayerFeature)) == 416
        # In-process: no outbox message, so no worker imports it a second time.
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    assert list(cli.settings.upload_folder.iterdir()) == [], "the copy of the file is removed"
    assert PORTLAND.exists(), "the operator's own file is left alone"


def test_import_reports_problems_and_leaves_it_unpublished_without_the_flag(cli):
    result = cli("import", str(FIXTURES / "normalized.geojson"), "--layer", "parking", "--time-zone", "Europe/Paris")

    assert result.exit_code == 0, result.output
    assert "6 problems found (first 6 shown):" in result.stdout
    assert "[error] feature bad-height: max_vehicle_height_m: max_vehicle_height_m '2,2 m' is not a number in " \
           "metres" in result.stdout
    assert "[repaired] feature unclosed: geometry:" in result.stdout
    [dataset] = datasets(cli.database)
    assert (dataset.status, dataset.time_zone, dataset.name) == ("ready", "Europe/Paris", "normalized.geojson")
    assert f"POST /v1/datasets/{dataset.id}/publish" in result.stdout
    with cli.database.session() as session:
        assert live_layer(session, "parking").dataset_id is None


def test_a_file_that_fails_exits_non_zero_with_the_reason(cli):
    result = cli("import", str(FIXTURES / "spots.csv"), "--layer", "parking", "--format", "geojson", "--publish")

    assert result.exit_code == 1
    assert "the import of spots.csv failed: the file was declared as GeoJSON but it looks like CSV" in result.output
    [dataset] = datasets(cli.database)
    assert dataset.status == "failed"
    with cli.database.session() as session:
        assert session.scalar(select(func.count()).select_from(LayerFeature)) == 0
        assert live_layer(session, "parking").dataset_id is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "geofences"], "layer: geofences are managed through /v1/geofences"),
        (["--layer", "parking", "--time-zone", "Mars/Olympus"], "time_zone: 'Mars/Olympus' is not an IANA time zone"),
        (["--layer", "roads"], "'roads' is not one of"),
    ],
)
def test_bad_options_are_refused_before_anything_is_stored(cli, args, message):
    result = cli("import", str(FIXTURES / "spots.csv"), *args)

    assert result.exit_code != 0
    assert message in result.output
    assert datasets(cli.database) == []
    folder = cli.settings.upload_folder
    assert not folder.exists() or list(folder.iterdir()) == []


def test_the_cli_and_the_api_publish_the_same_layer(cli):
    first = cli("import", str(FIXTURES / "spots.csv"), "--layer", "parking", "--publish")
    second = cli("import", str(FIXTURES / "spots_wkt.csv"), "--layer", "parking", "--publish")

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    older, newer = datasets(cli.database)
    assert (older.status, newer.status) == ("superseded", "published")
    with cli.database.session() as session:
        live = live_layer(session, "parking")
    assert (live.dataset_id, live.version) == (newer.id, 2)
    assert isinstance(live.dataset_id, uuid.UUID)
