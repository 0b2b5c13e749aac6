"""Alembic migrations of the service's schema (run by :mod:`smartsvc.migrate`, not imported)."""
