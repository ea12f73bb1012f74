"""Ingest runs: chart files and Spotify metadata → dimensions, weekly snapshots and chart entries.

A run records itself in `ingest_run` and writes one transaction per batch (idempotent upserts): a chart
week (every chart file of that week, their entries and hashes), or a batch of songs fetched from Spotify.

What readers see: a week's chart entries appear all at once (one transaction per chart week). Snapshot
rows go to `snapshot_stage` and move into `snapshot` in the transaction that finishes the run and stages
its `db-updated` event, so the predictor never sees a half-written week. A run that dies (database lost,
process killed) leaves only whole batches; the next run skips the chart files it finished (by hash),
fetches the rest and publishes both runs' staged rows. A Spotify pause (long Retry-After, exhausted
quota) ends the run as `paused` with a resume point; its staged rows are published by the run that
completes the week.

Where the parts live: `charts.py` (chart files), `selection.py` (which songs to ask Spotify for),
`enrichment.py` (fetching them), `runs.py` (the run's record), `report.py` (its counts).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.charts import iter_chart_paths
from shared.events import Topics
from shared.spotify import models as sp
from shared.spotify.client import SpotifyClient
from shared.spotify.errors import SpotifyPaused
from shared.weeks import current_week

from .charts import new_charts, write_charts
from .enrichment import EnrichmentPaused, complete_dimensions, fetch_and_write
from .report import Progress, RunReport
from .runs import fail_run, finish_run, record_access_mode, start_run
from .selection import tracks_to_fetch
from .settings import IngestorSettings

log = logging.getLogger(__name__)


async def run_ingest(
    *,
    sessions: async_sessionmaker[AsyncSession],
    spotify: SpotifyClient,
    settings: IngestorSettings,
    topics: Topics,
    kind: str = "update",
    week: dt.date | None = None,
    chart_paths: Sequence[Path] | None = None,
    extra_track_ids: Sequence[str] = (),
    limit: int | None = None,
    progress: Progress | None = None,
    chart_region: str | None = None,
) -> RunReport:
    """One ingest run: new chart files, then this week's snapshot of every followed song.

    `kind` is "init" (bootstrap from past charts), "update" (the weekly run) or "demo". `limit` caps
    the songs fetched from Spotify. `chart_region` is the region of chart files whose name and folder
    give none. Never raises SpotifyPaused: a pause ends the run as `paused`.
    """
    week = week or current_week()
    demo = settings.uses_emulator
    report = await start_run(sessions=sessions, kind=kind, week=week)
    spotify_before = spotify.stats.counts()  # requests, retries, 429s and odd records are reported per run
    pause: SpotifyPaused | None = None
    resume_ids: list[str] = []
    try:
        await _run_steps(
            sessions=sessions,
            spotify=spotify,
            settings=settings,
            report=report,
            demo=demo,
            chart_paths=chart_paths,
            extra_track_ids=extra_track_ids,
            limit=limit,
            progress=progress,
            chart_region=chart_region,
        )
    except EnrichmentPaused as stopped:
        pause, resume_ids = stopped.pause, stopped.resume_ids
    except SpotifyPaused as stopped:  # before any song was asked for (the probe, the trending playlist)
        pause = stopped
    except Exception as exc:
        await fail_run(sessions=sessions, report=report, error=f"{type(exc).__name__}: {exc}")
        raise
    report.counts.add_spotify(spotify.stats.counts_since(spotify_before))
    if pause is None:
        report.status = "ok"
    else:
        _record_pause(report, pause)
    await finish_run(sessions=sessions, report=report, topics=topics, demo=demo, resume_ids=resume_ids)
    if pause is None:
        log.info("run %s (%s, week %s) done: %s", report.run_id, kind, week, report.counts.as_dict())
    return report


def _record_pause(report: RunReport, pause: SpotifyPaused) -> None:
    """The run ends as `paused`, saying why and when it may resume."""
    report.status, report.resume_after = "paused", pause.resume_at
    resume = pause.resume_at.isoformat()
    report.errors.append(f"Spotify paused the run: {pause.reason}; resume after {resume}")
    log.warning("run %s paused (%s); it may resume after %s", report.run_id, pause.reason, pause.resume_at)


async def _run_steps(
    *,
    sessions: async_sessionmaker[AsyncSession],
    spotify: SpotifyClient,
    settings: IngestorSettings,
    report: RunReport,
    demo: bool,
    chart_paths: Sequence[Path] | None,
    extra_track_ids: Sequence[str],
    limit: int | None,
    progress: Progress | None,
    chart_region: str | None = None,
) -> None:
    # Chart files first: they need no Spotify, so an unreachable or paused Spotify loses none of them.
    paths = (
        chart_paths
        if chart_paths is not None
        else iter_chart_paths([settings.charts_dir])
        if settings.charts_dir.exists()
        else []
    )
    charts = await new_charts(sessions=sessions, paths=list(paths), report=report, region=chart_region)
    # Chart files are the user's real data even when Spotify is emulated; only the demo stack's own
    # generated charts (kind "demo") are demo rows.
    chart_demo = report.kind == "demo"
    await write_charts(sessions=sessions, charts=charts, report=report, demo=chart_demo, progress=progress)

    mode = await spotify.probe_access_mode()
    report.access_mode = mode.value
    await record_access_mode(sessions=sessions, mode=mode, emulator=settings.uses_emulator)

    await complete_dimensions(sessions=sessions, spotify=spotify, report=report)

    trending = {row.track_id for c in charts if c.week == report.week for row in c.rows if row.track_id}
    if mode is sp.AccessMode.extended and settings.spotify_trending_playlist_id:
        trending.update(await spotify.playlist_track_ids(settings.spotify_trending_playlist_id))
    trending.update(extra_track_ids)
    trending.update(settings.track_ids)

    to_fetch = await tracks_to_fetch(
        sessions=sessions, settings=settings, report=report, mode=mode, charts=charts, trending=trending
    )
    if limit is not None:
        to_fetch = to_fetch[:limit]
    report.counts.tracks_requested += len(to_fetch)
    await fetch_and_write(
        sessions=sessions,
        spotify=spotify,
        track_ids=to_fetch,
        week=report.week,
        trending=trending,
        report=report,
        demo=demo,
        progress=progress,
    )
