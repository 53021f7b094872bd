"""Database engine and sessions.

Service functions take a ``Session`` and only flush; whoever opened the session
(an API request, a task, a CLI command) owns the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from vigil.settings import Settings, get_settings


class _NoRowLogs(logging.Filter):
    """SQLAlchemy logs every fetched row at DEBUG, and rows hold secrets (camera
    source URLs with credentials): with logging at DEBUG, drop those records.
    Statements (INFO) are kept; their parameters are hidden (``hide_parameters``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


logging.getLogger("sqlalchemy.engine.Engine").addFilter(_NoRowLogs())


def make_engine(settings: Settings, *, pool_size: int = 5) -> Engine:
    return create_engine(
        settings.sqlalchemy_url(),
        pool_size=pool_size,
        pool_pre_ping=True,
        # Never echo: the URL and parameters may hold secrets.
        echo=False,
        hide_parameters=True,
    )


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    return make_engine(get_settings())


def session_factory(engine: Engine | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=engine or get_engine(), expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session that commits if the block succeeds and rolls back otherwise."""
    session = session_factory(engine)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
