"""Forecast metrics: censored MAE on log streams, still-charting AUC, MAE and 80% interval coverage."""

from __future__ import annotations

import numpy as np


def censored_errors(
    pred: np.ndarray, charted: np.ndarray, level: np.ndarray, floor: np.ndarray
) -> np.ndarray:
    """|pred - log streams| when still charted; max(0, pred - log floor) when censored below the floor."""
    return np.where(charted, np.abs(pred - np.nan_to_num(level)), np.maximum(0.0, pred - floor))


def censored_mae(pred: np.ndarray, charted: np.ndarray, level: np.ndarray, floor: np.ndarray) -> float:
    """The mean of `censored_errors`."""
    error = censored_errors(pred, charted, level, floor)
    return float(np.mean(error)) if len(error) else float("nan")


def censored_coverage(
    lower: np.ndarray, upper: np.ndarray, charted: np.ndarray, level: np.ndarray, floor: np.ndarray
) -> float:
    """Share of outcomes inside the interval; a censored outcome (somewhere below the floor) counts as
    covered when the interval reaches below the floor."""
    inside = np.where(
        charted, (lower <= np.nan_to_num(level)) & (np.nan_to_num(level) <= upper), lower <= floor
    )
    return float(np.mean(inside)) if len(inside) else float("nan")


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    label = np.asarray(label, bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = np.asarray(score)[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def mae(pred: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - actual))) if len(actual) else float("nan")


def coverage(lower: np.ndarray, upper: np.ndarray, actual: np.ndarray) -> float:
    inside = (lower <= actual) & (actual <= upper)
    return float(np.mean(inside)) if len(actual) else float("nan")
