"""Popularity-history import: daily `(date, song, popularity)` CSV rows become weekly snapshots.

A new installation starts with years of history: each song's daily popularity (read by
`shared.history`) is folded into one snapshot per ISO week, by default the last known value of the week
(what a weekly snapshot taken at the end of the week would have seen) or, on request, the week's mean.
Songs without a Spotify id get the reader's stable synthetic id, so importing the same files again
changes nothing. A song in one of the files' Top-50 playlists that week counts as trending.

The import is an ingest run (`kind="history"`) like the others: batches commit to `snapshot_stage`, and
the transaction that finishes the run publishes them to `snapshot` and stages `db-updated`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.catalog import upsert_snapshots
from shared.charts import TRACK_ID_RE
from shared.db import MergeRule, session_scope, upsert
from shared.events import Topics
from shared.history import HistoryFile, HistoryFormatError, HistoryRow, iter_history_paths, read_history
from shared.models import Track, utcnow
from shared.weeks import current_week, week_of

from .report import Progress, RunReport
from .runs import fail_run, finish_run, record_progress, start_run

log = logging.getLogger(__name__)

AGGREGATES = ("last", "mean")
HISTORY_BATCH = 5000  # rows per transaction
SOURCE = "history"
# A synthetic song is written only by this importer: a later file may fill in what an earlier one lacked.
SYNTHETIC_TRACK_MERGE: dict[str, MergeRule] = {
    "name": "keep_known",
    "artist_names": "keep_known",
    "release_date": "keep_known",
    "duration_ms": "keep_known",
    "explicit": "keep_known",
    "updated_at": "replace",
}


@dataclass
class WeekValues:
    """One song's known popularity values within one ISO week, by day."""

    by_day: dict[dt.date, int]

    def value(self, aggregate: str) -> int | None:
        if not self.by_day:
            return None
        if aggregate == "last":
            return self.by_day[max(self.by_day)]
        return round(sum(self.by_day.values()) / len(self.by_day))


def weekly_values(rows: Iterable[HistoryRow]) -> dict[tuple[str, dt.date], WeekValues]:
    """Each (song, ISO week) seen in the rows, with the popularity known on each day of it.

    The same song on the same day in several files (several countries' playlists) has one popularity
    index; the highest is kept should the files disagree (they were fetched at different hours).
    """
    weeks: dict[tuple[str, dt.date], WeekValues] = {}
    for row in rows:
        values = weeks.setdefault((row.song_key, week_of(row.date)), WeekValues(by_day={}))
        if row.popularity is not None:
            values.by_day[row.date] = max(row.popularity, values.by_day.get(row.date, row.popularity))
    return weeks


def history_snapshot_rows(
    weeks: dict[tuple[str, dt.date], WeekValues], *, aggregate: str
) -> list[dict[str, Any]]:
    """One snapshot row per song per week, oldest week first."""
    now = utcnow()
    rows = []
    for (song, week), values in sorted(weeks.items(), key=lambda item: (item[0][1], item[0][0])):
        popularity = values.value(aggregate)
        rows.append(
            {
                "track_id": song,
                "week": week,
                "popularity": popularity,
                "popularity_source": SOURCE if popularity is not None else None,
                "trending": True,
                "is_demo": False,
                "updated_at": now,
            }
        )
    return rows


def history_track_rows(rows: Iterable[HistoryRow]) -> list[dict[str, Any]]:
    """One track row per song: name, artists and release facts from its latest row that has them."""
    now = utcnow()
    songs: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r.date):
        song = songs.setdefault(row.song_key, {"id": row.song_key, "is_demo": False, "updated_at": now})
        facts = {
            "name": row.song[:512] or None,
            "artist_names": ", ".join(row.artists)[:1024] or None,
            "release_date": row.release_date,
            "duration_ms": row.duration_ms,
            "explicit": row.explicit,
        }
        song.update({key: value for key, value in facts.items() if value is not None})
    for song in songs.values():
        song.setdefault("name", "")
        song.setdefault("artist_names", "")
        for key in ("release_date", "duration_ms", "explicit"):
            song.setdefault(key, None)
    return list(songs.values())


def read_history_files(
    paths: Sequence[Path], report: RunReport, progress: Progress | None = None
) -> list[HistoryFile]:
    """Read each file; one that cannot be read is reported by name and the others go on."""
    files = []
    for done, path in enumerate(paths, 1):
        if progress:
            progress("history files", done - 1, len(paths))
        try:
            history = read_history(path)
        except HistoryFormatError as exc:
            report.errors.append(str(exc))
            report.counts.history_files_failed += 1
            log.error("history file skipped: %s", exc)
            continue
        report.errors.extend(str(problem) for problem in history.problems)
        report.counts.history_rows_rejected += len(history.problems)
        report.counts.history_files += 1
        report.counts.history_rows += len(history.rows)
        files.append(history)
    if progress:
        progress("history files", len(paths), len(paths))
    return files


async def write_batches(
    *,
    sessions: async_sessionmaker[AsyncSession],
    report: RunReport,
    tracks: Sequence[dict[str, Any]],
    snapshots: Sequence[dict[str, Any]],
    progress: Progress | None,
) -> None:
    """Songs, then staged snapshots, `HISTORY_BATCH` rows per transaction with the run's counts."""
    synthetic = [t for t in tracks if not TRACK_ID_RE.match(t["id"])]
    # A Spotify id may already carry the API's metadata: the file only adds songs it lacks.
    known_to_spotify = [t for t in tracks if TRACK_ID_RE.match(t["id"])]
    for songs, merge in ((synthetic, SYNTHETIC_TRACK_MERGE), (known_to_spotify, {})):
        for start in range(0, len(songs), HISTORY_BATCH):
            batch = songs[start : start + HISTORY_BATCH]
            async with session_scope(sessions) as session:
                await upsert(session=session, model=Track, rows=batch, keys=["id"], update=merge)
                report.counts.tracks += len(batch)
                await record_progress(session=session, report=report)
    for start in range(0, len(snapshots), HISTORY_BATCH):
        part = snapshots[start : start + HISTORY_BATCH]
        async with session_scope(sessions) as session:
            await upsert_snapshots(session=session, rows=part, staged=True)
            report.counts.snapshots += len(part)
            await record_progress(session=session, report=report)
        if progress:
            progress("history weeks", start + len(part), len(snapshots))


async def import_history(
    *,
    sessions: async_sessionmaker[AsyncSession],
    topics: Topics,
    paths: Sequence[Path],
    aggregate: str = "last",
    progress: Progress | None = None,
) -> RunReport:
    """Import popularity-history files (or folders of them) as weekly snapshots, in one ingest run.

    `aggregate` folds a week's daily values: "last" (the last known value) or "mean". Files that cannot
    be read are reported and skipped; the run fails only when none can be read.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, not {aggregate!r}")
    files_report = RunReport(run_id=0, kind="history", week=current_week())
    files = read_history_files(iter_history_paths(paths), files_report, progress)
    rows = [row for history in files for row in history.rows]
    weeks = weekly_values(rows)
    last_week = max((week for _, week in weeks), default=current_week())
    report = await start_run(sessions=sessions, kind="history", week=last_week)
    report.errors, report.counts = files_report.errors, files_report.counts
    if not rows:
        await fail_run(sessions=sessions, report=report, error="no readable popularity-history rows")
        return report
    try:
        snapshots = history_snapshot_rows(weeks, aggregate=aggregate)
        report.counts.weeks += len({week for _, week in weeks})
        report.counts.history_songs += len({song for song, _ in weeks})
        await write_batches(
            sessions=sessions,
            report=report,
            tracks=history_track_rows(rows),
            snapshots=snapshots,
            progress=progress,
        )
    except Exception as exc:
        await fail_run(sessions=sessions, report=report, error=f"{type(exc).__name__}: {exc}")
        raise
    report.status = "ok"
    await finish_run(sessions=sessions, report=report, topics=topics, demo=False)
    log.info("history run %s done: %s", report.run_id, report.counts.as_dict())
    return report
