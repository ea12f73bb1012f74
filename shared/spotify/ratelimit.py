"""The gate every request of a client passes: bounded concurrency, a shared pause after a 429, a stop."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from shared.spotify.errors import SpotifyPaused


class RateLimiter:
    """One gate for every request of a client: bounded concurrency, a shared pause after a 429, and a
    stop once the run has to pause (later requests fail fast instead of queueing behind hours of waiting)."""

    def __init__(self, concurrency: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._resume_at = 0.0  # time.monotonic()
        self.stopped: SpotifyPaused | None = None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the concurrent slots once any shared pause has passed."""
        async with self._slots:
            await self.wait_ready()
            yield

    async def wait_ready(self) -> None:
        """Wait out a shared pause; raise SpotifyPaused while the run is stopped."""
        while True:
            self._raise_if_stopped()
            delay = self._resume_at - time.monotonic()
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    def _raise_if_stopped(self) -> None:
        if self.stopped is None:
            return
        if dt.datetime.now(dt.UTC) >= self.stopped.resume_at:
            self.stopped = None
            return
        raise self.stopped.with_partial({})

    def pause_for(self, seconds: float) -> bool:
        """Hold every request of the client for `seconds` from now (a longer pause already set wins).

        Returns whether this started a new pause rather than falling inside the current one."""
        now = time.monotonic()
        started = now >= self._resume_at
        self._resume_at = max(self._resume_at, now + seconds)
        return started

    def stop(self, paused: SpotifyPaused) -> None:
        """Refuse every request until `paused.resume_at`."""
        if self.stopped is None or paused.resume_at > self.stopped.resume_at:
            self.stopped = paused


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Retry-After in seconds: Spotify sends a number; an HTTP date is understood too."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        value = max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
    return value if math.isfinite(value) and value >= 0 else None
