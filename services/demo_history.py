"""`songpop up`'s demo history: on an empty database, weeks of charts and popularity simulated from the
Spotify emulator and ingested like real ones, then the models trained on them. It runs in the background
while the servers answer; its progress is the `history_build` row (`shared.history_build`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.ingestor.service import run_ingest
from services.ingestor.settings import IngestorSettings
from services.trainer.settings import TrainerSettings
from shared.config import Settings
from shared.db import make_engine, make_sessionmaker
from shared.history_build import HistoryBuild, Phase, build_in_progress, write_build
from shared.models import Snapshot, utcnow
from shared.mqtt import topics
from shared.outbox import flush_outbox
from shared.spotify.client import SpotifyClient
from shared.weeks import add_weeks, current_week

log = logging.getLogger(__name__)


async def database_is_empty(settings: Settings) -> bool:
    engine = make_engine(settings.effective_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return not (await session.exec(select(func.count()).select_from(Snapshot))).one()
    finally:
        await engine.dispose()


async def build_demo_history(
    ingestor: IngestorSettings,
    trainer: TrainerSettings,
    emulator_state: Any,
    *,
    build: HistoryBuild,
    console: Console,
) -> None:
    """Simulate the history, train, then publish the runs' events: the predictor, which defers events
    while the build is in progress, forecasts the newest week once (docs/operations.md)."""
    engine = make_engine(ingestor.effective_database_url)
    sessions = make_sessionmaker(engine)
    try:

        async def on_week(done: int) -> None:
            await write_build(sessions, build.model_copy(update={"week": done}))

        await simulate_history(
            ingestor, emulator_state, sessions=sessions, weeks=build.weeks, console=console, on_week=on_week
        )
        await write_build(sessions, build.model_copy(update={"week": build.weeks, "phase": Phase.training}))
        from services.trainer.main import train_once  # the forecasting stack: seconds to import

        await train_once(trainer, sessions=sessions)
        await write_build(sessions, build.model_copy(update={"week": build.weeks, "phase": Phase.done}))
        await flush_outbox(settings=ingestor, sessions=sessions, service="ingestor")
        console.print("Demo history built; the predictor is computing the first forecasts.")
    finally:
        await engine.dispose()


async def simulate_history(
    settings: IngestorSettings,
    emulator_state: Any,
    *,
    sessions: async_sessionmaker[AsyncSession],
    weeks: int,
    console: Console,
    on_week: Callable[[int], Awaitable[None]],
) -> None:
    """Ingest `weeks` simulated weeks from the emulator (its chart and popularity of each week); their
    events stay in the outbox. `on_week(done)` follows the progress."""
    charts_dir = settings.var_dir / "demo-charts"
    charts_dir.mkdir(parents=True, exist_ok=True)
    first = add_weeks(current_week(), -(weeks - 1))
    bar = Progress(
        TextColumn("demo history"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    async with SpotifyClient(settings) as spotify:
        with bar, quiet("services.ingestor", "shared.spotify", "shared.outbox"):
            task = bar.add_task("weeks", total=weeks)
            for i in range(weeks):
                week = add_weeks(first, i)
                emulator_state.set_week(week)
                path = write_demo_chart(charts_dir, emulator_state.catalog, week)
                await run_ingest(
                    sessions=sessions,
                    spotify=spotify,
                    settings=settings,
                    topics=topics(settings),
                    kind="demo",
                    week=week,
                    chart_paths=[path],
                )
                bar.advance(task)
                await on_week(i + 1)


async def start_build(settings: Settings, *, weeks: int) -> HistoryBuild | None:
    """The build to run, recorded before any server starts (so the first page shows it): on an empty
    database, `weeks` of demo history. A build an earlier process left unfinished is marked interrupted."""
    engine = make_engine(settings.effective_database_url)
    sessions = make_sessionmaker(engine)
    try:
        if weeks and await database_is_empty(settings):
            build = HistoryBuild(phase=Phase.simulating, weeks=weeks, started_at=utcnow())
            await write_build(sessions, build)
            return build
        stale = await build_in_progress(sessions)
        if stale is not None:
            interrupted = stale.model_copy(update={"phase": Phase.interrupted})
            await write_build(sessions, interrupted)
            log.warning("%s; delete the database to build it again", interrupted.describe())
        return None
    finally:
        await engine.dispose()


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """Only warnings from these loggers for a while (one line per simulated week would drown the bar)."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def write_demo_chart(folder: Path, catalog: Any, week: dt.date) -> Path:
    """The emulator's weekly global chart for `week`, in charts.spotify.com's format."""
    path = folder / f"regional-global-weekly-{week.isoformat()}.csv"
    path.write_bytes(catalog.chart_csv(week, "global").encode("utf-8"))
    return path
