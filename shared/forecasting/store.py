"""A resident copy of what forecasting reads from the database, for a long-running predictor.

`PanelStore` loads every chart entry, popularity snapshot and song once, then refreshes incrementally: it
asks the database for a checksum of each week of `chart_entry` and `snapshot` and of each bucket of songs
(count, XOR and sum of the rows' CRC32, computed by MariaDB: only those numbers cross the wire) and
reloads only the weeks and buckets whose checksum changed. That sees every change: new rows, rewritten rows
(an upsert keeps the row's id and may keep an old `updated_at`: staged snapshots are published with the
time they were staged, and chart entries carry no timestamp at all), deleted rows, whoever wrote them, so
no watermark on application clocks is trusted. The checksums and the reloads are read in one transaction:
one consistent snapshot of the database.

The panels it builds are those `load_chart_panel` / `load_popularity_panel` build from the same rows (the
same panel constructors; `tests/test_forecasting_store.py` checks the forecasts are identical). On another
database than MariaDB/MySQL (the embedded SQLite), every refresh is a full reload.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
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
    _popularity_panel,
    _songs_frame,
    artist_key,
    day_index,
)

SONG_BUCKETS = 64  # songs are checksummed (and reloaded) in this many groups by CRC32 of their id
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


class PanelStore:
    """Every chart entry, popularity snapshot and song of the database (demo rows only with `demo`), in
    memory, refreshed by week; `panels(week)` gives the panels the full load would give up to that week."""

    def __init__(self, *, demo: bool = False) -> None:
        self.demo = demo
        self.charts: dict[dt.date, pd.DataFrame] = {}  # week -> chart entries
        self.snapshots: dict[dt.date, pd.DataFrame] = {}  # week -> known popularity values
        self.songs = _songs_frame([]).assign(bucket=pd.Series(dtype=np.int64))
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
        if any(changed.values()):
            # stale panels go now; the checksums are kept once every reload succeeded (a failed one is redone)
            self._panels = {}
        if changed["songs"]:
            buckets = changed["songs"]
            listed = f"{_BUCKET} IN ({', '.join(map(str, buckets))})" if self.loaded else ""
            rows = await _rows(session, f"SELECT {_SONG_COLUMNS}, {_BUCKET} {_SONGS_FROM} {_where(listed)}")
            self._replace_songs(rows, buckets if self.loaded else None)
            report.song_buckets, report.rows = len(buckets), report.rows + len(rows)
        if changed["chart"]:
            report.chart_weeks = changed["chart"]
            weeks = _week_list(report.chart_weeks) if self.loaded else ""
            rows = await _rows(session, f"SELECT {_CHART_ROW} FROM chart_entry {_where(demo, weeks)}")
            _replace_weeks(self.charts, rows, CHART_COLUMNS, report.chart_weeks)
            report.rows += len(rows)
        if changed["snapshot"]:
            report.snapshot_weeks = changed["snapshot"]
            weeks = _week_list(report.snapshot_weeks) if self.loaded else ""
            rows = await _rows(session, f"SELECT {_SNAPSHOT_ROW} FROM snapshot {_where(demo, known, weeks)}")
            _replace_weeks(self.snapshots, rows, OBS_COLUMNS, report.snapshot_weeks)
            report.rows += len(rows)
        self._sums, self.loaded = sums, True
        return report

    async def _reload_all(self, session: AsyncSession) -> Refresh:
        demo = "" if self.demo else "is_demo = 0"
        songs = await _rows(session, f"SELECT {_SONG_COLUMNS}, 0 {_SONGS_FROM}")
        self._replace_songs(songs, None)
        charts = await _rows(session, f"SELECT {_CHART_ROW} FROM chart_entry {_where(demo)}")
        obs = await _rows(
            session, f"SELECT {_SNAPSHOT_ROW} FROM snapshot {_where(demo, 'popularity IS NOT NULL')}"
        )
        _replace_weeks(self.charts, charts, CHART_COLUMNS, None)
        _replace_weeks(self.snapshots, obs, OBS_COLUMNS, None)
        self.loaded = True
        return Refresh(full=True, rows=len(songs) + len(charts) + len(obs))

    def _replace_songs(self, rows: list[tuple[Any, ...]], buckets: list[int] | None) -> None:
        """The songs of `buckets` (all songs when None) replaced by `rows`, described as the panels do (the
        driver gives booleans as 0/1 here: no ORM column types)."""
        frame = _songs_frame(
            [
                (i, day_index(_date(r)) if r else np.nan, d, None if e is None else bool(e), a, n,
                 artist_key((arts or "").split(",")[0].strip()), name or "", arts or "")
                for i, r, d, e, a, n, arts, name, _ in rows
            ]
        )  # fmt: skip
        frame["bucket"] = np.array([row[-1] for row in rows], np.int64)
        if buckets is not None:
            kept = self.songs[~self.songs["bucket"].isin(buckets)]
            frame = pd.concat([kept, frame]) if len(frame) else kept
        self.songs = frame

    # ------------------------------------------------------------ panels

    def panels(self, week: dt.date | None = None) -> tuple[ChartPanel, PopularityPanel]:
        """The chart and popularity panels up to `week` (all weeks when None), built once per refresh."""
        if week not in self._panels:
            self._panels = {week: (self._chart_panel(week), self._popularity_panel(week))}
        return self._panels[week]

    def _weeks(self, frames: dict[dt.date, pd.DataFrame], week: dt.date | None) -> list[pd.DataFrame]:
        return [frame for w, frame in sorted(frames.items()) if week is None or w <= week]

    def _chart_panel(self, week: dt.date | None) -> ChartPanel:
        frames = self._weeks(self.charts, week)
        entries = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CHART_COLUMNS)
        entries["week"] = _weeks_since(entries["week"], EPOCH_MONDAY) // 7
        songs = self.songs.reindex(entries["track"].to_numpy())
        entries["artist"] = songs["artist"].fillna("").to_numpy()
        entries["name"] = songs["name"].fillna("").to_numpy()
        return _chart_panel(entries)

    def _popularity_panel(self, week: dt.date | None) -> PopularityPanel:
        frames = self._weeks(self.snapshots, week)
        obs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=OBS_COLUMNS)
        obs = obs.rename(columns={"week": "day"})
        obs["day"] = _weeks_since(obs["day"], EPOCH_DAY)
        obs["position"] = np.nan
        songs = self.songs[self.songs.index.isin(obs["song"].unique())].drop(columns="bucket")
        return _popularity_panel(obs, songs)

    def names(self, ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """Name and artists of each known song among `ids`."""
        found = self.songs.reindex(list(ids)).dropna(subset=["name"])
        name, artists = (found[c].to_numpy(object).tolist() for c in ("name", "artists"))
        return dict(zip(found.index.to_numpy(object).tolist(), zip(name, artists, strict=True), strict=True))


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
