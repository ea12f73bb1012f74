"""The database engine of the REST reads, and their retry when the server dropped a connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_engine

T = TypeVar("T")


def make_reader(url: str) -> AsyncEngine:
    """The engine of the REST reads: the service's usual one (`fastpath.make_fast_reader` is its tuned
    variant)."""
    return make_engine(url)


async def with_retry_on_dropped_connection(read: Callable[[], Awaitable[T]]) -> T:
    """Run `read`; if its connection had been dropped by the server (a restart, an idle timeout), run it
    again: the pool has invalidated the stale connections by then."""
    try:
        return await read()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        return await read()
