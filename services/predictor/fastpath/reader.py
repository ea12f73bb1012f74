"""The REST reads' engine tuned for round trips, what a read costs most (see the package's docstring)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..reader import make_reader

READER_POOL = 16  # connections of the REST reads (and as many more under bursts)


def make_fast_reader(url: str) -> AsyncEngine:
    """On MySQL/MariaDB: autocommit, so a connection needs no BEGIN before and no ROLLBACK after its
    statements, and no ping before each use: a connection the server dropped fails its statement and is
    invalidated, and `with_retry_on_dropped_connection` runs the read once more on a fresh one."""
    if not url.startswith("mysql"):
        return make_reader(url)
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
