"""Alembic environment: runs with the engine the service itself builds."""

from __future__ import annotations

# Imported here, not by smartsvc.migrate: it is heavy (shapely, numpy) and only migrations reflect
# PostGIS columns; importing it teaches SQLAlchemy's reflection the PostGIS types.
import geoalchemy2  # noqa: F401
from alembic import context

from smartsvc.migrate import outside_the_models
from smartsvc.models import Base

config = context.config
target_metadata = Base.metadata


def _include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    # PostGIS's own tables and our PostgreSQL-only spatial column: autogenerate must not drop them.
    return not (reflected and compare_to is None and outside_the_models(name, type_))


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
