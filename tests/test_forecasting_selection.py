"""What serves is chosen on out-of-sample folds and never loses to the naive answers there; features mean the
same whatever the spacing of the chart files; the out-of-time interval correction covers 80%."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from shared.forecasting import backtest, models, training
from shared.forecasting.backtest import (
    BACKTEST_STEP_WEEKS,
    backtest_streams,
    oldest_fitted_time,
    rolling_folds,
)
from shared.forecasting.baselines import ChartBaselines
from shared.forecasting.dataset import (
    OUTCOME_TOLERANCE_WEEKS,
    RESTART_WEEKS,
    RESTARTED_MAX_HORIZON,
    chart_set,
    thinned_chart_set,
    with_history_copies,
)
from shared.forecasting.features import chart_features, chart_targets, restarted_chart_features
from shared.forecasting.metrics import censored_errors
from shared.forecasting.models import OUTCOME_EARLY, StreamsForecaster
from shared.forecasting.panel import ChartPanel, chart_panel_from_rows, thin_charts, week_date, week_index
from shared.forecasting.selection import ServingRule, select
from shared.forecasting.synthetic import synthetic_charts
from shared.forecasting.training import _serving
from shared.models import ModelVersion
from shared.weeks import week_of


def _forecast(value: np.ndarray, spread: float = 1.0) -> dict[str, np.ndarray]:
    return {"value": value, "lower": value - spread, "upper": value + spread}


def _errors_of(actual: np.ndarray):
    return lambda pred: np.abs(pred["value"] - actual)


def _misses_of(actual: np.ndarray):
    return lambda pred: np.column_stack([pred["lower"] - actual, actual - pred["upper"]])


def test_a_baseline_serves_when_every_learned_candidate_loses_to_it() -> None:
    rng = np.random.default_rng(1)
    today = rng.uniform(0, 10, 2000)
    actual = today + rng.normal(0, 0.1, len(today))  # tomorrow is today: persistence is the right answer
    model = _forecast(today + rng.normal(0, 2.0, len(today)))  # a learned model that mostly adds noise
    baselines = {"persistence": _forecast(today), "naive": _forecast(np.full(len(today), 5.0))}
    rule = select(model, baselines, _errors_of(actual), _misses_of(actual), today, np.arange(len(today)))
    assert rule.method == "persistence" and rule.weight == 0.0
    assert rule.skill == 0.0 and rule.best_naive == "persistence"
    assert rule.scores["model"] > rule.scores["persistence"]
    served = rule.apply(model, baselines, today)
    assert np.array_equal(served["value"], today)


def test_the_model_or_a_shrunk_blend_serves_when_it_beats_the_naive_answers() -> None:
    rng = np.random.default_rng(2)
    signal = rng.normal(0, 1, 4000)
    actual = signal + rng.normal(0, 0.5, len(signal))
    model = _forecast(signal)  # knows the signal
    baselines = {"naive": _forecast(np.zeros(len(signal)))}
    rule = select(model, baselines, _errors_of(actual), _misses_of(actual), signal, np.arange(len(signal)))
    assert rule.method == "model" and rule.skill is not None and rule.skill > 0.3
    noisy = _forecast(signal + rng.normal(0, 1.0, len(signal)))  # half right: a blend beats both
    rule = select(noisy, baselines, _errors_of(actual), _misses_of(actual), signal, np.arange(len(signal)))
    assert rule.method == "shrunk" and 0 < rule.weight < 1 and rule.toward == "naive"
    assert rule.scores[f"shrunk-{rule.weight:g}"] < min(rule.scores["model"], rule.scores["naive"])


@pytest.mark.parametrize(("floor_moves", "serves"), [(0.2, "floored"), (-0.5, "model")])
def test_the_model_held_at_the_floor_serves_where_the_folds_show_it_better(
    floor_moves: float, serves: str
) -> None:
    """Likely dropouts get a point below today's floor (the low tail of the floor's spread), which costs
    their few survivors and gains only where the floor falls: with floors rising the model held at today's
    floor beats both the model and the floor and serves; with floors falling the model's own point serves."""
    rng = np.random.default_rng(3)
    n = 6000
    fold, floor = np.repeat(np.arange(2), n // 2), np.zeros(n)
    p_chart = np.where(rng.uniform(size=n) < 0.8, 0.1, 0.9)
    charted = rng.uniform(size=n) < p_chart
    future_floor = floor + floor_moves
    level = np.where(charted, np.maximum(future_floor, 0) + rng.uniform(0.05, 0.5, n), np.nan)
    likely = np.maximum(future_floor, 0) + 0.25  # a likely survivor's point: on the survivors' curve
    model = _forecast(np.where(p_chart > 0.5, likely, floor - 0.3))
    model["p_chart"] = p_chart

    def errors(pred: dict[str, np.ndarray]) -> np.ndarray:
        return censored_errors(pred["value"], charted, level, future_floor)

    def misses(pred: dict[str, np.ndarray]) -> np.ndarray:
        below = np.where(charted, pred["lower"] - np.nan_to_num(level), pred["lower"] - future_floor)
        return np.column_stack([below, np.where(charted, np.nan_to_num(level) - pred["upper"], np.nan)])

    rule = select(model, {"naive": _forecast(floor)}, errors, misses, floor, np.arange(n), fold)
    assert rule.method == serves
    served = rule.apply(model, {"naive": _forecast(floor)}, floor)
    if serves == "floored":
        assert rule.scores["floored"] < min(rule.scores["model"], rule.scores["naive"])
        assert np.array_equal(served["value"], np.maximum(model["value"], floor))
    else:
        assert rule.scores["model"] < rule.scores["floored"]
        assert np.array_equal(served["value"], model["value"])
    popularity = {key: values for key, values in model.items() if key != "p_chart"}  # no chart floor
    rule = select(popularity, {"naive": _forecast(floor)}, errors, misses, floor, np.arange(n), fold)
    assert "floored" not in rule.scores


def test_an_edge_within_the_noise_of_few_songs_does_not_serve() -> None:
    """The model's error is 0.05 lower on average, but whether it wins differs from song to song and a
    song's anchors move together: on 30 songs the edge is within one clustered standard error and the naive
    answer serves; on 3,000 songs the same edge is clear and the model serves."""
    rng = np.random.default_rng(4)

    def rule_for(songs: int) -> str:
        song = np.repeat(np.arange(songs), 40)
        per_song = rng.normal(0, 0.5, songs)
        edge = np.repeat(per_song - per_song.mean() - 0.05, 40)  # exactly 0.05 better on average
        actual = np.zeros(len(song))
        naive, model = _forecast(np.ones(len(song))), _forecast(1.0 + edge)
        chosen = select(model, {"naive": naive}, _errors_of(actual), _misses_of(actual), actual, song)
        assert chosen.scores["model"] < chosen.scores["naive"]
        return chosen.method

    assert rule_for(30) == "naive"
    assert rule_for(3000) in ("model", "shrunk")


def test_a_model_that_loses_on_one_recent_fold_does_not_serve() -> None:
    """Pooled over three folds the model is far better than the naive answer, but on the latest fold (another
    period) it is worse: one period's luck does not choose, the naive answer serves. Where it wins on every
    fold, it serves."""
    rng = np.random.default_rng(5)
    n = 3000
    fold = np.repeat(np.arange(3), n)
    actual = np.zeros(3 * n)
    naive = _forecast(np.full(3 * n, 0.5 + rng.normal(0, 0.05, 3 * n)))
    miss = np.where(fold < 2, 0.1, 0.7)  # better on the two older folds, worse on the latest
    model = _forecast(miss + rng.normal(0, 0.05, 3 * n))
    pooled = select(model, {"naive": naive}, _errors_of(actual), _misses_of(actual), actual, np.arange(3 * n))
    assert pooled.method in ("model", "shrunk")  # what one pooled fold would have chosen
    rule = select(
        model, {"naive": naive}, _errors_of(actual), _misses_of(actual), actual, np.arange(3 * n), fold
    )
    assert rule.scores["model"] < rule.scores["naive"]
    assert rule.method == "naive" and rule.skill == 0.0
    assert len(rule.fold_skill) == 3 and rule.fold_skill[2] == 0.0
    steady = _forecast(np.full(3 * n, 0.1) + rng.normal(0, 0.05, 3 * n))
    rule = select(
        steady, {"naive": naive}, _errors_of(actual), _misses_of(actual), actual, np.arange(3 * n), fold
    )
    assert rule.method == "model" and all(skill > 0.5 for skill in rule.fold_skill)


def test_held_out_songs_of_the_training_period_serve_only_a_naive_answer() -> None:
    """A fold of held-out songs over the training period (no gap of H) shows nothing out of time: even a
    model far better there does not serve."""
    rng = np.random.default_rng(6)
    signal = rng.normal(0, 1, 4000)
    actual = signal + rng.normal(0, 0.1, len(signal))
    model, baselines = _forecast(signal), {"naive": _forecast(np.zeros(len(signal)))}
    args = (model, baselines, _errors_of(actual), _misses_of(actual), signal, np.arange(len(signal)))
    in_time = select(*args)
    assert in_time.method == "model" and in_time.card()["out_of_time"] is True
    rule = select(*args, out_of_time=False)
    assert rule.method == "naive" and rule.skill == 0.0
    assert rule.scores["model"] < rule.scores["naive"]
    assert rule.card()["out_of_time"] is False  # the model card says why a naive answer serves


def test_folds_are_the_latest_windows_whose_models_learn_from_enough_history() -> None:
    weeks = np.repeat(np.arange(200), 10)
    folds = rolling_folds(weeks, 26, step=26, n_folds=3)
    assert [fold.origin for fold in folds] == [122, 148, 174]  # three half-years, the oldest first
    for fold in folds:
        assert weeks[fold.train].max() + 26 <= fold.origin  # every training outcome known by the origin
        assert set(weeks[fold.test]) == set(range(fold.origin, fold.origin + 26))
    # 110 weeks: the oldest window's model would learn from 7 weeks (fewer than it forecasts): left out.
    short = rolling_folds(np.repeat(np.arange(110), 10), 26, step=26, n_folds=3)
    assert [fold.origin for fold in short] == [58, 84]


def test_out_of_time_correction_covers_80_percent_on_new_draws() -> None:
    """Intervals that are far too narrow (and, for one tercile, too wide) are corrected on one sample of a
    known distribution and cover 75-85% of a fresh sample in every tercile."""
    rng = np.random.default_rng(3)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        level = rng.uniform(0, 3, n)
        return level, level + rng.standard_t(5, n) * (0.5 + level)  # noisier at higher levels

    level, actual = draw(6000)
    model = _forecast(level, spread=0.2)
    rule = select(
        model,
        {"naive": _forecast(level * 0)},
        _errors_of(actual),
        _misses_of(actual),
        level,
        np.arange(len(level)),
    )
    new_level, new_actual = draw(20000)
    served = rule.apply(_forecast(new_level, spread=0.2), {"naive": _forecast(new_level * 0)}, new_level)
    inside = (served["lower"] <= new_actual) & (new_actual <= served["upper"])
    assert 0.75 <= inside.mean() <= 0.85
    terciles = np.searchsorted(rule.edges, new_level)
    for group in range(3):
        assert 0.75 <= inside[terciles == group].mean() <= 0.85, group


def test_the_widest_recent_period_covers_80_percent_of_a_new_period_as_hard() -> None:
    """Three recent periods, each noisier than the last: the width is the widest period's, so a new period as
    hard as the hardest of them (a shock after calmer times) is covered 75-85%, where the periods pooled
    under-cover it; the new period drawn like them all is not covered far beyond that either."""
    rng = np.random.default_rng(8)
    scales = (0.6, 1.0, 1.6)
    level = rng.uniform(0, 3, 9000)
    fold = np.repeat(np.arange(3), 3000)
    actual = level + rng.normal(0, 1, 9000) * np.array(scales)[fold]
    model, naive = _forecast(level, spread=0.3), _forecast(level * 0)
    args = (model, {"naive": naive}, _errors_of(actual), _misses_of(actual), level, np.arange(9000))
    per_period, pooled = select(*args, fold), select(*args)
    new_level = rng.uniform(0, 3, 30000)
    noise = rng.normal(0, 1, 30000)

    def covered(rule, scale) -> float:
        new_actual = new_level + noise * scale
        served = rule.apply(_forecast(new_level, spread=0.3), {"naive": _forecast(new_level * 0)}, new_level)
        return float(np.mean((served["lower"] <= new_actual) & (new_actual <= served["upper"])))

    assert 0.75 <= covered(per_period, scales[-1]) <= 0.85
    assert covered(pooled, scales[-1]) < 0.75  # the calmer periods pooled in make it too narrow
    assert per_period.widen.shape == pooled.widen.shape


def _censored_draw(rng, p: np.ndarray, spread: float = 0.5):
    """Chart-like outcomes: a song still charts with probability p, then lands around its forecast level
    (noisier the likelier it stays); otherwise somewhere below the floor (0). Returns the outcome level (NaN
    when off the chart), whether it charts and the floor."""
    charted = rng.uniform(size=len(p)) < p
    level = 1.0 + rng.normal(0, 1, len(p)) * spread * (0.2 + p)
    return np.where(charted, level, np.nan), charted, np.zeros(len(p))


def _chart_scores(level: np.ndarray, charted: np.ndarray, floor: np.ndarray):
    """The censored error and interval miss of the metric (a song off the chart is covered once the
    interval reaches below the floor)."""
    target = np.nan_to_num(level)

    def errors(pred):
        return np.where(charted, np.abs(pred["value"] - target), np.maximum(0.0, pred["value"] - floor))

    def misses(pred):
        below = np.where(charted, pred["lower"] - target, pred["lower"] - floor)
        return np.column_stack([below, np.where(charted, target - pred["upper"], np.nan)])

    return errors, misses


def _censored_coverage(served, level: np.ndarray, charted: np.ndarray, floor: np.ndarray) -> float:
    target = np.nan_to_num(level)
    inside = (served["lower"] <= target) & (target <= served["upper"])
    return float(np.mean(np.where(charted, inside, served["lower"] <= floor)))


def test_widths_by_p_chart_cover_80_percent_when_the_mix_of_songs_shifts() -> None:
    """Calibrated on folds of mostly likely dropouts (low P(still charting)), served on a period of mostly
    likely survivors (as 2020's and 2021-24's charts kept more songs than the folds before them): the widths
    of each song's outcome mixture, by its P(still charting), cover 75-85% of the new mix, of each of the
    folds' level terciles, and most survivors and dropouts each, on the censored score; one symmetric width
    for all does not."""
    rng = np.random.default_rng(11)
    p_fold = rng.beta(1.0, 3.0, 9000)  # mostly dropouts
    level, charted, floor = _censored_draw(rng, p_fold)
    value = np.where(p_fold >= 0.5, 1.0, 0.0)  # the censored-error minimiser: the level, else the floor
    model = {**_forecast(value, spread=0.0), "p_chart": p_fold}
    errors, misses = _chart_scores(level, charted, floor)
    base = {"naive": _forecast(floor)}
    songs = np.arange(len(value))
    rule = select(model, base, errors, misses, p_fold, songs)  # the level: here the chance to stay
    assert rule.centred and rule.mixture is not None
    p_new = rng.beta(3.0, 1.0, 30000)  # mostly survivors
    new_level, new_charted, new_floor = _censored_draw(rng, p_new)
    new_value = np.where(p_new >= 0.5, 1.0, 0.0)
    new_model = {**_forecast(new_value, spread=0.0), "p_chart": p_new}
    served = rule.apply(new_model, {"naive": _forecast(new_floor)}, p_new)
    coverage = _censored_coverage(served, new_level, new_charted, new_floor)
    assert 0.75 <= coverage <= 0.85
    tercile = np.searchsorted(rule.edges, p_new)  # the folds' level terciles
    for part in [tercile == group for group in np.unique(tercile)]:
        piece = {key: values[part] for key, values in served.items()}
        assert 0.75 <= _censored_coverage(piece, new_level[part], new_charted[part], new_floor[part]) <= 0.85
    for part in (new_charted, ~new_charted):
        piece = {key: values[part] for key, values in served.items()}
        assert _censored_coverage(piece, new_level[part], new_charted[part], new_floor[part]) > 0.65
    # One symmetric width for all, without P(still charting) (the widths of rules made before, one tercile):
    # set by the dropouts that make most of the folds, it leaves most of the new period's survivors out.
    one_width = dataclasses.replace(
        select(model, base, errors, misses, np.zeros(len(value)), songs), mixture=None
    )
    flat = one_width.apply(new_model, {"naive": _forecast(new_floor)}, np.zeros(len(p_new)))
    assert _censored_coverage(flat, new_level, new_charted, new_floor) < 0.75
    piece = {key: values[new_charted] for key, values in flat.items()}
    assert (
        _censored_coverage(piece, new_level[new_charted], new_charted[new_charted], new_floor[new_charted])
        < 0.65
    )


def _two_sided_period(rng, n: int, fell: bool):
    """A period whose chart floors fell by 0.5 over the horizon and whose survivors land close to their point,
    or one whose floors held and whose survivors scatter widely around it (point 1 for likely survivors, the
    floor 0 for the others)."""
    p = rng.beta(1.5, 3.0, n)
    charted = rng.uniform(size=n) < p
    level = np.where(charted, 1.0 + rng.normal(0, 0.3 if fell else 1.0, n), np.nan)
    floor = (-0.5 if fell else 0.0) + rng.normal(0, 0.1, n)
    point = np.where(p >= 0.5, 1.0, 0.0)
    return {**_forecast(point, spread=0.0), "p_chart": p}, level, charted, floor


def test_one_pair_of_widths_covers_each_fold_without_both_ends_at_their_widest() -> None:
    """One fold needs reach below (its floors fell), the other reach above (its survivors scatter): the widths
    that cover 80% on each fold at once cover 75-85% of new draws of either period, where each end as wide as
    the widest fold's (the union of the folds' own intervals) covers more than 85% of both."""
    rng = np.random.default_rng(13)
    periods = [_two_sided_period(rng, 6000, fell) for fell in (True, False)]
    fold = np.repeat([0, 1], 6000)

    def chosen(parts: list, folds: np.ndarray | None) -> tuple[ServingRule, np.ndarray]:
        model = {key: np.concatenate([part[0][key] for part in parts]) for key in parts[0][0]}
        level, charted, floor = (np.concatenate([part[i] for part in parts]) for i in (1, 2, 3))
        errors, misses = _chart_scores(level, charted, floor)
        zeros = _forecast(np.zeros(len(level)))
        rule = select(model, {"naive": zeros}, errors, misses, model["p_chart"], np.arange(len(level)), folds)
        assert rule.mixture is not None
        return rule, rule.mixture

    rule, widths = chosen(periods, fold)
    each_widest = np.maximum(chosen(periods[:1], None)[1], chosen(periods[1:], None)[1])
    widest = dataclasses.replace(rule, mixture=each_widest)
    assert widths.sum() < each_widest.sum()
    for fell in (True, False):
        new_period = _two_sided_period(rng, 30000, fell)
        assert 0.75 <= _covered(rule, new_period) <= 0.85
        assert _covered(widest, new_period) > 0.85


def _covered(rule: ServingRule, period: tuple) -> float:
    model, level, charted, floor = period
    served = rule.apply(model, {"naive": _forecast(np.zeros(len(level)))}, model["p_chart"])
    return _censored_coverage(served, level, charted, floor)


def test_the_interval_does_not_depend_on_the_scale_of_the_model_band() -> None:
    """The fold models' quantile band is wide, the final model's (fitted on more weeks) narrow, the outcomes
    alike: the interval, measured around the point, covers 75-85% of the new period all the same, where a
    correction of the band measured on the folds would not."""
    rng = np.random.default_rng(12)
    level = rng.uniform(0, 3, 6000)
    actual = level + rng.normal(0, 1, 6000)
    naive = _forecast(level * 0)
    fold_model = _forecast(level, spread=2.0)
    rule = select(
        fold_model, {"naive": naive}, _errors_of(actual), _misses_of(actual), level, np.arange(6000)
    )
    assert rule.centred and rule.method == "model"
    new_level = rng.uniform(0, 3, 30000)
    new_actual = new_level + rng.normal(0, 1, 30000)
    served = rule.apply(_forecast(new_level, spread=0.2), {"naive": _forecast(new_level * 0)}, new_level)
    assert 0.75 <= np.mean((served["lower"] <= new_actual) & (new_actual <= served["upper"])) <= 0.85
    # What a correction of the band would be: the width needed minus the fold band's half-width.
    banded = dataclasses.replace(rule, centred=False, widen=rule.widen - 2.0)
    old = banded.apply(_forecast(new_level, spread=0.2), {"naive": _forecast(new_level * 0)}, new_level)
    assert np.mean((old["lower"] <= new_actual) & (new_actual <= old["upper"])) < 0.75


def test_a_rule_of_an_older_artifact_widens_its_band_as_before() -> None:
    """Rules unpickled from artifacts made before the centred interval lack its fields: they serve the
    method's band widened by their correction, as they did."""
    rule = ServingRule(widen=np.array([0.5]))
    assert not rule.centred
    value = np.array([1.0, 2.0])
    served = rule.apply(_forecast(value, spread=1.0), {}, value)
    assert np.array_equal(served["lower"], value - 1.5) and np.array_equal(served["upper"], value + 1.5)


def _panel(weeks: dict[str, list[int]], chart_weeks: list[int]):
    """A region's charts in `chart_weeks` (a filler song on each) and songs on the charts of their weeks."""
    start = week_index(dt.date(2021, 1, 4))
    rows = [("filler", "it", week_date(start + w), 2, 1000, "x", "f") for w in chart_weeks]
    for song, on in weeks.items():
        rows += [(song, "it", week_date(start + w), 1, 5000, "a", song) for w in on]
    return chart_panel_from_rows(rows)


def test_a_week_without_a_file_is_unobserved_not_off_the_chart() -> None:
    # Files in weeks 1 and 5 only: the song is on both, so at week 5 it has not been off the chart.
    cases = {
        "sparse": _panel({"s": [1, 5]}, [1, 5]),
        "weekly": _panel({"s": [1, 2, 3, 4, 5]}, [1, 2, 3, 4, 5]),
        "gap": _panel({"s": [1, 5]}, [1, 2, 3, 4, 5]),  # files every week: weeks 2-4 off the chart
    }
    last = {}
    for name, panel in cases.items():
        song = panel.entries[panel.entries["track"] == "s"]
        last[name] = chart_features(panel).loc[song["week"].idxmax()]
    assert last["sparse"]["streak"] == last["weekly"]["streak"] == 5
    assert last["gap"]["streak"] == 1
    assert last["sparse"]["chart_share"] == last["weekly"]["chart_share"] == 1.0
    assert last["gap"]["chart_share"] == 0.4
    assert last["sparse"]["charted_prev"] == 1.0 and last["sparse"]["gap_prev"] == 4
    assert np.isnan(last["sparse"]["charted_1"])  # no file a week earlier: unknown, not absent
    assert last["gap"]["charted_1"] == 0.0


def _synthetic_panel(weeks: int = 80) -> ChartPanel:
    frame = synthetic_charts(regions=2, weeks=weeks, size=30, seed=5)
    return chart_panel_from_rows(
        (t, r, week_of(w), int(k), s, a, n)
        for t, r, w, k, s, a, n in frame[
            ["track", "region", "week", "rank", "streams", "artist", "name"]
        ].values
    )


def test_irregular_thinning_keeps_a_file_every_1_to_6_weeks_the_same_on_every_run() -> None:
    panel = _panel({"s": list(range(200))}, list(range(200)))
    thin = thin_charts(panel, "irregular")
    gaps = np.diff(np.sort(thin.charts["week"].to_numpy()))
    assert gaps.min() >= 1 and gaps.max() <= 6 and len(set(gaps.tolist())) > 3  # random, within bounds
    assert thin.charts["week"].min() == panel.charts["week"].min()
    assert thin.charts["week"].tolist() == thin_charts(panel, "irregular").charts["week"].tolist()


@pytest.mark.parametrize(("spacing", "gaps"), [("monthly", {4, 5}), ("irregular", set(range(1, 7)))])
def test_thinning_changes_no_feature_the_kept_files_still_determine(spacing: str, gaps: set[int]) -> None:
    panel = _synthetic_panel()
    thin = thin_charts(panel, spacing)
    assert 0 < len(thin.entries) < len(panel.entries) / 3
    full, thinned = chart_features(panel), chart_features(thin)
    kept = full.loc[thin.entries.index]
    # What a song's own entry and its chart say does not depend on the other files.
    for column in ("rank", "level", "log_floor", "above_floor", "regions_now", "week_of_year"):
        assert np.array_equal(kept[column].to_numpy(), thinned[column].to_numpy(), equal_nan=True), column
    # Lags read at weeks without a file are unknown, never "off the chart".
    lag1 = thinned["charted_1"].to_numpy()
    no_file_a_week_before = (thinned["gap_prev"] != 1).to_numpy()
    assert np.isnan(lag1[no_file_a_week_before]).all()
    assert set(np.unique(thinned["gap_prev"].dropna())) <= gaps


def test_restarted_copies_see_each_block_as_if_the_files_began_there() -> None:
    """A song on every weekly file for 60 weeks: in its copy at week 30 (the second block of 26 weeks, from
    week 26) it has been charting for 5 weeks, with no file before week 26, where the full history says 31;
    what its own entry and chart say is the same."""
    panel = _panel({"s": list(range(60))}, list(range(60)))
    regions = ["it"]
    full = chart_features(panel, regions)
    restarted = restarted_chart_features(panel, regions, RESTART_WEEKS)
    song = panel.entries[panel.entries["track"] == "s"]
    at = song.index[song["week"] - song["week"].min() == 30][0]
    assert full.loc[at, "weeks_on_chart"] == 31 and restarted.loc[at, "weeks_on_chart"] == 5
    assert restarted.loc[at, "charts_52"] == 5
    assert np.isnan(restarted.loc[at, "charted_8"])  # before the block: unknown, not off the chart
    for column in ("rank", "level", "log_floor", "above_floor", "week_of_year"):
        assert restarted.loc[at, column] == full.loc[at, column], column
    block = panel.entries.index[panel.entries["week"] - panel.entries["week"].min() < RESTART_WEEKS]
    assert full.loc[block].equals(restarted.loc[block])  # the first block is the files' own beginning


def test_restarted_copies_train_the_26_week_models_and_are_never_scored() -> None:
    panel = _synthetic_panel(weeks=140)
    regions = sorted(panel.charts["region"].unique())
    for horizon in (26, 52):
        data = chart_set(panel, horizon, regions)
        with_copies = with_history_copies(data, panel, horizon, regions)
        copies = len(with_copies) - len(data)
        monthly = thinned_chart_set(panel, horizon, regions)
        assert monthly is not None and copies >= len(monthly)
        # at 26 weeks every anchor comes once more, through its block's history; at 52 weeks it does not
        assert (copies - len(monthly) == len(data)) == (horizon <= RESTARTED_MAX_HORIZON)
        assert with_copies.observed.track.tolist() == data.track.tolist()  # what is scored: the anchors alone


def test_copies_older_than_any_fit_reads_are_not_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fit keeps its MAX_TRAIN_ROWS most recent rows: copies of anchors older than the oldest fold's
    reach change neither the backtest nor the final model, so they are not made (memory)."""
    for module in (models, backtest):
        monkeypatch.setattr(module, "MAX_TRAIN_ROWS", 1_200)
    panel = _synthetic_panel(weeks=140)
    regions = sorted(panel.charts["region"].unique())
    data = chart_set(panel, 26, regions)
    since = oldest_fitted_time(data.week, 26)
    every = with_history_copies(data, panel, 26, regions)
    recent = with_history_copies(data, panel, 26, regions, since=since)
    assert since > data.week.min() and len(recent) < len(every)

    def make() -> StreamsForecaster:
        return StreamsForecaster(horizon=26, regions=regions)

    first, second = (
        backtest_streams(d, 26, regions, make, step=BACKTEST_STEP_WEEKS) for d in (every, recent)
    )
    assert first is not None and second is not None
    assert first.model == second.model and first.rule.scores == second.rule.scores
    for key, values in make().fit(every).predict_model(data.X).items():
        assert np.array_equal(values, make().fit(recent).predict_model(data.X)[key]), key
    too_few = with_history_copies(data, panel, 26, regions, since=int(data.week.max()) - 26)
    third = backtest_streams(too_few, 26, regions, make, step=BACKTEST_STEP_WEEKS)
    assert third is not None and third.model != first.model  # copies within the fits' reach do count


def test_a_sparse_history_labels_training_anchors_from_the_latest_earlier_file() -> None:
    # Files in weeks 0, 2, 3, 6 and 12: at 4 weeks, the anchors of week 0 have no file at week 4, one at 3.
    panel = _panel({"s": [0, 2, 3], "t": [0]}, [0, 2, 3, 6, 12])
    exact, near = chart_targets(panel, 4), chart_targets(panel, 4, tolerance=2)
    entries = panel.entries
    at = pd.MultiIndex.from_arrays([entries["track"], entries["week"] - entries["week"].min()])
    s0, t0, s3 = at.get_loc(("s", 0)), at.get_loc(("t", 0)), at.get_loc(("s", 3))
    assert not exact["observable"].iloc[[s0, t0]].any()
    # Read at week 3, never at week 6 (later than t+H).
    assert near.iloc[s0][["observable", "charted", "outcome_early"]].tolist() == [True, True, 1]
    assert near.iloc[t0][["observable", "charted"]].tolist() == [True, False]  # off the chart at week 3
    assert near.iloc[t0]["future_floor"] == panel.charts["log_floor"].iloc[2]
    # Week 3's outcome would be week 7: the files pause from week 6 to 12, longer than sparse files do.
    assert not near.iloc[s3]["observable"]


def test_outcomes_read_early_add_training_anchors_and_leave_the_scored_ones_as_they_were() -> None:
    thin = thin_charts(_synthetic_panel(), "irregular")
    regions = sorted(thin.charts["region"].unique())
    exact = chart_set(thin, 26, regions)
    data = chart_set(thin, 26, regions, tolerance=OUTCOME_TOLERANCE_WEEKS)
    assert len(data) > 1.5 * len(exact) and (exact.outcome_early == 0).all()
    assert set(np.unique(data.outcome_early)) <= set(range(OUTCOME_TOLERANCE_WEEKS + 1))
    scored = data.observed  # what folds and splits score: the exact week only, the same anchors and outcomes
    assert np.array_equal(scored.track, exact.track) and np.array_equal(scored.week, exact.week)
    for name in ("charted", "future_level", "future_floor"):
        assert np.array_equal(getattr(scored, name), getattr(exact, name), equal_nan=True), name
    model = StreamsForecaster(horizon=26, regions=regions).fit(data)
    assert OUTCOME_EARLY in model.features  # the trees learn what reading early changes
    forecast = model.predict_model(exact.X)  # and forecast for exactly t+H (the column is absent there)
    assert np.isfinite(forecast["value"]).all()


def test_the_trainer_learns_from_outcomes_read_early_on_sparse_files() -> None:
    panel = thin_charts(_synthetic_panel(weeks=140), "irregular")
    work = training._streams_work(panel, 26, training.default_config("streams"), False, None)
    assert work is not None
    candidate, fit = work
    assert OUTCOME_EARLY in fit().features and len(candidate.backtest.folds) == 2


def test_a_fold_whose_anchors_all_read_their_outcome_early_is_not_scored() -> None:
    panel = _synthetic_panel(weeks=140)
    regions = sorted(panel.charts["region"].unique())
    data = chart_set(panel, 26, regions, tolerance=OUTCOME_TOLERANCE_WEEKS)
    latest = rolling_folds(data.week, 26, step=BACKTEST_STEP_WEEKS)[-1]
    data.outcome_early[latest.test] = 1  # nothing in the latest window is scored

    def make() -> StreamsForecaster:
        return StreamsForecaster(horizon=26, regions=regions)

    result = backtest_streams(data, 26, regions, make, step=BACKTEST_STEP_WEEKS)
    assert result is not None and latest.origin not in result.folds and result.folds


def test_the_original_regression_answers_the_floor_beyond_the_streams_it_was_fitted_on() -> None:
    panel = _synthetic_panel()
    regions = sorted(panel.charts["region"].unique())
    data = chart_set(panel, 26, regions)
    baselines = ChartBaselines().fit(data)
    grown = data.X.assign(level=data.X["level"] + 5.0, log_floor=data.X["log_floor"] + 5.0)  # streams x150
    inside, beyond = baselines.points(data.X), baselines.points(grown)
    assert not np.allclose(inside["original"], inside["naive"])  # the regression answers in its range
    assert np.array_equal(beyond["original"], beyond["naive"])  # and the floor far beyond it


def test_monthly_thinning_keeps_the_first_file_of_each_month() -> None:
    panel = _panel({"s": list(range(10))}, list(range(10)))
    thin = thin_charts(panel, "monthly")
    months = pd.Series([week_date(int(w)) for w in thin.charts["week"]])
    assert months.map(lambda d: (d.year, d.month)).is_unique
    assert len(thin.charts) == len({(d.year, d.month) for d in map(week_date, panel.charts["week"])})


def test_the_method_serving_now_stays_unless_a_challenger_is_shown_better_week_by_week() -> None:
    """The original static regression beats the serving model on average only through one week of eight (a
    chart file whose songs share a shock): per anchor that is a clear edge, per week it is luck, and the
    model keeps serving; an original better in every week replaces it."""
    rng = np.random.default_rng(7)
    week = np.repeat(np.arange(8), 300)
    signal = rng.normal(0, 1, len(week))
    actual = signal + rng.normal(0, 0.3, len(week))
    model = _forecast(signal)
    lucky = np.where(week == 0, actual, signal + rng.normal(0, 0.1, len(week)))  # one perfect week
    songs = np.arange(len(week))

    def chosen(original: np.ndarray, **how) -> str:
        baselines = {"naive": _forecast(np.zeros(len(week))), "original": _forecast(original)}
        rule = select(model, baselines, _errors_of(actual), _misses_of(actual), signal, songs, **how)
        return rule.candidate

    assert chosen(lucky) == "original"  # the lowest error, chosen anew
    assert chosen(lucky, times=None, current="model") == "original"  # anchors as independent draws
    assert chosen(lucky, times=week, current="model") == "model"
    assert chosen((signal + actual) / 2, times=week, current="model") == "original"  # better every week
    # held-out songs (no fold out of time): a naive answer serves, whatever served before
    assert chosen(lucky, times=week, current="model", out_of_time=False) == "naive"


def test_the_weekly_retrain_passes_the_active_models_method_as_the_one_serving_now() -> None:
    def active(serving: dict) -> ModelVersion:
        return ModelVersion(
            version="v", signal="streams", horizon_weeks=26, kind="gbm", metrics={"serving": serving}
        )

    assert _serving(active({"method": "shrunk", "toward": "naive", "weight": 0.75})) == "shrunk-0.75"
    assert _serving(active({"method": "original", "toward": "original", "weight": 0.0})) == "original"
    assert _serving(active({})) is None and _serving(None) is None


def _floor_period(rng, p: np.ndarray, rise):
    """Outcomes of a period whose chart floors move by `rise` over the horizon (today's floor 0, each chart's
    move scattered around the period's): a survivor lands around 1, a dropout somewhere below the floor a
    horizon later."""
    level, charted, _ = _censored_draw(rng, p)
    return level, charted, rise + rng.normal(0, 0.1, len(p))


def test_widths_do_not_count_on_the_folds_floors_rising_again() -> None:
    """Recent periods whose floors rose (as 2017-19's charts grew), then a period whose floors stall (2020):
    the floor, served for likely dropouts, covers 75-85% of the new period once each fold's rise is added
    back to its dropouts' misses; widths that count on the rise leave half its dropouts below. A fold whose
    floors fell keeps its widths (the harder period stays), and folds of held-out songs keep theirs."""
    rng = np.random.default_rng(12)
    p_fold = rng.beta(1.0, 6.0, 12000)
    fold = np.repeat([0, 1], 6000)
    level, charted, future_floor = _floor_period(rng, p_fold, np.where(fold == 0, 0.3, 0.2))
    model = {**_forecast(np.zeros(len(p_fold)), spread=0.0), "p_chart": p_fold}
    errors, misses = _chart_scores(level, charted, future_floor)
    args = (
        model,
        {"naive": _forecast(np.zeros(len(p_fold)))},
        errors,
        misses,
        p_fold,
        np.arange(len(p_fold)),
    )
    rule, held_out = select(*args, fold), select(*args, fold, out_of_time=False)
    assert rule.method == held_out.method == "naive"
    p_new = rng.beta(1.0, 6.0, 30000)
    new_level, new_charted, new_floor = _floor_period(rng, p_new, 0.0)
    new_model = {**_forecast(np.zeros(len(p_new)), spread=0.0), "p_chart": p_new}

    def covered(chosen: ServingRule) -> float:
        served = chosen.apply(new_model, {"naive": _forecast(np.zeros(len(p_new)))}, p_new)
        return _censored_coverage(served, new_level, new_charted, new_floor)

    assert 0.75 <= covered(rule) <= 0.85
    assert covered(held_out) < 0.75  # the folds' rise counted on: about half the new dropouts fall below
    # Floors that fell in the folds: nothing is added (the widths already reach below the fall).
    fell = future_floor - 0.5
    _, fell_misses = _chart_scores(level, charted, fell)
    fell_args = (*args[:3], fell_misses, *args[4:])
    np.testing.assert_array_equal(
        select(*fell_args, fold).mixture, select(*fell_args, fold, out_of_time=False).mixture
    )
