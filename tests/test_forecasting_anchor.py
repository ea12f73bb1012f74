"""Serving's features of one anchor week equal the full computation's (the one training uses) on panels with
gaps, songs that are new that week, songs missing streams or an artist, several regions and artists with
several songs: no train/serve skew."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.forecasting.features import (
    CHART_FEATURES,
    POPULARITY_FEATURES,
    anchor_chart_features,
    anchor_popularity_features,
    chart_features,
    popularity_features,
    regions_of,
)
from shared.forecasting.panel import (
    ChartPanel,
    PopularityPanel,
    chart_panel_from_rows,
    popularity_panel_from_files,
    popularity_panel_from_rows,
)
from shared.forecasting.synthetic import synthetic_charts, synthetic_popularity, write_popularity_files
from shared.weeks import week_of


def varied_charts(seed: int) -> pd.DataFrame:
    """Synthetic charts with holes: dropped entries (gaps in runs and in charts), songs that first chart
    late, a few entries without streams and a few songs without an artist."""
    rng = np.random.default_rng(seed)
    frame = synthetic_charts(regions=4, weeks=70, size=40, seed=seed)
    frame = frame[rng.random(len(frame)) > 0.07].copy()
    frame["streams"] = frame["streams"].astype(object).where(rng.random(len(frame)) > 0.02, None)
    no_artist = frame["track"].isin(frame["track"].drop_duplicates().sample(frac=0.03, random_state=seed))
    frame.loc[no_artist, "artist"] = ""
    return frame


def chart_panel(frame: pd.DataFrame) -> ChartPanel:
    return chart_panel_from_rows(
        (t, r, week_of(w), int(k), s, a, n)
        for t, r, w, k, s, a, n in frame[
            ["track", "region", "week", "rank", "streams", "artist", "name"]
        ].values
    )


def assert_same(anchor: pd.DataFrame, full: pd.DataFrame, columns: list[str]) -> None:
    assert list(anchor.columns) == columns
    assert anchor.index.equals(full.index)
    for column in columns:
        assert np.array_equal(anchor[column].to_numpy(), full[column].to_numpy(), equal_nan=True), column


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_anchor_chart_features_equal_the_full_computation(seed: int) -> None:
    panel = chart_panel(varied_charts(seed))
    regions = regions_of(panel)
    full = chart_features(panel, regions)
    weeks = np.unique(panel.entries["week"])
    for week in [weeks[0], weeks[1], *weeks[10::9], weeks[-1]]:
        rows = panel.entries.index[panel.entries["week"] == week]
        assert_same(anchor_chart_features(panel, regions, rows), full.loc[rows], CHART_FEATURES)
        some = rows[::3]  # a subset of the week's songs still sees every song of that week
        assert_same(anchor_chart_features(panel, regions, some), full.loc[some], CHART_FEATURES)
    checked = full.loc[panel.entries.index[panel.entries["week"] == weeks[-1]]]
    for varied in ("streak", "weeks_since_peak", "artist_songs_now", "regions_now", "best_above", "above_4"):
        assert checked[varied].nunique() > 1, varied  # the panel does exercise these


def test_anchor_chart_features_with_more_regions_than_the_panel() -> None:
    panel = chart_panel(varied_charts(3))
    regions = ["aa", *regions_of(panel)]  # a model trained on a region this panel lacks
    rows = panel.entries.index[panel.entries["week"] == panel.entries["week"].max()]
    full = chart_features(panel, regions).loc[rows]
    assert_same(anchor_chart_features(panel, regions, rows), full, CHART_FEATURES)


def test_anchor_features_are_of_one_week() -> None:
    panel = chart_panel(varied_charts(4))
    with pytest.raises(ValueError, match="one week"):
        anchor_chart_features(panel, None, panel.entries.index[:5000])


def weekly_popularity(seed: int) -> PopularityPanel:
    """Weekly snapshots as the database has them: gaps, songs appearing late, artists with several songs."""
    rng = np.random.default_rng(seed)
    frame = varied_charts(seed)
    snapshots = frame.sort_values("rank").drop_duplicates(["track", "week"])
    snapshots = snapshots[rng.random(len(snapshots)) > 0.05]
    obs = [(t, week_of(w), int(rng.integers(0, 101))) for t, w in snapshots[["track", "week"]].values]
    firsts = snapshots.drop_duplicates("track")[["track", "week", "artist", "name"]].values
    songs = [
        (t, week_of(w) - dt.timedelta(days=i % 40), 150_000 + i, i % 3 == 0, ("single", "album")[i % 2],
         1 + i % 9, a, n, a)
        for i, (t, w, a, n) in enumerate(firsts)
    ]  # fmt: skip
    return popularity_panel_from_rows(obs, songs)


def daily_popularity(tmp_path: Path) -> PopularityPanel:
    """Daily playlists from files: positions, songs on several lists, missing attributes."""
    lists = synthetic_popularity(lists=3, days=120, size=30, seed=5)
    return popularity_panel_from_files(write_popularity_files(lists, tmp_path))


def check_popularity(panel: PopularityPanel, step: int) -> None:
    full = popularity_features(panel)
    days = np.unique(panel.obs["day"])
    for day in [days[0], *days[1::step], days[-1]]:
        rows = panel.obs.index[panel.obs["day"] == day]
        assert_same(anchor_popularity_features(panel, rows), full.loc[rows], POPULARITY_FEATURES)
        some = rows[::2]
        assert_same(anchor_popularity_features(panel, some), full.loc[some], POPULARITY_FEATURES)
    last = full.loc[panel.obs.index[panel.obs["day"] == days[-1]]]
    for varied in ("pop_7", "days_observed", "max_pop", "artist_songs_now"):
        assert last[varied].nunique() > 1, varied


@pytest.mark.parametrize("seed", [0, 1])
def test_anchor_popularity_features_equal_the_full_computation_weekly(seed: int) -> None:
    check_popularity(weekly_popularity(seed), step=7)


def test_anchor_popularity_features_equal_the_full_computation_daily(tmp_path: Path) -> None:
    panel = daily_popularity(tmp_path)
    assert panel.obs["position"].notna().any() and (panel.obs["n_lists"] > 1).any()
    check_popularity(panel, step=17)
