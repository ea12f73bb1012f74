"""Which method serves a signal and horizon, chosen on the most recent rolling-origin folds.

The candidates are the learned model, the naive answers (the chart floor or drift, persistence), the original
static regression, the model's forecast shrunk toward the best naive answer, and for streams the model's
forecast floored at today's chart floor: a likely dropout's point is the low tail of the future floor's
spread, estimated on few and correlated chart weeks, and below today's floor it gains only where the floor
falls while it costs every survivor (2017-20's folds at 52 weeks: the model 7.5% worse than the floor, floored
1.5% better; see docs/forecasting.md). The one with the lowest primary error over the folds serves: since the
naive answers are candidates, a model that loses to them is never served. A candidate that needs fitting
serves only when the folds show it out of time: it must beat the best naive answer on every fold (each is
another recent period: one period's luck does not choose), and over all of them by more than their noise (one
standard error of the mean difference, clustered by song: on a few dozen songs a model's edge is often luck).
Held-out songs of the training period (the fallback of a history too short for a fold with a gap of H) show
nothing out of time, so there the best naive answer serves. Its skill is measured against the best naive
answer (1 - error / naive error).

The trainer chooses again every week, on the latest outcomes known: the method serving now keeps serving
unless the folds' winner is shown better than it by the same test (every fold, and by a standard error
clustered by song or by anchor week, whichever is wider, over at least two weeks), whether or not it still
beats the naive answer by that test itself. Choosing the lowest error anew each week chased noise where few
anchor weeks resolve (monthly files: 200 anchors of one chart file switched methods); see docs/forecasting.md.

The served 80% interval is the served point forecast plus or minus a split-conformal width measured out of
time, on the folds' forecasts (made before their outcomes were known) and on the same censored scoring as the
metric, per tercile of the anchor's level (above its chart's floor, or today's popularity index), and the
widest of the recent folds (each another period: the next one may be as hard as the hardest of them).
Measured around the point, not as a correction of a model's quantile band, since the band of a fold model
(fitted on older weeks) and the final model's differ in scale (2017-19 charts: median half-width 0.23 on the
folds, 0.16 when fitted on all), so a correction measured on one does not transfer to the other.

For streams the outcome is a mixture (still charting, somewhere around its level; or off the chart, covered
once the interval reaches below the floor), so one width per tercile was set by the dropouts that make
80-90% of the folds: it covered 0-38% of the survivors, and the pooled coverage fell wherever more songs
survived than in the folds. The streams interval is instead each song's: the narrowest widths below and
above its point that cover 80% of the mixture its own P(still charting) implies on each recent fold at once
(one pair for all of them, not each end at its widest fold's: a fold whose floors fell needs reach below, one
with more survivors reach above, and the union of the two covered more than 80% of either), with the
survivors' and dropouts' misses measured on the folds' anchors nearest in P(still charting). A dropout's miss
is how far its chart's floor a horizon later lies below the point; on a fold with a gap of H (one period) each
fold's rise of the floors is added back to its dropouts' misses: the widths do not count on the floors rising
again (2017-19's folds had them rising, 2020's stalled or fell).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

NAIVE_METHODS = ("naive", "persistence", "drift")  # the answers that need no model
SHRINK_WEIGHTS = (0.25, 0.5, 0.75)  # the model's share of a shrunk forecast
# Standard errors by which a fitted candidate must beat the best naive answer (and a challenger the method
# serving now) on the folds.
EVIDENCE = 1.0
MIN_SWITCH_WEEKS = 2  # anchor weeks a challenger needs to replace the serving method (on one, the standard
# error clustered by week is zero by construction)
SEGMENTS = 3  # terciles of the anchor's level get their own width
MIN_SEGMENT_ANCHORS = 200  # fewer anchors than this in a tercile: one width for all; in a fold: folds pooled
COVERAGE = 0.8
FLOOR = "naive"  # the streams baseline whose point is today's chart floor
P_GRID = np.linspace(0.0, 1.0, 21)  # P(still charting) at which the mixture's widths are measured

Forecast = dict[str, np.ndarray]


def conformal_width(scores: np.ndarray, coverage: float = COVERAGE) -> float:
    """The split-conformal correction: the `coverage` quantile of the conformity scores (0 without any)."""
    if len(scores) == 0:
        return 0.0
    n = len(scores)
    return float(np.quantile(scores, min(1.0, np.ceil((n + 1) * coverage) / n)))


def blend(model: Forecast, base: Forecast, weight: float) -> Forecast:
    """The model's forecast shrunk toward a baseline's: `weight` of the model, the rest of the baseline."""
    out = {key: weight * model[key] + (1 - weight) * base[key] for key in ("value", "lower", "upper")}
    if "p_chart" in model:
        out["p_chart"] = model["p_chart"]
    return out


def floored(model: Forecast, floor: Forecast) -> Forecast:
    """The model's forecast, its point never below today's chart floor (the floor's answer)."""
    value = np.fmax(model["value"], floor["value"])  # no floor known: the model's point
    return {
        **model,
        "value": value,
        "lower": np.minimum(model["lower"], value),
        "upper": np.maximum(model["upper"], value),
    }


@dataclass
class ServingRule:
    """The method that serves, how it is made of the model and the baselines, its interval correction."""

    method: str = "model"  # "model", "shrunk", or the name of the baseline served
    toward: str = ""  # the baseline served or shrunk toward
    weight: float = 1.0  # the model's share of the point forecast and interval
    skill: float | None = None  # 1 - error / best naive error on the folds (negative: loses)
    best_naive: str = ""
    scores: dict[str, float] = field(default_factory=dict)  # every candidate's primary error on the folds
    fold_skill: list[float] = field(default_factory=list)  # its skill on each fold, the oldest first
    # False: chosen on held-out songs of the training period (no fold with a gap of H yet), where only a naive
    # answer serves. A class default, so rules unpickled from older artifacts read as chosen out of time.
    out_of_time: bool = True
    edges: np.ndarray = field(default_factory=lambda: np.zeros(0))  # level terciles
    widen: np.ndarray = field(default_factory=lambda: np.zeros(1))  # width (or correction) per tercile
    # True: the interval is the point forecast +- `widen`; False (artifacts made before): the served method's
    # band widened by `widen`. A class default, so rules unpickled from older artifacts serve as they did.
    centred: bool = False
    # Streams: the widths below and above the point by P(still charting) (at P_GRID), shape (len(P_GRID), 2);
    # None (popularity, older artifacts): `widen` on both sides.
    mixture: np.ndarray | None = None

    @property
    def candidate(self) -> str:
        """Its name among `select`'s candidates ("model", a baseline's name, "shrunk-0.75")."""
        return f"shrunk-{self.weight:g}" if self.method == "shrunk" else self.method

    def combine(self, model: Forecast, baselines: dict[str, Forecast]) -> Forecast:
        """The served forecast before the interval correction."""
        if self.method == "model" or self.toward not in baselines:
            return dict(model)
        if self.method == "floored":
            return floored(model, baselines[self.toward])
        mixed = blend(model, baselines[self.toward], self.weight)
        # Where the baseline has no answer (a song without a current level), the model's stands.
        return {key: np.where(np.isnan(values), model[key], values) for key, values in mixed.items()}

    def correction(self, level: np.ndarray) -> np.ndarray:
        if len(self.widen) == 1:
            return np.full(len(level), float(self.widen[0]))
        return self.widen[np.searchsorted(self.edges, np.nan_to_num(level))]

    def apply(self, model: Forecast, baselines: dict[str, Forecast], level: np.ndarray) -> Forecast:
        """The served forecast: the chosen combination, its interval measured out of time (never so narrow
        that it excludes the point forecast)."""
        out = self.combine(model, baselines)
        widen = self.correction(level)
        if self.centred and self.mixture is not None and "p_chart" in out:
            at = np.rint(np.clip(np.nan_to_num(out["p_chart"]), 0, 1) * (len(P_GRID) - 1)).astype(np.int64)
            out["lower"], out["upper"] = (
                out["value"] - self.mixture[at, 0],
                out["value"] + self.mixture[at, 1],
            )
            return out
        if self.centred:
            out["lower"], out["upper"] = out["value"] - widen, out["value"] + widen
            return out
        out["lower"] = np.minimum(out["lower"] - widen, out["value"])
        out["upper"] = np.maximum(out["upper"] + widen, out["value"])
        return out

    def card(self) -> dict[str, object]:
        """What the model card and `GET /v1/models` say of the method, with every candidate's fold error."""
        return {
            "method": self.method,
            "toward": self.toward or None,
            "weight": round(self.weight, 3),
            "skill": None if self.skill is None else round(self.skill, 4),
            "best_naive": self.best_naive,
            "fold_skill": [round(skill, 4) for skill in self.fold_skill],
            "out_of_time": self.out_of_time,
            "candidates": {name: round(score, 4) for name, score in self.scores.items()},
        }


def _candidates(baselines: dict[str, Forecast], best_naive: str, streams: bool) -> dict[str, ServingRule]:
    rules = {"model": ServingRule()}
    rules.update({name: ServingRule(method=name, toward=name, weight=0.0) for name in baselines})
    for weight in SHRINK_WEIGHTS:
        rules[f"shrunk-{weight:g}"] = ServingRule(method="shrunk", toward=best_naive, weight=weight)
    if streams and FLOOR in baselines:
        rules["floored"] = ServingRule(method="floored", toward=FLOOR)
    return rules


def select(
    model: Forecast,
    baselines: dict[str, Forecast],
    errors: Callable[[Forecast], np.ndarray],
    conformity: Callable[[Forecast], np.ndarray],
    level: np.ndarray,
    groups: np.ndarray,
    folds: np.ndarray | None = None,
    *,
    out_of_time: bool = True,
    times: np.ndarray | None = None,
    current: str | None = None,
) -> ServingRule:
    """The serving rule chosen on pooled out-of-sample fold forecasts: `errors` gives each anchor's error of a
    forecast (lower is better), `conformity` each anchor's interval miss below and above (two columns; NaN
    above where the outcome cannot miss above: a song off the chart), `level` places anchors in terciles,
    `groups` says which anchors belong to one song (their errors move together), `folds` which fold each
    anchor was forecast in (None: one fold), `times` each anchor's week (a week's errors move together too;
    None: independent); without `out_of_time` (held-out songs of the training period) only the naive answers
    can serve. `current` names the candidate serving now (`ServingRule.candidate`): it stays unless the
    winner is shown better than it."""
    fold = np.zeros(len(level), np.int64) if folds is None else np.asarray(folds)
    when = np.arange(len(level)) if times is None else np.asarray(times)
    naive_errors = {name: errors(baselines[name]) for name in NAIVE_METHODS if name in baselines}
    naive_scores = {name: _mean(e) for name, e in naive_errors.items()}
    best_naive = min(naive_scores, key=lambda name: naive_scores[name]) if naive_scores else ""
    rules = _candidates(baselines, best_naive, streams="p_chart" in model)
    anchor_errors = {name: errors(rule.combine(model, baselines)) for name, rule in rules.items()}
    scores = {name: _mean(e) for name, e in anchor_errors.items()}
    eligible = [
        name
        for name in rules
        if name in NAIVE_METHODS  # a naive answer needs no evidence
        or not best_naive
        or (out_of_time and _shown_better(anchor_errors[name], naive_errors[best_naive], groups, when, fold))
    ]
    winner = min(eligible, key=lambda name: scores[name])  # ties: the earlier (the model first)
    # Held-out songs show nothing out of time: there only a naive answer serves, whatever served before.
    if current in rules and current != winner and (out_of_time or current in NAIVE_METHODS):
        shown = _shown_better(anchor_errors[winner], anchor_errors[current], groups, when, fold)
        if not shown or len(np.unique(when)) < MIN_SWITCH_WEEKS:
            winner = current  # not shown better than what serves: a week's luck does not switch methods
    rule = rules[winner]
    rule.scores, rule.best_naive, rule.out_of_time = scores, best_naive, out_of_time
    if best_naive and naive_scores[best_naive] > 0:
        rule.skill = 1.0 - scores[winner] / naive_scores[best_naive]
        rule.fold_skill = _fold_skill(anchor_errors[winner], naive_errors[best_naive], fold)
    rule.centred = True
    served = rule.combine(model, baselines)
    misses = conformity(point_interval(served))
    _calibrate(rule, np.fmax(misses[:, 0], misses[:, 1]), level, fold)
    if "p_chart" in served:
        if out_of_time and FLOOR in baselines:
            floor_misses = conformity(point_interval(baselines[FLOOR]))
            misses = _without_floor_rise(misses, floor_misses, fold)
        rule.mixture = _mixture_widths(misses, served["p_chart"], fold)
    return rule


def point_interval(forecast: Forecast) -> Forecast:
    """The forecast with an interval of no width at its point: its misses are the widths each anchor needs
    below and above the point (point - outcome, outcome - point; for a song off the chart, how far the point
    is above the floor, and nothing above)."""
    return {**forecast, "lower": forecast["value"], "upper": forecast["value"]}


def _fold_means(values: np.ndarray, fold: np.ndarray) -> np.ndarray:
    return np.array([_mean(values[fold == k]) for k in np.unique(fold)])


def _fold_skill(errors: np.ndarray, naive: np.ndarray, fold: np.ndarray) -> list[float]:
    mine, theirs = _fold_means(errors, fold), _fold_means(naive, fold)
    return [float(1.0 - m / t) if t > 0 else 0.0 for m, t in zip(mine, theirs, strict=True)]


def _shown_better(
    errors: np.ndarray, other: np.ndarray, groups: np.ndarray, times: np.ndarray, fold: np.ndarray
) -> bool:
    """Whether a candidate beats another (the best naive answer, or the method serving now) on every fold
    and clearly over all of them."""
    every_fold = bool(np.all(_fold_means(errors, fold) < _fold_means(other, fold)))
    return every_fold and _clearly_better(errors, other, groups, times)


def _mean(values: np.ndarray) -> float:
    mean = float(np.mean(values)) if len(values) else float("inf")
    return mean if np.isfinite(mean) else float("inf")


def _clearly_better(errors: np.ndarray, other: np.ndarray, groups: np.ndarray, times: np.ndarray) -> bool:
    """Whether the mean error beats the other's by more than EVIDENCE standard errors of the mean paired
    difference, the standard error clustered by group (a song's anchors are not independent draws) or by
    anchor week (a week's anchors share its chart's shock: on a few monthly files each week counts once),
    whichever is wider."""
    diff = errors - other
    if len(diff) == 0 or not np.isfinite(diff).all():
        return False
    centred = diff - float(np.mean(diff))
    stderr = max(_clustered_stderr(centred, groups), _clustered_stderr(centred, times))
    return float(np.mean(diff)) + EVIDENCE * stderr < 0


def _clustered_stderr(centred: np.ndarray, clusters: np.ndarray) -> float:
    _, cluster = np.unique(clusters, return_inverse=True)
    return float(np.sqrt(np.sum(np.bincount(cluster, weights=centred) ** 2))) / len(centred)


def _calibrate(rule: ServingRule, scores: np.ndarray, level: np.ndarray, fold: np.ndarray) -> None:
    """Per-tercile widths of the served interval around its point (one for all when terciles are small),
    each the widest of the folds' split-conformal widths: a fold is another recent period, and a period of
    shock (2020's charts) needs wider intervals than the calm ones pooled with it say."""
    level = np.nan_to_num(level)
    rule.edges = np.quantile(level, np.arange(1, SEGMENTS) / SEGMENTS) if len(level) else np.zeros(0)
    group = np.searchsorted(rule.edges, level)
    sizes = np.bincount(group, minlength=SEGMENTS)
    if len(level) == 0 or sizes.min() < MIN_SEGMENT_ANCHORS:
        rule.edges, group = np.zeros(0), np.zeros(len(level), np.int64)
    rule.widen = np.array(
        [_widest_fold(scores[group == g], fold[group == g]) for g in range(len(rule.edges) + 1)]
    )


def _widest_fold(scores: np.ndarray, fold: np.ndarray) -> float:
    """The largest split-conformal width of the folds with MIN_SEGMENT_ANCHORS anchors (all pooled when none
    has), never negative (an interval does not exclude its own point)."""
    widths = [
        conformal_width(scores[fold == k])
        for k in np.unique(fold)
        if np.sum(fold == k) >= MIN_SEGMENT_ANCHORS
    ]
    return max(0.0, max(widths) if widths else conformal_width(scores))


def _without_floor_rise(misses: np.ndarray, floor_misses: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """The dropouts' misses below as if their fold's floors had not risen: each fold's rise (the median,
    over its dropouts, of how far the floor a horizon later is above today's) added back. A fold is one
    period, and its floors' shared move is one draw of that period's shock: an interval that counts on it
    recurring misses the dropouts of a period whose floors stall or fall. A fall stays (a fold's shock that
    widens, like the widest fold)."""
    out = misses.copy()
    dropped = np.isnan(misses[:, 1])
    for k in np.unique(fold):
        part = dropped & (fold == k)
        if part.any():
            out[part, 0] += max(0.0, -float(np.median(floor_misses[part, 0])))
    return out


def _mixture_widths(misses: np.ndarray, p_chart: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """For each p of P_GRID, the narrowest widths below and above the point that cover COVERAGE of the
    outcome mixture p implies on every fold with as many anchors (all pooled when none has), measured on each
    fold's MIN_SEGMENT_ANCHORS anchors nearest in P(still charting) (the point, and so how far survivors and
    dropouts fall from it, depends on p: a likely survivor's point is on the survivors' curve, a likely
    dropout's low on the floor). One pair that covers each fold, not each end as wide as the widest fold's:
    a fold whose floors fell needs reach below, one with more survivors reach above, and both ends at their
    widest covered more than COVERAGE of either (2021-24: 0.86)."""
    p_chart = np.nan_to_num(p_chart)
    folds = [fold == k for k in np.unique(fold) if np.sum(fold == k) >= MIN_SEGMENT_ANCHORS]
    nearest = []
    for part in folds or [np.ones(len(fold), bool)]:
        order = np.argsort(p_chart[part], kind="stable")
        nearest.append((misses[part][order], p_chart[part][order]))
    widths = np.zeros((len(P_GRID), 2))
    for j, p in enumerate(P_GRID):
        widths[j] = _covering_every(
            [_near(ranked, sorted_p, float(p)) for ranked, sorted_p in nearest], float(p)
        )
    return widths


def _near(ranked: np.ndarray, sorted_p: np.ndarray, p: float) -> np.ndarray:
    """The MIN_SEGMENT_ANCHORS rows (sorted by P(still charting)) nearest to p."""
    half = max(1, min(len(ranked), MIN_SEGMENT_ANCHORS) // 2)
    centre = int(np.searchsorted(sorted_p, p))
    start = int(np.clip(centre - half, 0, max(0, len(ranked) - 2 * half)))
    return ranked[start : start + 2 * half]


def _covering_every(parts: list[np.ndarray], p: float) -> np.ndarray:
    """(below, above) minimising their sum such that on each part p * (its survivors covered) + (1 - p) *
    (its dropouts covered) >= COVERAGE (with split conformal's finite-sample correction); a class without
    anchors never misses."""
    grid = np.linspace(0.0, 1.0, 201)
    below_all = np.concatenate([m[:, 0] for m in parts])
    above_all = np.concatenate([m[:, 1] for m in parts])
    lowers = (
        np.unique(np.r_[0.0, np.maximum(0.0, np.quantile(below_all, grid))])
        if len(below_all)
        else np.zeros(1)
    )
    uppers = np.zeros(1)
    if (~np.isnan(above_all)).any():
        uppers = np.unique(np.r_[0.0, np.maximum(0.0, np.nanquantile(above_all, grid[::4]))])
    enough = np.ones((len(uppers), len(lowers)), bool)
    for misses in parts:
        enough &= _mixture_covered(misses, p, lowers, uppers) >= _target(len(misses))
    if not enough.any():
        return np.array([lowers[-1], uppers[-1]])
    narrowest = enough.argmax(axis=1)  # the narrowest lower width that suffices with each upper width
    total = np.where(enough.any(axis=1), lowers[narrowest] + uppers, np.inf)
    best = int(np.argmin(total))
    return np.array([lowers[narrowest[best]], uppers[best]])


def _target(n: int) -> float:
    return min(1.0, COVERAGE * (n + 1) / max(1, n))


def _mixture_covered(misses: np.ndarray, p: float, lowers: np.ndarray, uppers: np.ndarray) -> np.ndarray:
    """The share of the mixture p implies covered by each (upper, lower) pair of widths: p of the survivors'
    (their misses below and above both within), 1 - p of the dropouts' (their miss below within)."""
    below, above = misses[:, 0], misses[:, 1]
    survived = ~np.isnan(above)
    dropouts = np.sort(below[~survived])
    covered_dropouts = (
        np.searchsorted(dropouts, lowers, side="right") / len(dropouts) if len(dropouts) else 1.0
    )
    covered_survivors = np.ones((len(uppers), len(lowers)))
    for i, upper in enumerate(uppers if survived.any() else []):
        inside = np.sort(below[survived][above[survived] <= upper])
        covered_survivors[i] = np.searchsorted(inside, lowers, side="right") / survived.sum()
    return p * covered_survivors + (1 - p) * covered_dropouts
