"""A cap on the Spotify requests one client may make per rolling hour: the predictor's on-demand fetches
share the app's quota with the weekly ingest run, so they get a bounded share of it."""

from __future__ import annotations

import datetime as dt
import time
from collections import deque

HOUR_SECONDS = 3600.0


class HourlyBudget:
    """At most `per_hour` requests in any rolling hour (0: none at all)."""

    def __init__(self, per_hour: int, *, window_seconds: float = HOUR_SECONDS) -> None:
        self.per_hour = per_hour
        self.window_seconds = window_seconds
        self._spent: deque[float] = deque()  # monotonic times of the requests within the window

    def _forget_old(self, now: float) -> None:
        while self._spent and now - self._spent[0] >= self.window_seconds:
            self._spent.popleft()

    @property
    def spent(self) -> int:
        """Requests made within the current window."""
        self._forget_old(time.monotonic())
        return len(self._spent)

    def try_spend(self) -> bool:
        """Count one request if the cap allows it; False when the hour's share is used up."""
        now = time.monotonic()
        self._forget_old(now)
        if len(self._spent) >= self.per_hour:
            return False
        self._spent.append(now)
        return True

    def resumes_at(self) -> dt.datetime:
        """When the next request will be allowed again."""
        now = time.monotonic()
        self._forget_old(now)
        wait = self.window_seconds - (now - self._spent[0]) if self._spent else 0.0
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=max(wait, 1.0))
