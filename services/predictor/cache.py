"""Serialised forecast responses kept in memory, valid while the data they were built from is unchanged.

Every change that alters a forecast response is announced through the outbox in the transaction that
writes it: an ingest run (`db-updated`), new predictions, a newly active model (`model-updated`). So the
highest outbox id is a version of the data. It is read at most once per `check_seconds` (one query for
all requests), and a new version empties the cache: a response is at most `check_seconds` older than the
data. Songs fetched from Spotify on demand were never cached, so they need no version change.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.metrics import REST_CACHE
from shared.models import Outbox

from .reader import with_retry_on_dropped_connection

HITS, MISSES = REST_CACHE.labels("hit"), REST_CACHE.labels("miss")


async def data_version(reader: AsyncEngine) -> int:
    """The id of the newest outbox event (0 before the first)."""

    async def read() -> int:
        async with reader.connect() as connection:
            return int((await connection.execute(select(func.max(Outbox.id)))).scalar() or 0)

    return await with_retry_on_dropped_connection(read)


class ResponseCache:
    """Least-recently-used JSON bodies by track id, dropped whenever the data version moves."""

    def __init__(self, reader: AsyncEngine, *, max_entries: int, check_seconds: float) -> None:
        self._reader = reader
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self.max_entries = max_entries
        self.check_seconds = check_seconds
        self.version: int | None = None
        self._checked_at = float("-inf")
        self._checking = asyncio.Lock()
        self.hits = self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._entries

    async def current_version(self) -> int | None:
        """The data version, re-read when the last reading is older than `check_seconds`; None when
        the cache is off."""
        if not self.enabled:
            return None
        if time.monotonic() - self._checked_at >= self.check_seconds:
            async with self._checking:  # one reading for all the requests waiting on it
                if time.monotonic() - self._checked_at >= self.check_seconds:
                    version = await data_version(self._reader)
                    if version != self.version:
                        self._entries.clear()
                        self.version = version
                    self._checked_at = time.monotonic()
        return self.version

    def get(self, track_id: str) -> bytes | None:
        body = self._entries.get(track_id)
        if body is None:
            self.misses += 1
            MISSES.inc()
            return None
        self._entries.move_to_end(track_id)
        self.hits += 1
        HITS.inc()
        return body

    def put(self, track_id: str, body: bytes, *, built_at_version: int | None) -> None:
        """Keep `body` unless the data version moved while it was being built."""
        if not self.enabled or built_at_version is None or built_at_version != self.version:
            return
        self._entries[track_id] = body
        self._entries.move_to_end(track_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def expire(self) -> None:
        """Re-read the data version on the next request (this process just changed the data)."""
        self._checked_at = float("-inf")
