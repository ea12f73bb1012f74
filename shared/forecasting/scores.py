"""How a forecaster's answers on labelled anchors are scored: the metrics `eval`, the backtests and the model
cards report, and the interval misses the out-of-time conformal corrections are measured from."""

from __future__ import annotations

import math

import numpy as np

from shared.forecasting.dataset import ChartSet, PopularitySet
from shared.forecasting.metrics import auc, censored_coverage, censored_mae, coverage, mae

TOP_N = 20  # "the 20 songs the model ranks most likely to still chart"


def rounded(value: float | None) -> float | None:
    """Four decimals; None (JSON null) for an undefined metric, e.g. an AUC with one class."""
    return None if value is None or math.isnan(value) else round(float(value), 4)


def chart_metrics(
    pred: dict[str, np.ndarray], data: ChartSet, p_chart: np.ndarray | None
) -> dict[str, float | None]:
    """cmae, auc and coverage80 of one forecaster on a labelled chart set."""
    metrics = {
        "cmae": censored_mae(pred["value"], data.charted, data.future_level, data.future_floor),
        "auc": auc(p_chart, data.charted) if p_chart is not None else float("nan"),
        "coverage80": censored_coverage(
            pred["lower"], pred["upper"], data.charted, data.future_level, data.future_floor
        ),
    }
    return {k: rounded(v) for k, v in metrics.items()}


def coverage_by_outcome(pred: dict[str, np.ndarray], data: ChartSet) -> dict[str, float | None]:
    """80% coverage of the songs still charting at t+H and of those off the chart, apart: the interval of a
    likely dropout can cover the dropouts and miss nearly every survivor, so the pooled figure moves with
    the share of songs that survive (`eval` reports both beside it)."""
    return {
        f"coverage80_{name}": rounded(
            censored_coverage(
                pred["lower"][part], pred["upper"][part], data.charted[part],
                data.future_level[part], data.future_floor[part],
            )
        )
        for name, part in (("charted", data.charted), ("censored", ~data.charted))
    }  # fmt: skip


def popularity_metrics(pred: dict[str, np.ndarray], data: PopularitySet) -> dict[str, float | None]:
    return {
        "mae": rounded(mae(pred["value"], data.future)),
        "coverage80": rounded(coverage(pred["lower"], pred["upper"], data.future)),
    }


def chart_conformity(pred: dict[str, np.ndarray], data: ChartSet) -> np.ndarray:
    """How far each outcome falls below and above the interval (two columns, negative inside); a censored
    outcome, somewhere below the floor, is inside once the interval reaches below the floor and cannot miss
    above (NaN)."""
    level = np.nan_to_num(data.future_level)
    below = np.where(data.charted, pred["lower"] - level, pred["lower"] - data.future_floor)
    above = np.where(data.charted, level - pred["upper"], np.nan)
    return np.column_stack([below, above])


def popularity_conformity(pred: dict[str, np.ndarray], data: PopularitySet) -> np.ndarray:
    """How far each outcome falls below and above the interval (two columns, negative inside)."""
    return np.column_stack([pred["lower"] - data.future, data.future - pred["upper"]])


def top_survivors(score: np.ndarray, data: ChartSet) -> float | None:
    """Of the TOP_N anchors of each chart (region and week) that `score` ranks highest, how many still
    chart H weeks later, on average over the charts with at least TOP_N anchors."""
    order = np.lexsort((-score, data.week, data.region))
    region, week, charted = data.region[order], data.week[order], data.charted[order]
    new_chart = np.r_[True, (region[1:] != region[:-1]) | (week[1:] != week[:-1])]
    starts = np.flatnonzero(new_chart)
    sizes = np.diff(np.r_[starts, len(order)])
    counts = [int(charted[s : s + TOP_N].sum()) for s, n in zip(starts, sizes, strict=True) if n >= TOP_N]
    return rounded(float(np.mean(counts))) if counts else None
