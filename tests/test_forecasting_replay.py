"""`songpop eval`'s replay of the weekly retrain: the rule serving each week is chosen only on outcomes known
by then, follows a shift once the test period's outcomes show it, and does not chase a challenger whose edge
is a few weeks' luck."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.forecasting.backtest import FoldForecasts
from shared.forecasting.replay import replay
from shared.forecasting.selection import ServingRule, select

HORIZON, STEP = 4, 8


@dataclass
class Anchors:
    week: np.ndarray
    today: np.ndarray
    future: np.ndarray

    def __len__(self) -> int:
        return len(self.week)

    def take(self, mask: np.ndarray) -> Anchors:
        return Anchors(self.week[mask], self.today[mask], self.future[mask])


def _concat(parts: list[Anchors]) -> Anchors:
    return Anchors(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("week", "today", "future")))


def _select(model, bases, data: Anchors, window: np.ndarray, current: str | None = None) -> ServingRule:
    return select(
        model, bases, lambda pred: np.abs(pred["value"] - data.future),
        lambda pred: np.column_stack([pred["lower"] - data.future, data.future - pred["upper"]]),
        data.today, np.arange(len(data.week)), window, times=data.week, current=current,
    )  # fmt: skip


def _memoryless(model, bases, data: Anchors, window: np.ndarray, current: str | None = None) -> ServingRule:
    return _select(model, bases, data, window)  # the lowest error anew each week


def _forecast(value: np.ndarray) -> dict[str, np.ndarray]:
    return {"value": value, "lower": value - 1.0, "upper": value + 1.0}


def _period(rng: np.random.Generator, weeks: range, model_noise: float) -> tuple[Anchors, dict, dict]:
    """300 anchors a week whose future is today's value plus a move the model knows up to `model_noise`."""
    week = np.repeat(np.array(weeks), 300)
    today = rng.uniform(0, 10, len(week))
    move = rng.normal(0, 1.0, len(week))
    data = Anchors(week, today, today + move)
    model = _forecast(today + move + rng.normal(0, model_noise, len(week)))
    return data, model, {"persistence": _forecast(today)}


def _run(rng: np.random.Generator, select=_select):
    folds_data, folds_model, folds_bases = _period(rng, range(0, 16), model_noise=0.1)
    test_data, test_model, test_bases = _period(rng, range(20, 50), model_noise=3.0)  # the model breaks
    window = (folds_data.week >= 8).astype(np.int64)
    rule = _select(folds_model, folds_bases, folds_data, window)
    folds = FoldForecasts(folds_model, folds_bases, folds_data, out_of_time=True)
    replayed = replay(
        folds, rule, (test_model, test_bases, test_data), times=lambda d: d.week, level=test_data.today,
        concat=_concat, select=select, horizon=HORIZON, step=STEP,
    )  # fmt: skip
    return rule, replayed, test_data, test_model


def test_each_week_is_served_by_a_rule_chosen_on_outcomes_known_by_then() -> None:
    chosen_on: list[int] = []

    def recording(model, bases, data: Anchors, window: np.ndarray, current: str | None = None) -> ServingRule:
        chosen_on.append(int(data.week.max()))  # its latest anchor: resolved HORIZON weeks later
        return _select(model, bases, data, window, current)

    _, replayed, test, _ = _run(np.random.default_rng(3), recording)
    starts = np.unique(test.week)
    assert len(chosen_on) == replayed.updates > 0
    later = starts[len(starts) - len(chosen_on) :]  # the weeks with enough resolved test anchors
    assert all(latest + HORIZON <= start for latest, start in zip(chosen_on, later, strict=True))
    assert any(latest + HORIZON == start for latest, start in zip(chosen_on, later, strict=True))


def test_the_replay_follows_a_shift_the_training_folds_could_not_show() -> None:
    rule, replayed, test, model = _run(np.random.default_rng(4))
    assert rule.method == "model"  # the folds saw a model that knows the move
    early = test.week < 20 + HORIZON  # no test outcome known yet: the training files' rule
    late = test.week >= 20 + HORIZON + 2 * STEP  # both windows hold only test anchors
    assert np.array_equal(replayed.forecast["value"][early], model["value"][early])
    assert np.array_equal(replayed.forecast["value"][late], test.today[late])  # persistence, once seen
    assert replayed.methods["persistence"] > 0.5
    errors = np.abs(replayed.forecast["value"] - test.future)
    assert errors.mean() < np.abs(model["value"] - test.future).mean()


def _two_methods(rng: np.random.Generator, weeks: range, spread: np.ndarray) -> tuple[Anchors, dict, dict]:
    """300 anchors a week: the model misses the future by N(0, 0.3), the original static regression by
    N(0, the week's spread)."""
    week = np.repeat(np.array(weeks), 300)
    today = rng.uniform(0, 10, len(week))
    future = today + rng.normal(0, 1.0, len(week))
    original = future + rng.normal(0, 1.0, len(week)) * np.repeat(spread, 300)
    data = Anchors(week, today, future)
    return (
        data,
        _forecast(future + rng.normal(0, 0.3, len(week))),
        {
            "persistence": _forecast(today),
            "original": _forecast(original),
        },
    )


def test_a_lucky_challenger_does_not_take_over_but_a_clearly_better_one_does() -> None:
    """The test files start long after the training folds, so the first re-choice sees one week of test
    outcomes: there the original static regression is far better (a file's songs share its luck), then worse
    for 40 weeks, then clearly better from week 80. Choosing the lowest error anew each week switches to it
    on that one week; the method serving stays until a challenger is shown better than it over two weeks or
    more, and the original takes over once it is."""
    rng = np.random.default_rng(5)
    folds_data, folds_model, folds_bases = _two_methods(rng, range(0, 16), np.full(16, 0.6))
    test_data, test_model, test_bases = _two_methods(
        rng, range(40, 120), np.r_[0.05, np.full(39, 0.45), np.full(40, 0.1)]
    )
    rule = _select(folds_model, folds_bases, folds_data, (folds_data.week >= 8).astype(np.int64))
    assert rule.method == "model"
    folds = FoldForecasts(folds_model, folds_bases, folds_data, out_of_time=True)
    first = (test_data.week >= 40 + HORIZON) & (test_data.week < 40 + HORIZON + 1)  # one week resolved
    late = test_data.week >= 80 + HORIZON + 2 * STEP  # both windows after week 80
    for select_rule, chases in ((_memoryless, True), (_select, False)):
        replayed = replay(
            folds, rule, (test_model, test_bases, test_data), times=lambda d: d.week, level=test_data.today,
            concat=_concat, select=select_rule, horizon=HORIZON, step=STEP,
        )  # fmt: skip
        value = replayed.forecast["value"]
        original = value == test_bases["original"]["value"]
        assert original[first].all() == chases
        assert original[test_data.week < 80].any() == chases
        assert original[late].all()  # a clearly better challenger takes over
        assert np.array_equal(value[test_data.week < 80], test_model["value"][test_data.week < 80]) != chases
