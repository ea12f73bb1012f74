"""A resident copy of what forecasting reads from the database, for a long-running predictor.

`PanelStore` loads every chart entry, popularity snapshot and song once, then refreshes incrementally: it
asks the database for a checksum of each week of `chart_entry` and `snapshot` and of each bucket of songs
(count, XOR and sum of the rows' CRC32, computed by MariaDB: only those numbers cross the wire) and
reloads only the weeks and buckets whose checksum changed. That sees every change: new rows, rewritten rows
(an upsert keeps the row's id and may keep an old `updated_at`: staged snapshots are published with the
time they were staged, and chart entries carry no timestamp at all), deleted rows, whoever wrote them, so
no watermark on application clocks is trusted. The checksums and the reloads are read in one transaction:
one consistent snapshot of the database.

The panels it builds hold what `load_chart_panel` / `load_popularity_panel` build from the same rows
(`tests/test_forecasting_store.py` checks the forecasts are identical). On another database than
MariaDB/MySQL (the embedded SQLite), every refresh is a full reload.

Memory: a million songs with years of weekly snapshots must fit a small machine, so popularity is held as
columns, not as rows of Python objects: each song id is kept once (`SongIds`) and every snapshot is a song
code (int32) and its value (float32: popularities are integers, exact in it) in the array of its week; the
songs' attributes are one row per song with their repeated strings (artists) shared. Rows are read from the
database in chunks, so a load never holds all of them as Python tuples at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.forecasting.panel import (
    EPOCH_DAY,
    EPOCH_MONDAY,
    ChartPanel,
    PopularityPanel,
    _chart_panel,
    _songs_frame,
    artist_key,
    day_index,
)

SONG_BUCKETS = 64  # songs are checksummed (and reloaded) in this many groups by CRC32 of their id
READ_CHUNK = 100_000  # rows read from the database at a time (as Python tuples) before they become columns
CHART_COLUMNS = ["track", "region", "week", "rank", "streams"]
OBS_COLUMNS = ["song", "week", "popularity"]

_CHART_SUM = "CRC32(CONCAT_WS(',', track_id, region, `rank`, IFNULL(streams, 'n')))"
_SNAPSHOT_SUM = "CRC32(CONCAT_WS(',', track_id, popularity))"
_SONG_FIELDS = (
    "t.id, t.name, t.artist_names, t.release_date, t.duration_ms, t.explicit, a.album_type, a.total_tracks"
)
# NUL between fields (names may hold commas), a marker for NULL (CONCAT_WS would skip it)
_SONG_SUM = "CRC32(CONCAT_WS(CHAR(0), {}))".format(
    ", ".join(f"IFNULL({c}, CHAR(1))" for c in _SONG_FIELDS.split(", "))
)
_BUCKET = f"CRC32(t.id) % {SONG_BUCKETS}"
_CHART_ROW = "track_id, region, week, `rank`, streams"
_SNAPSHOT_ROW = "track_id, week, popularity"
_SONG_COLUMNS = (
    "t.id, t.release_date, t.duration_ms, t.explicit, a.album_type, a.total_tracks, t.artist_names, t.name"
)
_SONGS_FROM = "FROM track t LEFT JOIN album a ON a.id = t.album_id"


@dataclass
class Refresh:
    """What one refresh read: which weeks and song buckets were (re)loaded, rows read, seconds."""

    full: bool
    chart_weeks: list[dt.date] = field(default_factory=list)
    snapshot_weeks: list[dt.date] = field(default_factory=list)
    song_buckets: int = 0
    rows: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.full or self.chart_weeks or self.snapshot_weeks or self.song_buckets)


def _where(*conditions: str) -> str:
    kept = [c for c in conditions if c]
    return f"WHERE {' AND '.join(kept)}" if kept else ""


class SongIds:
    """Every song id the store refers to, each kept once: rows hold a song's code, its position here. Codes
    are never reused or renumbered (a song gone from the database keeps its code; a full reload starts
    afresh)."""

    def __init__(self) -> None:
        self.ids = np.empty(0, object)
        self._index = pd.Index(self.ids, dtype=object)
        self._dtype: pd.CategoricalDtype | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, values: Sequence[str] | np.ndarray) -> np.ndarray:
        """The codes of `values` (int64), -1 for an id never seen."""
        if not len(self.ids):
            return np.full(len(values), -1, np.int64)
        return self._index.get_indexer(np.asarray(values, object))

    def codes(self, values: Sequence[str] | np.ndarray) -> np.ndarray:
        """The codes of `values` (int32), giving the ids never seen the next codes."""
        values = np.asarray(values, object)
        found = self.lookup(values)
        missing = found < 0
        if missing.any():
            self.ids = np.concatenate([self.ids, pd.unique(values[missing])])
            self._index, self._dtype = pd.Index(self.ids, dtype=object), None
            found[missing] = self._index.get_indexer(values[missing])
        return found.astype(np.int32)

    def categorical(self, codes: np.ndarray) -> pd.Categorical:
        """The ids of `codes` as a categorical column: no object per row (grouping and `isin` work on the
        codes), the ids themselves when read."""
        if self._dtype is None:
            self._dtype = pd.CategoricalDtype(self._index)
        return pd.Categorical.from_codes(codes, dtype=self._dtype, validate=False)


@dataclass
class WeekValues:
    """One week's known popularity values: the song codes and their values, in the same order."""

    codes: np.ndarray  # int32
    popularity: np.ndarray  # float32 (integers 0-100: exact)


SONG_ATTRIBUTES = ["release_day", "duration_ms", "explicit", "album_type", "total_tracks"]
SONG_TEXTS = ["artist", "name", "artists"]


class PanelStore:
    """Every chart entry, popularity snapshot and song of the database (demo rows only with `demo`), in
    memory, refreshed by week; `panels(week)` gives the panels the full load would give up to that week."""

    def __init__(self, *, demo: bool = False) -> None:
        self.demo = demo
        self.ids = SongIds()
        self.charts: dict[dt.date, pd.DataFrame] = {}  # week -> chart entries
        self.snapshots: dict[dt.date, WeekValues] = {}  # week -> known popularity values
        self.songs = _empty_songs()  # by song code: attributes, texts and checksum bucket
        self._texts: dict[str, tuple[str, str]] = {}  # artists text -> (it, first artist's key)
        self._sums: dict[str, dict[Any, tuple[int, int, int]]] = {}
        self._panels: dict[dt.date | None, tuple[ChartPanel, PopularityPanel]] = {}
        self.lock = asyncio.Lock()  # held by a caller refreshing then scoring, so no refresh runs in between
        self.loaded = False

    # ------------------------------------------------------------ refreshing

    async def refresh(self, session: AsyncSession) -> Refresh:
        """Bring the store up to the database: all of it the first time (or on SQLite), then only the weeks
        and song buckets whose checksums changed."""
        start = time.perf_counter()
        dialect = (await session.connection()).dialect.name
        if dialect != "mysql":
            report = await self._reload_all(session)
        else:
            report = await self._reload_changed(session)
        if report.changed:
            self._panels = {}
        report.seconds = time.perf_counter() - start
        return report

    async def _reload_changed(self, session: AsyncSession) -> Refresh:
        demo = "" if self.demo else "is_demo = 0"
        known = "popularity IS NOT NULL"
        sums = {
            "songs": await _sums(session, _BUCKET, _SONG_SUM, _SONGS_FROM),
            "chart": await _sums(session, "week", _CHART_SUM, f"FROM chart_entry {_where(demo)}"),
            # a scan beats the week index here: every row is read
            "snapshot": await _sums(
                session,
                "week",
                _SNAPSHOT_SUM,
                f"FROM snapshot IGNORE INDEX (ix_snapshot_week) {_where(demo, known)}",
            ),
        }
        changed = {name: sorted(_changed(self._sums.get(name, {}), now)) for name, now in sums.items()}
        report = Refresh(full=not self.loaded)
        if not self.loaded:
            self._clear()
        if any(changed.values()):
            # stale panels go now; the checksums are kept once every reload succeeded (a failed one is redone)
            self._panels = {}
        if changed["songs"]:
            buckets = changed["songs"]
            listed = f"{_BUCKET} IN ({', '.join(map(str, buckets))})" if self.loaded else ""
            sql = f"SELECT {_SONG_COLUMNS}, {_BUCKET} {_SONGS_FROM} {_where(listed)}"
            report.song_buckets = len(buckets)
            report.rows += await self._replace_songs(_chunks(session, sql), buckets if self.loaded else None)
        if changed["chart"]:
            report.chart_weeks = changed["chart"]
            weeks = _week_list(report.chart_weeks) if self.loaded else ""
            rows = await _rows(session, f"SELECT {_CHART_ROW} FROM chart_entry {_where(demo, weeks)}")
            _replace_weeks(self.charts, rows, CHART_COLUMNS, report.chart_weeks)
            report.rows += len(rows)
        if changed["snapshot"]:
            report.snapshot_weeks = changed["snapshot"]
            weeks = _week_list(report.snapshot_weeks) if self.loaded else ""
            sql = f"SELECT {_SNAPSHOT_ROW} FROM snapshot {_where(demo, known, weeks)}"
            report.rows += await self._replace_snapshots(_chunks(session, sql), report.snapshot_weeks)
        self._sums, self.loaded = sums, True
        return report

    async def _reload_all(self, session: AsyncSession) -> Refresh:
        demo = "" if self.demo else "is_demo = 0"
        self._clear()
        rows = await self._replace_songs(_chunks(session, f"SELECT {_SONG_COLUMNS}, 0 {_SONGS_FROM}"), None)
        charts = await _rows(session, f"SELECT {_CHART_ROW} FROM chart_entry {_where(demo)}")
        _replace_weeks(self.charts, charts, CHART_COLUMNS, None)
        known = _where(demo, "popularity IS NOT NULL")
        rows += await self._replace_snapshots(
            _chunks(session, f"SELECT {_SNAPSHOT_ROW} FROM snapshot {known}")
        )
        self.loaded = True
        return Refresh(full=True, rows=rows + len(charts))

    def _clear(self) -> None:
        """Forget everything (before a full load: codes start afresh)."""
        self.ids, self.charts, self.snapshots = SongIds(), {}, {}
        self.songs, self._texts, self._panels = _empty_songs(), {}, {}

    async def _replace_songs(
        self, chunks: AsyncIterator[list[tuple[Any, ...]]], buckets: list[int] | None
    ) -> int:
        """The songs of `buckets` (all songs when None) replaced by the rows of `chunks`, described as the
        panels do (the driver gives booleans as 0/1 here: no ORM column types). Returns rows read."""
        frames, rows = [], 0
        async for chunk in chunks:
            frames.append(self._songs_of(chunk))
            rows += len(chunk)
        kept = [] if buckets is None else [self.songs[~self.songs["bucket"].isin(buckets)]]
        parts = [frame for frame in [*kept, *frames] if len(frame)]
        self.songs = pd.concat(parts) if parts else _empty_songs()
        return rows

    def _songs_of(self, rows: list[tuple[Any, ...]]) -> pd.DataFrame:
        """Rows of the song query as the store keeps them: by code, each distinct artists text (and its
        first artist's key, and each release day) worked out and kept once."""
        days: dict[Any, float] = {None: np.nan}
        frame = _songs_frame(
            [
                (i, days[r] if r in days else days.setdefault(r, day_index(_date(r))), d,
                 None if e is None else bool(e), a, n, self._artists(arts)[1], name or "",
                 self._artists(arts)[0])
                for i, r, d, e, a, n, arts, name, _ in rows
            ]
        )  # fmt: skip
        bucket = pd.Series([row[-1] for row in rows], [row[0] for row in rows], dtype=np.int64)
        frame["bucket"] = bucket[~bucket.index.duplicated(keep="last")].reindex(frame.index).to_numpy()
        frame.index = pd.Index(self.ids.codes(frame.index.to_numpy(object)), name="code")
        return frame

    def _artists(self, names: str | None) -> tuple[str, str]:
        """The artists text of a song and the key of its first artist, one object each per distinct text."""
        names = names or ""
        if names not in self._texts:
            self._texts[names] = (names, artist_key(names.split(",")[0].strip()))
        return self._texts[names]

    async def _replace_snapshots(
        self, chunks: AsyncIterator[list[tuple[Any, ...]]], weeks: list[dt.date] | None = None
    ) -> int:
        """The popularity values of `weeks` (every week when None) replaced by the (song, week, value) rows
        of `chunks`. Returns rows read."""
        found: dict[dt.date, list[WeekValues]] = {}
        rows = 0
        async for chunk in chunks:
            if not chunk:
                continue
            # a column at a time: transposing 100,000 rows with zip(*chunk) took 25 times longer
            tracks, week_column, values = (list(map(itemgetter(k), chunk)) for k in range(3))
            codes = self.ids.codes(tracks)
            popularity = np.array(values, np.float32)
            week_of_row, week_values = pd.factorize(np.array(week_column, object))
            for k, week in enumerate(week_values):
                rows_of_week = week_of_row == k
                found.setdefault(_date(week), []).append(
                    WeekValues(codes[rows_of_week], popularity[rows_of_week])
                )
            rows += len(chunk)
        if weeks is None:
            self.snapshots.clear()
        for week in weeks or []:
            self.snapshots.pop(week, None)
        for week, parts in found.items():
            self.snapshots[week] = WeekValues(
                np.concatenate([p.codes for p in parts]), np.concatenate([p.popularity for p in parts])
            )
        return rows

    # ------------------------------------------------------------ panels

    def panels(self, week: dt.date | None = None) -> tuple[ChartPanel, PopularityPanel]:
        """The chart and popularity panels up to `week` (all weeks when None), built once per refresh."""
        if week not in self._panels:
            self._panels = {}  # the previous week's go first: never two sets at once
            self._panels = {week: (self._chart_panel(week), self._popularity_panel(week))}
        return self._panels[week]

    def _chart_panel(self, week: dt.date | None) -> ChartPanel:
        frames = [frame for w, frame in sorted(self.charts.items()) if week is None or w <= week]
        entries = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CHART_COLUMNS)
        entries["week"] = _weeks_since(entries["week"], EPOCH_MONDAY) // 7
        songs = self.songs.reindex(self.ids.lookup(entries["track"].to_numpy(object)))
        entries["artist"] = songs["artist"].fillna("").to_numpy()
        entries["name"] = songs["name"].fillna("").to_numpy()
        return _chart_panel(entries)

    def _popularity_panel(self, week: dt.date | None) -> PopularityPanel:
        """Every known value up to `week`, a row per song and week (the snapshot table's key), week after
        week: what `_popularity_panel` makes of the same rows, without grouping millions of rows that are
        already one per (song, day) (a day's median and minimum of one value are the value), in another
        row order (the features of a row do not depend on it)."""
        weeks = [w for w in sorted(self.snapshots) if week is None or w <= week]
        parts = [self.snapshots[w] for w in weeks]
        sizes = [len(part.codes) for part in parts]
        codes = np.concatenate([p.codes for p in parts]) if parts else np.zeros(0, np.int32)
        obs = pd.DataFrame(
            {
                "song": self.ids.categorical(codes),
                "day": np.repeat(np.array([day_index(w) for w in weeks], np.int32), sizes),
                "popularity": np.concatenate([p.popularity for p in parts]).astype(float)
                if parts
                else np.zeros(0),
                # constant here (no list positions, one value a week): the narrowest types, read as floats
                "position": np.full(len(codes), np.nan, np.float32),
                "n_lists": np.ones(len(codes), np.int8),
            }
        )
        songs = self.songs[self.songs.index.isin(np.unique(codes))]
        songs = songs.drop(columns="bucket").set_axis(
            pd.Index(self.ids.ids[songs.index.to_numpy()], name="song")
        )
        return PopularityPanel(obs, songs)

    def names(self, ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """Name and artists of each known song among `ids`."""
        wanted = np.asarray(list(ids), object)
        codes = self.ids.lookup(wanted)
        found = self.songs.reindex(codes)
        known = found["name"].notna().to_numpy()
        name, artists = (found[c].to_numpy(object)[known].tolist() for c in ("name", "artists"))
        return dict(zip(wanted[known].tolist(), zip(name, artists, strict=True), strict=True))


def _empty_songs() -> pd.DataFrame:
    songs = _songs_frame([]).assign(bucket=pd.Series(dtype=np.int64))
    return songs.set_axis(pd.Index([], dtype=np.int32, name="code"))


async def _chunks(session: AsyncSession, sql: str) -> AsyncIterator[list[tuple[Any, ...]]]:
    """The rows of `sql` in chunks of `READ_CHUNK`, streamed from the server."""
    result = await session.stream(text(sql))
    async for part in result.partitions(READ_CHUNK):
        yield list(part)  # rows unpack as tuples do


def _date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def _weeks_since(dates: pd.Series, epoch: dt.date) -> np.ndarray:
    """Days since `epoch` of a column of dates (dates as the driver returns them)."""
    if len(dates) == 0:
        return np.zeros(0, np.int64)
    return pd.to_datetime(dates).to_numpy("datetime64[D]").astype(np.int64) - (epoch - EPOCH_DAY).days


async def _rows(session: AsyncSession, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in (await session.execute(text(sql))).all()]


async def _sums(
    session: AsyncSession, key: str, row_hash: str, source: str
) -> dict[Any, tuple[int, int, int]]:
    """Per `key`: the count, XOR and sum of the `row_hash` of the rows of `source`, aggregated by the
    database (two aggregates of a 32-bit hash: a change goes unseen with odds far below 2^-32)."""
    sql = f"SELECT k, COUNT(*), BIT_XOR(h), SUM(h) FROM (SELECT {key} k, {row_hash} h {source}) x GROUP BY k"
    return {k: (int(n), int(x), int(total)) for k, n, x, total in await _rows(session, sql)}


def _changed(before: dict[Any, tuple[int, int, int]], now: dict[Any, tuple[int, int, int]]) -> set[Any]:
    """Keys whose checksum differs, appeared or disappeared."""
    return {key for key in before.keys() | now.keys() if before.get(key) != now.get(key)}


def _week_list(weeks: list[dt.date]) -> str:
    return f"week IN ({', '.join(repr(w.isoformat()) for w in weeks)})"


def _replace_weeks(
    frames: dict[dt.date, pd.DataFrame],
    rows: list[tuple[Any, ...]],
    columns: list[str],
    weeks: list[dt.date] | None,
) -> None:
    """Replace the frames of `weeks` (every week when None) by those of `rows` (week in column 2 or 1)."""
    frame = pd.DataFrame(rows, columns=columns)
    if weeks is None:
        frames.clear()
    for week in weeks or []:
        frames.pop(week, None)
    for week, part in frame.groupby("week", sort=False):
        frames[_date(week)] = part.reset_index(drop=True)
