"""Alembic migrations of the catalog. Run with ``vigil db upgrade``."""
