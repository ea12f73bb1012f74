"""Schedules that catch up: a run missed while the service was down runs once at start (logged, kept in
app_state for the status page); wrong cron expressions and time zones stop a command before any work."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app
from services.cli.jobs import EXIT_CONFIG
from shared.models import AppState
from shared.schedule import ScheduleState, missed_run, previous_run, run_on_schedule

MONDAY_SIX = "0 6 * * 1"
ZONE = "Europe/Rome"
NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)  # a Thursday
DUE = dt.datetime(2026, 11, 30, 6, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))  # that Monday 06:00


def test_previous_run_is_the_last_fire_time_in_the_zone() -> None:
    assert previous_run(MONDAY_SIX, ZONE, NOW) == DUE


def test_a_run_is_missed_only_when_the_last_one_is_older_than_the_due_time() -> None:
    assert missed_run(MONDAY_SIX, ZONE, DUE - dt.timedelta(days=7), NOW) == DUE
    assert missed_run(MONDAY_SIX, ZONE, DUE + dt.timedelta(minutes=3), NOW) is None
    assert missed_run(MONDAY_SIX, ZONE, None, NOW) is None  # a new installation starts on the schedule


async def scheduled_runs(sessions, last_run: dt.datetime | None) -> tuple[int, dict]:
    """Start a Monday-06:00 schedule with `last_run` in app_state; how many runs it made at once."""
    state = ScheduleState(sessions, "ingestor")
    if last_run is not None:
        await state.merge(last_run=last_run.isoformat())
    runs = 0

    async def job() -> None:
        nonlocal runs
        runs += 1

    task = asyncio.create_task(run_on_schedule("ingest", MONDAY_SIX, ZONE, job, state=state))
    try:
        async with asyncio.timeout(20):
            while "next_run" not in await state.read():  # noqa: ASYNC110 - polls the database
                await asyncio.sleep(0.05)  # (the start-up, with any catch-up, is done)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return runs, await state.read()


async def test_a_missed_run_runs_once_at_start_and_is_recorded(sessions, caplog) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=9)  # at least one Monday 06:00 since
    runs, value = await scheduled_runs(sessions, long_ago)
    assert runs == 1
    missed = dt.datetime.fromisoformat(value["caught_up"]["missed"])
    assert missed == previous_run(MONDAY_SIX, ZONE) and missed > long_ago
    assert dt.datetime.fromisoformat(value["last_run"]) > missed
    assert dt.datetime.fromisoformat(value["next_run"]) > dt.datetime.now(dt.UTC)
    assert "was missed" in caplog.text and "running it now" in caplog.text


async def test_no_catch_up_after_a_recent_run_or_on_a_new_installation(sessions) -> None:
    assert (await scheduled_runs(sessions, dt.datetime.now(dt.UTC)))[0] == 0
    async with sessions() as session:
        await session.delete(await session.get(AppState, "ingestor"))
        await session.commit()
    runs, value = await scheduled_runs(sessions, None)
    assert runs == 0 and "caught_up" not in value


@pytest.mark.parametrize(
    ("args", "variable", "value", "message"),
    [
        (["serve", "ingestor"], "SONGPOP_INGEST_CRON", "61 * * * *", "invalid cron expression '61 * * * *'"),
        (["serve", "trainer"], "SONGPOP_TRAIN_TIMEZONE", "Mars/Base", "unknown time zone 'Mars/Base'"),
        (["up"], "SONGPOP_TRAIN_CRON", "every monday", "invalid cron expression 'every monday'"),
        (["up"], "SONGPOP_INGEST_TIMEZONE", "Mars/Base", "unknown time zone 'Mars/Base'"),
    ],
)
def test_a_wrong_schedule_exits_2_with_one_line_before_any_work(
    tmp_path: Path, args: list[str], variable: str, value: str, message: str
) -> None:
    env = {variable: value, "SONGPOP_VAR_DIR": str(tmp_path / "var"), "COLUMNS": "300"}
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == EXIT_CONFIG
    assert result.output.strip().splitlines() == [
        f"error: invalid configuration: {variable}: {message} "
        + ("(expected e.g. '0 12 * * 1')" if "cron" in message else "(expected e.g. 'Europe/Rome')")
    ]
    assert not (tmp_path / "var").exists()  # no work started
