"""The weekly retrain's choice replayed over a test period, for `songpop eval`.

In production the trainer retrains every week on what the database holds, so the method that serves and its
interval widths are chosen on the latest two half-years of anchors whose outcome is already known. A one-shot
split freezes that choice at the end of the training files, as if no outcome of the test period ever arrived.
The replay does what the weekly retrain does with those outcomes: before each week of test anchors (from
week u), the rule is chosen again, by the same `select`, on the anchors whose outcome was known by u
(t + H <= u) in the latest two windows of `step` anchor times before it: the training folds' forecasts and
the test anchors already resolved. Nothing an anchor forecasts from happens after its week. The learned model
and the baselines stay those fitted on the training files (a retrain would refit them too: not replayed, to
keep the evaluation affordable), so the replay measures what choosing and calibrating on fresh outcomes is
worth, not what refitting is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.forecasting.backtest import FoldForecasts
from shared.forecasting.selection import MIN_SEGMENT_ANCHORS, ServingRule

Forecast = dict[str, np.ndarray]
Test = tuple[Forecast, dict[str, Forecast], Any]  # the model's forecast, the baselines', the anchors
Select = Callable[..., ServingRule]  # (model, baselines, anchors, window, current=the serving candidate)


@dataclass
class Replayed:
    """The served forecast of every test anchor under the rule in force at its time, and which rules served
    (method name -> share of the test anchors)."""

    forecast: Forecast
    methods: dict[str, float]
    updates: int  # rules chosen again on test outcomes


def replay(
    folds: FoldForecasts | None,
    rule: ServingRule | None,
    test: Test,
    *,
    times: Callable[[Any], np.ndarray],
    level: np.ndarray,
    concat: Callable[[list[Any]], Any],
    select: Select,
    horizon: int,
    step: int,
    every: int = 1,
) -> Replayed:
    """Serve the test anchors block by block (`every` anchor times each: a week of anchors, as the trainer
    retrains weekly), each under the rule chosen on the outcomes known at the block's start; blocks before
    enough test outcomes are known keep `rule` (the one chosen on the training files). Held-out songs of the
    training period (folds not out of time) are left out once test outcomes are known: they show nothing out
    of time."""
    model, bases, data = test
    when = times(data)
    pool = _pool(folds, test, concat)
    starts = np.unique(when - (when - when.min()) % every) if len(when) else when
    out: Forecast = {key: np.full(len(when), np.nan) for key in model}
    methods: dict[str, float] = {}
    updates = 0
    current = rule
    for start, end in zip(starts, [*starts[1:], np.inf], strict=True):
        block = (when >= start) & (when < end)
        serving = current.candidate if current is not None else None  # last week's: a challenger must beat it
        chosen = _rule_at(int(start), pool, times, select, horizon, step, folds, serving)
        updates += chosen is not None
        current = chosen if chosen is not None else rule
        part = _take(model, block), {n: _take(f, block) for n, f in bases.items()}
        served = current.apply(*part, level[block]) if current is not None else part[0]
        for key in out:
            out[key][block] = served[key]
        name = current.method if current is not None else "model"
        methods[name] = methods.get(name, 0.0) + float(block.mean())
    return Replayed(out, {name: round(share, 3) for name, share in methods.items()}, updates)


Pool = tuple[Any, Forecast, dict[str, Forecast], np.ndarray]  # anchors, model's, baselines', test mask


def _rule_at(
    start: int,
    pool: Pool,
    times: Callable[[Any], np.ndarray],
    select: Select,
    horizon: int,
    step: int,
    folds: FoldForecasts | None,
    serving: str | None,
) -> ServingRule | None:
    """The rule the weekly retrain would choose at `start`: on the two windows of `step` anchor times whose
    outcomes are known by then; None while fewer than MIN_SEGMENT_ANCHORS test outcomes are."""
    data, model, bases, in_test = pool
    at = times(data)
    known = (at + horizon <= start) & (at > start - horizon - 2 * step)
    if np.sum(known & in_test) < MIN_SEGMENT_ANCHORS:
        return None
    known &= in_test | bool(folds is not None and folds.out_of_time)
    window = (at[known] > start - horizon - step).astype(np.int64)
    chosen_on = _take(model, known), {n: _take(f, known) for n, f in bases.items()}, data.take(known)
    return select(*chosen_on, window, current=serving)


def _take(forecast: Forecast, mask: np.ndarray) -> Forecast:
    return {key: values[mask] for key, values in forecast.items()}


def _pool(folds: FoldForecasts | None, test: Test, concat: Callable[[list[Any]], Any]) -> Pool:
    """The folds' anchors and forecasts followed by the test's; a mask of the test's."""
    model, bases, data = test
    if folds is None:
        return data, model, bases, np.ones(len(data), bool)
    names = [name for name in bases if name in folds.baselines]
    joined = {key: np.concatenate([folds.model[key], model[key]]) for key in model if key in folds.model}
    joined_bases = {
        name: {key: np.concatenate([folds.baselines[name][key], bases[name][key]]) for key in bases[name]}
        for name in names
    }
    in_test = np.r_[np.zeros(len(folds.data), bool), np.ones(len(data), bool)]
    return concat([folds.data, data]), joined, joined_bases, in_test
