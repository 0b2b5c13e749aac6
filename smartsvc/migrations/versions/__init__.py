"""The revisions, one module each (Alembic loads them from their files; this one it skips)."""
