"""The compiled trees predict exactly what scikit-learn predicts: missing values either way, infinities,
values on a threshold, trees of every depth up to the limit; models it cannot reproduce keep scikit-learn's
predict."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from shared.forecasting import inference
from shared.forecasting.dataset import popularity_set
from shared.forecasting.features import POPULARITY_FEATURES
from shared.forecasting.inference import (
    CompiledTrees,
    compilable,
    compile_forecaster,
    compiled,
    probe_rows,
)
from shared.forecasting.models import BoostParams, PopularityForecaster
from shared.forecasting.panel import popularity_panel_from_files
from shared.forecasting.synthetic import synthetic_popularity, write_popularity_files


def training_data(seed: int, n: int = 4000) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"f{i}" for i in range(6)])
    X["f5"] = rng.integers(0, 5, n).astype(float)  # few distinct values
    y = X["f0"] * 2 + np.sin(X["f1"] * 3) + X["f5"] + rng.normal(0, 0.3, n)
    X = X.mask(rng.random(X.shape) < 0.1)  # missing values to learn a direction for
    return X, y.to_numpy()


def awkward_rows(model: HistGradientBoostingRegressor, columns: list[str], seed: int) -> pd.DataFrame:
    """New rows with missing values, infinities and values exactly on the model's thresholds."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(5000, len(columns))) * 1.5, columns=columns)
    nodes = np.concatenate([p[0].nodes for p in model._predictors])
    inner = nodes[nodes["is_leaf"] == 0]
    for feature, threshold in zip(inner["feature_idx"][:300], inner["num_threshold"][:300], strict=True):
        X.iloc[rng.integers(0, len(X)), int(feature)] = threshold
    X = X.mask(rng.random(X.shape) < 0.1)
    X.iloc[:5, 0], X.iloc[5:10, 1] = np.inf, -np.inf
    return X


@pytest.mark.parametrize(
    ("depth", "quantile", "leaf"), [(1, 0.5, 20), (2, 0.1, 400), (3, 0.9, 50), (4, 0.5, 20)]
)
def test_compiled_trees_predict_exactly_what_scikit_learn_predicts(
    depth: int, quantile: float, leaf: int
) -> None:
    X, y = training_data(depth)
    model = HistGradientBoostingRegressor(
        loss="quantile",
        quantile=quantile,
        max_depth=depth,
        max_iter=60,
        min_samples_leaf=leaf,
        random_state=1,
    ).fit(X, y)
    leaves = [p[0].nodes[p[0].nodes["is_leaf"] == 1] for p in model._predictors]
    early = sum(int(leaf["depth"].min()) < depth for leaf in leaves)  # leaves above the full depth
    assert compilable(model)
    fast = CompiledTrees(model)
    for rows in (X, awkward_rows(model, list(X.columns), depth), X.astype(np.float32)):
        assert np.array_equal(fast.predict(rows), model.predict(rows))
    assert np.array_equal(fast.predict(X.to_numpy()), model.predict(X))  # an array of the same columns
    if depth > 1:
        assert early > 0


def test_models_it_cannot_reproduce_keep_scikit_learns_predict() -> None:
    X, y = training_data(7, n=2000)
    deep = HistGradientBoostingRegressor(
        max_depth=None, max_leaf_nodes=64, max_iter=5, min_samples_leaf=5
    ).fit(X, y)
    categories = X.assign(f5=X["f5"].fillna(0).astype(int))
    categorical = HistGradientBoostingRegressor(max_depth=3, max_iter=5, categorical_features=[5]).fit(
        categories, y
    )
    poisson = HistGradientBoostingRegressor(loss="poisson", max_depth=3, max_iter=5).fit(X, np.abs(y))
    for model in (deep, categorical, poisson):
        assert not compilable(model) and compiled(model) is model


def test_a_compiled_forecaster_forecasts_exactly_as_the_fitted_one(tmp_path: pytest.TempPathFactory) -> None:
    lists = synthetic_popularity(lists=2, days=240, size=30, seed=3)
    panel = popularity_panel_from_files(write_popularity_files(lists, tmp_path))  # type: ignore[arg-type]
    data = popularity_set(panel, 28)
    forecaster = PopularityForecaster(horizon=28, params=BoostParams(max_iter=40, min_samples_leaf=20)).fit(
        data
    )
    fast = compile_forecaster(forecaster)
    assert all(isinstance(m, CompiledTrees) for m in fast.models.values())
    assert not any(isinstance(m, CompiledTrees) for m in forecaster.models.values())  # the original is intact
    X = data.X[POPULARITY_FEATURES]
    expected, got = forecaster.predict(X), fast.predict(X)
    assert expected.keys() == got.keys()
    for key in expected:
        assert np.array_equal(expected[key], got[key]), key


def test_models_sharing_a_binner_bin_each_new_batch() -> None:
    """The quantile models of a forecaster bin a batch once for all: a new batch of the same shape, or the
    same array changed in place, is binned again; one row and a batch of several chunks are exact too."""
    X, y = training_data(5)
    models = [
        HistGradientBoostingRegressor(loss="quantile", quantile=q, max_depth=3, max_iter=30).fit(
            X.to_numpy(), y
        )
        for q in (0.1, 0.5, 0.9)
    ]
    fewer = HistGradientBoostingRegressor(max_depth=3, max_iter=10).fit(X.to_numpy()[:, :4], y)
    fast = compile_forecaster(SimpleNamespace(models={**dict(enumerate(models)), "fewer": fewer})).models
    fast_fewer = fast.pop("fewer")  # other columns: its own binner
    assert len({id(model.binner) for model in fast.values()}) == 1
    assert fast_fewer.binner is not fast[0].binner
    rows = np.array(awkward_rows(models[0], list(X.columns), 5))

    def exact(batch: np.ndarray) -> None:
        for model, compiled_model in zip(models, fast.values(), strict=True):
            assert np.array_equal(compiled_model.predict(batch), model.predict(batch))

    for batch in (rows, rows[::-1].copy(), rows[:1], rows):
        exact(batch)
    rows[: len(X)] = X.to_numpy()  # the array binned last, changed in place
    exact(rows)
    assert np.array_equal(fast_fewer.predict(rows[:, :4]), fewer.predict(rows[:, :4]))


def test_a_model_whose_private_arrays_changed_keeps_its_own_predict() -> None:
    """A scikit-learn release that reshapes the tree arrays gets scikit-learn's predict, not an error."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    model = HistGradientBoostingRegressor(max_iter=3).fit(X, X[:, 0])
    model._predictors = [[object()]]  # what a future release might hold there
    assert compiled(model) is model


def test_compiled_trees_that_disagree_with_scikit_learn_are_not_served(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: pytest.TempPathFactory
) -> None:
    """A release whose private arrays change meaning without raising (here: every tree's first threshold
    read 0.5 too high) is caught when the trees are built: the model's own predict serves, with a warning."""
    lists = synthetic_popularity(lists=2, days=240, size=30, seed=3)
    panel = popularity_panel_from_files(write_popularity_files(lists, tmp_path))  # type: ignore[arg-type]
    data = popularity_set(panel, 28)
    forecaster = PopularityForecaster(horizon=28, params=BoostParams(max_iter=40, min_samples_leaf=20)).fit(
        data
    )
    X = data.X[POPULARITY_FEATURES]
    model = next(iter(forecaster.models.values()))
    assert isinstance(compiled(model), CompiledTrees)  # sound trees pass the check

    sound_compile = inference._compile

    def misread(tree: np.ndarray, depth: int) -> Any:
        compiled_tree = sound_compile(tree, depth)
        if compiled_tree.splits:
            feature, threshold, missing_left, bit = compiled_tree.splits[0]
            compiled_tree.splits[0] = (feature, threshold + 0.5, missing_left, bit)
        return compiled_tree

    monkeypatch.setattr(inference, "_compile", misread)
    assert not np.array_equal(CompiledTrees(model).predict(X), model.predict(X))  # the misreading matters
    inference._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger=inference.__name__):
        assert compiled(model) is model
        fast = compile_forecaster(forecaster)
    assert not any(isinstance(m, CompiledTrees) for m in fast.models.values())
    warnings = [r for r in caplog.records if "disagree" in r.getMessage()]
    assert len(warnings) == 1  # once, not once per model
    expected, got = forecaster.predict(X), fast.predict(X)
    for key in expected:
        assert np.array_equal(expected[key], got[key]), key


def test_probe_rows_put_every_threshold_both_ways() -> None:
    cuts = [np.array([-1.0, 0.5, 2.0]), np.array([]), np.array([3.0])]
    rows = probe_rows(cuts)
    assert len(rows) >= inference.PROBE_ROWS
    assert np.array_equal(rows, probe_rows(cuts), equal_nan=True)  # deterministic
    for feature, thresholds in enumerate(cuts):
        column = rows[:, feature]
        assert np.isnan(column).any()
        for threshold in thresholds:
            assert (column == threshold).any() and (column < threshold).any() and (column > threshold).any()
    assert np.isinf(rows[:, 0]).any() and not np.isinf(rows[:, 1]).any()
