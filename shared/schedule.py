"""Cron schedules with a timezone, for the weekly ingest and training jobs."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from zoneinfo import ZoneInfo

from croniter import croniter

log = logging.getLogger(__name__)


def next_run(cron: str, timezone: str, after: dt.datetime | None = None) -> dt.datetime:
    """The next time `cron` fires in `timezone`, as an aware datetime in that zone."""
    zone = ZoneInfo(timezone)
    start = (after or dt.datetime.now(dt.UTC)).astimezone(zone)
    return croniter(cron, start).get_next(dt.datetime)  # type: ignore[no-any-return]


def validate(cron: str, timezone: str) -> None:
    """Raise ValueError with a clear message if the expression or the zone is wrong."""
    if not croniter.is_valid(cron):
        raise ValueError(f"invalid cron expression {cron!r} (expected e.g. '0 12 * * 1')")
    try:
        ZoneInfo(timezone)
    except Exception:
        raise ValueError(f"unknown timezone {timezone!r} (expected e.g. 'Europe/Rome')") from None


async def run_on_schedule(
    name: str,
    cron: str,
    timezone: str,
    job: Callable[[], Awaitable[object]],
    *,
    on_next: Callable[[dt.datetime], Awaitable[None]] | None = None,
) -> None:
    """Run `job` every time `cron` fires, until cancelled; a failing job is logged, not fatal."""
    validate(cron, timezone)
    while True:
        when = next_run(cron, timezone)
        log.info("%s: next run at %s", name, when.isoformat())
        if on_next:
            try:
                await on_next(when)
            except Exception:
                log.warning("%s: could not record the next run time", name, exc_info=True)
        await asyncio.sleep(max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds()))
        try:
            await job()
        except Exception:
            log.exception("%s: scheduled run failed; will try again at the next slot", name)
