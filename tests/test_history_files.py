"""Popularity-history reader: song keys, unknown leading zeros, optional columns, bad rows and files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from shared.history import HistoryFormatError, iter_history_paths, read_history, song_key

HEADER = (
    "date,position,song,artist,popularity,duration_ms,album_type,total_tracks,release_date,is_explicit,"
    "album_cover_url"
)
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "popularity-top50-daily-2023-2024"


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_rows_keys_and_attributes(tmp_path: Path) -> None:
    path = write(
        tmp_path / "spotify-streaming-top-50-italy.csv",
        [
            HEADER,
            '2023-05-18,1,"Gelosa (feat. Shiva, X)",Finesse & Shiva,82,181611,single,1,2023-02-24,False,u',
            "2023-05-18,2,CENERE,Lazza,77,208323,album,26,2022-04,True,u",
        ],
    )
    history = read_history(path)
    first, second = history.rows
    assert first.date == dt.date(2023, 5, 18) and first.position == 1 and first.popularity == 82
    assert first.artists == ["Finesse", "Shiva"] and first.track_id is None
    assert first.song_key.startswith("h_") and len(first.song_key) <= 64
    assert (first.duration_ms, first.album_type) == (181611, "single")
    assert (first.total_tracks, first.explicit) == (1, False)
    assert first.release_date == dt.date(2023, 2, 24)
    assert second.release_date == dt.date(2022, 4, 1) and second.explicit is True
    assert first.playlist == "spotify-streaming-top-50-italy"


def test_song_key_is_stable_across_spelling_and_artist_order() -> None:
    key = song_key("Ella Baila Sola", ["Eslabon Armado", "Peso Pluma"])
    assert key == song_key("  ella baila  sola ", ["Peso Pluma", "Eslabón Armado"])
    assert key != song_key("Ella Baila Sola", ["Eslabon Armado"])
    assert len(key) <= 64 and not key.isalnum()  # never mistaken for a 22-character Spotify id


def test_leading_zeros_are_unknown_later_zeros_are_kept(tmp_path: Path) -> None:
    rows = [
        "2023-05-18,5,New,Artist,0,1,single,1,2023-05-17,False,u",
        "2023-05-19,5,New,Artist,0,1,single,1,2023-05-17,False,u",
        "2023-05-20,5,New,Artist,61,1,single,1,2023-05-17,False,u",
        "2023-05-21,5,New,Artist,0,1,single,1,2023-05-17,False,u",
        "2023-05-18,1,Old,Other,70,1,album,9,2020-01-01,False,u",
    ]
    history = read_history(write(tmp_path / "list.csv", [HEADER, *rows]))
    new = [r.popularity for r in history.rows if r.song == "New"]
    assert new == [None, None, 61, 0]
    assert [r.popularity for r in history.rows if r.song == "Old"] == [70]


def test_track_id_format(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ids.csv",
        [
            "date,track_id,popularity",
            "2024-01-01,5knuzwU65gJK7IF5yJsuaW,50",
            "2024-01-08,spotify:track:5knuzwU65gJK7IF5yJsuaW,52",
            "2024-01-08,not-an-id,52",
        ],
    )
    history = read_history(path)
    assert [r.song_key for r in history.rows] == ["5knuzwU65gJK7IF5yJsuaW"] * 2
    assert [r.popularity for r in history.rows] == [50, 52]
    assert len(history.problems) == 1 and history.problems[0].line == 4


def test_bad_rows_are_problems_with_their_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.csv",
        [
            HEADER,
            "2023-05-18,1,Good,Artist,80,1,single,1,2023-01-01,False,u",
            "2023-05-18,2,,Lavern,0,0,single,5,2023-11-16,False,u",
            "2023-05-18,3,Loud,Artist,101,1,single,1,2023-01-01,False,u",
            "not-a-date,4,Song,Artist,50,1,single,1,2023-01-01,False,u",
            "2023-05-18,5,Short,Artist",
        ],
    )
    history = read_history(path)
    assert [r.song for r in history.rows] == ["Good"]
    assert [p.line for p in history.problems] == [3, 4, 5, 6]
    assert "out of 0-100" in history.problems[1].reason and "truncated" in history.problems[3].reason


def test_unreadable_files_raise_with_file_and_reason(tmp_path: Path) -> None:
    with pytest.raises(HistoryFormatError, match="date and a popularity"):
        read_history(write(tmp_path / "wrong.csv", ["day_of_week,plays", "1,2"]))
    with pytest.raises(HistoryFormatError, match="empty file"):
        read_history(write(tmp_path / "empty.csv", [""]))
    with pytest.raises(HistoryFormatError, match="no readable rows"):
        read_history(write(tmp_path / "hollow.csv", [HEADER, "x,1,,,,,,,,,"]))


@pytest.mark.real_data
def test_real_history_files_load() -> None:
    if not REAL.is_dir():
        pytest.skip("../shared/data is absent")
    files = [read_history(p) for p in iter_history_paths([REAL])]
    assert len(files) == 7
    rows = [r for f in files for r in f.rows]
    assert len(rows) + sum(len(f.problems) for f in files) == 7 * 27_800
    assert min(r.date for r in rows) == dt.date(2023, 5, 18)
    assert max(r.date for r in rows) == dt.date(2024, 11, 27)
    assert all(r.popularity is None or 0 <= r.popularity <= 100 for r in rows)
    assert any(r.popularity is None for r in rows)  # new releases' leading zeros
