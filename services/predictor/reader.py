"""The database engine of the REST reads, tuned for round trips: they are what a read costs most."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.db import make_engine

READER_POOL = 16  # connections of the REST reads (and as many more under bursts)
T = TypeVar("T")


def make_reader(url: str) -> AsyncEngine:
    """Autocommit, so a connection needs no BEGIN before and no ROLLBACK after its statements, and no
    ping before each use: a connection the server dropped fails its statement and is invalidated, and
    `with_retry_on_dropped_connection` runs the read once more on a fresh one."""
    if not url.startswith("mysql"):
        return make_engine(url)
    engine = create_async_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
        pool_pre_ping=False,
        pool_recycle=3600,
        pool_size=READER_POOL,
        max_overflow=READER_POOL,
    )
    # SQLAlchemy still ends each use with the driver's rollback(), which asyncmy sends to the server as a
    # ROLLBACK statement: a round trip for nothing in autocommit mode. This engine's dialect skips it.
    engine.sync_engine.dialect.do_rollback = _nothing_to_roll_back  # type: ignore[method-assign]
    return engine


def _nothing_to_roll_back(dbapi_connection: object) -> None:
    """Autocommit: every statement committed on its own."""


async def with_retry_on_dropped_connection(read: Callable[[], Awaitable[T]]) -> T:
    """Run `read`; if its connection had been dropped by the server (a restart, an idle timeout), run it
    again: the pool has invalidated the stale connections by then."""
    try:
        return await read()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        return await read()
