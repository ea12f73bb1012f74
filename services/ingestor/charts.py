"""Chart files into the database: read them, skip those ingested before (by content hash), and write
each chart week in one transaction (its songs, chart entries, staged trending snapshots and file hashes)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.catalog import known_ids, upsert_snapshots
from shared.charts import Chart, ChartFormatError, parse_chart_name, read_chart, week_charts
from shared.db import session_scope, upsert
from shared.models import ChartEntry, ChartFile, Track, utcnow

from .report import Progress, RunReport
from .runs import record_progress

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- rows


def chart_track_rows(charts: Iterable[Chart], *, demo: bool) -> list[dict[str, Any]]:
    """Minimal track rows from chart files, so a song is stored even before (or without) enrichment."""
    rows: dict[str, dict[str, Any]] = {}
    for chart in charts:
        for row in chart.rows:
            if row.track_id and row.track_id not in rows:
                rows[row.track_id] = {
                    "id": row.track_id,
                    "name": row.track_name[:512],
                    "artist_names": ", ".join(row.artists)[:1024],
                    "is_demo": demo,
                    "updated_at": utcnow(),
                }
    return list(rows.values())


def chart_entry_rows(chart: Chart, *, demo: bool) -> list[dict[str, Any]]:
    """One chart entry per charted song of the file."""
    return [
        {
            "track_id": row.track_id,
            "week": chart.week,
            "region": chart.series,
            "rank": row.rank,
            "streams": chart.weekly_streams(row),
            "source": chart.name[:255],
            "is_demo": demo,
        }
        for row in chart.rows
        if row.track_id
    ]


def chart_snapshot_rows(chart: Chart, *, demo: bool) -> list[dict[str, Any]]:
    """A charting song trended that week; its popularity (if any) comes from the API."""
    return [
        {
            "track_id": row.track_id,
            "week": chart.week,
            "trending": True,
            "is_demo": demo,
            "updated_at": utcnow(),
        }
        for row in chart.rows
        if row.track_id
    ]


def chart_file_rows(charts: Iterable[Chart]) -> list[dict[str, Any]]:
    """The files' content hashes (a file is ingested once), with what they held."""
    return [
        {
            "sha256": c.sha256,
            "name": c.name[:512],
            "region": c.series,
            "week": c.week,
            "rows": sum(1 for row in c.rows if row.track_id),
            "ingested_at": utcnow(),
        }
        for c in charts
    ]


# ---------------------------------------------------------------- reading and writing


def read_charts(paths: Sequence[Path], report: RunReport, *, region: str | None = None) -> list[Chart]:
    """Read chart files (`region` for those whose name and folder give none); a file that cannot be
    read is reported by name and the rest go on."""
    charts: list[Chart] = []
    for path in paths:
        try:
            chart = read_chart(path, region=None if parse_chart_name(path).region else region)
        except ChartFormatError as exc:
            report.errors.append(str(exc))
            report.counts.chart_files_failed += 1
            log.error("chart file skipped: %s", exc)
            continue
        for problem in chart.problems:
            report.errors.append(f"{problem.file}:{problem.line}: {problem.reason}")
        report.counts.chart_rows_rejected += len(chart.problems)
        charts.append(chart)
    return charts


async def new_charts(
    *,
    sessions: async_sessionmaker[AsyncSession],
    paths: Sequence[Path],
    report: RunReport,
    region: str | None = None,
) -> list[Chart]:
    """Charts not ingested before (by content hash), in date order."""
    charts = read_charts(paths, report, region=region)
    async with sessions() as session:
        seen = await ingested_hashes(session=session, hashes=[c.sha256 for c in charts])
    fresh, hashes = [], set()
    for chart in charts:
        if chart.sha256 not in seen and chart.sha256 not in hashes:
            fresh.append(chart)
            hashes.add(chart.sha256)
    report.counts.chart_files_skipped_known += len(charts) - len(fresh)
    return fresh


def by_week(charts: Sequence[Chart]) -> list[list[Chart]]:
    """Charts grouped by ISO week, oldest week first (files in date order within a week)."""
    ordered = sorted(charts, key=lambda c: (c.week, c.date, c.region, c.name))
    return [list(group) for _, group in groupby(ordered, key=lambda c: c.week)]


async def write_charts(
    *,
    sessions: async_sessionmaker[AsyncSession],
    charts: Sequence[Chart],
    report: RunReport,
    demo: bool,
    progress: Progress | None = None,
) -> None:
    """Each chart week in one transaction: its songs, chart entries, staged trending snapshots, the files'
    hashes and the run's counts. A week is written completely or not at all."""
    done = 0
    for week_files in by_week(charts):
        async with session_scope(sessions) as session:
            songs = chart_track_rows(week_files, demo=demo)
            await upsert(session=session, model=Track, rows=songs, keys=["id"])
            entries = await entries_of_week(session=session, charts=week_files, demo=demo)
            await upsert(
                session=session,
                model=ChartEntry,
                rows=entries,
                keys=["track_id", "week", "region"],
                update=["rank", "streams", "source"],
            )
            snapshots = {r["track_id"]: r for c in week_files for r in chart_snapshot_rows(c, demo=demo)}
            await upsert_snapshots(session=session, rows=list(snapshots.values()), staged=True)
            await upsert(session=session, model=ChartFile, rows=chart_file_rows(week_files), keys=["sha256"])
            report.counts.chart_files += len(week_files)
            report.counts.chart_weeks += 1
            report.counts.chart_entries += len(entries)
            report.counts.snapshots += len(snapshots)
            await record_progress(session=session, report=report)
        done += len(week_files)
        if progress:
            progress("chart files", done, len(charts))


async def entries_of_week(
    *, session: AsyncSession, charts: Sequence[Chart], demo: bool
) -> list[dict[str, Any]]:
    """Chart entries of one week's new files: each series' latest file of the week (`week_charts`), unless
    an earlier run wrote a later file of that series and week; a file that makes the week's chart replaces
    the entries of the earlier ones (a day's songs that left the list by the later day are not on it)."""
    latest = week_charts(charts)
    series = [c.series for c in latest]
    known = await session.exec(
        select(ChartFile.region, ChartFile.name).where(
            col(ChartFile.week) == charts[0].week, col(ChartFile.region).in_(series)
        )
    )
    written: dict[str, list[tuple[dt.date, str]]] = {}
    for region, name in known.all():
        written.setdefault(region, []).append((parse_chart_name(name).date or dt.date.min, name))
    rows: list[dict[str, Any]] = []
    for chart in latest:
        earlier = written.get(chart.series, [])
        if any(day > chart.date for day, _ in earlier):
            log.info(
                "chart file %s: a later file of the week already makes %s's chart", chart.name, chart.series
            )
            continue
        replaced = [name[:255] for _, name in earlier]
        if replaced:
            await session.exec(
                delete(ChartEntry).where(
                    col(ChartEntry.region) == chart.series,
                    col(ChartEntry.week) == chart.week,
                    col(ChartEntry.source).in_(replaced),
                )
            )
        rows.extend(chart_entry_rows(chart, demo=demo))
    return rows


async def ingested_hashes(*, session: AsyncSession, hashes: Sequence[str]) -> set[str]:
    """The chart files among `hashes` that an earlier run wrote."""
    return await known_ids(session, ChartFile.sha256, list(hashes))
