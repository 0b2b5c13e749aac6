"""Alembic environment: runs with the engine the service itself builds."""

from __future__ import annotations

from alembic import context

from smartsvc.models import Base

config = context.config
target_metadata = Base.metadata


# PostGIS owns these; autogenerate must not propose dropping them.
_FOREIGN_TABLES = {"spatial_ref_sys", "geography_columns", "geometry_columns"}


def _include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    return not (type_ == "table" and reflected and compare_to is None and name in _FOREIGN_TABLES)


def run_migrations_online() -> None:
    """Migrate over the connection handed in by :func:`smartsvc.migrate.upgrade`."""
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=_include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
