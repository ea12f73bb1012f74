"""The one feature module used for training, backtests, `eval` and serving (no train/serve skew).

Every feature of a song at time t is computed from observations at or before t only: lags look back,
running aggregates (weeks on chart, peak, streak) accumulate forward in time, cross-sectional counts use
the same week. `tests/test_forecasting_features.py` checks this by changing the future.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.forecasting.panel import (
    WEEK_SPAN,
    ChartIndex,
    ChartPanel,
    PopularityPanel,
    chart_index,
    lookup,
    mapped,
    week_date,
)

CHART_LAGS = (1, 2, 4, 8, 13, 26, 52)  # weeks
FLOOR_SEASON_SPANS = (26, 52)  # weeks: the floor's change over the same span of the calendar a year earlier
POPULARITY_LAGS = (7, 14, 28, 56, 91, 182)  # days
DAY_SPAN = 1 << 17  # day indexes stay below this until year 2328

CHART_FEATURES = [
    "rank",
    "log_rank",
    "level",
    "log_floor",
    *[f"floor_last_year_{h}" for h in FLOOR_SEASON_SPANS],
    "above_floor",
    *[f"above_{k}" for k in CHART_LAGS],
    "gap_prev",
    "charts_52",
    "above_prev",
    "charted_prev",
    "delta_prev",
    *[f"charted_{k}" for k in CHART_LAGS],
    *[f"delta_{k}" for k in CHART_LAGS],
    "weeks_on_chart",
    "weeks_since_first",
    "streak",
    "chart_share",
    "peak_rank",
    "best_above",
    "weeks_since_peak",
    "regions_now",
    "mean_above_regions",
    "weeks_any_region",
    "weeks_since_first_any",
    "artist_songs_now",
    "artist_chart_weeks",
    "week_of_year",
    "region_code",
]
POPULARITY_FEATURES = [
    "popularity",
    *[f"pop_{k}" for k in POPULARITY_LAGS],
    *[f"pop_delta_{k}" for k in POPULARITY_LAGS],
    "days_observed",
    "days_since_first",
    "max_pop",
    "min_pop",
    "position",
    "best_position",
    "n_lists",
    "age_days",
    "duration_ms",
    "explicit",
    "album_type",
    "total_tracks",
    "artist_songs_now",
    "artist_mean_pop",
]


def regions_of(panel: ChartPanel) -> list[str]:
    return sorted(panel.charts["region"].unique().tolist())


def _key_codes(values: pd.Series) -> np.ndarray:
    """Codes of a key column in the order of its values (NaN for a missing key, which groups drop as they
    drop a missing string): the same groups and the same order within them, without hashing strings in
    every groupby."""
    codes, _ = pd.factorize(values, sort=True)
    return np.where(codes < 0, np.nan, codes) if (codes < 0).any() else codes


def _running(entries: pd.DataFrame, starts: np.ndarray) -> pd.DataFrame:
    """Per-entry running aggregates over the song's past in its region and across regions (`starts`: the
    entries that start a run on their chart, `ChartIndex.run_starts`)."""
    e = pd.DataFrame(
        {
            **{key: _key_codes(entries[key]) for key in ("track", "region", "artist")},
            **{column: entries[column].to_numpy() for column in ("week", "rank", "above_floor")},
        },
        index=entries.index,
    )
    e = e.sort_values(["track", "region", "week"], kind="stable")
    by_song_region = e.groupby(["track", "region"], sort=False)
    out = pd.DataFrame(index=e.index)
    out["weeks_on_chart"] = by_song_region.cumcount() + 1
    out["weeks_since_first"] = e["week"] - by_song_region["week"].transform("first")
    run_start = e["week"].where(pd.Series(starts, index=entries.index).reindex(e.index).to_numpy())
    out["streak"] = e["week"] - run_start.groupby([e["track"], e["region"]], sort=False).ffill() + 1
    out["peak_rank"] = by_song_region["rank"].cummin()
    out["best_above"] = by_song_region["above_floor"].cummax()
    peak_week = e["week"].where(e["rank"] == out["peak_rank"])
    out["weeks_since_peak"] = e["week"] - peak_week.groupby([e["track"], e["region"]], sort=False).ffill()

    same_week = e.groupby(["track", "week"], sort=False)
    out["regions_now"] = same_week["rank"].transform("size")
    out["mean_above_regions"] = same_week["above_floor"].transform("mean")
    ordered = e.sort_values(["track", "week"], kind="stable")
    count_so_far = ordered.groupby("track", sort=False).cumcount() + 1
    out["weeks_any_region"] = count_so_far.groupby([ordered["track"], ordered["week"]]).transform("max")
    first_any = e.groupby("track", sort=False)["week"].transform("min")
    out["weeks_since_first_any"] = e["week"] - first_any
    # A song already charting when the region's history begins is older than its weeks on chart say.
    history_start = e.groupby("region", sort=False)["week"].transform("min")
    out["since_history_start"] = np.where(first_any <= history_start, e["week"] - history_start, np.nan)

    by_artist_week = e.groupby(["artist", "region", "week"], sort=False)
    out["artist_songs_now"] = by_artist_week["rank"].transform("size")
    ordered = e.sort_values(["artist", "region", "week"], kind="stable")
    artist_so_far = ordered.groupby(["artist", "region"], sort=False).cumcount() + 1
    out["artist_chart_weeks"] = artist_so_far.groupby(
        [ordered["artist"], ordered["region"], ordered["week"]]
    ).transform("max")
    return out.sort_index()


def _lookup_features(entries: pd.DataFrame, index: ChartIndex, at: np.ndarray | None = None) -> pd.DataFrame:
    """The features of entries (all, or those at positions `at`) that look up single cells of the panel:
    the entry itself, its chart's floor, its lags (used by `chart_features` and `anchor_chart_features`)."""
    rows = slice(None) if at is None else at
    entry_keys, chart_keys = index.entry_keys[rows], index.entry_chart_keys[rows]
    feats = pd.DataFrame(index=entries.index[rows])
    feats["rank"] = entries["rank"].to_numpy(float)[rows]
    feats["log_rank"] = np.log(feats["rank"])
    feats["level"] = entries["log_streams"].to_numpy(float)[rows]
    feats["log_floor"] = index.floor(chart_keys)
    feats["above_floor"] = feats["level"] - feats["log_floor"]
    year_ago = index.floor(chart_keys - 52)
    for h in FLOOR_SEASON_SPANS:
        # How the region's floor moved over the next h weeks one year earlier (season and market growth),
        # read at weeks t-52 and t+h-52 <= t.
        feats[f"floor_last_year_{h}"] = index.floor(chart_keys + h - 52) - year_ago
    for k in CHART_LAGS:
        past_level = index.level(entry_keys - k)
        past_floor = index.floor(chart_keys - k)
        exists = ~np.isnan(past_floor)
        charted = ~np.isnan(past_level)
        feats[f"above_{k}"] = past_level - past_floor
        feats[f"charted_{k}"] = np.where(exists, charted.astype(float), np.nan)
        feats[f"delta_{k}"] = feats["level"] - past_level
    # The previous file of the region, whatever its age (weekly or monthly downloads), and how many files
    # the last year has: lags that exist under any spacing, and the spacing itself.
    prev_chart = index.previous_chart(chart_keys)
    has_prev = prev_chart >= 0
    gap = chart_keys - prev_chart
    prev_level = np.where(has_prev, index.level(entry_keys - gap), np.nan)
    feats["gap_prev"] = np.where(has_prev, gap, np.nan)
    feats["charts_52"] = index.charts_upto(chart_keys) - index.charts_upto(chart_keys - 52)
    feats["above_prev"] = prev_level - np.where(has_prev, index.floor(prev_chart), np.nan)
    feats["charted_prev"] = np.where(has_prev, (~np.isnan(prev_level)).astype(float), np.nan)
    feats["delta_prev"] = feats["level"] - prev_level
    return feats


def chart_features(panel: ChartPanel, regions: list[str] | None = None) -> pd.DataFrame:
    """Features of every chart entry of the panel (index aligned with `panel.entries`)."""
    regions = regions or regions_of(panel)
    entries = panel.entries
    index = chart_index(panel, regions)
    feats = _lookup_features(entries, index)
    starts = index.run_starts(index.entry_keys, index.entry_chart_keys)
    running = _running(entries.assign(above_floor=feats["above_floor"].to_numpy()), starts)
    for column in running.columns:
        feats[column] = running[column].to_numpy(float)
    feats["chart_share"] = index.chart_share(
        index.entry_chart_keys, feats["weeks_on_chart"].to_numpy(), feats["weeks_since_first"].to_numpy()
    )
    unique_weeks, week_at = np.unique(entries["week"].to_numpy(), return_inverse=True)
    feats["week_of_year"] = np.array([week_date(w).isocalendar()[1] for w in unique_weeks], float)[week_at]
    feats["region_code"] = mapped(entries["region"], {r: i for i, r in enumerate(regions)})
    return feats[CHART_FEATURES].astype(np.float32)  # half the memory; ample precision for trees


def restarted_chart_features(
    panel: ChartPanel, regions: list[str], weeks: int, *, since: int | None = None
) -> pd.DataFrame:
    """Features of every chart entry (of the blocks reaching week `since` or later; NaN before) as if the
    files began at the start of its block: the panel is cut into consecutive blocks of `weeks` weeks from its
    first chart, and each block's features come from its own files only (index aligned with `panel.entries`).
    The short histories of files that begin after a hole in the downloads, of a new installation, of a market
    never charted before."""
    if not len(panel.entries):
        return chart_features(panel, regions)
    first = int(panel.charts["week"].min())
    entry_block = (panel.entries["week"].to_numpy() - first) // weeks
    chart_block = (panel.charts["week"].to_numpy() - first) // weeks
    oldest = 0 if since is None else min((since - first) // weeks, int(entry_block.max()))
    parts = [
        chart_features(
            ChartPanel(
                panel.entries[entry_block == block], panel.charts[chart_block == block].reset_index(drop=True)
            ),
            regions,
        )
        for block in np.unique(entry_block[entry_block >= oldest])
    ]
    return pd.concat(parts).reindex(panel.entries.index)


def cached_chart_features(panel: ChartPanel, regions: list[str]) -> pd.DataFrame:
    """chart_features, computed once per panel and region list (both horizons use the same)."""
    key = ("chart_features", tuple(regions))
    if key not in panel.cache:
        panel.cache[key] = chart_features(panel, regions)
    return panel.cache[key]


def chart_targets(
    panel: ChartPanel, horizon: int, regions: list[str] | None = None, *, tolerance: int = 0
) -> pd.DataFrame:
    """For every entry: whether its region has a chart at t+horizon, whether the song is on it, its log
    streams there, and that chart's log floor. With a `tolerance`, where the region's files around
    t+horizon are sparse (at most 2 * tolerance weeks apart) and none is at t+horizon, the outcome is read
    from the latest one before it, up to `tolerance` weeks earlier (`outcome_early`): sparse files then
    label most anchors, and no outcome is read after t+horizon. Where the files stop or pause for longer,
    t+horizon stays unobserved."""
    index = chart_index(panel, regions)
    wanted = index.entry_chart_keys + horizon
    latest = index.previous_chart(wanted + 1)  # the region's latest chart at or before t+horizon
    observable = (latest == wanted) | read_early(wanted, latest, index.next_chart(wanted), tolerance)
    future_chart = np.where(observable, latest, wanted)
    level = index.level(index.entry_keys + (future_chart - index.entry_chart_keys))
    return pd.DataFrame(
        {
            "observable": observable,
            "charted": ~np.isnan(level),
            "future_level": level,
            "future_floor": index.floor(future_chart),
            "outcome_early": (wanted - future_chart).astype(np.int32),
        },
        index=panel.entries.index,
    )


def popularity_features(panel: PopularityPanel) -> pd.DataFrame:
    """Features of every popularity observation (index aligned with `panel.obs`)."""
    obs = panel.obs
    codes, _ = pd.factorize(obs["song"])
    keys = codes.astype(np.int64) * DAY_SPAN + obs["day"].to_numpy(np.int64)
    order = np.argsort(keys)
    sorted_keys, pop = keys[order], obs["popularity"].to_numpy(float)
    sorted_pop = pop[order]
    feats = pd.DataFrame(index=obs.index)
    feats["popularity"] = pop
    for k in POPULARITY_LAGS:
        past = lookup(sorted_keys, sorted_pop, keys - k)
        feats[f"pop_{k}"] = past
        feats[f"pop_delta_{k}"] = pop - past
    o = obs.sort_values(["song", "day"], kind="stable")
    by_song = o.groupby("song", sort=False)
    running = pd.DataFrame(index=o.index)
    running["days_observed"] = by_song.cumcount() + 1
    running["days_since_first"] = o["day"] - by_song["day"].transform("first")
    running["max_pop"] = by_song["popularity"].cummax()
    running["min_pop"] = by_song["popularity"].cummin()
    running["best_position"] = by_song["position"].cummin()
    running = running.sort_index()
    for column in running.columns:
        feats[column] = running[column].to_numpy(float)
    feats["position"] = obs["position"].to_numpy(float)
    feats["n_lists"] = obs["n_lists"].to_numpy(float)
    songs = panel.songs.reindex(obs["song"])
    feats["age_days"] = obs["day"].to_numpy(float) - songs["release_day"].to_numpy(float)
    for column in ("duration_ms", "explicit", "album_type", "total_tracks"):
        feats[column] = songs[column].to_numpy(float)
    artist = songs["artist"].fillna("").to_numpy()
    same_day = pd.DataFrame({"artist": artist, "day": obs["day"].to_numpy(), "pop": pop})
    grouped = same_day.groupby(["artist", "day"], sort=False)["pop"]
    feats["artist_songs_now"] = grouped.transform("size").to_numpy(float)
    feats["artist_mean_pop"] = grouped.transform("mean").to_numpy(float)
    return feats[POPULARITY_FEATURES].astype(np.float32)


def popularity_targets(panel: PopularityPanel, horizon_days: int, *, tolerance: int = 0) -> pd.DataFrame:
    """For every observation: the song's popularity `horizon_days` later (NaN when not observed). With a
    `tolerance` and files sparser than daily, where no file exists on that day and the files around it are
    at most 2 * tolerance days apart, the popularity is read on the latest file's day before it, up to
    `tolerance` days earlier: weekly snapshots then still give a year's outcome (364 days later). Daily files
    keep the exact day (a missing day's pairs are left out, as before)."""
    obs = panel.obs
    codes, _ = pd.factorize(obs["song"])
    keys = codes.astype(np.int64) * DAY_SPAN + obs["day"].to_numpy(np.int64)
    order = np.argsort(keys)
    wanted = obs["day"].to_numpy(np.int64) + horizon_days
    days = panel.file_days()
    sparse_files = len(days) > 1 and np.median(np.diff(days)) > 1
    read_day = _latest_file_day(days, wanted, tolerance) if tolerance and sparse_files else wanted
    at = codes.astype(np.int64) * DAY_SPAN + read_day
    future = lookup(keys[order], obs["popularity"].to_numpy(float)[order], at)
    return pd.DataFrame({"future": future}, index=obs.index)


def _latest_file_day(file_days: np.ndarray, wanted: np.ndarray, tolerance: int) -> np.ndarray:
    """Each wanted day, or the latest file day before it where `read_early` (else the wanted day)."""
    if not len(file_days):
        return wanted
    pos = np.searchsorted(file_days, wanted, side="right") - 1
    latest = np.where(pos >= 0, file_days[np.maximum(pos, 0)], -1)
    following = np.where(pos + 1 < len(file_days), file_days[np.minimum(pos + 1, len(file_days) - 1)], -1)
    return np.where(read_early(wanted, latest, following, tolerance), latest, wanted)


def read_early(wanted: np.ndarray, latest: np.ndarray, following: np.ndarray, tolerance: int) -> np.ndarray:
    """Where an outcome wanted at a time without a file is read from the latest file before it (`latest`,
    -1 when none): up to `tolerance` earlier, where the files around it (`latest`, `following`: -1 when
    none) are at most 2 * tolerance apart, i.e. sparse files, not files that stop or pause for longer."""
    near = (latest >= 0) & (wanted - latest <= tolerance)
    return near & (following >= 0) & (following - latest <= 2 * tolerance)


# ---------------------------------------------------------------- features of one anchor week only
# Serving needs the features of one week's rows, not of every historical row: the running aggregates
# above are then plain reductions over each song's past. Same definitions, same numbers:
# tests/test_forecasting_anchor.py compares these with the full computation on varied panels.


class _Groups:
    """The rows of `keys` that belong to one of the `wanted` keys' groups, for per-group reductions
    mapped back onto the wanted rows (several wanted rows may share a group)."""

    def __init__(self, keys: np.ndarray, wanted: np.ndarray) -> None:
        unique, self.inverse = np.unique(wanted, return_inverse=True)
        pos = np.minimum(np.searchsorted(unique, keys), len(unique) - 1)
        self.hit = unique[pos] == keys
        self.slot = pos[self.hit]
        self.size = len(unique)

    def count(self) -> np.ndarray:
        return np.bincount(self.slot, minlength=self.size).astype(float)[self.inverse]

    def reduce(self, ufunc: np.ufunc, values: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """`ufunc` (np.minimum, np.fmax, ...) over each group's values (of the rows `where` is true for);
        NaN for a group without any (the fmin/fmax family skips NaN values, as pandas does)."""
        slot, values = (self.slot, values) if where is None else (self.slot[where], values[where])
        start = np.inf if ufunc in (np.minimum, np.fmin) else -np.inf
        out = np.full(self.size, start)
        ufunc.at(out, slot, values)
        out[np.isinf(out)] = np.nan  # untouched: values are finite
        return out[self.inverse]


def _cached(panel_cache: dict[object, object], key: object, make: object) -> object:
    if key not in panel_cache:
        panel_cache[key] = make()  # type: ignore[operator]
    return panel_cache[key]


def _one_week(weeks: np.ndarray) -> int:
    if len(np.unique(weeks)) != 1:
        raise ValueError("anchor features are of the rows of one week (or day)")
    return int(weeks[0])


def anchor_chart_features(
    panel: ChartPanel, regions: list[str] | None, rows: pd.Index | np.ndarray
) -> pd.DataFrame:
    """`chart_features(panel, regions).loc[rows]` for entries `rows` (index labels) of one week, computed
    from the panel's rows up to that week only."""
    regions = regions or regions_of(panel)
    entries = panel.entries
    index = chart_index(panel, regions)
    at = entries.index.get_indexer(rows)
    if len(at) == 0:
        return pd.DataFrame(columns=CHART_FEATURES, dtype=np.float32)
    week_all = entries["week"].to_numpy(np.int64)
    week = _one_week(week_all[at])
    level_all = entries["log_streams"].to_numpy(float)
    rank_all = entries["rank"].to_numpy(float)
    feats = _lookup_features(entries, index, at)
    past, now = week_all <= week, week_all == week

    # the song's past in its region (an entry key packs track, region and week)
    series = index.entry_keys // WEEK_SPAN
    song = _Groups(np.where(past, series, -1), series[at])
    weeks, ranks = week_all[song.hit].astype(float), rank_all[song.hit]
    above = level_all[song.hit] - index.floor(index.entry_chart_keys[song.hit])
    feats["weeks_on_chart"] = song.count()
    feats["weeks_since_first"] = week - song.reduce(np.minimum, weeks)
    starts = index.run_starts(index.entry_keys[song.hit], index.entry_chart_keys[song.hit])
    feats["streak"] = week - song.reduce(np.maximum, weeks, starts) + 1
    feats["chart_share"] = index.chart_share(
        index.entry_chart_keys[at], feats["weeks_on_chart"].to_numpy(), feats["weeks_since_first"].to_numpy()
    )
    peak = song.reduce(np.minimum, ranks)
    feats["peak_rank"] = peak
    own_above = feats["above_floor"].to_numpy()
    feats["best_above"] = np.where(np.isnan(own_above), np.nan, song.reduce(np.fmax, above))
    peak_of_row = np.full(song.size, np.nan)
    peak_of_row[song.inverse] = peak
    at_peak = ranks == peak_of_row[song.slot]
    feats["weeks_since_peak"] = week - song.reduce(np.maximum, weeks, at_peak)

    # the song across regions
    tracks = index.track_codes.astype(np.int64)
    feats["regions_now"] = _Groups(np.where(now, tracks, -1), tracks[at]).count()
    this_week = pd.DataFrame(
        {"track": entries["track"].to_numpy()[now], "region": entries["region"].to_numpy()[now],
         "above": level_all[now] - index.floor(index.entry_chart_keys[now])},
        index=entries.index[now],
    ).sort_values(["track", "region"], kind="stable")  # fmt: skip
    mean_above = this_week.groupby("track", sort=False)["above"].transform("mean")
    feats["mean_above_regions"] = mean_above.reindex(feats.index).to_numpy(float)
    any_region = _Groups(np.where(past, tracks, -1), tracks[at])
    feats["weeks_any_region"] = any_region.count()
    feats["weeks_since_first_any"] = week - any_region.reduce(
        np.minimum, week_all[any_region.hit].astype(float)
    )

    # the artist's songs in the region
    artists: np.ndarray = _cached(  # type: ignore[assignment]
        panel.cache, ("codes", "artist"), lambda: pd.factorize(entries["artist"])[0].astype(np.int64)
    )
    regions_of_entry = index.entry_chart_keys // WEEK_SPAN
    artist_series = np.where(artists >= 0, artists * len(index.regions) + regions_of_entry, -2)
    wanted = artist_series[at]
    known = wanted >= 0  # pandas groups leave out a missing key
    now_count = _Groups(np.where(now, artist_series, -1), wanted).count()
    past_count = _Groups(np.where(past, artist_series, -1), wanted).count()
    feats["artist_songs_now"] = np.where(known, now_count, np.nan)
    feats["artist_chart_weeks"] = np.where(known, past_count, np.nan)

    feats["week_of_year"] = float(week_date(week).isocalendar()[1])
    codes = {r: i for i, r in enumerate(regions)}
    feats["region_code"] = entries["region"].iloc[at].map(codes).to_numpy(float)
    return feats[CHART_FEATURES].astype(np.float32)


def anchor_popularity_features(panel: PopularityPanel, rows: pd.Index | np.ndarray) -> pd.DataFrame:
    """`popularity_features(panel).loc[rows]` for observations `rows` (index labels) of one day, computed
    from the panel's observations up to that day only."""
    obs = panel.obs
    at = obs.index.get_indexer(rows)
    if len(at) == 0:
        return pd.DataFrame(columns=POPULARITY_FEATURES, dtype=np.float32)
    day_all = obs["day"].to_numpy(np.int64)
    day = _one_week(day_all[at])
    codes: np.ndarray = _cached(  # type: ignore[assignment]
        panel.cache, ("codes", "song"), lambda: pd.factorize(obs["song"])[0].astype(np.int64)
    )
    pop_all = obs["popularity"].to_numpy(float)
    pop = pop_all[at]
    feats = pd.DataFrame(index=obs.index[at])
    feats["popularity"] = pop
    n_codes = int(codes.max()) + 1
    for k in POPULARITY_LAGS:
        then = day_all == day - k
        by_song = np.full(n_codes, np.nan)
        by_song[codes[then]] = pop_all[then]
        feats[f"pop_{k}"] = by_song[codes[at]]
        feats[f"pop_delta_{k}"] = pop - feats[f"pop_{k}"].to_numpy()
    song = _Groups(np.where(day_all <= day, codes, -1), codes[at])
    feats["days_observed"] = song.count()
    feats["days_since_first"] = day - song.reduce(np.minimum, day_all[song.hit].astype(float))
    feats["max_pop"] = np.where(np.isnan(pop), np.nan, song.reduce(np.fmax, pop_all[song.hit]))
    feats["min_pop"] = np.where(np.isnan(pop), np.nan, song.reduce(np.fmin, pop_all[song.hit]))
    position_all = obs["position"].to_numpy(float)
    position = position_all[at]
    feats["position"] = position
    best = song.reduce(np.fmin, position_all[song.hit])
    feats["best_position"] = np.where(np.isnan(position), np.nan, best)
    feats["n_lists"] = obs["n_lists"].to_numpy(float)[at]
    songs = panel.songs.reindex(obs["song"].to_numpy()[at])
    feats["age_days"] = day - songs["release_day"].to_numpy(float)
    for column in ("duration_ms", "explicit", "album_type", "total_tracks"):
        feats[column] = songs[column].to_numpy(float)
    # the artist's songs observed that day: every song of the panel, not only those asked for
    today = np.flatnonzero(day_all == day)
    artist = panel.songs["artist"].reindex(obs["song"].to_numpy()[today]).fillna("").to_numpy()
    grouped = pd.DataFrame({"artist": artist, "pop": pop_all[today]}, index=obs.index[today]).groupby(
        "artist", sort=False
    )["pop"]
    feats["artist_songs_now"] = grouped.transform("size").reindex(feats.index).to_numpy(float)
    feats["artist_mean_pop"] = grouped.transform("mean").reindex(feats.index).to_numpy(float)
    return feats[POPULARITY_FEATURES].astype(np.float32)
