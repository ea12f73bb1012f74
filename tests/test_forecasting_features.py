"""Features never look at the future: changing everything after a week leaves that week's features alone."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.forecasting.dataset import chart_set
from shared.forecasting.features import (
    CHART_FEATURES,
    chart_features,
    popularity_features,
    popularity_targets,
)
from shared.forecasting.panel import (
    ChartPanel,
    PopularityPanel,
    _chart_panel,
    chart_panel_from_rows,
    popularity_panel_from_rows,
    week_index,
)
from shared.forecasting.synthetic import synthetic_charts, synthetic_popularity


def charts_panel(seed: int = 0) -> ChartPanel:
    charts = synthetic_charts(regions=3, weeks=90, size=40, seed=seed)
    return chart_panel_from_rows(charts.itertuples(index=False, name=None))


def shifted_future(panel: ChartPanel, cut: int, rng: np.random.Generator) -> ChartPanel:
    """The same past; after week `cut` other streams, some entries removed, new songs added."""
    entries = panel.entries.copy()
    future = entries["week"] > cut
    entries.loc[future, "streams"] = entries.loc[future, "streams"] * rng.uniform(0.2, 5.0, future.sum())
    drop = future & (rng.random(len(entries)) < 0.3)
    entries = entries[~drop]
    newcomers = entries[entries["week"] > cut].sample(frac=0.2, random_state=1).copy()
    newcomers["track"] = [f"new{i:019d}" for i in range(len(newcomers))]
    newcomers["rank"] = newcomers["rank"] + 1000
    merged = pd.concat([entries, newcomers], ignore_index=True)
    return _chart_panel(merged[["track", "region", "week", "rank", "streams", "artist", "name"]])


def past_features(panel: ChartPanel, cut: int, regions: list[str]) -> pd.DataFrame:
    feats = chart_features(panel, regions)
    keys = panel.entries[["track", "region", "week"]]
    past = keys["week"] <= cut
    frame = pd.concat([keys[past], feats[past]], axis=1)
    return frame.sort_values(["track", "region", "week"]).reset_index(drop=True)


def test_chart_features_ignore_the_future() -> None:
    panel = charts_panel()
    regions = sorted(panel.charts["region"].unique())
    cut = int(panel.entries["week"].min()) + 60
    before = past_features(panel, cut, regions)
    after = past_features(shifted_future(panel, cut, np.random.default_rng(5)), cut, regions)
    assert len(before) > 1000
    pd.testing.assert_frame_equal(before, after)
    # truncating the panel at the cut gives the same features too
    truncated = past_features(panel.restrict(max_week=cut), cut, regions)
    pd.testing.assert_frame_equal(before, truncated)


def test_targets_do_look_ahead_and_change_with_the_future() -> None:
    """The check above can fail: the targets (which must use the future) do change."""
    panel = charts_panel(seed=2)
    regions = sorted(panel.charts["region"].unique())
    cut = int(panel.entries["week"].min()) + 40
    data = chart_set(panel, 26, regions)
    changed = chart_set(shifted_future(panel, cut, np.random.default_rng(3)), 26, regions)
    assert not np.allclose(
        np.nan_to_num(data.future_level[: len(changed)]), np.nan_to_num(changed.future_level[: len(data)])
    )


def test_chart_features_are_sane() -> None:
    panel = charts_panel(seed=4)
    feats = chart_features(panel)
    assert list(feats.columns) == CHART_FEATURES
    assert (feats["above_floor"] >= 0).all() and (feats["weeks_on_chart"] >= 1).all()
    assert (feats["streak"] <= feats["weeks_on_chart"]).all()
    assert (feats["peak_rank"] <= feats["rank"]).all()
    first_week = panel.entries["week"] == panel.entries["week"].min()
    assert feats.loc[first_week, "charted_1"].isna().all()  # no chart before the first week


def test_popularity_features_ignore_the_future() -> None:
    lists = synthetic_popularity(lists=2, days=200, size=20, seed=1)
    obs = [
        (row.song + " | " + row.artist, pd.Timestamp(row.date).date(), row.popularity)
        for frame in lists.values()
        for row in frame.itertuples()
    ]
    songs = {
        (row.song + " | " + row.artist): (row.release_date, row.duration_ms, row.is_explicit, row.album_type)
        for frame in lists.values()
        for row in frame.itertuples()
    }
    song_rows = [
        (key, pd.Timestamp(r).date(), d, e, a, 1, key.split(" | ")[1], key, key)
        for key, (r, d, e, a) in songs.items()
    ]
    panel = popularity_panel_from_rows(obs, song_rows)
    cut = int(panel.obs["day"].min()) + 120
    before = popularity_features(panel)[panel.obs["day"] <= cut].reset_index(drop=True)
    future = panel.obs["day"] > cut
    altered = panel.obs.copy()
    altered.loc[future, "popularity"] = 100 - altered.loc[future, "popularity"]
    changed = type(panel)(altered, panel.songs)
    after = popularity_features(changed)[changed.obs["day"] <= cut].reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert week_index(pd.Timestamp("2024-01-03").date()) == week_index(pd.Timestamp("2024-01-01").date())


def _snapshots(days: list[int], song_days: list[int]) -> PopularityPanel:
    """A filler song observed on every file day, song "s" on `song_days` (popularity = its day number)."""
    start = pd.Timestamp("2023-01-02").date()
    at = [start + pd.Timedelta(days=d) for d in range(max(days) + 1)]
    obs = [("filler", at[d], 50) for d in days] + [("s", at[d], d) for d in song_days]
    songs = [(name, None, None, None, None, None, "a", name, "a") for name in ("filler", "s")]
    return popularity_panel_from_rows(obs, songs)


def test_weekly_snapshots_read_a_year_on_from_the_file_a_day_earlier() -> None:
    weeks = list(range(0, 400, 7))
    panel = _snapshots(weeks, weeks)
    s = (panel.obs["song"] == "s").to_numpy()
    exact = popularity_targets(panel, 365)["future"].to_numpy()[s]
    near = popularity_targets(panel, 365, tolerance=7)["future"].to_numpy()[s]
    assert np.isnan(exact).all()  # no file is ever 365 days after another
    # Days 0-28 read the file 364 days on (popularity = its day); day 35's would be day 399, the last file,
    # after which the files stop: unobserved.
    assert near[:5].tolist() == [364, 371, 378, 385, 392] and np.isnan(near[5:]).all()
    # A song absent from the file 364 days on left the lists: unobserved too.
    gone = _snapshots(weeks, [d for d in weeks if d != 364])
    s = (gone.obs["song"] == "s").to_numpy()
    assert np.isnan(popularity_targets(gone, 365, tolerance=7)["future"].to_numpy()[s][0])


def test_daily_snapshots_keep_the_exact_day() -> None:
    days = [d for d in range(400) if d != 365]  # one file missing
    panel = _snapshots(days, days)
    s = (panel.obs["song"] == "s").to_numpy()
    future = popularity_targets(panel, 365, tolerance=7)["future"].to_numpy()[s]
    assert np.isnan(future[0]) and future[1] == 366  # day 365 has no file: not read at 364
