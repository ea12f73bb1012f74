"""The forecasters' own mechanics: the floor's damped trend and its spread per region, and the popularity
intervals per level group."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.forecasting.dataset import ChartSet, PopularitySet
from shared.forecasting.features import POPULARITY_FEATURES
from shared.forecasting.models import (
    DRIFT_LEVELS,
    LEVEL_GROUPS,
    MIN_REGION_SPREAD_WEEKS,
    MIN_TREND_CHARTS,
    PopularityForecaster,
    StreamsForecaster,
    _damped_trend,
)


def charts_with_trend(slope: float, n_charts: int, songs_per_chart: int = 5, seed: int = 0) -> tuple:
    """Anchors of `n_charts` charts (several songs each) whose floor repeats `slope` of last year's change."""
    rng = np.random.default_rng(seed)
    last_year = rng.uniform(-0.2, 0.4, n_charts)
    drift = slope * last_year + rng.normal(0, 0.01, n_charts)
    charts = np.array([f"r{i % 3}w{i}" for i in range(n_charts)])
    rows = np.repeat(np.arange(n_charts), songs_per_chart)
    return drift[rows], last_year[rows], charts[rows]


def test_damped_trend_recovers_the_share_of_last_years_change() -> None:
    assert abs(_damped_trend(*charts_with_trend(0.6, 200)) - 0.6) < 0.03
    assert abs(_damped_trend(*charts_with_trend(0.2, 200, songs_per_chart=1)) - 0.2) < 0.03


def test_damped_trend_is_bounded_and_needs_enough_charts() -> None:
    assert _damped_trend(*charts_with_trend(2.0, 200)) == 1.0  # growth is not amplified
    assert _damped_trend(*charts_with_trend(-0.5, 200)) == 0.0  # nor reversed
    few = charts_with_trend(0.6, MIN_TREND_CHARTS - 1, songs_per_chart=50)  # many rows, too few charts
    assert _damped_trend(*few) == 0.0
    unknown = charts_with_trend(0.6, 200)
    assert _damped_trend(unknown[0], np.full(len(unknown[0]), np.nan), unknown[2]) == 0.0


def test_expected_floor_moves_the_forecasts_of_likely_dropouts() -> None:
    model = StreamsForecaster(horizon=26, regions=["it"], floor_trend=0.5)
    X = pd.DataFrame({"log_floor": [8.0, 8.0], "floor_last_year_26": [0.0, 0.4]})
    model.base_rate = 0.1  # no classifier: every song likely drops out, forecast on the future floor
    model.survivor_models = []
    value = model.predict(X)["value"]
    assert np.isclose(value[1] - value[0], 0.5 * 0.4)
    without_history = model.predict(X.assign(floor_last_year_26=np.nan))["value"]
    assert np.isclose(without_history[0], without_history[1])


def popularity_set(n: int, seed: int) -> PopularitySet:
    """Low-popularity songs move a lot, popular ones barely."""
    rng = np.random.default_rng(seed)
    current = rng.uniform(20, 90, n)
    noise = np.where(current < 45, 12.0, 1.0) * rng.standard_normal(n)
    X = pd.DataFrame(np.nan, index=range(n), columns=POPULARITY_FEATURES)
    X["popularity"] = current
    songs = np.array([f"song{i % 400}" for i in range(n)])
    return PopularitySet(X=X, song=songs, day=np.arange(n), future=np.clip(current + noise, 0, 100))


class ConstantChange:
    """A quantile model that knows nothing about levels: the same change for every song."""

    def __init__(self, change: float) -> None:
        self.change = change

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.full(len(X), self.change)


def test_popularity_intervals_are_calibrated_per_level_group() -> None:
    held_out, test = popularity_set(6000, seed=1), popularity_set(6000, seed=2)
    model = PopularityForecaster(horizon=182, features=["popularity"])
    model.models = {0.1: ConstantChange(-2.0), 0.5: ConstantChange(0.0), 0.9: ConstantChange(2.0)}
    model._calibrate(held_out)
    assert len(model.level_conformal) == LEVEL_GROUPS
    pred = model.predict(test.X)
    inside = (pred["lower"] <= test.future) & (test.future <= pred["upper"])
    low, high = test.current < 40, test.current > 60
    for group in (low, high):  # one shared correction: ~44% and 100%
        assert 0.75 < inside[group].mean() < 0.85


def floor_changes(spreads: dict[float, tuple[float, int]], seed: int = 0) -> ChartSet:
    """Anchors (10 songs a chart) of regions whose floors move by normal draws of their own spread: region
    code -> (standard deviation, weeks of charts); last year's change unknown (no trend)."""
    rng = np.random.default_rng(seed)
    codes, weeks, drifts = [], [], []
    for code, (spread, n_weeks) in spreads.items():
        for week in range(n_weeks):
            codes += [code] * 10
            weeks += [week] * 10
            drifts += [rng.normal(0.0, spread)] * 10  # one move per chart, shared by its songs
    n = len(codes)
    X = pd.DataFrame({"region_code": codes, "log_floor": 8.0, "floor_last_year_52": np.nan})
    future_floor = 8.0 + np.array(drifts)
    return ChartSet(
        X=X,
        track=np.array([f"s{i}" for i in range(n)]),
        region=np.array([f"r{int(c)}" for c in codes]),
        week=np.array(weeks),
        charted=np.zeros(n, bool),
        future_level=np.full(n, np.nan),
        future_floor=future_floor,
        outcome_early=np.zeros(n, int),
    )


def test_floor_spread_is_each_regions_own_where_it_has_enough_weeks() -> None:
    calm, wild, short = 0.0, 1.0, 2.0
    data = floor_changes({calm: (0.02, 200), wild: (0.4, 200), short: (0.02, MIN_REGION_SPREAD_WEEKS - 1)})
    model = StreamsForecaster(horizon=52, regions=["r0", "r1", "r2"])
    model._fit_floor(data)
    assert set(model.region_drift_quantiles) == {calm, wild}  # the short history falls back to all regions'
    level = np.full(4, 0.1)
    X = pd.DataFrame({"region_code": [calm, wild, short, 9.0]})  # 9: a region the model never saw
    spread = model._floor_spread(X, level)
    assert -0.04 < spread[0] < -0.015  # the calm market's 10% quantile: about -1.28 x 0.02
    assert -0.7 < spread[1] < -0.35  # the wild one's: about -1.28 x 0.4
    pooled = np.interp(0.1, DRIFT_LEVELS, model.drift_quantiles)
    assert spread[2] == spread[3] == pooled
    assert pooled < spread[0]


def test_likely_dropouts_of_a_calm_market_are_forecast_near_its_floor() -> None:
    data = floor_changes({0.0: (0.02, 200), 1.0: (0.4, 200)})
    model = StreamsForecaster(horizon=52, regions=["r0", "r1"])
    model._fit_floor(data)
    model.base_rate, model.survivor_models = 0.2, []  # no classifier: p = 0.2, the floor's 25% quantile
    value = model.predict_model(pd.DataFrame({"region_code": [0.0, 1.0], "log_floor": 8.0}))["value"]
    assert 7.97 < value[0] < 8.0 and value[1] < 7.85


def test_artifacts_without_a_per_region_spread_use_all_regions() -> None:
    model = StreamsForecaster(horizon=52, regions=["r0"])
    model._fit_floor(floor_changes({0.0: (0.1, 100)}))
    del model.region_drift_quantiles  # as unpickled from an artifact made before it
    spread = model._floor_spread(pd.DataFrame({"region_code": [0.0]}), np.array([0.1]))
    assert spread[0] == np.interp(0.1, DRIFT_LEVELS, model.drift_quantiles)
