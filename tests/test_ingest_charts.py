"""Chart CSVs as a source: both formats, corrupted files, re-ingesting, the watched folder (real MariaDB)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from services.ingestor.main import ChartsWatcher, ingest_once
from shared.models import ChartEntry, ChartFile, IngestRun, Outbox, Snapshot, SnapshotStage, Track
from tests.ingest_support import (
    chart_entries,
    count,
    emulator,
    ingestor_settings,
    new_format,
    old_format,
    rows,
    write,
)

JAN_6_2020 = dt.date(2020, 1, 6)
AUG_26_2024 = dt.date(2024, 8, 26)
JAN_1_2024 = dt.date(2024, 1, 1)


async def test_both_formats_load_with_week_region_rank_and_streams(settings, sessions, tmp_path) -> None:
    old, weekly, daily = chart_entries(30, seed=1), chart_entries(25, seed=2), chart_entries(20, seed=3)
    it_weekly = chart_entries(15, seed=4)
    folder = tmp_path / "charts"
    write(folder / "it_2020-01-03--2020-01-10.csv", old_format(old))
    write(folder / "regional-global-weekly-2024-08-29.csv", new_format(weekly))
    write(folder / "regional-it-weekly-2024-08-29.csv", new_format(it_weekly))
    write(folder / "regional-it-daily-2024-08-29.csv", new_format(daily))  # the same week's daily chart

    async with emulator() as spotify:
        report = await ingest_once(
            ingestor_settings(settings, spotify), kind="init", chart_paths=sorted(folder.iterdir())
        )

    assert report.status == "ok", report.errors
    assert report.counts.chart_files == 4 and report.counts.chart_weeks == 2
    expected = sorted(
        [(e.track_id, JAN_6_2020, "it", e.rank, e.streams) for e in old]
        + [(e.track_id, AUG_26_2024, "global", e.rank, e.streams) for e in weekly]
        + [(e.track_id, AUG_26_2024, "it", e.rank, e.streams) for e in it_weekly]
        # a daily chart is a series of its own, beside the week's, its streams on the weekly scale
        + [(e.track_id, AUG_26_2024, "it-daily", e.rank, e.streams * 7) for e in daily]
    )
    assert await rows(sessions, ChartEntry, "track_id", "week", "region", "rank", "streams") == expected
    tracks = {t[0]: t[1:] for t in await rows(sessions, Track, "id", "name", "artist_names")}
    assert tracks[old[0].track_id] == (old[0].name, old[0].artists[0])  # quotes and commas survive
    assert tracks[weekly[5].track_id] == (weekly[5].name, ", ".join(weekly[5].artists))
    # every charting song trended that week; its popularity is unknown without the API
    snapshots = await rows(sessions, Snapshot, "track_id", "week", "trending", "popularity")
    assert {(s[0], s[1]) for s in snapshots} == {(e[0], e[1]) for e in expected}
    assert all(s[2] and s[3] is None for s in snapshots)
    assert await count(sessions, SnapshotStage) == 0  # all published by the finished run
    # the files are real data although Spotify is emulated here
    assert await count(sessions, ChartEntry, ChartEntry.is_demo) == 0
    assert await count(sessions, Snapshot, Snapshot.is_demo) == 0
    assert await count(sessions, Track, Track.is_demo) == 0
    (event,) = await rows(sessions, Outbox, "topic")
    assert event[0].endswith("/events/db-updated")


@pytest.mark.parametrize("runs", ["one run", "a run per file"])
async def test_a_weeks_daily_files_make_one_chart_the_latest_days(settings, sessions, tmp_path, runs) -> None:
    monday, tuesday, wednesday = (chart_entries(20, seed=s) for s in (21, 22, 23))
    folder = tmp_path / "charts"
    files = [  # downloaded out of order: Tuesday's file comes last
        write(folder / "regional-it-daily-2024-08-26.csv", new_format(monday)),
        write(folder / "regional-it-daily-2024-08-28.csv", new_format(wednesday)),
        write(folder / "regional-it-daily-2024-08-27.csv", new_format(tuesday)),
    ]
    async with emulator() as spotify:
        ingestor = ingestor_settings(settings, spotify)
        for batch in [files] if runs == "one run" else [[f] for f in files]:
            report = await ingest_once(ingestor, kind="init", chart_paths=batch)
            assert report.status == "ok", report.errors

    # the week's chart is Wednesday's list, not the union of three days' songs at their best rank
    expected = sorted((e.track_id, AUG_26_2024, "it-daily", e.rank, e.streams * 7) for e in wednesday)
    assert await rows(sessions, ChartEntry, "track_id", "week", "region", "rank", "streams") == expected
    assert await count(sessions, ChartFile) == 3  # every file is known, none is read again
    assert await count(sessions, Track) == 60  # and every song it named is stored


def corrupt_folder(folder: Path) -> dict[str, list]:
    """One good file and four damaged ones, all of the week of 2024-01-01."""
    good, cut, bad_streams, doubled = (chart_entries(20, seed=s) for s in (10, 11, 12, 13))
    write(folder / "regional-global-weekly-2024-01-04.csv", new_format(good))
    text = new_format(cut)
    line_15 = text.split("\r\n")[15]  # the 15th data row (line 16 of the file)
    write(folder / "regional-de-weekly-2024-01-04.csv", text[: text.index(line_15) + len(line_15) - 3])
    write(folder / "regional-fr-weekly-2024-01-04.csv", "pos,title,who,plays\n1,a,b,3\n")
    text = old_format(bad_streams).replace(f",{bad_streams[2].streams},", ",lots,", 1)
    write(folder / "es_2023-12-29--2024-01-05.csv", text)
    text = old_format(doubled)
    lines = text.split("\n")
    write(folder / "gb_2023-12-29--2024-01-05.csv", "\n".join(lines[:7] + [lines[6]] + lines[7:]))
    return {"global": good, "de": cut[:14], "es": bad_streams[:2] + bad_streams[3:], "gb": doubled}


async def test_corrupted_files_give_clear_errors_and_lose_nothing_else(settings, sessions, tmp_path) -> None:
    folder = tmp_path / "charts"
    kept = corrupt_folder(folder)
    async with emulator() as spotify:
        ingestor = ingestor_settings(settings, spotify)
        report = await ingest_once(ingestor, kind="init", chart_paths=sorted(folder.iterdir()))

        assert report.status == "ok"
        errors = "\n".join(report.errors)
        assert "regional-fr-weekly-2024-01-04.csv:2: no chart header" in errors
        assert "regional-de-weekly-2024-01-04.csv:16:" in errors
        assert "es_2023-12-29--2024-01-05.csv:5: not a number: 'lots'" in errors
        assert "gb_2023-12-29--2024-01-05.csv:8: duplicate row" in errors
        assert report.counts.chart_files_failed == 1 and report.counts.chart_rows_rejected == 3
        expected = sorted(
            (e.track_id, region, e.rank, e.streams) for region, entries in kept.items() for e in entries
        )
        assert await rows(sessions, ChartEntry, "track_id", "region", "rank", "streams") == expected
        (run,) = await rows(sessions, IngestRun, "status", "errors")
        assert run[0] == "ok" and set(report.errors) <= set(run[1])  # the errors are on the run's record
        assert await count(sessions, ChartFile) == 4  # the unreadable file is not marked as ingested

        # once the file is fixed, it is ingested, and nothing else is read twice
        fixed = chart_entries(20, seed=14)
        write(folder / "regional-fr-weekly-2024-01-04.csv", new_format(fixed))
        again = await ingest_once(ingestor, kind="init", chart_paths=sorted(folder.iterdir()))
    assert again.counts.chart_files == 1 and again.counts.chart_files_skipped_known == 4
    assert await count(sessions, ChartEntry, ChartEntry.region == "fr") == 20


async def test_reingesting_a_folder_changes_nothing(settings, sessions, tmp_path) -> None:
    folder = tmp_path / "charts"
    for week in range(3):
        day = dt.date(2024, 1, 4) + dt.timedelta(weeks=week)
        write(folder / f"regional-global-weekly-{day}.csv", new_format(chart_entries(40, seed=week)))
        write(folder / f"us_{day - dt.timedelta(days=6)}--{day + dt.timedelta(days=1)}.csv",
              old_format(chart_entries(40, seed=100 + week)))  # fmt: skip
    tables = {
        ChartEntry: ("track_id", "week", "region", "rank", "streams", "source"),
        Snapshot: ("track_id", "week", "popularity", "trending"),
        Track: ("id", "name", "artist_names"),
        ChartFile: ("sha256", "name", "region", "week", "rows"),
    }
    async with emulator() as spotify:
        ingestor = ingestor_settings(settings, spotify)
        first = await ingest_once(ingestor, kind="init", chart_paths=sorted(folder.iterdir()))
        before = {model: await rows(sessions, model, *columns) for model, columns in tables.items()}
        second = await ingest_once(ingestor, kind="init", chart_paths=sorted(folder.iterdir()))
        after = {model: await rows(sessions, model, *columns) for model, columns in tables.items()}

    assert first.counts.chart_entries == 240 and len(before[ChartEntry]) == 240
    assert second.status == "ok" and second.counts.chart_files_skipped_known == 6
    assert second.counts.chart_entries == 0 and second.counts.snapshots == 0
    assert after == before
    assert await count(sessions, Outbox) == 1  # a run that wrote nothing announces nothing


async def test_watched_folder_new_files_once_in_date_order(settings, sessions, tmp_path) -> None:
    folder = tmp_path / "charts"
    days = [dt.date(2024, 3, 7), dt.date(2024, 2, 22), dt.date(2024, 2, 29)]  # created out of order
    for i, day in enumerate(days):
        path = write(folder / f"regional-global-weekly-{day}.csv", new_format(chart_entries(30, seed=i)))
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))
    watcher = ChartsWatcher(folder)
    changed = watcher.changed()
    assert [p.name for p in changed] == [f"regional-global-weekly-{d}.csv" for d in sorted(days)]
    assert watcher.changed() == []  # nothing new

    async with emulator() as spotify:
        ingestor = ingestor_settings(settings, spotify)
        await ingest_once(ingestor, kind="update", chart_paths=changed)
        async with sessions() as session:
            from sqlalchemy import select

            weeks = (await session.exec(select(ChartEntry.week).order_by(ChartEntry.id))).scalars().all()  # type: ignore[call-overload]
        assert weeks == sorted(weeks) and len(set(weeks)) == 3  # written oldest week first

        # the same content saved again is noticed by the watcher but not ingested twice
        touched = folder / f"regional-global-weekly-{days[0]}.csv"
        os.utime(touched, (1_750_000_000, 1_750_000_000))
        assert watcher.changed() == [touched]
        again = await ingest_once(ingestor, kind="update", chart_paths=[touched])
        assert again.counts.chart_files_skipped_known == 1 and again.counts.chart_files == 0

        new = write(folder / "regional-global-weekly-2024-03-14.csv", new_format(chart_entries(30, seed=9)))
        assert watcher.changed() == []  # just written: it may still be downloading
        os.utime(new, (1_750_000_100, 1_750_000_100))
        assert watcher.changed() == [new]
        last = await ingest_once(ingestor, kind="update", chart_paths=[new])
    assert last.counts.chart_files == 1
    assert await count(sessions, ChartEntry) == 120
