"""ISO weeks, stored everywhere as the date of their Monday."""

from __future__ import annotations

import datetime as dt


def week_of(day: dt.date | dt.datetime) -> dt.date:
    """The Monday of the ISO week that contains `day`."""
    if isinstance(day, dt.datetime):
        day = day.date()
    return day - dt.timedelta(days=day.weekday())


def current_week() -> dt.date:
    """The Monday of this ISO week (UTC)."""
    return week_of(dt.datetime.now(dt.UTC))


def add_weeks(week: dt.date, n: int) -> dt.date:
    """The Monday `n` weeks after (or before, if negative) `week`."""
    return week + dt.timedelta(weeks=n)
