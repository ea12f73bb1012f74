"""`songpop eval` (run_eval): the documented JSON shape on generated files of both chart formats."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from shared.forecasting import NotEnoughData, format_eval_table, run_eval
from shared.forecasting.evaluation import chart_splits
from shared.forecasting.panel import chart_panel_from_files
from shared.forecasting.synthetic import (
    synthetic_charts,
    synthetic_popularity,
    write_chart_files,
    write_popularity_files,
)

FORECASTERS = ("model", "persistence", "naive")


@pytest.fixture(scope="module")
def chart_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("charts")
    charts = synthetic_charts(regions=3, weeks=160, size=40, seed=11)
    write_chart_files(charts[charts["region"] != "de"], folder)  # old format, one folder per region
    write_chart_files(charts[charts["region"] == "de"], folder / "new", new_format=True)
    return folder


def assert_metrics(result: dict, horizons: tuple[str, ...], metrics: tuple[str, ...]) -> None:
    assert set(horizons) <= set(result)
    for horizon in horizons:
        for forecaster in FORECASTERS:
            scores = result[horizon][forecaster]
            assert set(metrics) <= set(scores), (horizon, forecaster)
            for metric in metrics:
                value = scores[metric]
                assert value is None or isinstance(value, float)
        model = result[horizon]["model"]
        assert all(model[m] is not None for m in metrics)
        assert 0.0 <= model["coverage80"] <= 1.0


def test_charts_eval_shape_with_both_formats(chart_folder: Path) -> None:
    result = run_eval("charts", [chart_folder / "global", chart_folder / "it"], [chart_folder / "new"])
    assert_metrics(result, ("26w", "52w"), ("cmae", "auc", "coverage80"))
    assert 0.5 < result["26w"]["model"]["auc"] <= 1.0
    # The served coverage of the songs still charting and of those off the chart; the pooled one mixes them.
    served, share = result["26w"]["served"], result["26w"]["charted_share"]
    mixed = share * served["coverage80_charted"] + (1 - share) * served["coverage80_censored"]
    assert abs(mixed - served["coverage80"]) < 2e-3
    assert result["26w"]["n_test"] > 0 and result["52w"]["n_train"] > 0
    json.loads(json.dumps(result, allow_nan=False))  # plain JSON: no NaN, only null
    table = format_eval_table(result)
    assert "26w" in table and "persistence" in table and "cmae" in table


def _assert_served(scores: dict, metric: str) -> None:
    """What would serve: a method chosen on the training folds, its skill against the best naive answer."""
    served = scores["served"]
    assert served["method"] in ("model", "shrunk", "floored", "naive", "persistence", "drift", "original")
    naive = min(scores[name][metric] for name in ("naive", "persistence", "drift") if name in scores)
    assert served["skill"] == pytest.approx(1 - served[metric] / naive, abs=1e-3)
    assert set(served["candidates"]) >= {"model", "naive", "persistence"}
    updating = scores["served_updating"]  # the weekly retrain replayed: scored on the same anchors
    assert updating["skill"] == pytest.approx(
        1 - updating[metric] / scores[served["best_naive_test"]][metric], abs=1e-3
    )
    assert sum(updating["methods"].values()) == pytest.approx(1.0, abs=0.01) and updating["updates"] >= 0


def test_charts_eval_reports_the_served_method_skill_and_top20(tmp_path: Path) -> None:
    write_chart_files(synthetic_charts(regions=2, weeks=260, size=60, seed=12), tmp_path)
    train, test = [tmp_path / "global"], [tmp_path / "it"]
    result = run_eval("charts", train, test, test_spacing="monthly")
    weekly = run_eval("charts", train, test)
    assert result["26w"]["n_test"] < weekly["26w"]["n_test"] / 3  # only the first file of each month
    for horizon in ("26w", "52w"):
        scores = result[horizon]
        _assert_served(scores, "cmae")
        assert 0 <= scores["model"]["top20"] <= 20 and 0 <= scores["persistence"]["top20"] <= 20
        assert scores["n_train_thinned"] > 0  # trained on monthly-thinned histories as well
        assert scores["n_train_early"] == 0  # weekly training files: every outcome at exactly t+H
    assert "served:" in format_eval_table(result) and "top20" in format_eval_table(result)


def test_popularity_eval_shape(tmp_path: Path) -> None:
    train = write_popularity_files(
        synthetic_popularity(lists=2, days=450, size=20, seed=1, prefix="a"), tmp_path
    )
    test = write_popularity_files(
        synthetic_popularity(lists=1, days=450, size=20, seed=2, prefix="b"), tmp_path
    )
    result = run_eval("popularity", train, test)
    assert_metrics(result, ("182d", "365d"), ("mae", "coverage80"))
    assert result["182d"]["test_songs"] > 0
    _assert_served(result["182d"], "mae")
    json.loads(json.dumps(result, allow_nan=False))
    assert "182d" in format_eval_table(result)


def test_popularity_eval_on_weekly_snapshots_scores_a_year_364_days_on(tmp_path: Path) -> None:
    def weekly(lists: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
        return {name: frame[pd.to_datetime(frame["date"]).dt.dayofweek == 0] for name, frame in lists.items()}

    train = write_popularity_files(
        weekly(synthetic_popularity(lists=2, days=600, size=40, seed=1, prefix="a")), tmp_path
    )
    test = write_popularity_files(
        weekly(synthetic_popularity(lists=1, days=600, size=40, seed=2, prefix="b")), tmp_path
    )
    result = run_eval("popularity", train, test)
    assert "skipped" not in result["365d"] and result["365d"]["n_test"] > 0  # no file is 365 days on
    assert_metrics(result, ("182d", "365d"), ("mae", "coverage80"))


def test_popularity_eval_skips_a_horizon_the_files_cannot_test(tmp_path: Path) -> None:
    days = 300  # under a year of files
    train = write_popularity_files(synthetic_popularity(lists=2, days=days, seed=1, prefix="a"), tmp_path)
    test = write_popularity_files(synthetic_popularity(lists=1, days=days, seed=2, prefix="b"), tmp_path)
    result = run_eval("popularity", train, test)
    assert "365d" in result["365d"]["skipped"] and result["182d"]["n_test"] > 0
    assert "365d     skipped" in format_eval_table(result)
    # 300 days hold no fold 182 days ahead: the choice was made on held-out songs, and the table says so.
    assert result["182d"]["served"]["out_of_time"] is False
    assert "no fold 182d ahead in the training files" in format_eval_table(result)


def test_too_little_history_is_a_clear_error(tmp_path: Path) -> None:
    short = synthetic_charts(regions=2, weeks=30, size=20, seed=1)
    write_chart_files(short, tmp_path)
    with pytest.raises(NotEnoughData, match="weeks"):
        run_eval("charts", [tmp_path / "global"], [tmp_path / "it"])
    with pytest.raises(ValueError, match="unknown eval kind"):
        run_eval("streams", [tmp_path], [tmp_path])  # type: ignore[arg-type]


def test_popularity_eval_on_the_same_files_holds_out_songs(tmp_path: Path) -> None:
    files = write_popularity_files(synthetic_popularity(lists=2, days=520, size=40, seed=4), tmp_path)
    result = run_eval("popularity", files, files)
    assert result["182d"]["split"] == "songs"
    assert_metrics(result, ("182d",), ("mae", "coverage80"))


def test_a_horizon_the_files_cannot_test_is_skipped_with_its_reason(tmp_path: Path) -> None:
    """Test files spanning 30 weeks hold no 52-week outcome of an anchor in the files: 26 weeks is scored,
    52 weeks says why it is not."""
    charts = synthetic_charts(regions=2, weeks=130, size=40, seed=3)
    late = charts["week"] >= sorted(charts["week"].unique())[100]
    write_chart_files(charts[(charts["region"] == "global")], tmp_path / "train")
    write_chart_files(charts[(charts["region"] == "it") & late], tmp_path / "test")
    result = run_eval("charts", [tmp_path / "train"], [tmp_path / "test"])
    assert result["26w"]["n_test"] > 0
    assert "52 weeks later" in result["52w"]["skipped"]
    assert "52w      skipped" in format_eval_table(result)


def test_daily_chart_files_are_a_chart_of_their_own_on_the_weekly_scale(tmp_path: Path) -> None:
    charts = synthetic_charts(regions=2, weeks=200, size=60, seed=5)
    charts.loc[charts["region"] == "it", "streams"] //= 7  # a day's streams
    for path in write_chart_files(charts, tmp_path, new_format=True):
        if path.name.startswith("regional-it-"):  # Italy's files are its daily chart, one a week
            path.rename(path.with_name(path.name.replace("-weekly-", "-daily-")))
    panel = chart_panel_from_files([tmp_path])
    assert set(panel.entries["region"]) == {"global", "it-daily"}
    daily = panel.entries[panel.entries["region"] == "it-daily"]
    written = charts[charts["region"] == "it"]["streams"]
    assert sorted(daily["streams"]) == sorted(written * 7)  # on the weekly scale, exactly
    daily_files = sorted(tmp_path.glob("regional-it-daily-*.csv"))
    result = run_eval("charts", sorted(tmp_path.glob("regional-global-*.csv")), daily_files)
    _assert_served(result["26w"], "cmae")
    assert result["26w"]["n_test"] > 0


def test_sparse_training_files_read_some_outcomes_early_but_never_a_test_outcome(tmp_path: Path) -> None:
    write_chart_files(synthetic_charts(regions=2, weeks=260, size=60, seed=12), tmp_path)
    spacing = {"train_spacing": "irregular", "test_spacing": "irregular"}
    splits = chart_splits([tmp_path / "global"], [tmp_path / "it"], **spacing)
    for horizon, split in splits.items():
        assert (split.test.outcome_early == 0).all()  # scored at exactly t+H
        train = split.train
        assert (train.outcome_early > 0).any()
        assert (train.week + horizon <= split.origin).all()  # t+H itself known by the origin
    result = run_eval("charts", [tmp_path / "global"], [tmp_path / "it"], **spacing)
    assert result["26w"]["n_train_early"] > 0  # eval says how many training outcomes were read early
