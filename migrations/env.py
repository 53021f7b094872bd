"""Alembic environment: runs against the configured database or a given connection."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from vigil.catalog.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      compare_type=True, compare_server_default=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from vigil.settings import get_settings

    engine = create_engine(get_settings().sqlalchemy_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `vigil db upgrade`")
run_migrations_online()
