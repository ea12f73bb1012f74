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
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.catalog import (
    artists_from_tracks,
    known_ids,
    publish_staged_snapshots,
    upsert_snapshots,
    write_dimensions,
    write_tracks,
)
from shared.charts import (
    TRACK_ID_RE,
    Chart,
    ChartFormatError,
    iter_chart_paths,
    parse_chart_name,
    read_chart,
)
from shared.db import session_scope, upsert
from shared.events import DbUpdated, Topics, envelope
from shared.ids import SPOTIFY_ID_LENGTH
from shared.models import (
    Album,
    AppState,
    Artist,
    ChartEntry,
    ChartFile,
    IngestRun,
    Snapshot,
    SnapshotStage,
    Track,
    TrackArtist,
    utcnow,
)
from shared.outbox import add_event
from shared.spotify import models as sp
from shared.spotify.client import SpotifyClient
from shared.spotify.errors import SpotifyPaused
from shared.unknown_tracks import recently_unknown, remember_unknown
from shared.weeks import add_weeks, current_week

from .settings import IngestorSettings

log = logging.getLogger(__name__)

PRODUCER = "ingestor"
FETCH_BATCH = 500  # tracks per fetch-and-commit batch: a pause or crash loses at most one batch
ABANDONED = "abandoned: the run stopped before it finished (database connection lost or process stopped)"
Progress = Callable[[str, int, int], None]  # (phase, done, total), e.g. for a progress bar


@dataclass
class RunReport:
    """What a run did, for the CLI summary, logs and the `db-updated` event."""

    run_id: int
    kind: str
    week: dt.date
    status: str = "running"
    access_mode: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    resume_after: dt.datetime | None = None

    def add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def merge(self, counts: dict[str, int]) -> None:
        for key, n in counts.items():
            self.add(key, n)


# ---------------------------------------------------------------- rows from Spotify objects and charts


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
    return [
        {
            "track_id": row.track_id,
            "week": chart.week,
            "region": chart.region,
            "rank": row.rank,
            "streams": row.streams,
            "source": chart.name[:255],
            "is_demo": demo,
        }
        for row in chart.rows
        if row.track_id
    ]


def week_entry_rows(charts: Sequence[Chart], *, demo: bool) -> list[dict[str, Any]]:
    """Chart entries of one week's files; where two files chart the same region (daily files of one
    week), the later file's rank and streams win."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for chart in charts:
        for row in chart_entry_rows(chart, demo=demo):
            rows[(row["track_id"], row["region"])] = row
    return list(rows.values())


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


# ---------------------------------------------------------------- database steps


async def start_run(*, sessions: async_sessionmaker[AsyncSession], kind: str, week: dt.date) -> RunReport:
    """Record a new run; earlier runs still marked running never finished and are marked failed."""
    async with session_scope(sessions) as session:
        await abandon_unfinished_runs(session=session)
        run = IngestRun(kind=kind, week=week)
        session.add(run)
        await session.flush()
        assert run.id is not None
        return RunReport(run_id=run.id, kind=kind, week=week)


async def abandon_unfinished_runs(*, session: AsyncSession) -> int:
    """Mark runs that never recorded an end as failed (one ingest runs at a time per database)."""
    query = select(IngestRun).where(IngestRun.status == "running")  # type: ignore[arg-type]
    runs = (await session.exec(query)).scalars().all()  # type: ignore[call-overload]
    for run in runs:
        run.status, run.finished_at, run.errors = "failed", utcnow(), [*run.errors, ABANDONED]
        session.add(run)
    return len(runs)


async def record_progress(*, session: AsyncSession, report: RunReport) -> None:
    """Store the run's counts so far, in the caller's transaction (a batch's rows and its counts agree)."""
    stmt = update(IngestRun).where(IngestRun.id == report.run_id).values(counts=dict(report.counts))  # type: ignore[arg-type]
    await session.exec(stmt)  # type: ignore[call-overload]


async def record_access_mode(
    *, sessions: async_sessionmaker[AsyncSession], mode: sp.AccessMode, emulator: bool
) -> None:
    """Store the probed access mode where the API and the dashboard show it."""
    value = {
        "mode": mode.value,
        "lacks": sp.ACCESS_MODE_LIMITS[mode],
        "emulator": emulator,
        "probed_at": utcnow().isoformat(),
    }
    async with session_scope(sessions) as session:
        await upsert(
            session=session,
            model=AppState,
            rows=[{"key": "spotify", "value": value, "updated_at": utcnow()}],
            keys=["key"],
            update=["value", "updated_at"],
        )


async def followed_track_ids(*, session: AsyncSession, week: dt.date, follow_weeks: int) -> list[str]:
    """Songs that trended in the last `follow_weeks` weeks: their popularity is snapshotted weekly.

    Songs known only from imported history (synthetic ids) cannot be asked from Spotify and are left out.
    """
    since = add_weeks(week, -follow_weeks)
    trended = select(col(Snapshot.track_id)).where(col(Snapshot.trending), col(Snapshot.week) >= since)
    query = trended.distinct()
    ids = (await session.exec(query)).scalars().all()  # type: ignore[call-overload]
    return sorted(i for i in ids if TRACK_ID_RE.match(i))


async def paused_resume_ids(*, session: AsyncSession) -> list[str]:
    """Track ids a paused run had not fetched yet, if the latest run paused."""
    last = (
        (
            await session.exec(
                select(IngestRun)
                .where(col(IngestRun.status) != "running")
                .order_by(col(IngestRun.id).desc())
                .limit(1)
            )  # type: ignore[call-overload, union-attr]
        )
        .scalars()
        .first()
    )
    if last is None or last.status != "paused" or not last.resume_point:
        return []
    return list(last.resume_point.get("track_ids", []))


async def ingested_hashes(*, session: AsyncSession, hashes: Sequence[str]) -> set[str]:
    return await known_ids(session, ChartFile.sha256, list(hashes))


# ---------------------------------------------------------------- chart files


def read_charts(paths: Sequence[Path], report: RunReport, *, region: str | None = None) -> list[Chart]:
    """Read chart files (`region` for those whose name and folder give none); a file that cannot be
    read is reported by name and the rest go on."""
    charts: list[Chart] = []
    for path in paths:
        try:
            chart = read_chart(path, region=None if parse_chart_name(path).region else region)
        except ChartFormatError as exc:
            report.errors.append(str(exc))
            report.add("chart_files_failed", 1)
            log.error("chart file skipped: %s", exc)
            continue
        for problem in chart.problems:
            report.errors.append(f"{problem.file}:{problem.line}: {problem.reason}")
        report.add("chart_rows_rejected", len(chart.problems))
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
    report.add("chart_files_skipped_known", len(charts) - len(fresh))
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
    for week_charts in by_week(charts):
        async with session_scope(sessions) as session:
            songs = chart_track_rows(week_charts, demo=demo)
            await upsert(session=session, model=Track, rows=songs, keys=["id"])
            entries = week_entry_rows(week_charts, demo=demo)
            await upsert(
                session=session,
                model=ChartEntry,
                rows=entries,
                keys=["track_id", "week", "region"],
                update=["rank", "streams", "source"],
            )
            snapshots = {r["track_id"]: r for c in week_charts for r in chart_snapshot_rows(c, demo=demo)}
            await upsert_snapshots(session=session, rows=list(snapshots.values()), staged=True)
            await upsert(session=session, model=ChartFile, rows=chart_file_rows(week_charts), keys=["sha256"])
            report.add("chart_files", len(week_charts))
            report.add("chart_weeks", 1)
            report.add("chart_entries", len(entries))
            report.add("snapshots", len(snapshots))
            await record_progress(session=session, report=report)
        done += len(week_charts)
        if progress:
            progress("chart files", done, len(charts))


def chart_file_rows(charts: Iterable[Chart]) -> list[dict[str, Any]]:
    return [
        {
            "sha256": c.sha256,
            "name": c.name[:512],
            "region": c.region,
            "week": c.week,
            "rows": sum(1 for row in c.rows if row.track_id),
            "ingested_at": utcnow(),
        }
        for c in charts
    ]


# ---------------------------------------------------------------- Spotify enrichment


async def fetch_and_write(
    *,
    sessions: async_sessionmaker[AsyncSession],
    spotify: SpotifyClient,
    track_ids: Sequence[str],
    week: dt.date,
    trending: set[str],
    report: RunReport,
    demo: bool,
    progress: Progress | None = None,
) -> None:
    """Fetch tracks in batches with their unknown albums and artists; one transaction per batch.

    On SpotifyPaused, commits what the interrupted batch had fetched, sets `remaining` on the
    exception (the ids the next run must fetch) and re-raises.
    """
    for start in range(0, len(track_ids), FETCH_BATCH):
        batch = list(track_ids[start : start + FETCH_BATCH])
        tracks: dict[str, sp.Track] = {}
        try:
            tracks = await spotify.get_tracks(batch)
            counts = await write_tracks(
                sessions=sessions,
                spotify=spotify,
                tracks=tracks,
                week=week,
                trending=trending,
                demo=demo,
                staged=True,
            )
        except SpotifyPaused as paused:
            tracks = tracks or {k: v for k, v in paused.partial.items() if isinstance(v, sp.Track)}
            # Keep all that was fetched: the tracks, and the albums and artists got before the pause;
            # the next run asks only for the dimensions still missing (complete_dimensions).
            kept = list(paused.partial.values())
            if spotify.access_mode is sp.AccessMode.development:  # a track's album and artists suffice
                kept += [t.album for t in tracks.values() if t.album]
                kept += list(artists_from_tracks(tracks.values()).values())
            report.merge(await write_dimensions(sessions=sessions, objects=kept))
            counts = await write_tracks(
                sessions=sessions,
                spotify=None,
                tracks=tracks,
                week=week,
                trending=trending,
                demo=demo,
                staged=True,
            )
            report.merge(counts)
            paused.remaining = [i for i in track_ids[start:] if i not in tracks]  # type: ignore[attr-defined]
            raise
        report.merge(counts)
        unknown = set(batch) - set(tracks)
        report.add("tracks_unknown_to_spotify", len(unknown))
        async with session_scope(sessions) as session:
            await remember_unknown(session, unknown)
            await record_progress(session=session, report=report)
        if progress:
            progress("songs", min(start + FETCH_BATCH, len(track_ids)), len(track_ids))


async def complete_dimensions(
    *, sessions: async_sessionmaker[AsyncSession], spotify: SpotifyClient, report: RunReport
) -> None:
    """Fetch the albums and artists stored tracks refer to but the database lacks (a run paused between a
    track and its album); the tracks themselves are not asked for again."""
    async with sessions() as session:
        album_query = (
            select(col(Track.album_id))
            .outerjoin(Album, Album.id == Track.album_id)  # type: ignore[arg-type]
            .where(Track.album_id.is_not(None), Album.id.is_(None))  # type: ignore[union-attr, attr-defined]
            .distinct()
        )
        artist_query = (
            select(col(TrackArtist.artist_id))
            .outerjoin(Artist, Artist.id == TrackArtist.artist_id)  # type: ignore[arg-type]
            .where(Artist.id.is_(None))  # type: ignore[attr-defined]
            .distinct()
        )
        album_ids = sorted((await session.exec(album_query)).scalars().all())  # type: ignore[call-overload]
        artist_ids = sorted((await session.exec(artist_query)).scalars().all())  # type: ignore[call-overload]
    fetched: dict[str, object] = {}
    try:
        if album_ids:
            fetched.update(await spotify.get_albums(album_ids))
        if artist_ids:
            fetched.update(await spotify.get_artists(artist_ids))
    except SpotifyPaused as paused:
        kept = [*fetched.values(), *paused.partial.values()]
        report.merge(await write_dimensions(sessions=sessions, objects=kept))
        async with sessions() as session:  # the paused run's leftovers stay the next run's work
            paused.remaining = await paused_resume_ids(session=session)  # type: ignore[attr-defined]
        raise
    report.merge(await write_dimensions(sessions=sessions, objects=fetched.values()))


# ---------------------------------------------------------------- finishing a run


async def finish_run(
    *,
    sessions: async_sessionmaker[AsyncSession],
    report: RunReport,
    topics: Topics,
    demo: bool,
    resume_ids: Sequence[str] = (),
) -> None:
    """Close the run in one transaction: a completed run publishes every staged snapshot row and, if it
    wrote anything, stages `db-updated`; a paused run leaves its staged rows for the run that completes."""
    async with session_scope(sessions) as session:
        if report.status == "ok":
            report.add("snapshots_published", await publish_staged_snapshots(session=session))
        run = await session.get(IngestRun, report.run_id)
        assert run is not None
        run.status = report.status
        run.finished_at = utcnow()
        run.access_mode = report.access_mode
        run.counts = dict(report.counts)
        run.errors = report.errors[:200]
        run.resume_after = report.resume_after
        run.resume_point = {"track_ids": list(resume_ids)} if resume_ids else None
        session.add(run)
        wrote = report.counts.get("snapshots_published", 0) + report.counts.get("chart_entries", 0)
        if wrote and report.status == "ok":
            event = envelope(
                PRODUCER,
                DbUpdated(
                    run_id=report.run_id,
                    kind=report.kind,
                    week=report.week,
                    tracks=report.counts.get("tracks", 0),
                    snapshots=report.counts.get("snapshots_published", 0),
                    chart_entries=report.counts.get("chart_entries", 0),
                    access_mode=report.access_mode,
                    demo=demo,
                ),
            )
            add_event(session, topic=topics.db_updated, event=event, retain=True)  # type: ignore[arg-type]


async def fail_run(*, sessions: async_sessionmaker[AsyncSession], report: RunReport, error: str) -> None:
    """Mark the run failed (best effort: the database itself may be what failed)."""
    report.status = "failed"
    report.errors.append(error)
    try:
        async with session_scope(sessions) as session:
            run = await session.get(IngestRun, report.run_id)
            if run is not None:
                run.status, run.finished_at, run.errors = "failed", utcnow(), report.errors[:200]
                run.counts = dict(report.counts)
                session.add(run)
    except Exception:  # noqa: BLE001 - reporting must not hide the original failure
        log.warning("could not record the failure of run %s", report.run_id)


# ---------------------------------------------------------------- the runs


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
    except SpotifyPaused as paused:
        report.status, report.resume_after = "paused", paused.resume_at
        report.merge(spotify.stats.counts_since(spotify_before))
        report.errors.append(
            f"Spotify paused the run: {paused.reason}; resume after {paused.resume_at.isoformat()}"
        )
        log.warning(
            "run %s paused (%s); it may resume after %s", report.run_id, paused.reason, paused.resume_at
        )
        await finish_run(
            sessions=sessions,
            report=report,
            topics=topics,
            demo=demo,
            resume_ids=getattr(paused, "remaining", []),
        )
        return report
    except Exception as exc:
        await fail_run(sessions=sessions, report=report, error=f"{type(exc).__name__}: {exc}")
        raise
    report.status = "ok"
    report.merge(spotify.stats.counts_since(spotify_before))
    await finish_run(sessions=sessions, report=report, topics=topics, demo=demo)
    log.info("run %s (%s, week %s) done: %s", report.run_id, kind, week, report.counts)
    return report


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
    report.add("tracks_requested", len(to_fetch))
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


async def tracks_to_fetch(
    *,
    sessions: async_sessionmaker[AsyncSession],
    settings: IngestorSettings,
    report: RunReport,
    mode: sp.AccessMode,
    charts: Sequence[Chart],
    trending: set[str],
) -> list[str]:
    """Only what changes: songs never enriched, plus (with popularity available) every followed song."""
    charted = {row.track_id for c in charts for row in c.rows if row.track_id}
    async with sessions() as session:
        resume = await paused_resume_ids(session=session)
        # Songs stored from charts by an earlier run that stopped before enriching them.
        left_behind = await never_enriched(session=session)
        candidates = sorted(charted | trending | set(resume) | left_behind)
        enriched = await known_enriched(session=session, ids=candidates)
        # Ids Spotify did not know lately are not asked for again (each would cost a request every run).
        unknown = await recently_unknown(session, candidates, retry_days=settings.spotify_unknown_retry_days)
        if unknown:
            report.add("tracks_skipped_unknown", len(unknown))
        wanted = [i for i in candidates if i not in enriched and i not in unknown]
        if mode is sp.AccessMode.extended:
            followed = await followed_track_ids(
                session=session, week=report.week, follow_weeks=settings.follow_weeks
            )
            wanted = sorted(set(wanted) | set(followed) | trending)
            # A resumed run of the same week: songs whose popularity it already has are done.
            done = await fetched_this_week(session=session, week=report.week, ids=wanted)
            wanted = [i for i in wanted if i not in done]
    # A resumed run fetches first what the paused run had left.
    wanted_set, resume_set = set(wanted), set(resume)
    return [i for i in resume if i in wanted_set] + [i for i in wanted if i not in resume_set]


async def fetched_this_week(*, session: AsyncSession, week: dt.date, ids: Sequence[str]) -> set[str]:
    """Songs with a popularity from the API for `week` already (staged by a paused run, or published)."""
    found: set[str] = set()
    for model in (SnapshotStage, Snapshot):
        for start in range(0, len(ids), 1000):
            part = list(ids[start : start + 1000])
            query = select(col(model.track_id)).where(
                model.week == week,  # type: ignore[arg-type]
                model.popularity_source == "api",  # type: ignore[arg-type]
                model.track_id.in_(part),  # type: ignore[attr-defined]
            )
            found.update((await session.exec(query)).scalars().all())  # type: ignore[call-overload]
    return found


async def never_enriched(*, session: AsyncSession) -> set[str]:
    """Stored songs with a Spotify id whose metadata was never fetched (no album stored)."""
    query = (
        select(col(Track.id))
        .outerjoin(Album, col(Album.id) == col(Track.album_id))
        .where(col(Album.id).is_(None), func.length(col(Track.id)) == SPOTIFY_ID_LENGTH)
    )
    return set((await session.exec(query)).scalars().all())  # type: ignore[call-overload]


async def known_enriched(*, session: AsyncSession, ids: Sequence[str]) -> set[str]:
    """Tracks whose metadata came from the API already (their album is stored too)."""
    found: set[str] = set()
    for start in range(0, len(ids), 1000):
        part = list(ids[start : start + 1000])
        with_album = select(col(Track.id)).join(Album, col(Album.id) == col(Track.album_id))
        query = with_album.where(col(Track.id).in_(part))
        found.update((await session.exec(query)).scalars().all())  # type: ignore[call-overload]
    return found
