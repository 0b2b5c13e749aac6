"""Settings from ``SMARTSVC_*`` variables: defaults, validation, normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartsvc.config import ConfigError, Settings, ensure_secret_key, load_settings


def test_no_variables_gives_the_embedded_defaults():
    settings = load_settings({})

    assert settings.var_dir == Path("var")
    assert settings.database_url == f"sqlite:///{(Path('var') / 'smartsvc.db').resolve()}"
    assert settings.is_sqlite
    assert settings.broker_url == "filesystem://"
    assert settings.push_provider == "auto"
    assert settings.max_body_bytes == 1_048_576
    assert settings.access_token_ttl_s == 3600
    assert settings.rate_limit_storage_url == "memory://"
    assert settings.log_json is True


def test_variables_without_the_prefix_are_ignored():
    assert load_settings({"PATH": "/bin", "DATABASE_URL": "mysql://x"}).is_sqlite


def test_var_dir_moves_the_embedded_database_and_broker(tmp_path):
    settings = load_settings({"SMARTSVC_VAR_DIR": str(tmp_path)})

    assert settings.database_url == f"sqlite:///{(tmp_path / 'smartsvc.db').resolve()}"
    assert settings.broker_data_dir == tmp_path / "broker"
    assert settings.pushes_log_path == tmp_path / "pushes.jsonl"


def test_valid_values_are_parsed():
    settings = load_settings({
        "SMARTSVC_ACCESS_TOKEN_TTL_S": "600",
        "SMARTSVC_MAX_BODY_BYTES": "2048",
        "SMARTSVC_LOG_JSON": "0",
        "SMARTSVC_LOG_LEVEL": "debug",
        "SMARTSVC_RATE_LIMIT": "10/second;600/minute",
        "SMARTSVC_BROKER_URL": "redis://localhost:6379/0",
        "SMARTSVC_MAX_DEVICES_PER_USER": "5",
    })

    assert settings.access_token_ttl_s == 600
    assert settings.max_body_bytes == 2048
    assert settings.log_json is False
    assert settings.log_level == "DEBUG"
    assert settings.rate_limit == "10/second;600/minute"
    assert settings.broker_url == "redis://localhost:6379/0"
    assert settings.max_devices_per_user == 5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://root@localhost/smartsvc"),
        ("DATABASE_URL", "not a url"),
        ("DATABASE_URL", "postgresql+psycopg2://u@db/smart"),  # driver we do not ship
        ("BROKER_URL", "amqp://guest@localhost//"),
        ("ACCESS_TOKEN_TTL_S", "an hour"),
        ("ACCESS_TOKEN_TTL_S", "10"),
        ("MAX_BODY_BYTES", "0"),
        ("MAX_BODY_BYTES", "1.5"),
        ("RATE_LIMIT", "lots"),
        ("PUSH_PROVIDER", "carrier-pigeon"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_JSON", "maybe"),
        ("OUTBOX_RELAY_INTERVAL_S", "0"),
        ("OUTBOX_BATCH_SIZE", "-1"),
        ("TASK_SOFT_TIME_LIMIT_S", "x"),
        ("MAX_DEVICES_PER_USER", "0"),
        ("MAX_PRODUCTS_PER_USER", "100001"),
    ],
)
def test_an_invalid_value_fails_naming_the_variable(name, value):
    with pytest.raises(ConfigError) as excinfo:
        load_settings({f"SMARTSVC_{name}": value})

    assert f"SMARTSVC_{name}" in str(excinfo.value)


def test_an_unknown_smartsvc_variable_is_refused_by_name():
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"SMARTSVC_DATABSE_URL": "sqlite:///x.db"})

    message = str(excinfo.value)
    assert "SMARTSVC_DATABSE_URL" in message
    assert "DATABASE_URL" in message.split("known:", 1)[1]


@pytest.mark.parametrize(
    "url",
    ["postgres://u:p@db:5432/smart", "postgresql://u:p@db:5432/smart", "postgresql+psycopg://u:p@db:5432/smart"],
)
def test_postgres_urls_are_normalised_to_psycopg(url):
    settings = load_settings({"SMARTSVC_DATABASE_URL": url})

    assert settings.database_url == "postgresql+psycopg://u:p@db:5432/smart"
    assert not settings.is_sqlite


def test_a_short_secret_key_is_refused_by_name():
    with pytest.raises(ConfigError, match="SMARTSVC_SECRET_KEY"):
        ensure_secret_key(Settings(secret_key="short"))


def test_a_generated_secret_key_is_kept_across_restarts(tmp_path):
    first = ensure_secret_key(Settings(var_dir=tmp_path))
    second = ensure_secret_key(Settings(var_dir=tmp_path))

    assert len(first.secret_key) >= 32
    assert first.secret_key == second.secret_key
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_upload_and_import_settings_have_defaults():
    settings = load_settings({"SMARTSVC_VAR_DIR": "/srv/smartsvc"})

    assert settings.upload_folder == Path("/srv/smartsvc/uploads")
    assert settings.max_upload_bytes == 512 * 1024 * 1024
    assert (settings.import_max_features, settings.import_max_vertices, settings.import_max_depth) == (
        2_000_000, 50_000, 32)
    assert settings.service_area is None
    assert settings.import_time_limit_s == 3600


def test_upload_and_import_settings_are_parsed(tmp_path):
    settings = load_settings({
        "SMARTSVC_UPLOAD_DIR": str(tmp_path / "shared"),
        "SMARTSVC_MAX_UPLOAD_BYTES": "2048",
        "SMARTSVC_IMPORT_MAX_FEATURES": "10",
        "SMARTSVC_IMPORT_MAX_VERTICES": "100",
        "SMARTSVC_IMPORT_MAX_DEPTH": "8",
        "SMARTSVC_IMPORT_TIME_LIMIT_S": "7200",
        "SMARTSVC_SERVICE_AREA": " 2.2, 48.8 ,2.5,48.95",
    })

    assert settings.upload_folder == tmp_path / "shared"
    assert settings.max_upload_bytes == 2048
    assert (settings.import_max_features, settings.import_max_vertices, settings.import_max_depth) == (10, 100, 8)
    assert settings.import_time_limit_s == 7200
    assert settings.service_area == (2.2, 48.8, 2.5, 48.95)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("UPLOAD_DIR", ""),
        ("MAX_UPLOAD_BYTES", "lots"),
        ("MAX_UPLOAD_BYTES", "100"),
        ("IMPORT_MAX_FEATURES", "0"),
        ("IMPORT_MAX_VERTICES", "1"),
        ("IMPORT_MAX_DEPTH", "many"),
        ("IMPORT_TIME_LIMIT_S", "10"),
        ("SERVICE_AREA", "2.2,48.8,2.5"),  # three numbers
        ("SERVICE_AREA", "2.2,48.8,2.5,north"),
        ("SERVICE_AREA", "48.8,2.2,48.95,2.5,"),  # five parts
        ("SERVICE_AREA", "2.5,48.8,2.2,48.95"),  # min_lon above max_lon
        ("SERVICE_AREA", "2.2,48.8,2.5,95"),  # latitude out of range
        ("SERVICE_AREA", "nan,48.8,2.5,48.95"),
    ],
)
def test_an_invalid_upload_or_import_setting_fails_naming_the_variable(name, value):
    with pytest.raises(ConfigError) as excinfo:
        load_settings({f"SMARTSVC_{name}": value})

    assert f"SMARTSVC_{name}" in str(excinfo.value)
