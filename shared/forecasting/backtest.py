"""Rolling-origin backtests: time-ordered folds with a gap of H between training labels and test anchors.

Fold k forecasts from origin O_k: its model learns only from anchors whose outcome was known by then
(t + H <= O_k) and is scored on the anchors of [O_k, O_k + step). Every baseline is scored on the same
anchors in the same run; metrics are pooled over all folds' test anchors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared.forecasting.dataset import ChartSet, PopularitySet
from shared.forecasting.evaluation import chart_metrics, popularity_metrics
from shared.forecasting.models import (
    ChartBaselines,
    PopularityBaselines,
    PopularityForecaster,
    StreamsForecaster,
)

N_FOLDS = 2
MIN_TRAIN_ANCHOR_TIMES = 8  # distinct anchor weeks (or days) a fold needs to train on


@dataclass(frozen=True)
class Fold:
    origin: int
    train: np.ndarray  # mask over the data's anchors
    test: np.ndarray


def rolling_folds(
    times: np.ndarray,
    horizon: int,
    *,
    step: int,
    n_folds: int = N_FOLDS,
    min_train: int = MIN_TRAIN_ANCHOR_TIMES,
) -> list[Fold]:
    """The last `n_folds` windows of `step` anchor times, each with the anchors labelled before it."""
    if len(times) == 0:
        return []
    last = int(times.max())
    folds = []
    for k in range(n_folds):
        origin = last - (n_folds - k) * step + 1
        train = times + horizon <= origin
        test = (times >= origin) & (times < origin + step)
        if test.any() and len(np.unique(times[train])) >= min_train:
            folds.append(Fold(origin, train, test))
    return folds


def _pool(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


@dataclass
class FoldRuns:
    """What every fold produced: the model's and each baseline's forecasts, and the test anchors."""

    model: list[dict[str, np.ndarray]]
    baselines: dict[str, list[dict[str, np.ndarray]]]
    tests: list[Any]
    latest_model: Any  # the latest fold's model: its held-out calibration serves the final fit


def run_folds(
    data: Any, folds: list[Fold], make: Callable[[], Any], baselines: Callable[[], Any]
) -> FoldRuns:
    """Fit the model and the baselines on each fold's training anchors, forecast its test anchors."""
    runs = FoldRuns(model=[], baselines={}, tests=[], latest_model=None)
    for fold in folds:
        train, test = data.take(fold.train), data.take(fold.test)
        runs.latest_model = make().fit(train, refit=False)
        runs.model.append(runs.latest_model.predict(test.X))
        for name, base in baselines().fit(train).predict(test.X).items():
            runs.baselines.setdefault(name, []).append(base)
        runs.tests.append(test)
    return runs


def _summary(result: dict[str, Any], folds: list[Fold], n_test: int, runs: FoldRuns) -> dict[str, Any]:
    result["folds"] = [int(f.origin) for f in folds]
    result["n_test"] = n_test
    result["calibration"] = runs.latest_model
    return result


def backtest_streams(
    data: ChartSet, horizon: int, regions: list[str], make: Callable[[], StreamsForecaster], *, step: int
) -> dict[str, Any] | None:
    """Backtest a streams forecaster and the baselines; None when no fold has enough history."""
    folds = rolling_folds(data.week, horizon, step=step)
    if not folds:
        return None
    runs = run_folds(data, folds, make, ChartBaselines)
    pooled = _concat_sets(runs.tests)
    pooled_model = _pool(runs.model)
    result: dict[str, Any] = {"model": chart_metrics(pooled_model, pooled, pooled_model["p_chart"])}
    rank_score = -pooled.X["rank"].to_numpy(float)
    for name, parts in runs.baselines.items():
        result[name] = chart_metrics(_pool(parts), pooled, rank_score if name == "persistence" else None)
    return _summary(result, folds, len(pooled), runs)


def backtest_popularity(
    data: PopularitySet, horizon_days: int, make: Callable[[], PopularityForecaster], *, step: int
) -> dict[str, Any] | None:
    """Backtest a popularity forecaster and the baselines; None when no fold has enough history."""
    folds = rolling_folds(data.day, horizon_days, step=step, min_train=MIN_TRAIN_ANCHOR_TIMES)
    if not folds:
        return None
    runs = run_folds(data, folds, make, PopularityBaselines)
    tests = runs.tests
    pooled = PopularitySet(
        X=pd.concat([t.X for t in tests], ignore_index=True),
        song=np.concatenate([t.song for t in tests]),
        day=np.concatenate([t.day for t in tests]),
        future=np.concatenate([t.future for t in tests]),
    )
    result: dict[str, Any] = {"model": popularity_metrics(_pool(runs.model), pooled)}
    for name, parts in runs.baselines.items():
        result[name] = popularity_metrics(_pool(parts), pooled)
    return _summary(result, folds, len(pooled), runs)


def _concat_sets(sets: list[ChartSet]) -> ChartSet:
    return ChartSet(
        X=pd.concat([s.X for s in sets], ignore_index=True),
        track=np.concatenate([s.track for s in sets]),
        region=np.concatenate([s.region for s in sets]),
        week=np.concatenate([s.week for s in sets]),
        charted=np.concatenate([s.charted for s in sets]),
        future_level=np.concatenate([s.future_level for s in sets]),
        future_floor=np.concatenate([s.future_floor for s in sets]),
    )
