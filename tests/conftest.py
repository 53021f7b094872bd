"""Test fixtures: one real embedded stack per test run, each test isolated.

* The stack (PostgreSQL, SeaweedFS S3, Redis) starts once, under a temporary home
  on free loopback ports, and is stopped at the end of the run.
  With VIGIL_TEST_EXTERNAL=1 the suite uses the servers configured through the
  VIGIL_* environment instead (a dedicated, disposable database and bucket).
* Migrations run once per run (``alembic upgrade head``): the schema under test is
  the one the migrations build.
* Each database test runs inside a transaction rolled back at its end (the code
  under test commits to a savepoint); each storage test gets its own key prefix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.support import VIGIL, environ_with, stack_env
from vigil.settings import Settings, get_settings

EXTERNAL = os.environ.get("VIGIL_TEST_EXTERNAL") == "1"


def _reset_cached() -> None:
    from vigil import db

    get_settings.cache_clear()
    db.get_engine.cache_clear()


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    if EXTERNAL:
        _reset_cached()
        yield get_settings()
        return
    from ops import stack

    home = Path(tempfile.mkdtemp(prefix="vigil-test-"))
    saved = {k: v for k, v in os.environ.items() if k.startswith("VIGIL_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(stack_env(home))
    _reset_cached()
    s = get_settings()
    try:
        stack.up(s)
        yield s
    finally:
        from vigil import db

        db.get_engine().dispose()
        stack.down(s)
        shutil.rmtree(home, ignore_errors=True)
        for key in [k for k in os.environ if k.startswith("VIGIL_")]:
            del os.environ[key]
        os.environ.update(saved)
        _reset_cached()


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    from vigil import db, migrate

    eng = db.get_engine()
    with eng.begin() as conn:
        migrate.upgrade(conn)
    yield eng


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session whose commits land in a savepoint of a transaction rolled back later."""
    conn = engine.connect()
    outer = conn.begin()
    s = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield s
    finally:
        s.close()
        outer.rollback()
        conn.close()


@pytest.fixture
def store(settings: Settings) -> Iterator[object]:
    """An object store confined to a prefix of its own, emptied afterwards."""
    from vigil.objectstore import S3ObjectStore

    s = S3ObjectStore.from_settings(settings, prefix=f"test/{uuid.uuid4().hex}/")
    yield s
    for key in list(s.list()):
        s.delete(key)


@pytest.fixture
def client(session: Session, engine: Engine) -> Iterator[object]:
    """An HTTP client on the app, whose requests use the test's session."""
    from fastapi.testclient import TestClient

    from retrieval.app import create_app
    from vigil.auth.api import get_session, serve_request

    def test_session() -> Iterator[Session]:
        yield from serve_request(session)

    app = create_app()
    app.dependency_overrides[get_session] = test_session
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture
def make_token(session: Session):  # noqa: ANN201 - a factory
    """Factory: ``make_token(role) -> token`` for a fresh principal with that role."""
    from vigil.auth import service as auth_service

    def make(role: str, name: str | None = None) -> str:
        issued = auth_service.issue_token(session=session,
                                          principal_name=name or f"{role}-{uuid.uuid4().hex[:8]}",
                                          role=role, label="test", actor="test")
        return issued.token

    return make


@pytest.fixture
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment for a second, separate stack; whatever it leaves running is killed."""
    home = Path(tmp_path_factory.mktemp("own-stack"))
    env = environ_with(stack_env(home))
    yield env
    subprocess.run([*VIGIL, "stack", "down"], env=env, capture_output=True, timeout=120)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # "No tests ran" must fail loudly, never pass as green.
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
