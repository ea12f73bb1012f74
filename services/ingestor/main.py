"""Ingestor entry points: one run (the CLI's `ingest init|update`) and the long-lived service
(weekly schedule, a watched charts folder, and an outbox publisher)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.charts import iter_chart_paths
from shared.config import redact_url
from shared.db import (
    DatabaseUnavailable,
    make_engine,
    make_sessionmaker,
    migrate_async,
    wait_for_database,
)
from shared.heartbeat import beat_forever
from shared.mqtt import stay_present, topics
from shared.outbox import BrokerUnavailable, flush_outbox, publish_after_run
from shared.schedule import ScheduleState, run_on_schedule
from shared.spotify.client import SpotifyClient

from .history import import_history
from .report import Progress, RunReport
from .service import run_ingest
from .settings import IngestorSettings

log = logging.getLogger(__name__)

SERVICE = "ingestor"
CHARTS_POLL_SECONDS = 30.0
CHARTS_SETTLE_SECONDS = 2.0  # a chart file younger than this may still be being written
OUTBOX_RETRY_SECONDS = 10.0
DATABASE_WAIT_SECONDS = 10.0  # how long a run waits for the database before giving up


async def ingest_once(
    settings: IngestorSettings,
    *,
    kind: str = "update",
    chart_paths: Sequence[Path] | None = None,
    limit: int | None = None,
    week: dt.date | None = None,
    track_ids: Sequence[str] = (),
    migrate_schema: bool = False,
    progress: Progress | None = None,
    chart_region: str | None = None,
) -> RunReport:
    """One complete run: ingest, commit, then publish `db-updated`.

    Raises DatabaseUnavailable or BrokerUnavailable with a clear message; the data of a run whose
    event could not be published stays committed, the event waits in the outbox, and the exception
    carries the report.
    """
    async with database(settings, migrate_schema=migrate_schema) as sessions:
        async with SpotifyClient(settings) as spotify:
            report = await run_ingest(
                sessions=sessions,
                spotify=spotify,
                settings=settings,
                topics=topics(settings),
                kind=kind,
                week=week,
                chart_paths=chart_paths,
                extra_track_ids=track_ids,
                limit=limit,
                progress=progress,
                chart_region=chart_region,
            )
        return await publish_after_run(report, settings=settings, sessions=sessions, service=SERVICE)


async def import_history_once(
    settings: IngestorSettings,
    paths: Sequence[Path],
    *,
    aggregate: str = "last",
    migrate_schema: bool = False,
    progress: Progress | None = None,
) -> RunReport:
    """Import popularity-history CSV files as weekly snapshots, commit, then publish `db-updated`."""
    async with database(settings, migrate_schema=migrate_schema) as sessions:
        report = await import_history(
            sessions=sessions,
            topics=topics(settings),
            paths=paths,
            aggregate=aggregate,
            progress=progress,
        )
        return await publish_after_run(report, settings=settings, sessions=sessions, service=SERVICE)


@asynccontextmanager
async def database(
    settings: IngestorSettings, *, migrate_schema: bool = False
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the configured database, which must answer in time; a connection lost on the way
    becomes DatabaseUnavailable (the batches committed before it stay, the next run goes on from them)."""
    url = settings.effective_database_url
    engine = make_engine(url)
    try:
        await wait_for_database(engine, within=DATABASE_WAIT_SECONDS)
        if migrate_schema:
            await migrate_async(url)
        yield make_sessionmaker(engine)
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(
            f"lost the database {redact_url(url)} during the run ({type(exc.orig).__name__}: {exc.orig}); "
            "whole batches committed before stay, and the next run continues from them"
        ) from exc
    finally:
        await engine.dispose()


class ChartsWatcher:
    """Notices new or changed files in the charts folder (by name, size and mtime) between polls.

    A file modified less than `settle_seconds` ago may still be downloading: it waits for a later poll.
    """

    def __init__(self, folder: Path, *, settle_seconds: float = CHARTS_SETTLE_SECONDS) -> None:
        self.folder = folder
        self.settle_seconds = settle_seconds
        self._seen: dict[Path, tuple[int, float]] = {}

    def changed(self) -> list[Path]:
        """New or changed chart files since the last call, in date order."""
        if not self.folder.exists():
            return []
        fresh = []
        settled_before = time.time() - self.settle_seconds
        for path in iter_chart_paths([self.folder]):
            stat = path.stat()
            signature = (stat.st_size, stat.st_mtime)
            if self._seen.get(path) != signature and stat.st_mtime <= settled_before:
                self._seen[path] = signature
                fresh.append(path)
        return fresh


async def serve(settings: IngestorSettings | None = None) -> None:
    """Run the ingestor until cancelled: weekly updates, new chart files as they appear, pending events."""
    settings = settings or IngestorSettings()
    lock = asyncio.Lock()  # one run at a time

    async def weekly() -> None:
        async with lock:
            await ingest_once(settings, kind="update")

    async def watch() -> None:
        watcher = ChartsWatcher(settings.charts_dir)
        while True:
            paths = watcher.changed()
            if paths:
                log.info("charts folder: %d new or changed file(s)", len(paths))
                async with lock:
                    await ingest_once(settings, kind="update", chart_paths=paths)
            await asyncio.sleep(CHARTS_POLL_SECONDS)

    async def publisher() -> None:
        engine = make_engine(settings.effective_database_url)
        sessions = make_sessionmaker(engine)
        try:
            while True:
                try:
                    await flush_outbox(settings=settings, sessions=sessions, service=SERVICE)
                except BrokerUnavailable as exc:
                    log.warning("%s", exc)
                except (OperationalError, InterfaceError) as exc:  # database away: try again, don't die
                    log.warning("outbox not published, database unavailable (%s)", type(exc).__name__)
                await asyncio.sleep(OUTBOX_RETRY_SECONDS)
        finally:
            await engine.dispose()

    engine = make_engine(settings.effective_database_url)
    schedule = ScheduleState(make_sessionmaker(engine), SERVICE)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(
                run_on_schedule(
                    "ingest", settings.ingest_cron, settings.ingest_timezone, weekly, state=schedule
                )
            )
            group.create_task(_resilient("charts watcher", watch))
            group.create_task(publisher())
            group.create_task(stay_present(settings, SERVICE))
            group.create_task(beat_forever(settings, SERVICE))
    finally:
        await engine.dispose()


async def _resilient(name: str, loop_fn) -> None:  # type: ignore[no-untyped-def]
    """Restart a background loop that failed, after a pause, instead of bringing the service down."""
    while True:
        try:
            await loop_fn()
        except Exception:
            log.exception("%s failed; restarting in %.0fs", name, CHARTS_POLL_SECONDS)
            await asyncio.sleep(CHARTS_POLL_SECONDS)
