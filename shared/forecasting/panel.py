"""The dataset builder: one panel per signal, from chart/history files or from the database.

A `ChartPanel` holds every (song, region, week) chart entry with rank and streams, and every chart that
exists (region, week) with its floor (the streams of the last position): a song absent from an existing
chart is censored below that floor, not missing. A `PopularityPanel` holds every (song, day) popularity
observation and the song's static attributes. Time is an integer (weeks or days since 1970) so features
are array lookups.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.charts import iter_chart_paths, read_chart
from shared.history import iter_history_paths, normalise, read_history
from shared.weeks import week_of

EPOCH_MONDAY = dt.date(1970, 1, 5)
EPOCH_DAY = dt.date(1970, 1, 1)
WEEK_SPAN = 1 << 14  # week indexes stay below this until year 2280: room to pack keys


class NotEnoughData(ValueError):
    """The data cannot support the requested training or evaluation; the message says what is missing."""


def week_index(day: dt.date) -> int:
    """Weeks since 1970 of the ISO week containing `day`."""
    return (week_of(day) - EPOCH_MONDAY).days // 7


def week_date(index: int) -> dt.date:
    """The Monday of week `index`."""
    return EPOCH_MONDAY + dt.timedelta(weeks=int(index))


def day_index(day: dt.date) -> int:
    return (day - EPOCH_DAY).days


def day_date(index: int) -> dt.date:
    """The date of day `index` (days since 1970: `day_index` inverted)."""
    return EPOCH_DAY + dt.timedelta(days=int(index))


def artist_key(name: str) -> str:
    """The key of an artist known by name (charts and history files carry names, not ids)."""
    return normalise(name) or name


@dataclass
class ChartPanel:
    """Chart entries (`entries`) and the charts that exist (`charts`), weekly, per region."""

    entries: pd.DataFrame  # track, region, week, rank, streams, log_streams, artist, name
    charts: pd.DataFrame  # region, week, log_floor
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)  # derived frames

    def weeks(self) -> np.ndarray:
        return np.sort(self.charts["week"].unique())

    def restrict(self, *, regions: Sequence[str] | None = None, max_week: int | None = None) -> ChartPanel:
        """The panel without other regions or anything after `max_week`."""
        entries, charts = self.entries, self.charts
        if regions is not None:
            entries = entries[entries["region"].isin(regions)]
            charts = charts[charts["region"].isin(regions)]
        if max_week is not None:
            entries = entries[entries["week"] <= max_week]
            charts = charts[charts["week"] <= max_week]
        return ChartPanel(entries.reset_index(drop=True), charts.reset_index(drop=True))


def lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """values[keys == wanted] for each wanted key (sorted `keys`), NaN where absent."""
    # Searched in sorted order, the keys are read front to back: several times faster than random probes
    # of a million keys, sort included.
    order = np.argsort(wanted)
    in_order = wanted[order]
    pos = np.searchsorted(keys, in_order)
    pos_clipped = np.minimum(pos, len(keys) - 1)
    found = (pos < len(keys)) & (keys[pos_clipped] == in_order) if len(keys) else np.zeros(len(wanted), bool)
    found_values = np.full(len(wanted), np.nan)
    found_values[found] = values[pos_clipped[found]]
    out = np.empty(len(wanted))
    out[order] = found_values
    return out


def mapped(values: pd.Series, mapping: dict[str, int]) -> np.ndarray:
    """`values.map(mapping)` as floats (NaN where unmapped), mapping the distinct values, not every row."""
    codes, uniques = pd.factorize(values)
    table = np.array([mapping.get(value, np.nan) for value in uniques] + [np.nan], float)
    return table[codes]  # a missing value's code -1 reads the last entry, NaN


class ChartIndex:
    """Packed integer keys of a chart panel, for fast lookups of any (song, region, week)."""

    def __init__(self, panel: ChartPanel, regions: list[str]) -> None:
        self.regions = regions
        self.region_code = {r: i for i, r in enumerate(regions)}
        entries = panel.entries
        self.track_codes, self.tracks = pd.factorize(entries["track"])
        rcode = mapped(entries["region"], self.region_code).astype(np.int64)
        self.entry_keys = (self.track_codes.astype(np.int64) * len(regions) + rcode) * WEEK_SPAN + entries[
            "week"
        ].to_numpy(np.int64)
        order = np.argsort(self.entry_keys)
        self.sorted_keys = self.entry_keys[order]
        self.sorted_level = entries["log_streams"].to_numpy(float)[order]
        charts = panel.charts
        chart_keys = mapped(charts["region"], self.region_code).astype(np.int64) * WEEK_SPAN + charts[
            "week"
        ].to_numpy(np.int64)
        chart_order = np.argsort(chart_keys)
        self.chart_keys = chart_keys[chart_order]
        self.chart_floor = charts["log_floor"].to_numpy(float)[chart_order]
        self.entry_chart_keys = rcode * WEEK_SPAN + entries["week"].to_numpy(np.int64)

    def level(self, keys: np.ndarray) -> np.ndarray:
        return lookup(self.sorted_keys, self.sorted_level, keys)

    def charted(self, keys: np.ndarray) -> np.ndarray:
        return ~np.isnan(lookup(self.sorted_keys, np.ones(len(self.sorted_keys)), keys))

    def floor(self, chart_keys: np.ndarray) -> np.ndarray:
        return lookup(self.chart_keys, self.chart_floor, chart_keys)

    def chart_exists(self, chart_keys: np.ndarray) -> np.ndarray:
        return ~np.isnan(lookup(self.chart_keys, np.ones(len(self.chart_keys)), chart_keys))

    def charts_upto(self, chart_keys: np.ndarray) -> np.ndarray:
        """How many charts exist up to each key (a key packs region and week: differences of two keys of
        one region count that region's charts between them)."""
        return np.searchsorted(self.chart_keys, chart_keys, side="right")

    def previous_chart(self, chart_keys: np.ndarray) -> np.ndarray:
        """The key of the region's chart before each one (the previous file, however far back); -1 when
        there is none."""
        pos = np.searchsorted(self.chart_keys, chart_keys, side="left") - 1
        found = pos >= 0
        prev = np.where(found, self.chart_keys[np.maximum(pos, 0)] if len(self.chart_keys) else -1, -1)
        same_region = prev // WEEK_SPAN == chart_keys // WEEK_SPAN
        return np.where(found & same_region, prev, -1)

    def next_chart(self, chart_keys: np.ndarray) -> np.ndarray:
        """The key of the region's chart after each one (the next file, however far on); -1 when there is
        none."""
        pos = np.searchsorted(self.chart_keys, chart_keys, side="right")
        found = pos < len(self.chart_keys)
        following = np.where(found, self.chart_keys[np.minimum(pos, len(self.chart_keys) - 1)], -1)
        same_region = following // WEEK_SPAN == chart_keys // WEEK_SPAN
        return np.where(found & same_region, following, -1)

    def run_starts(self, entry_keys: np.ndarray, chart_keys: np.ndarray) -> np.ndarray:
        """True where an entry starts a run on its chart: the song was seen absent from an existing chart of
        the region since its previous entry there, or has none. A week without a file is unobserved, not
        "off the chart", so runs mean the same whatever the spacing of the files."""
        pos = np.searchsorted(self.sorted_keys, entry_keys, side="left") - 1
        prev = self.sorted_keys[np.maximum(pos, 0)] if len(self.sorted_keys) else entry_keys
        has_prev = (pos >= 0) & (prev // WEEK_SPAN == entry_keys // WEEK_SPAN)
        prev_chart = chart_keys - (entry_keys - prev)  # the chart of the previous entry
        between = self.charts_upto(chart_keys - 1) - self.charts_upto(prev_chart)
        return ~has_prev | (between > 0)

    def chart_share(
        self, chart_keys: np.ndarray, weeks_on_chart: np.ndarray, weeks_since_first: np.ndarray
    ) -> np.ndarray:
        """The share of the region's charts since the song's first entry there that it was on: weeks on
        chart counted against the files that exist, the same whether they are weekly or monthly."""
        files = self.charts_upto(chart_keys) - self.charts_upto(
            chart_keys - weeks_since_first.astype(np.int64) - 1
        )
        return weeks_on_chart / np.maximum(files, 1)


def chart_index(panel: ChartPanel, regions: list[str] | None = None) -> ChartIndex:
    """The panel's `ChartIndex` over `regions` and its own, built once per panel: the features, the targets
    of every horizon and the anchors all read the same."""
    all_regions = sorted(set(regions or []) | set(panel.charts["region"].unique().tolist()))
    key = ("chart_index", tuple(all_regions))
    if key not in panel.cache:
        panel.cache[key] = ChartIndex(panel, all_regions)
    index: ChartIndex = panel.cache[key]
    return index


SPACINGS = ("weekly", "monthly", "irregular")
IRREGULAR_GAPS = (1, 6)  # weeks between two files of `irregular` spacing: drawn uniformly, both included
IRREGULAR_SEED = 2026  # the same files on every run


def thin_charts(panel: ChartPanel, spacing: str) -> ChartPanel:
    """The panel as someone who downloads the files less often has it: `monthly` keeps each region's first
    chart of every calendar month, `irregular` the charts of a week every 1 to 6 weeks at random (the same
    weeks on every run), `weekly` every chart. Entries keep their index labels (a thinned history of
    the same anchors)."""
    if spacing not in SPACINGS:
        raise ValueError(f"unknown file spacing {spacing!r}: use one of {', '.join(SPACINGS)}")
    if spacing == "weekly" or not len(panel.charts):
        return panel
    charts = panel.charts
    kept = charts[_first_of_month(charts) if spacing == "monthly" else _irregular(charts)]
    entries = panel.entries
    chart_of = pd.MultiIndex.from_frame(entries[["region", "week"]])
    in_kept = chart_of.isin(pd.MultiIndex.from_frame(kept[["region", "week"]]))
    return ChartPanel(entries[in_kept], kept.reset_index(drop=True))


def _first_of_month(charts: pd.DataFrame) -> np.ndarray:
    """Which charts are their region's first of a calendar month."""
    weeks = charts["week"].to_numpy()
    month = pd.Series([week_date(int(w)).strftime("%Y-%m") for w in weeks], index=charts.index)
    first = charts.assign(month=month).groupby(["region", "month"], sort=False)["week"].transform("min")
    return (charts["week"] == first).to_numpy()


def _irregular(charts: pd.DataFrame) -> np.ndarray:
    """Which charts someone who downloads the files when they remember keeps: the first week, then the
    first at least a random 1-6 weeks after the one kept before, every region's file of those weeks (they
    are downloaded together, so what a song does in other regions that week stays known)."""
    rng = np.random.default_rng(IRREGULAR_SEED)
    kept: list[int] = []
    due = -1
    for week in np.unique(charts["week"].to_numpy()).tolist():
        if week >= due:
            kept.append(week)
            due = week + int(rng.integers(IRREGULAR_GAPS[0], IRREGULAR_GAPS[1] + 1))
    return charts["week"].isin(kept).to_numpy()


def _chart_panel(entries: pd.DataFrame) -> ChartPanel:
    """Normalise columns, drop duplicate entries, derive the floor of every chart."""
    entries = entries.dropna(subset=["track"]).copy()
    entries["week"] = entries["week"].astype(np.int32)
    entries["rank"] = entries["rank"].astype(np.int32)
    entries["streams"] = pd.to_numeric(entries["streams"], errors="coerce").astype(float)
    entries["log_streams"] = np.log(entries["streams"].where(entries["streams"] > 0))
    entries = entries.sort_values(["region", "week", "rank"]).drop_duplicates(
        ["track", "region", "week"], keep="first"
    )
    charts = (
        entries.groupby(["region", "week"], sort=True)["log_streams"].min().rename("log_floor").reset_index()
    )
    return ChartPanel(entries.reset_index(drop=True), charts)


def chart_panel_from_files(paths: Iterable[str | Path]) -> ChartPanel:
    """A chart panel from chart CSV files or folders (bad rows are skipped); a daily file is an issue of its
    region's daily chart, a series of its own ("it-daily"), on the weekly scale (`Chart.series`), with one
    file a week: of a series' files in one week, the latest is its chart (`shared.charts.week_charts`)."""
    frames = []
    for path in iter_chart_paths(paths):
        chart = read_chart(path)
        rows = [r for r in chart.rows if r.track_id]
        frames.append(
            pd.DataFrame(
                {
                    "track": [r.track_id for r in rows],
                    "region": chart.series,
                    "week": week_index(chart.date),
                    "day": day_index(chart.date),
                    "rank": [r.rank for r in rows],
                    "streams": [chart.weekly_streams(r) for r in rows],
                    "artist": [artist_key(r.artists[0]) if r.artists else "" for r in rows],
                    "name": [r.track_name for r in rows],
                }
            )
        )
    if not frames:
        raise NotEnoughData("no chart files found")
    entries = pd.concat(frames, ignore_index=True)
    latest = entries.groupby(["region", "week"])["day"].transform("max")
    return _chart_panel(entries[entries["day"] == latest].drop(columns="day"))


def chart_panel_from_rows(rows: Iterable[tuple[str, str, dt.date, int, int | None, str, str]]) -> ChartPanel:
    """A chart panel from (track, region, week date, rank, streams, first artist, name) tuples."""
    frame = pd.DataFrame(list(rows), columns=["track", "region", "week", "rank", "streams", "artist", "name"])
    if frame.empty:
        return _chart_panel(frame.assign(week=frame["week"].astype("int32")))
    frame["week"] = (_day_numbers(frame["week"]) - day_index(EPOCH_MONDAY)) // 7
    names = frame["artist"].fillna("")
    keys = {name: artist_key(name) for name in names.unique()}  # few artists, many rows
    frame["artist"] = names.map(keys)
    return _chart_panel(frame)


def chart_panel_with_floors(
    rows: Iterable[tuple[str, str, dt.date, int, int | None, str, str]],
    floors: Iterable[tuple[str, dt.date, int | None]],
) -> ChartPanel:
    """A chart panel from some songs' entries (as `chart_panel_from_rows`) and every chart's (region, week
    date, smallest positive streams), aggregated by the database instead of derived from all entries."""
    panel = chart_panel_from_rows(rows)
    charts = pd.DataFrame(list(floors), columns=["region", "week", "floor"])
    charts["week"] = ((_day_numbers(charts["week"]) - day_index(EPOCH_MONDAY)) // 7).astype(np.int32)
    floor = pd.to_numeric(charts["floor"], errors="coerce").astype(float)
    charts["log_floor"] = np.log(floor.where(floor > 0))
    charts = charts.sort_values(["region", "week"]).reset_index(drop=True)
    return ChartPanel(panel.entries, charts[["region", "week", "log_floor"]])


def _day_numbers(dates: pd.Series) -> np.ndarray:
    """Days since 1970 of a column of dates, vectorised (whole days: no time zone involved)."""
    if len(dates) == 0:
        return np.zeros(0, np.int64)
    return pd.to_datetime(dates).to_numpy("datetime64[D]").astype(np.int64)


@dataclass
class PopularityPanel:
    """Popularity observations (`obs`: song, day, popularity, position, n_lists) and static `songs`."""

    obs: pd.DataFrame
    songs: pd.DataFrame  # song (index), release_day, duration_ms, explicit, album_type, total_tracks, artist
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)  # derived arrays
    # The days a file (snapshot) exists, kept when songs are restricted: a song absent on such a day left the
    # lists; on a day without any, it is unobserved. None: the days of `obs`.
    known_days: np.ndarray | None = field(default=None, repr=False, compare=False)

    def file_days(self) -> np.ndarray:
        if self.known_days is None:
            self.known_days = np.unique(self.obs["day"].to_numpy(np.int64))
        return self.known_days

    def restrict(self, *, songs: Iterable[str] | None = None, max_day: int | None = None) -> PopularityPanel:
        obs, days = self.obs, self.file_days()
        if songs is not None:
            obs = obs[obs["song"].isin(set(songs))]
        if max_day is not None:
            obs, days = obs[obs["day"] <= max_day], days[days <= max_day]
        return PopularityPanel(obs.reset_index(drop=True), self.songs, known_days=days)


ALBUM_TYPES = {"single": 0, "album": 1, "compilation": 2}


def _popularity_panel(obs: pd.DataFrame, songs: pd.DataFrame) -> PopularityPanel:
    obs = obs.copy()
    obs["day"] = obs["day"].astype(np.int32)
    obs["popularity"] = pd.to_numeric(obs["popularity"], errors="coerce").astype(float)
    obs["position"] = pd.to_numeric(obs["position"], errors="coerce").astype(float)
    grouped = obs.groupby(["song", "day"], sort=True).agg(
        popularity=("popularity", "median"), position=("position", "min"), n_lists=("popularity", "size")
    )
    songs = songs[~songs.index.duplicated(keep="last")]
    return PopularityPanel(grouped.reset_index(), songs)


def popularity_panel_from_files(paths: Iterable[str | Path]) -> PopularityPanel:
    """A popularity panel from history CSV files or folders (daily observations)."""
    obs_frames, song_rows = [], []
    for path in iter_history_paths(paths):
        history = read_history(path)
        rows = history.rows
        obs_frames.append(
            pd.DataFrame(
                {
                    "song": [r.song_key for r in rows],
                    "day": [day_index(r.date) for r in rows],
                    "popularity": [r.popularity for r in rows],
                    "position": [r.position for r in rows],
                }
            )
        )
        for r in rows:
            song_rows.append(
                (
                    r.song_key,
                    day_index(r.release_date) if r.release_date else np.nan,
                    r.duration_ms,
                    r.explicit,
                    r.album_type,
                    r.total_tracks,
                    artist_key(r.artists[0]) if r.artists else "",
                    r.song,
                    " & ".join(r.artists),
                )
            )
    if not obs_frames:
        raise NotEnoughData("no popularity history files found")
    return _popularity_panel(pd.concat(obs_frames, ignore_index=True), _songs_frame(song_rows))


SONG_COLUMNS = [
    "song",
    "release_day",
    "duration_ms",
    "explicit",
    "album_type",
    "total_tracks",
    "artist",
    "name",
    "artists",
]


def _songs_frame(rows: Sequence[tuple[object, ...]]) -> pd.DataFrame:
    songs = pd.DataFrame(list(rows), columns=SONG_COLUMNS).drop_duplicates("song", keep="last")
    songs["release_day"] = pd.to_numeric(songs["release_day"], errors="coerce").astype(float)
    songs["duration_ms"] = pd.to_numeric(songs["duration_ms"], errors="coerce").astype(float)
    songs["explicit"] = songs["explicit"].map({True: 1.0, False: 0.0}).astype(float)
    songs["album_type"] = songs["album_type"].map(ALBUM_TYPES).astype(float)
    songs["total_tracks"] = pd.to_numeric(songs["total_tracks"], errors="coerce").astype(float)
    return songs.set_index("song")


def popularity_panel_from_rows(
    obs: Iterable[tuple[str, dt.date, int | None]],
    songs: Iterable[
        tuple[str, dt.date | None, int | None, bool | None, str | None, int | None, str, str, str]
    ],
) -> PopularityPanel:
    """A popularity panel from (song, date, popularity) and (song, release date, duration, explicit,
    album type, total tracks, first artist, name, artists) tuples (the database's weekly snapshots)."""
    frame = pd.DataFrame(list(obs), columns=["song", "day", "popularity"])
    frame["day"] = _day_numbers(frame["day"])
    frame["position"] = np.nan
    song_rows = [
        (s, day_index(r) if r else np.nan, d, e, a, t, artist_key(ar or ""), n, arts)
        for s, r, d, e, a, t, ar, n, arts in songs
    ]
    return _popularity_panel(frame, _songs_frame(song_rows))
