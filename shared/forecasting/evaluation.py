"""`songpop eval`: train on some files, score on others, with the trainer's dataset, feature and model code.

Charts: features use every file given (only the past of each anchor). A test pair is an anchor whose
outcome, its region's chart H weeks later, is in the `--test` files ("test on 2020" scores the forecasts of
2020's charts, made H weeks earlier); a training pair has anchor and outcome in the `--train` files. The
split is also cut in time at an origin O: every training outcome is observed by O (t + H <= O) and every test
anchor is at or after O (t >= O), so nothing the model learns from happens after the moment it forecasts
from, even when train and test are different regions.

Popularity: the test files' songs that also appear in the training files are left out (the index is global
per song, so they would leak their own future); the rest are scored at +182 and +365 days. When that leaves
too few songs (the same files on both sides), a fixed fifth of the songs is held out instead.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from shared.forecasting.backtest import (
    BACKTEST_STEP_WEEKS,
    backtest_popularity,
    backtest_streams,
    oldest_fitted_time,
    select_popularity,
    select_streams,
)
from shared.forecasting.baselines import ChartBaselines, PopularityBaselines
from shared.forecasting.dataset import (
    OUTCOME_TOLERANCE_WEEKS,
    ChartSet,
    PopularitySet,
    chart_set,
    concat_chart_sets,
    concat_popularity_sets,
    popularity_set,
    with_history_copies,
)
from shared.forecasting.features import chart_features, popularity_features, regions_of
from shared.forecasting.models import (
    PopularityForecaster,
    StreamsForecaster,
)
from shared.forecasting.panel import (
    ChartPanel,
    NotEnoughData,
    chart_panel_from_files,
    popularity_panel_from_files,
    thin_charts,
    week_date,
)
from shared.forecasting.replay import Replayed, replay
from shared.forecasting.scores import (
    chart_metrics,
    coverage_by_outcome,
    popularity_metrics,
    rounded,
    top_survivors,
)
from shared.forecasting.selection import NAIVE_METHODS, ServingRule

CHART_HORIZONS = {"26w": 26, "52w": 52}
POPULARITY_HORIZONS = {"182d": 182, "365d": 365}
MIN_TRAIN_ANCHOR_WEEKS = 52  # weeks of training anchors before the origin when train and test overlap in time
MIN_TEST_ANCHORS = 50
MIN_TEST_SONGS = 20


def score_chart_split(
    train: ChartSet, test: ChartSet, horizon: int, regions: list[str], original_train: ChartSet | None = None
) -> tuple[dict[str, Any], StreamsForecaster]:
    """Fit the model and the baselines on `train` as the trainer does (rolling-origin folds on the training
    anchors choose what serves), score what would be served, the model and every baseline on `test`."""

    def make() -> StreamsForecaster:
        return StreamsForecaster(horizon=horizon, regions=regions)

    folds = backtest_streams(train, horizon, regions, make, step=BACKTEST_STEP_WEEKS, keep_forecasts=True)
    model = make().fit(train, calibrated_by=folds.calibration if folds else None)
    model.baselines = ChartBaselines().fit(train.observed, original_train)
    model.serving = folds.rule if folds else None
    own, served = model.predict_model(test.X), model.predict(test.X)
    bases = model.baselines.predict(test.X)
    updating = replay(
        folds.forecasts if folds else None, model.serving, (own, bases, test),
        times=lambda data: data.week, level=test.X["above_floor"].to_numpy(float), concat=concat_chart_sets,
        select=select_streams, horizon=horizon, step=BACKTEST_STEP_WEEKS,
    )  # fmt: skip
    result: dict[str, Any] = {
        "served": {**chart_metrics(served, test, served["p_chart"]), **coverage_by_outcome(served, test)},
        "served_updating": _updating_scores(
            updating,
            {
                **chart_metrics(updating.forecast, test, own["p_chart"]),
                **coverage_by_outcome(updating.forecast, test),
            },
        ),
        "model": chart_metrics(own, test, own["p_chart"]),
    }
    rank_score = -test.X["rank"].to_numpy(float)  # persistence: the better placed, the likelier to stay
    for name, base in bases.items():
        result[name] = chart_metrics(base, test, rank_score if name == "persistence" else None)
    result["model"]["top20"] = top_survivors(own["p_chart"], test)
    result["persistence"]["top20"] = top_survivors(rank_score, test)
    _describe_served(result, model.serving, "cmae")
    _skill_of_updating(result, "cmae")
    result["n_train"], result["n_test"] = int((~train.thinned).sum()), len(test)
    result["n_train_thinned"] = int(train.thinned.sum())
    result["n_train_early"] = int((~train.thinned & (train.outcome_early > 0)).sum())  # sparse files
    result["charted_share"] = rounded(float(np.mean(test.charted)))
    return result, model


def _describe_served(result: dict[str, Any], rule: ServingRule | None, metric: str) -> None:
    """The served method, its skill against the best naive answer on these test anchors (1 - error / naive
    error: negative when it loses) and its skill on the training folds that chose it."""
    served = result["served"]
    served.update(rule.card() if rule is not None else {"method": "model", "skill": None})
    served["backtest_skill"] = served.pop("skill")
    naive = {name: result[name][metric] for name in NAIVE_METHODS if result.get(name, {}).get(metric)}
    if naive and served.get(metric) is not None:
        best = min(naive, key=lambda name: naive[name])
        served["best_naive_test"] = best
        _add_skills(served, result, best, metric)


def _updating_scores(updating: Replayed, metrics: dict[str, Any]) -> dict[str, Any]:
    return {**metrics, "methods": updating.methods, "updates": updating.updates}


def _skill_of_updating(result: dict[str, Any], metric: str) -> None:
    """The replayed weekly retrain's skill against the same best naive answer as the one-shot's."""
    updating, best = result["served_updating"], result["served"].get("best_naive_test")
    if best and updating.get(metric) is not None and result[best].get(metric):
        _add_skills(updating, result, best, metric)


def _add_skills(scores: dict[str, Any], result: dict[str, Any], best_naive: str, metric: str) -> None:
    """`skill` (1 - error / the best naive answer's error) and `skill_vs_original` of a served forecast's
    `scores`."""
    scores["skill"] = rounded(1.0 - scores[metric] / result[best_naive][metric])
    original = result.get("original", {}).get(metric)
    if original:
        scores["skill_vs_original"] = rounded(1.0 - scores[metric] / original)


def _chart_membership(panel: ChartPanel) -> set[tuple[str, int]]:
    return set(zip(panel.charts["region"], panel.charts["week"], strict=True))


def _in_charts(regions: np.ndarray, weeks: np.ndarray, charts: set[tuple[str, int]]) -> np.ndarray:
    return np.fromiter(((r, int(w)) in charts for r, w in zip(regions, weeks, strict=True)), bool, len(weeks))


def _merge(first: ChartPanel, second: ChartPanel) -> ChartPanel:
    entries = pd.concat([first.entries, second.entries], ignore_index=True).drop_duplicates(
        ["track", "region", "week"]
    )
    charts = pd.concat([first.charts, second.charts], ignore_index=True).drop_duplicates(["region", "week"])
    return ChartPanel(
        entries.reset_index(drop=True), charts.sort_values(["region", "week"]).reset_index(drop=True)
    )


@dataclass
class ChartSplit:
    """One horizon's training and test anchors of a charts evaluation, and the origin between them."""

    train: ChartSet
    test: ChartSet
    regions: list[str]
    origin: int


def chart_splits(
    train_paths: Sequence[Path],
    test_paths: Sequence[Path],
    *,
    train_spacing: str = "weekly",
    test_spacing: str = "weekly",
) -> dict[int, ChartSplit]:
    """Per horizon: test pairs are the anchors whose outcome (the region's chart H weeks later) is in the
    test files; training pairs have anchor and outcome in the training files, all observed by the origin.
    A spacing other than weekly thins that side's files (`panel.thin_charts`: monthly, irregular). The
    training pairs come twice: as the files give them and seen through a monthly-thinned history (as the
    trainer does)."""
    train_panel = thin_charts(chart_panel_from_files(train_paths), train_spacing)
    test_panel = thin_charts(chart_panel_from_files(test_paths), test_spacing)
    panel = _merge(train_panel, test_panel)
    regions = regions_of(panel)
    features = chart_features(panel, regions)
    train_charts, test_charts = _chart_membership(train_panel), _chart_membership(test_panel)
    splits: dict[int, ChartSplit] = {}
    skipped: list[str] = []
    for label, horizon in CHART_HORIZONS.items():
        try:
            charts = (train_charts, test_charts)
            splits[horizon] = _chart_split(panel, features, regions, label, horizon, *charts)
        except NotEnoughData as exc:
            skipped.append(str(exc))
    if not splits:
        raise NotEnoughData("; ".join(skipped))
    return splits


def _chart_split(
    panel: ChartPanel,
    features: pd.DataFrame,
    regions: list[str],
    label: str,
    horizon: int,
    train_charts: set[tuple[str, int]],
    test_charts: set[tuple[str, int]],
) -> ChartSplit:
    """One horizon's training and test anchors, cut at the origin; NotEnoughData when either is too thin."""
    first_train_week = min(week for _, week in train_charts)
    data = chart_set(panel, horizon, regions, features=features, tolerance=OUTCOME_TOLERANCE_WEEKS)
    outcome_week = data.week + horizon - data.outcome_early
    in_train = _in_charts(data.region, data.week, train_charts) & _in_charts(
        data.region, outcome_week, train_charts
    )
    # A test anchor's outcome is the chart exactly H weeks later, as scored everywhere.
    in_test = (data.outcome_early == 0) & _in_charts(data.region, outcome_week, test_charts)
    if not in_test.any():
        raise NotEnoughData(f"{label}: no test chart is {horizon} weeks after a chart in the files")
    origin = max(int(data.week[in_test].min()), first_train_week + horizon + MIN_TRAIN_ANCHOR_WEEKS)
    # Known by the origin: t+H itself, not only an outcome read early (the files stop there for training).
    train_mask = in_train & (data.week + horizon <= origin)
    test_mask = in_test & (data.week >= origin)
    if train_mask.sum() < MIN_TEST_ANCHORS or test_mask.sum() < MIN_TEST_ANCHORS:
        raise NotEnoughData(
            f"{label}: {int(train_mask.sum())} training and {int(test_mask.sum())} test anchors "
            "around the origin; give more weeks of charts"
        )
    anchors = data.take(train_mask)
    since = oldest_fitted_time(anchors.week, horizon)  # copies no fit reads are not made
    train = with_history_copies(
        anchors, panel, horizon, regions, tolerance=OUTCOME_TOLERANCE_WEEKS, since=since
    )
    keep = ~train.thinned | (
        _in_charts(train.region, train.week, train_charts)
        & _in_charts(train.region, train.week + horizon - train.outcome_early, train_charts)
        & (train.week + horizon <= origin)
    )
    return ChartSplit(train.take(keep), data.take(test_mask), regions, origin)


def eval_charts(
    train_paths: Sequence[Path],
    test_paths: Sequence[Path],
    *,
    train_spacing: str = "weekly",
    test_spacing: str = "weekly",
) -> dict[str, Any]:
    """The charts evaluation: per horizon, what would be served, the model and every baseline on the same
    test anchors; a horizon the files cannot test (no outcome H weeks after an anchor) says why."""
    splits = chart_splits(train_paths, test_paths, train_spacing=train_spacing, test_spacing=test_spacing)
    first = splits[min(splits)]
    result: dict[str, Any] = {}
    for label, horizon in CHART_HORIZONS.items():
        split = splits.get(horizon)
        if split is None:
            result[label] = {
                "skipped": f"too few {label} pairs: each needs its anchor in the files and its outcome "
                f"{horizon} weeks later in the test files"
            }
            continue
        scores, _ = score_chart_split(
            split.train, split.test, horizon, split.regions, original_train=first.train.observed
        )
        scores["origin_week"] = str(week_date(split.origin))
        result[label] = scores
    return result


def eval_popularity(train_paths: Sequence[Path], test_paths: Sequence[Path]) -> dict[str, Any]:
    """The popularity evaluation: model, persistence, drift and the original regression per horizon."""
    train_panel = popularity_panel_from_files(train_paths)
    test_panel = popularity_panel_from_files(test_paths)
    train_songs, test_songs = set(train_panel.obs["song"]), set(test_panel.obs["song"])
    split = "files"
    if len(test_songs - train_songs) < MIN_TEST_SONGS:
        # The same (or overlapping) files on both sides: hold out a fixed fifth of the songs instead.
        held_out = {song for song in test_songs if zlib.crc32(song.encode()) % 5 == 0}
        train_panel = train_panel.restrict(songs=train_songs - held_out)
        test_panel = test_panel.restrict(songs=held_out)
        split = "songs"
    else:
        test_panel = test_panel.restrict(songs=test_songs - train_songs)
    train_features, test_features = popularity_features(train_panel), popularity_features(test_panel)
    result: dict[str, Any] = {}
    first_train: PopularitySet | None = None
    skipped: list[str] = []
    for label, horizon in POPULARITY_HORIZONS.items():
        train = popularity_set(train_panel, horizon, features=train_features)
        test = popularity_set(test_panel, horizon, features=test_features)
        if len(train) < MIN_TEST_ANCHORS or len(test) < MIN_TEST_ANCHORS:
            skipped.append(
                f"{label}: {len(train)} training and {len(test)} test pairs {horizon} days apart; "
                "give longer histories"
            )
            result[label] = {"skipped": skipped[-1]}
            continue
        first_train = first_train or train
        scores = score_popularity_split(train, test, horizon, first_train)
        scores["n_train"], scores["n_test"] = len(train), len(test)
        scores["test_songs"] = int(len(set(test.song)))
        scores["split"] = split
        result[label] = scores
    if len(skipped) == len(POPULARITY_HORIZONS):
        raise NotEnoughData("; ".join(skipped))
    return result


def score_popularity_split(
    train: PopularitySet, test: PopularitySet, horizon: int, original_train: PopularitySet
) -> dict[str, Any]:
    """What would be served (chosen on rolling-origin folds of the training pairs), the model and every
    baseline on the test pairs."""

    def make() -> PopularityForecaster:
        return PopularityForecaster(horizon=horizon)

    folds = backtest_popularity(train, horizon, make, step=BACKTEST_STEP_WEEKS * 7, keep_forecasts=True)
    model = make().fit(train, calibrated_by=folds.calibration if folds else None)
    model.baselines = PopularityBaselines().fit(train, original_train)
    model.serving = folds.rule if folds else None
    own, bases = model.predict_model(test.X), model.baselines.predict(test.X)
    updating = replay(
        folds.forecasts if folds else None, model.serving, (own, bases, test),
        times=lambda data: data.day, level=test.current, concat=concat_popularity_sets,
        select=select_popularity, horizon=horizon, step=BACKTEST_STEP_WEEKS * 7, every=7,
    )  # fmt: skip
    clipped = {key: np.clip(values, 0, 100) for key, values in updating.forecast.items()}
    scores: dict[str, Any] = {
        "served": popularity_metrics(model.predict(test.X), test),
        "served_updating": _updating_scores(updating, popularity_metrics(clipped, test)),
        "model": popularity_metrics(own, test),
    }
    for name, pred in bases.items():
        scores[name] = popularity_metrics(pred, test)
    _describe_served(scores, model.serving, "mae")
    _skill_of_updating(scores, "mae")
    return scores


def run_eval(
    kind: Literal["charts", "popularity"],
    train: Sequence[Path | str],
    test: Sequence[Path | str],
    *,
    train_spacing: str = "weekly",
    test_spacing: str = "weekly",
) -> dict[str, Any]:
    """Train on `train` files, score on `test` files; the JSON shape of `songpop eval --json`. The spacings
    thin chart files to the first of each month (`monthly`), as someone downloading monthly has them, or to
    one every 1 to 6 weeks at random (`irregular`)."""
    train_paths, test_paths = [Path(p) for p in train], [Path(p) for p in test]
    if kind == "charts":
        return eval_charts(train_paths, test_paths, train_spacing=train_spacing, test_spacing=test_spacing)
    if kind == "popularity":
        return eval_popularity(train_paths, test_paths)
    raise ValueError(f"unknown eval kind {kind!r}: use charts or popularity")


METRIC_ORDER = ("cmae", "auc", "mae", "coverage80", "top20", "skill")
FORECASTER_ORDER = ("served", "served_updating", "model", "persistence", "naive", "drift", "original")


HELD_OUT_NOTE = (
    "no fold {horizon} ahead in the training files: chosen on held-out songs of their weeks, which show "
    "nothing of a later period, so only a naive answer serves"
)


def format_eval_table(result: dict[str, Any]) -> str:
    """A plain-text table of an eval result: one line per horizon and forecaster."""
    lines: list[str] = []
    for horizon, scores in result.items():
        if "skipped" in scores:
            lines.append(f"{horizon:<8} skipped: {scores['skipped']}")
            continue
        metrics = [m for m in METRIC_ORDER if any(m in v for v in scores.values() if isinstance(v, dict))]
        if not any(line.startswith("horizon") for line in lines):
            lines.insert(0, f"{'horizon':<8} {'forecaster':<16} " + " ".join(f"{m:>10}" for m in metrics))
        for name in FORECASTER_ORDER:
            if name not in scores:
                continue
            cells = " ".join(f"{_cell(scores[name].get(m)):>10}" for m in metrics)
            label = f"served:{scores[name].get('method')}" if name == "served" else name
            lines.append(f"{horizon:<8} {label:<16} {cells}")
            if name == "served" and scores[name].get("out_of_time") is False:
                lines.append(f"{'':<8} {HELD_OUT_NOTE.format(horizon=horizon)}")
        extra = {k: v for k, v in scores.items() if not isinstance(v, dict)}
        if extra:
            lines.append(f"{'':<8} " + ", ".join(f"{k}={v}" for k, v in extra.items()))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
