"""Migrations build exactly the schema the models describe, and undo it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from vigil import migrate
from vigil.catalog.models import Base, RoleName

SCRATCH_DB = "vigil_migration_test"


def test_the_run_is_at_head(engine: Engine) -> None:
    head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head


def test_models_and_migrations_agree(engine: Engine) -> None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                     "compare_server_default": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"autogenerate finds differences: {diff}"


def test_roles_are_seeded_and_match_the_code(engine: Engine) -> None:
    with engine.connect() as conn:
        names = set(conn.execute(text("SELECT name FROM roles")).scalars())
    assert names == {r.value for r in RoleName}


@pytest.fixture
def scratch_engine(engine: Engine) -> Iterator[Engine]:
    admin = engine.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{SCRATCH_DB}"'))
    scratch = create_engine(make_url(str(engine.url.render_as_string(hide_password=False)))
                            .set(database=SCRATCH_DB))
    yield scratch
    scratch.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)'))


def test_downgrade_to_base_removes_everything_and_upgrade_rebuilds(
        scratch_engine: Engine) -> None:
    from alembic import command

    with scratch_engine.begin() as conn:
        migrate.upgrade(conn)
    with scratch_engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "base")
    with scratch_engine.connect() as conn:
        leftover = set(inspect(conn).get_table_names()) - {"alembic_version"}
        types = conn.execute(text(
            "SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'public' AND t.typtype = 'e'")).scalars().all()
    assert leftover == set()
    assert types == []
    with scratch_engine.begin() as conn:
        migrate.upgrade(conn)
    with scratch_engine.connect() as conn:
        assert "chunks" in inspect(conn).get_table_names()
