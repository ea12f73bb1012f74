"""The popularity-history importer: daily CSV rows become weekly snapshots (real MariaDB)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from services.ingestor.main import import_history_once
from shared.events import DbUpdated, parse
from shared.history import song_key
from shared.models import IngestRun, Outbox, Snapshot, SnapshotStage, Track
from tests.ingest_support import all_rows, count, ingestor_settings, rows, write

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "popularity-top50-daily-2023-2024"
HEADER = "date,position,song,artist,popularity,duration_ms,album_type,total_tracks,release_date,is_explicit,"
HEADER += "album_cover_url"
SPOTIFY_ID = "4uLU6hMCjMI75M1A2tKUQC"
MON, NEXT_MON = dt.date(2024, 1, 1), dt.date(2024, 1, 8)


def playlist_file(path: Path, days: list[tuple[str, int, str, str, int]]) -> Path:
    """A Top-50 playlist history file like the published ones: (date, position, song, artist, popularity)."""
    lines = [HEADER] + [
        f'{d},{pos},"{song}",{artist},{pop},201000,single,1,2023-12-15,False,https://i.example/cover.jpg'
        for d, pos, song, artist, pop in days
    ]
    return write(path, "\n".join(lines) + "\n")


def history_folder(folder: Path) -> None:
    song, artist = "Ça va, ça vient", "Zoé & Max"
    playlist_file(folder / "top-50-a.csv", [
        ("2024-01-01", 1, song, artist, 0),  # a new release's leading zero: unknown, not 0
        ("2024-01-02", 1, song, artist, 50),
        ("2024-01-03", 1, song, artist, 52),
        ("2024-01-07", 2, song, artist, 58),  # Sunday: the week's last day
        ("2024-01-08", 1, song, artist, 60),
        ("2024-01-10", 1, song, artist, 62),
    ])  # fmt: skip
    playlist_file(folder / "top-50-b.csv", [
        ("2024-01-03", 4, song, artist, 52),
        ("2024-01-05", 3, song, artist, 55),
        ("2024-01-04", 9, "Quiet one", "Solo", 0),
        ("2024-01-06", 9, "Quiet one", "Solo", 0),
    ])  # fmt: skip
    write(folder / "by-id.csv", f"date,track_id,popularity\n2024-01-02,{SPOTIFY_ID},40\n"
          f"2024-01-04,spotify:track:{SPOTIFY_ID},44\n")  # fmt: skip
    write(folder / "broken.csv", "when,name,score\n2024-01-01,x,3\n")


async def test_daily_history_becomes_weekly_snapshots_idempotently(settings, sessions, tmp_path) -> None:
    folder = tmp_path / "history"
    history_folder(folder)
    ingestor = ingestor_settings(settings)
    report = await import_history_once(ingestor, [folder])

    assert report.status == "ok" and report.kind == "history" and report.week == NEXT_MON
    assert any("broken.csv:1: header needs a date and a popularity column" in e for e in report.errors)
    assert report.counts.history_files == 3 and report.counts.history_files_failed == 1
    song, quiet = song_key("Ça va, ça vient", ["Zoé", "Max"]), song_key("Quiet one", ["Solo"])
    assert song.startswith("h_") and len(song) <= 64
    expected = [
        (SPOTIFY_ID, MON, 44, "history", True),
        (song, MON, 58, "history", True),  # the last known day of the week (Sunday)
        (song, NEXT_MON, 62, "history", True),
        (quiet, MON, None, None, True),  # only zeros: never indexed, unknown
    ]
    columns = ("track_id", "week", "popularity", "popularity_source", "trending")
    assert await rows(sessions, Snapshot, *columns) == sorted(expected, key=lambda r: (r[0], r[1]))
    assert await count(sessions, SnapshotStage) == 0
    tracks = {t.id: t for t in await all_rows(sessions, Track)}
    assert tracks[song].name == "Ça va, ça vient" and tracks[song].artist_names == "Zoé, Max"
    assert tracks[song].release_date == dt.date(2023, 12, 15) and tracks[song].duration_ms == 201000
    assert tracks[song].explicit is False and SPOTIFY_ID in tracks
    (event,) = await all_rows(sessions, Outbox)
    assert parse(event.payload, DbUpdated).data.kind == "history"
    assert parse(event.payload, DbUpdated).data.snapshots == 4

    track_columns = ("id", "name", "artist_names", "release_date")
    before = (await rows(sessions, Snapshot, *columns), await rows(sessions, Track, *track_columns))
    again = await import_history_once(ingestor, [folder])
    after = (await rows(sessions, Snapshot, *columns), await rows(sessions, Track, *track_columns))
    assert again.status == "ok" and after == before

    mean = await import_history_once(ingestor, [folder], aggregate="mean")
    assert mean.status == "ok"
    values = {(r[0], r[1]): r[2] for r in await rows(sessions, Snapshot, *columns)}
    assert values[(song, MON)] == 54 and values[(song, NEXT_MON)] == 61  # mean of 50, 52, 55, 58; 60, 62
    assert [r.status for r in await all_rows(sessions, IngestRun)] == ["ok", "ok", "ok"]


async def test_unreadable_history_fails_the_run_clearly(settings, sessions, tmp_path) -> None:
    broken = write(tmp_path / "only.csv", "when,name,score\n2024-01-01,x,3\n")
    report = await import_history_once(ingestor_settings(settings), [broken])
    assert report.status == "failed"
    (run,) = await all_rows(sessions, IngestRun)
    assert run.status == "failed" and any("only.csv:1" in e for e in run.errors)
    assert await count(sessions, Snapshot) == 0 and await count(sessions, Outbox) == 0


@pytest.mark.real_data
async def test_real_popularity_history_imports(settings, sessions) -> None:
    if not DATA.exists():
        pytest.skip(f"{DATA} is absent")
    italy = DATA / "spotify-streaming-top-50-italy.csv"
    report = await import_history_once(ingestor_settings(settings), [italy])
    assert report.status == "ok", report.errors[:5]
    snapshots = await all_rows(sessions, Snapshot)
    weeks = {s.week for s in snapshots}
    assert len(weeks) == report.counts.weeks >= 70 and all(w.weekday() == 0 for w in weeks)
    assert len(snapshots) == report.counts.snapshots
    known = [s.popularity for s in snapshots if s.popularity is not None]
    assert len(known) > 0.9 * len(snapshots) and all(0 <= p <= 100 for p in known)
    assert all(s.track_id.startswith("h_") for s in snapshots)
