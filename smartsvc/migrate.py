"""Run Alembic migrations programmatically (no alembic.ini needed at run time)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .db import Database

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"

# Tables the PostGIS extension owns, and what our migrations add on PostgreSQL
# only (geography column and its GiST index): never in the ORM models, so
# comparing models with the database must leave them out.
POSTGIS_TABLES = frozenset({"spatial_ref_sys", "geometry_columns", "geography_columns", "raster_columns",
                            "raster_overviews", "topology", "layer"})
POSTGRES_ONLY = frozenset({("column", "geog"), ("index", "ix_layer_features_geog")})


def outside_the_models(name: str | None, type_: str) -> bool:
    """True for database objects the models deliberately do not describe."""
    return (type_ == "table" and name in POSTGIS_TABLES) or (type_, name) in POSTGRES_ONLY


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations."""
    # Alembic is imported where it is used: importing it costs every process start (``--help`` too).
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (PostGIS is enabled on PostgreSQL)."""
    from alembic import command

    config = alembic_config()
    with database.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # PostgreSQL serialises concurrent migrators (several API processes starting at once).
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(748213)")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(database: Database) -> str | None:
    """The revision the database is at (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped with this code."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
