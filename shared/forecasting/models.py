"""Forecasters per signal and horizon, and the baselines they must beat.

Streams: a mixture. A gradient-boosted classifier gives P(still charting at t+H); quantile models give how
far above the chart's future floor a survivor will be (the excess over the floor, not the level, keeps the
market's growth out of the song-level model); the future floor is today's plus a damped share of its change
over the same weeks a year earlier. The point forecast minimises the expected censored error under that
mixture, and its 10-90% band is widened or narrowed by a split conformal correction measured on the most
recent training weeks, so the interval covers 80% out of sample.
Popularity: quantile models of the change of the 0-100 index, conformal per level group.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from shared.forecasting.baselines import ChartBaselines, PopularityBaselines
from shared.forecasting.dataset import ChartSet, PopularitySet
from shared.forecasting.features import CHART_FEATURES, FLOOR_SEASON_SPANS, POPULARITY_FEATURES
from shared.forecasting.selection import ServingRule, conformal_width

QUANTILES = (0.1, 0.5, 0.9)
CALIBRATION_SHARE = 0.2  # the latest share of training anchors held out to calibrate the interval
MAX_TRAIN_ROWS = 120_000  # the most recent anchors beyond this are enough; keeps training time bounded
SEED = 7
# One OpenMP thread per fit: on a shared 2-core machine, more threads than free cores make gradient boosting
# several times slower (spinning threads), while one thread degrades gracefully.
FIT_THREADS = 1
# A forecaster's models (the classifier and the quantile models) are independent fits: they run side by side
# in this many threads, each fit on FIT_THREADS OpenMP threads, so the fits of one forecaster use both cores
# of a 2-core machine without OpenMP's spinning, and each fit is the one it would be alone (same trees).
FIT_WORKERS = 2

T = TypeVar("T")


def single_threaded(method: Any) -> Any:
    """Run a fit/predict method with at most FIT_THREADS OpenMP threads."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(limits=FIT_THREADS, user_api="openmp"):
            return method(*args, **kwargs)

    wrapper.__doc__, wrapper.__name__ = method.__doc__, method.__name__
    return wrapper


def side_by_side(jobs: list[Callable[[], T]], workers: int | None = None) -> list[T]:
    """The results of independent jobs (fits or predictions), in order, computed in `workers` threads
    (FIT_WORKERS by default). OpenMP limits are per thread: each worker sets its own."""
    single = single_threaded(lambda job: job())
    workers = FIT_WORKERS if workers is None else workers
    if workers <= 1 or len(jobs) <= 1:
        return [single(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return list(pool.map(single, jobs))


@dataclass
class BoostParams:
    # Shallow, regularised trees: the backtests on real charts favour them (the outcome a year ahead is
    # noisy, and deep trees memorise the training year).
    max_iter: int = 200
    learning_rate: float = 0.05
    max_depth: int | None = 3
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 200
    l2_regularization: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _regressor(
    params: BoostParams, quantile: float, categorical: list[bool]
) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(
        loss="quantile",
        quantile=quantile,
        categorical_features=categorical,
        early_stopping=False,
        random_state=SEED,
        **params.as_dict(),
    )


# At a year, ~8% of the anchors still chart: the rolling-origin dev splits (train 2017-18 / test 2019, and
# four markets / three others) rank them better with stumps of depth 2 (AUC +0.004..+0.02); at 26 weeks the
# default depth 3 is better.
LONG_HORIZON = 52
LONG_HORIZON_CLASSIFIER = {"max_depth": 2, "max_iter": 300}


def _classifier_params(params: BoostParams, horizon: int) -> BoostParams:
    if horizon < LONG_HORIZON:
        return params
    return BoostParams(**{**params.as_dict(), **LONG_HORIZON_CLASSIFIER})


def _fit_job(
    model: HistGradientBoostingRegressor, X: pd.DataFrame, level: np.ndarray
) -> Callable[[], HistGradientBoostingRegressor]:
    return lambda: model.fit(X, level)


def _classifier(params: BoostParams, categorical: list[bool]) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        categorical_features=categorical, early_stopping=False, random_state=SEED, **params.as_dict()
    )


def _calibration_split(times: np.ndarray) -> np.ndarray:
    """True for the latest CALIBRATION_SHARE of anchors by time."""
    if len(times) == 0:
        return np.zeros(0, bool)
    cut = np.quantile(times, 1.0 - CALIBRATION_SHARE)
    return times > cut


def song_holdout(songs: np.ndarray, salt: str = "") -> np.ndarray:
    """True for the songs of a stable CALIBRATION_SHARE hash group: whole songs the models never saw, as
    the songs they will forecast (popularity series are short, songs come and go). Another `salt` draws
    another group (a backtest's held-out songs are not the calibration's)."""
    buckets = np.fromiter((zlib.crc32(f"{salt}{s}".encode()) % 100 for s in songs), np.int64, len(songs))
    return buckets < CALIBRATION_SHARE * 100


def _recent(times: np.ndarray, limit: int) -> np.ndarray:
    """Mask of the `limit` most recent anchors (all when there are fewer)."""
    if len(times) <= limit:
        return np.ones(len(times), bool)
    cut = np.sort(times)[len(times) - limit]
    return times >= cut


def _informative(X: pd.DataFrame, features: list[str]) -> list[str]:
    """The features with two or more distinct known values in the training data (others cannot split)."""
    return [name for name in features if X[name].nunique(dropna=True) > 1]


def _piecewise(levels: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Row-wise linear interpolation of quantile curves: values (n, k) at levels (k,), evaluated at `at` (n,);
    clamped to the outer knots."""
    values = np.maximum.accumulate(values, axis=1)  # quantile curves never decrease
    at = np.clip(at, levels[0], levels[-1])
    upper = np.clip(np.searchsorted(levels, at, side="left"), 1, len(levels) - 1)
    lo_level, hi_level = levels[upper - 1], levels[upper]
    weight = (at - lo_level) / (hi_level - lo_level)
    rows = np.arange(len(at))
    return values[rows, upper - 1] * (1 - weight) + values[rows, upper] * weight


SURVIVOR_LEVELS = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
DRIFT_LEVELS = np.linspace(0.01, 0.99, 99)
# The floor's last-year changes serve the floor's forecast only: the trees do no better with them (dev-time
# split: AUC 0.800 with, 0.804 without) and cost a histogram each.
# Nor do the trees see absolute levels (log streams, the floor): only positions relative to the chart, which
# mean the same when a market grows or shrinks between the training years and the forecast.
ABSOLUTE_LEVELS = ("level", "log_floor")
SONG_FEATURES = [
    name for name in CHART_FEATURES if not name.startswith("floor_last_year_") and name not in ABSOLUTE_LEVELS
]
# Weeks before t+H that a training anchor's outcome was read (sparse files: `chart_targets`): the trees learn
# what those weeks change, and forecast with 0.
OUTCOME_EARLY = "outcome_early"
MIN_TREND_CHARTS = 20  # charts (region, week) with a known last-year change needed to estimate the trend
MIN_SPREAD_CHARTS = 100  # and to take the floor's spread around it from them alone (its tails need more)
MIN_REGION_SPREAD_WEEKS = 26  # weeks of a region's chart needed for a spread of its own (else all regions')


def _centred_quantiles(residual: np.ndarray) -> np.ndarray:
    """The DRIFT_LEVELS quantiles of the floor's residual changes around their median."""
    return np.quantile(residual - np.median(residual), DRIFT_LEVELS)


def _damped_trend(drift: np.ndarray, last_year: np.ndarray, charts: np.ndarray) -> float:
    """The share of last year's change of the floor (same calendar span) that its next change repeats: the
    least-absolute-deviation slope through the origin over the training charts (one per region and week),
    kept in [0, 1] (growth slows or persists, it is neither amplified nor reversed); 0 with too few charts."""
    known = ~np.isnan(last_year)
    _, first = np.unique(charts[known], return_index=True)
    d, s = drift[known][first], last_year[known][first]
    s_nonzero = np.abs(s) > 1e-9
    if s_nonzero.sum() < MIN_TREND_CHARTS:
        return 0.0
    d, s = d[s_nonzero], s[s_nonzero]
    ratio, weight = d / s, np.abs(s)  # min sum |d - b s| = min sum |s| |d/s - b|: a weighted median
    order = np.argsort(ratio)
    cumulative = np.cumsum(weight[order])
    slope = ratio[order][np.searchsorted(cumulative, cumulative[-1] / 2)]
    return float(np.clip(slope, 0.0, 1.0))


@dataclass
class StreamsForecaster:
    """Log weekly streams at t+H, censored below the chart floor, and P(still charting at t+H).

    The outcome is a mixture: with probability p (a classifier) the song still charts, at a level above the
    chart's future floor given by quantile models fitted on the songs that did; otherwise it is somewhere
    below that future floor. The future floor is today's plus a damped share of the floor's change over the
    same weeks a year earlier, with the spread of the market's training weeks around that (all markets' for a
    market with few). The point forecast is the
    value that minimises the expected censored absolute error under that mixture; the 80% interval is the
    mixture's 10-90% range, widened or narrowed by a split-conformal correction measured on the latest
    training weeks.
    """

    horizon: int
    regions: list[str]
    params: BoostParams = field(default_factory=BoostParams)
    kind: str = "gbm-mixture"
    features: list[str] = field(default_factory=lambda: list(SONG_FEATURES))
    survivor_models: list[HistGradientBoostingRegressor] = field(default_factory=list)
    classifier: HistGradientBoostingClassifier | None = None
    drift_quantiles: np.ndarray = field(default_factory=lambda: np.zeros(len(DRIFT_LEVELS)))
    # The floor's spread per region (by region code) for regions with enough training weeks: a calm
    # market's floor does not move like the fastest-moving ones, whose tails dominate the pooled spread.
    region_drift_quantiles: dict[float, np.ndarray] = field(default_factory=dict)
    drift_scale: float = 1.0  # share of the floor's historical spread used (1: all of it)
    floor_trend: float = 0.0  # share of last year's change of the floor expected again (0: none)
    conformal: float = 0.0
    base_rate: float = 0.0
    n_train: int = 0
    serving: ServingRule | None = None  # the method its backtest chose (None: the model itself)
    baselines: ChartBaselines | None = None  # fitted on the same data, for a rule that serves or blends them

    def _categorical(self) -> list[bool]:
        return [name == "region_code" for name in self.features]

    def _fit_models(self, data: ChartSet) -> None:
        with_early = data.X.assign(**{OUTCOME_EARLY: data.outcome_early})
        self.features = _informative(with_early, [*SONG_FEATURES, OUTCOME_EARLY])
        X = with_early[self.features]
        survived = data.charted
        self.base_rate = float(np.mean(survived)) if len(data) else 0.0
        jobs: list[Callable[[], Any]] = []
        classify = 0 < survived.sum() < len(data)  # else the base rate is P(still charting)
        if classify:
            params = _classifier_params(self.params, self.horizon)
            jobs.append(lambda: _classifier(params, self._categorical()).fit(X, survived))
        if survived.sum() >= 20:
            # The survivors' excess over their chart's future floor: the market's drift stays out of it.
            level, X_survived = (data.future_level - data.future_floor)[survived], X[survived]
            jobs += [
                _fit_job(_regressor(self.params, float(q), self._categorical()), X_survived, level)
                for q in SURVIVOR_LEVELS
            ]
        fitted = side_by_side(jobs)  # the longest first: the classifier on every anchor
        self.classifier = fitted.pop(0) if classify else None
        self.survivor_models = fitted
        self._fit_floor(data)

    def _fit_floor(self, data: ChartSet) -> None:
        """The floor's expected change (the damped trend) and its spread around it, pooled and per region."""
        drift = data.future_floor - data.log_floor
        last_year = self._last_year(data.X)
        charts = np.char.add(data.region.astype(str), data.week.astype(str))
        self.floor_trend = _damped_trend(drift, last_year, charts) if len(data) else 0.0
        residual = drift - self._expected_drift(data.X)
        known = ~np.isnan(last_year)
        codes, weeks = data.X["region_code"].to_numpy(float), data.week
        if len(np.unique(charts[known])) >= MIN_SPREAD_CHARTS:
            residual, codes, weeks = residual[known], codes[known], weeks[known]
        if len(residual):
            # The spread of the floor around its expected change; centred, since the training years' trend
            # beyond what last year says does not carry over (market growth slowing, a pandemic).
            self.drift_quantiles = _centred_quantiles(residual)
        self.region_drift_quantiles = {
            float(code): _centred_quantiles(residual[codes == code])
            for code in np.unique(codes[~np.isnan(codes)])
            if len(np.unique(weeks[codes == code])) >= MIN_REGION_SPREAD_WEEKS
        }

    def _last_year(self, X: pd.DataFrame) -> np.ndarray:
        """How the anchor's region floor moved over the same H weeks a year earlier (NaN when unknown)."""
        column = f"floor_last_year_{self.horizon}"
        if self.horizon not in FLOOR_SEASON_SPANS or column not in X:
            return np.full(len(X), np.nan)
        return X[column].to_numpy(float)

    def _expected_drift(self, X: pd.DataFrame) -> np.ndarray:
        """The floor's expected change over H weeks: the damped share of last year's (0 when unknown)."""
        return self.floor_trend * np.nan_to_num(self._last_year(X))

    @single_threaded
    def fit(
        self, data: ChartSet, *, refit: bool = True, calibrated_by: StreamsForecaster | None = None
    ) -> StreamsForecaster:
        """Fit on the training anchors; the latest ones first calibrate the interval width and the floor's
        spread. Without `refit`, the models fitted before the calibration weeks are kept (half the cost);
        with `calibrated_by` (the backtest's fold model, fitted the same way on older data), its calibration
        is reused and the models are fitted once on everything: the backtest measured how that calibration
        covers out of time, and the serving rule corrects it."""
        data = data.take(_recent(data.week, MAX_TRAIN_ROWS))
        calibrate = _calibration_split(data.week)
        self.conformal = 0.0
        if calibrated_by is not None:
            self.conformal, self.drift_scale = calibrated_by.conformal, calibrated_by.drift_scale
        elif calibrate.any() and (~calibrate).sum() > 1000:
            self._fit_models(data.take(~calibrate))
            held_out = data.take(calibrate)
            parts = self._mixture(held_out.X)
            scores = np.where(
                held_out.charted,
                np.maximum(parts["lower"] - held_out.future_level, held_out.future_level - parts["upper"]),
                parts["lower"] - held_out.future_floor,
            )
            self.conformal = conformal_width(scores)
            if not refit:
                self.n_train = int((~calibrate).sum())
                return self
        self._fit_models(data)
        self.n_train = len(data)
        return self

    def _floor_spread(self, X: pd.DataFrame, level: np.ndarray) -> np.ndarray:
        """The `level` quantile (per row) of the floor's change around its expected one: the region's own
        spread where it had enough training weeks, all regions' otherwise."""
        spread = np.interp(level, DRIFT_LEVELS, self.drift_quantiles)
        # Artifacts made before the per-region spread have none: all regions' serves, as it did.
        regions: dict[float, np.ndarray] = getattr(self, "region_drift_quantiles", {})
        if regions:
            codes = X["region_code"].to_numpy(float)
            for code, quantiles in regions.items():
                rows = codes == code
                spread[rows] = np.interp(level[rows], DRIFT_LEVELS, quantiles)
        return spread

    def _design(self, X: pd.DataFrame) -> pd.DataFrame:
        """The trees' columns of X; a forecast is for exactly t+H (its outcome read 0 weeks early)."""
        if OUTCOME_EARLY in self.features and OUTCOME_EARLY not in X:
            X = X.assign(**{OUTCOME_EARLY: 0})
        return X[self.features]

    def _p_chart(self, X: pd.DataFrame) -> np.ndarray:
        if self.classifier is None:
            return np.full(len(X), self.base_rate)
        return self.classifier.predict_proba(self._design(X))[:, 1]

    def _mixture(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        floor = X["log_floor"].to_numpy(float) + self._expected_drift(X)  # the future floor, expected
        p = np.clip(self._p_chart(X), 1e-6, 1 - 1e-6)
        if self.survivor_models:
            design = self._design(X)
            curves = np.column_stack([m.predict(design) for m in self.survivor_models])
        else:
            curves = np.zeros((len(X), len(SURVIVOR_LEVELS)))

        def survivor(level: np.ndarray) -> np.ndarray:
            return floor + _piecewise(SURVIVOR_LEVELS, curves, level)

        def future_floor(level: np.ndarray) -> np.ndarray:
            return floor + self.drift_scale * self._floor_spread(X, level)

        def mixture_quantile(q: float) -> np.ndarray:
            censored_share = 1 - p
            below = censored_share >= q
            return np.where(
                below,
                future_floor(q / np.maximum(censored_share, 1e-6)),
                survivor((q - censored_share) / p),
            )

        # Minimiser of (1-p)·E[max(0, x - F)] + p·E|x - Y|: the survivors' quantile 1 - 1/(2p) when p >= 1/2,
        # else the future floor's quantile p/(1-p) (a likely dropout is best placed low on the floor).
        value = np.where(p >= 0.5, survivor(1 - 0.5 / p), future_floor(p / (1 - p)))
        return {"value": value, "lower": mixture_quantile(0.1), "upper": mixture_quantile(0.9), "p_chart": p}

    def predict(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """What serves: the method the backtest chose (the model, a baseline or a blend of both), with its
        interval corrected out of time; P(still charting) is always the model's."""
        return _served(self, X, "above_floor")

    @single_threaded
    def predict_model(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """The learned model's point forecast, 80% interval (log streams) and P(still charting)."""
        parts = self._mixture(X)
        lower, upper = parts["lower"] - self.conformal, parts["upper"] + self.conformal
        return {
            "value": parts["value"],
            "lower": np.minimum(lower, parts["value"]),
            "upper": np.maximum(upper, parts["value"]),
            "p_chart": parts["p_chart"],
        }


def _served(forecaster: Any, X: pd.DataFrame, level: str) -> dict[str, np.ndarray]:
    """The forecaster's serving rule applied to its model's and baselines' forecasts (`level`: the column
    whose terciles the interval correction depends on)."""
    own: dict[str, np.ndarray] = forecaster.predict_model(X)
    rule: ServingRule | None = getattr(forecaster, "serving", None)  # None in artifacts made before rules
    if rule is None:
        return own
    baselines = forecaster.baselines.predict(X) if forecaster.baselines is not None else {}
    return rule.apply(own, baselines, X[level].to_numpy(float))


LEVEL_GROUPS = 3  # popularity conformal groups: terciles of today's index (its moves differ by level)


@dataclass
class PopularityForecaster:
    """The popularity index (0-100) H days later: quantile models of its change, with an interval corrected
    per level group (Mondrian conformal: terciles of today's index among held-out songs)."""

    horizon: int  # days
    params: BoostParams = field(default_factory=lambda: BoostParams(max_iter=200, min_samples_leaf=40))
    kind: str = "gbm-quantile"
    features: list[str] = field(default_factory=lambda: list(POPULARITY_FEATURES))
    models: dict[float, HistGradientBoostingRegressor] = field(default_factory=dict)
    conformal: float = 0.0  # the correction of songs without a level group (all songs when too few)
    level_edges: np.ndarray = field(default_factory=lambda: np.zeros(0))
    level_conformal: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_train: int = 0
    serving: ServingRule | None = None
    baselines: PopularityBaselines | None = None

    def _fit_models(self, data: PopularitySet) -> dict[float, HistGradientBoostingRegressor]:
        self.features = _informative(data.X, list(POPULARITY_FEATURES))
        X, change = data.X[self.features], data.future - data.current
        no_categories = [False] * len(self.features)
        models = [_regressor(self.params, q, no_categories) for q in QUANTILES]
        fitted = side_by_side([_fit_job(model, X, change) for model in models])
        return dict(zip(QUANTILES, fitted, strict=True))

    def _calibrate(self, held_out: PopularitySet) -> None:
        lower, upper = self._band(held_out.X, 0.0)
        scores = np.maximum(lower - held_out.future, held_out.future - upper)
        self.conformal = conformal_width(scores)
        current = held_out.current
        self.level_edges = np.quantile(current, np.arange(1, LEVEL_GROUPS) / LEVEL_GROUPS)
        group = np.searchsorted(self.level_edges, current)
        self.level_conformal = np.array([conformal_width(scores[group == g]) for g in range(LEVEL_GROUPS)])

    def _widening(self, X: pd.DataFrame) -> np.ndarray:
        if len(self.level_conformal) == 0:
            return np.full(len(X), self.conformal)
        return self.level_conformal[np.searchsorted(self.level_edges, X["popularity"].to_numpy(float))]

    @single_threaded
    def fit(
        self, data: PopularitySet, *, refit: bool = True, calibrated_by: PopularityForecaster | None = None
    ) -> PopularityForecaster:
        """Fit on the training anchors; held-out songs first calibrate the interval width (or the
        calibration of `calibrated_by`, the backtest's fold model, is reused and the models fitted once)."""
        data = data.take(_recent(data.day, MAX_TRAIN_ROWS))
        calibrate = song_holdout(data.song)
        if calibrated_by is not None:
            self.conformal = calibrated_by.conformal
            self.level_edges, self.level_conformal = calibrated_by.level_edges, calibrated_by.level_conformal
        elif calibrate.any() and (~calibrate).sum() > 200:
            self.models = self._fit_models(data.take(~calibrate))
            self._calibrate(data.take(calibrate))
            if not refit:
                self.n_train = int((~calibrate).sum())
                return self
        self.models = self._fit_models(data)
        self.n_train = len(data)
        return self

    def _band(self, X: pd.DataFrame, widen: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        current = X["popularity"].to_numpy(float)
        low = self.models[0.1].predict(X[self.features]) + current - widen
        high = self.models[0.9].predict(X[self.features]) + current + widen
        return np.clip(np.minimum(low, high), 0, 100), np.clip(np.maximum(low, high), 0, 100)

    def predict(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """What serves: the method the backtest chose, its interval corrected out of time."""
        served = _served(self, X, "popularity")
        return {key: np.clip(values, 0, 100) for key, values in served.items()}

    @single_threaded
    def predict_model(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """The learned model's point forecast and 80% interval of the popularity index."""
        current = X["popularity"].to_numpy(float)
        value = np.clip(self.models[0.5].predict(X[self.features]) + current, 0, 100)
        lower, upper = self._band(X, self._widening(X))
        return {"value": value, "lower": np.minimum(lower, value), "upper": np.maximum(upper, value)}
