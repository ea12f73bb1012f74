"""Cron schedules with a timezone, for the weekly ingest and training jobs."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import session_scope, upsert
from shared.models import AppState, utcnow

log = logging.getLogger(__name__)


def next_run(cron: str, timezone: str, after: dt.datetime | None = None) -> dt.datetime:
    """The next time `cron` fires in `timezone`, as an aware datetime in that zone."""
    zone = ZoneInfo(timezone)
    start = (after or dt.datetime.now(dt.UTC)).astimezone(zone)
    return croniter(cron, start).get_next(dt.datetime)  # type: ignore[no-any-return]


def check_cron(cron: str) -> str:
    """The expression, or ValueError saying what a valid one looks like."""
    if not croniter.is_valid(cron):
        raise ValueError(f"invalid cron expression {cron!r} (expected e.g. '0 12 * * 1')")
    return cron


def check_timezone(timezone: str) -> str:
    """The zone name, or ValueError saying what a valid one looks like."""
    try:
        ZoneInfo(timezone)
    except Exception:
        raise ValueError(f"unknown time zone {timezone!r} (expected e.g. 'Europe/Rome')") from None
    return timezone


def validate(cron: str, timezone: str) -> None:
    """Raise ValueError with a clear message if the expression or the zone is wrong."""
    check_cron(cron)
    check_timezone(timezone)


def previous_run(cron: str, timezone: str, at: dt.datetime | None = None) -> dt.datetime:
    """The last time `cron` fired in `timezone` at or before `at` (default now)."""
    zone = ZoneInfo(timezone)
    start = (at or dt.datetime.now(dt.UTC)).astimezone(zone)
    return croniter(cron, start).get_prev(dt.datetime)  # type: ignore[no-any-return]


def missed_run(
    cron: str, timezone: str, last_run: dt.datetime | None, now: dt.datetime | None = None
) -> dt.datetime | None:
    """The fire time a job missed: the latest one before `now`, if the job has not run since. A job that
    never ran missed nothing (a new installation starts on the schedule)."""
    if last_run is None:
        return None
    due = previous_run(cron, timezone, now)
    return due if last_run < due else None


class ScheduleState:
    """A scheduled job's entry in app_state (`key`): next and last run, cron, catch-ups; the status page
    and /metrics read it."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], key: str) -> None:
        self.sessions, self.key = sessions, key

    async def read(self) -> dict[str, Any]:
        async with self.sessions() as session:
            row = await session.get(AppState, self.key)
            return dict(row.value) if row is not None and row.value else {}

    async def last_run(self) -> dt.datetime | None:
        value = (await self.read()).get("last_run")
        if not value:
            return None
        when = dt.datetime.fromisoformat(value)
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)

    async def merge(self, **values: object) -> None:
        """Merge `values` into the entry (one upsert)."""
        async with session_scope(self.sessions) as session:
            current = await session.get(AppState, self.key)
            value = {**(current.value if current and current.value else {}), **values}
            row = {"key": self.key, "value": value, "updated_at": utcnow()}
            await upsert(
                session=session, model=AppState, rows=[row], keys=["key"], update=["value", "updated_at"]
            )


async def run_on_schedule(
    name: str,
    cron: str,
    timezone: str,
    job: Callable[[], Awaitable[object]],
    *,
    state: ScheduleState | None = None,
) -> None:
    """Run `job` every time `cron` fires, until cancelled; a failing job is logged, not fatal.

    With `state`, the run times are kept in the database and a run missed while the service was down
    (the latest fire time passed after the last run) runs once at start, logged and recorded.
    """
    validate(cron, timezone)
    if state is not None:
        await _catch_up(name, cron, timezone, job, state)
    while True:
        when = next_run(cron, timezone)
        log.info("%s: next run at %s", name, when.isoformat())
        await _record(name, state, next_run=when.isoformat(), cron=cron, timezone=timezone)
        await asyncio.sleep(max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds()))
        await _run(name, job, state)


async def _catch_up(
    name: str, cron: str, timezone: str, job: Callable[[], Awaitable[object]], state: ScheduleState
) -> None:
    try:
        last = await state.last_run()
    except Exception:
        log.warning("%s: could not read the last run; no catch-up", name, exc_info=True)
        return
    missed = missed_run(cron, timezone, last)
    if missed is None:
        return
    log.warning(
        "%s: the run due at %s was missed (last run %s); running it now",
        name, missed.isoformat(), last.isoformat() if last else "never",
    )  # fmt: skip
    now = dt.datetime.now(dt.UTC).isoformat()
    await _record(name, state, caught_up={"missed": missed.isoformat(), "at": now})
    await _run(name, job, state)


async def _run(name: str, job: Callable[[], Awaitable[object]], state: ScheduleState | None) -> None:
    """Run the job; its start time becomes the last run once it ends (failed or not: the next slot
    retries). A run cut short by a stop is not recorded, so the next start catches it up."""
    started = dt.datetime.now(dt.UTC).isoformat()
    try:
        await job()
    except Exception:
        log.exception("%s: scheduled run failed; will try again at the next slot", name)
    await _record(name, state, last_run=started)


async def _record(name: str, state: ScheduleState | None, **values: object) -> None:
    if state is None:
        return
    try:
        await state.merge(**values)
    except Exception:  # the database may be away: the schedule goes on
        log.warning("%s: could not record %s", name, ", ".join(values), exc_info=True)
