"""Rolling-origin backtests: time-ordered folds with a gap of H between training labels and test anchors.

Fold k forecasts from origin O_k: its model learns only from anchors whose outcome was known by then
(t + H <= O_k) and is scored on the anchors of [O_k, O_k + step). Every baseline is scored on the same
anchors in the same run; metrics are pooled over all folds' test anchors. The pooled forecasts then choose
the method that serves and its interval correction (`selection.py`); a `Backtest` holds all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.forecasting.baselines import ChartBaselines, PopularityBaselines
from shared.forecasting.dataset import ChartSet, PopularitySet, concat_chart_sets, concat_popularity_sets
from shared.forecasting.metrics import censored_errors
from shared.forecasting.models import (
    MAX_TRAIN_ROWS,
    PopularityForecaster,
    StreamsForecaster,
    song_holdout,
)
from shared.forecasting.scores import (
    chart_conformity,
    chart_metrics,
    popularity_conformity,
    popularity_metrics,
)
from shared.forecasting.selection import ServingRule, select

# The latest two half-years (a year of anchors, both seasons): one period's shock does not set the choice or
# the interval alone. Each fold's model is fitted once (no calibration of its own), so two folds and the final
# fit cost what one self-calibrated fold (two fits) and the final fit did.
N_FOLDS = 2
BACKTEST_STEP_WEEKS = 26  # each fold forecasts half a year of anchors: a choice on fewer weeks is noise
SHORT_STEP = 8  # when the history is too short for that
MIN_TRAIN_ANCHOR_TIMES = 8  # distinct anchor weeks (or days) a fold needs to train on


@dataclass(frozen=True)
class Fold:
    origin: int
    train: np.ndarray  # mask over the data's anchors
    test: np.ndarray
    out_of_time: bool = True  # False: held-out songs of the training period (no gap of H)


def rolling_folds(
    times: np.ndarray,
    horizon: int,
    *,
    step: int,
    n_folds: int = N_FOLDS,
    min_train: int = MIN_TRAIN_ANCHOR_TIMES,
) -> list[Fold]:
    """The last `n_folds` windows of `step` anchor times (oldest first), each with the anchors labelled
    before it. A window is kept only when its model learns from anchors spanning at least `step` times: a
    fold model fitted on a few weeks is a handicapped one, whose losses to the baselines say little of the
    final model's (popularity at 182 days on the dev lists: a fold learning from 12 days chose the naive
    answer, two 8-week folds learning from 4 and 12 weeks chose a blend 20% better on the test lists)."""
    if len(times) == 0:
        return []
    first, last = int(times.min()), int(times.max())
    folds = []
    for k in range(n_folds):
        origin = last - (n_folds - k) * step + 1
        train = times + horizon <= origin
        test = (times >= origin) & (times < origin + step)
        learns_enough = len(np.unique(times[train])) >= min_train and origin - horizon - first + 1 >= step
        if test.any() and learns_enough:
            folds.append(Fold(origin, train, test))
    return folds


def oldest_fitted_time(times: np.ndarray, horizon: int, step: int = BACKTEST_STEP_WEEKS) -> int:
    """The oldest anchor time any fit of the backtest or the final model reads (`times`: the anchors, copies
    left out): each fit keeps its MAX_TRAIN_ROWS most recent rows, the oldest fold's ending H before its
    window. Copies of older anchors (`dataset.with_history_copies`) would never be read."""
    if len(times) == 0:
        return 0
    oldest_fold_end = int(times.max()) - N_FOLDS * step + 1 - horizon
    before = np.sort(times[times <= oldest_fold_end])
    return int(before[-MAX_TRAIN_ROWS]) if len(before) > MAX_TRAIN_ROWS else int(times.min())


def holdout_fold(
    times: np.ndarray, songs: np.ndarray, *, min_train: int = MIN_TRAIN_ANCHOR_TIMES
) -> list[Fold]:
    """When the history is too short for a gap of H between training outcomes and test anchors: a fifth of
    the songs, forecast by a model of the others over the same period. Whole songs, since a song's anchors of
    nearby days share their outcome (the latest days of songs already seen would leak it)."""
    held_out = song_holdout(songs, salt="backtest")
    train, test = ~held_out, held_out
    if not test.any() or len(np.unique(times[train])) < min_train:
        return []
    return [Fold(int(times[test].min()), train, test, out_of_time=False)]


def choose_folds(times: np.ndarray, songs: np.ndarray, horizon: int, step: int) -> list[Fold]:
    """The latest half-year rolling-origin folds; shorter ones for short histories; held-out songs as a last
    resort."""
    return (
        rolling_folds(times, horizon, step=step)
        or rolling_folds(times, horizon, step=max(1, step * SHORT_STEP // BACKTEST_STEP_WEEKS))
        or holdout_fold(times, songs)
    )


def _pool(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


@dataclass
class FoldRuns:
    """What every fold produced: the model's and each baseline's forecasts, and the test anchors."""

    model: list[dict[str, np.ndarray]]
    baselines: dict[str, list[dict[str, np.ndarray]]]
    tests: list[Any]
    latest_model: Any = None  # the latest fold's model: the final fit reuses its (absent) calibration

    def fold_of_anchor(self) -> np.ndarray:
        """Which fold (0 the oldest) each pooled test anchor belongs to."""
        return np.repeat(np.arange(len(self.tests)), [len(test) for test in self.tests])


def run_folds(
    data: Any, folds: list[Fold], make: Callable[[], Any], baselines: Callable[[], Any]
) -> FoldRuns:
    """Fit the model and the baselines on each fold's training anchors, forecast its test anchors."""
    runs = FoldRuns(model=[], baselines={}, tests=[])
    for fold in folds:
        train = data.take(fold.train)
        test = data.take(fold.test)
        test = getattr(test, "observed", test)  # scored on the anchors as the files give them
        # Fitted as the final model will be (a handicapped fold model would favour the baselines), in one
        # fit: its interval is left uncalibrated (`calibrated_by` a blank model), since the served interval's
        # width is measured on the folds' forecasts, out of time (`selection.py`), and the final model
        # reuses this blank calibration.
        runs.latest_model = make().fit(train, calibrated_by=make())
        runs.model.append(runs.latest_model.predict_model(test.X))
        for name, base in baselines().fit(getattr(train, "observed", train)).predict(test.X).items():
            runs.baselines.setdefault(name, []).append(base)
        runs.tests.append(test)
    return runs


Metrics = dict[str, Any]  # a method's pooled fold metrics, by name (cmae, mae, auc, coverage80, ...)


@dataclass
class FoldForecasts:
    """The folds' pooled out-of-time forecasts and their anchors, which chose the rule; `songpop eval` adds
    newer outcomes to them to replay the weekly retrain's choice (`replay.py`)."""

    model: dict[str, np.ndarray]
    baselines: dict[str, dict[str, np.ndarray]]
    data: Any  # ChartSet or PopularitySet
    out_of_time: bool


@dataclass
class Backtest:
    """What the rolling-origin folds showed for one signal and horizon."""

    model: Metrics  # the learned model's
    baselines: dict[str, Metrics]  # each naive answer's, and the original static regression's
    rule: ServingRule  # the method chosen to serve
    served: Metrics  # what serves: its metrics and its card (method, skill against the best naive...)
    folds: list[int]  # the folds' origins (week or day index)
    n_test: int  # test anchors pooled over the folds
    calibration: Any  # the latest fold's model: the final fit reuses its calibration
    forecasts: FoldForecasts | None = None

    def metric(self, method: str, name: str) -> float | None:
        """`name` of `method` ("model", "served" or a baseline's name); None when not measured."""
        found = {"model": self.model, "served": self.served}.get(method) or self.baselines.get(method, {})
        value = found.get(name)
        return None if value is None else float(value)


def _backtest(
    model: Metrics,
    baselines: dict[str, Metrics],
    rule: ServingRule,
    served: Metrics,
    folds: list[Fold],
    runs: FoldRuns,
    forecasts: FoldForecasts,
    keep_forecasts: bool,
) -> Backtest:
    return Backtest(
        model=model, baselines=baselines, rule=rule, served={**served, **rule.card()},
        folds=[int(f.origin) for f in folds], n_test=len(forecasts.data), calibration=runs.latest_model,
        forecasts=forecasts if keep_forecasts else None,
    )  # fmt: skip


def backtest_streams(
    data: ChartSet,
    horizon: int,
    regions: list[str],
    make: Callable[[], StreamsForecaster],
    *,
    step: int,
    keep_forecasts: bool = False,
    current: str | None = None,
) -> Backtest | None:
    """Backtest a streams forecaster and the baselines; None when no fold has enough history. With
    `keep_forecasts` the folds' pooled forecasts stay in the result (for `eval`'s replay; the trainer does
    not hold them while it fits); `current` is the method serving now (`select`)."""
    folds = choose_folds(data.week, data.track, horizon, step)
    folds = [fold for fold in folds if (fold.test & data.as_given).any()]  # a fold scores these only
    if not folds:
        return None
    runs = run_folds(data, folds, make, ChartBaselines)
    pooled = concat_chart_sets(runs.tests)
    pooled_model = _pool(runs.model)
    rank_score = -pooled.X["rank"].to_numpy(float)
    bases = {name: _pool(parts) for name, parts in runs.baselines.items()}
    rule = select_streams(pooled_model, bases, pooled, runs.fold_of_anchor(), folds[0].out_of_time, current)
    served = rule.apply(pooled_model, bases, pooled.X["above_floor"].to_numpy(float))
    return _backtest(
        chart_metrics(pooled_model, pooled, pooled_model["p_chart"]),
        {
            name: chart_metrics(pred, pooled, rank_score if name == "persistence" else None)
            for name, pred in bases.items()
        },
        rule,
        chart_metrics(served, pooled, served["p_chart"]),
        folds,
        runs,
        FoldForecasts(pooled_model, bases, pooled, folds[0].out_of_time),
        keep_forecasts,
    )


def select_streams(
    model: dict[str, np.ndarray],
    bases: dict[str, dict[str, np.ndarray]],
    data: ChartSet,
    folds: np.ndarray | None = None,
    out_of_time: bool = True,
    current: str | None = None,
) -> ServingRule:
    """The streams method that serves, chosen on pooled fold forecasts by censored MAE (`current`: the one
    serving now, which stays unless beaten)."""
    return select(
        model,
        bases,
        lambda pred: censored_errors(pred["value"], data.charted, data.future_level, data.future_floor),
        lambda pred: chart_conformity(pred, data),
        data.X["above_floor"].to_numpy(float),
        data.track,
        folds,
        out_of_time=out_of_time,
        times=data.week,
        current=current,
    )


def select_popularity(
    model: dict[str, np.ndarray],
    bases: dict[str, dict[str, np.ndarray]],
    data: PopularitySet,
    folds: np.ndarray | None = None,
    out_of_time: bool = True,
    current: str | None = None,
) -> ServingRule:
    """The popularity method that serves, chosen on pooled fold forecasts by MAE (weeks of days: `times`)."""
    return select(
        model,
        bases,
        lambda pred: np.abs(pred["value"] - data.future),
        lambda pred: popularity_conformity(pred, data),
        data.current,
        data.song,
        folds,
        out_of_time=out_of_time,
        times=data.day // 7,
        current=current,
    )


def backtest_popularity(
    data: PopularitySet,
    horizon_days: int,
    make: Callable[[], PopularityForecaster],
    *,
    step: int,
    keep_forecasts: bool = False,
    current: str | None = None,
) -> Backtest | None:
    """Backtest a popularity forecaster and the baselines; None when no fold has enough history (with
    `keep_forecasts` and `current`, as `backtest_streams`)."""
    folds = choose_folds(data.day, data.song, horizon_days, step)
    if not folds:
        return None
    runs = run_folds(data, folds, make, PopularityBaselines)
    pooled = concat_popularity_sets(runs.tests)
    pooled_model = _pool(runs.model)
    bases = {name: _pool(parts) for name, parts in runs.baselines.items()}
    rule = select_popularity(
        pooled_model, bases, pooled, runs.fold_of_anchor(), folds[0].out_of_time, current
    )
    served = rule.apply(pooled_model, bases, pooled.current)
    return _backtest(
        popularity_metrics(pooled_model, pooled),
        {name: popularity_metrics(pred, pooled) for name, pred in bases.items()},
        rule,
        popularity_metrics({k: np.clip(v, 0, 100) for k, v in served.items()}, pooled),
        folds,
        runs,
        FoldForecasts(pooled_model, bases, pooled, folds[0].out_of_time),
        keep_forecasts,
    )
