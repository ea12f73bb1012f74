"""Faster, identical inference for the fitted gradient-boosted trees, for batch scoring.

scikit-learn's `HistGradientBoostingRegressor.predict` walks every tree over every row of a float64 matrix
(200 trees x 100,000 rows read the matrix 200 times). `CompiledTrees` does the same arithmetic on much less
memory: each feature is binned once against the thresholds the model's trees use (one byte per value), each
shallow tree becomes a table indexed by the bit pattern of its split decisions, and the leaf values are added
in the trees' order onto the same baseline, in float64: the predictions are scikit-learn's, bit for bit
(`tests/test_forecasting_inference.py`). Models it cannot reproduce exactly (categorical splits, deeper trees,
a non-identity link, several trees per iteration) keep scikit-learn's predict.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor

log = logging.getLogger(__name__)

MAX_DEPTH = 4  # a tree of depth d has up to 2^d - 1 splits: its table has 2^(2^d - 1) entries


@dataclass
class _Tree:
    splits: list[tuple[int, int, bool, int]]  # (feature, threshold's bin, missing goes left, bit) per split
    table: np.ndarray  # leaf value per bit pattern of the split decisions ("goes right" bits)


class CompiledTrees:
    """A fitted single-output `HistGradientBoostingRegressor` with identity link and numeric features, as
    lookup tables: `predict` returns exactly what the model's `predict` returns."""

    def __init__(self, model: HistGradientBoostingRegressor) -> None:
        self.model = model
        self.features = list(getattr(model, "feature_names_in_", []))
        nodes = [predictors[0].nodes for predictors in model._predictors]
        n_features = int(model.n_features_in_)
        used: list[list[float]] = [[] for _ in range(n_features)]
        for tree in nodes:
            inner = tree[tree["is_leaf"] == 0]
            for feature, threshold in zip(inner["feature_idx"], inner["num_threshold"], strict=True):
                used[int(feature)].append(float(threshold))
        self.cuts = [np.unique(np.array(values, float)) for values in used]
        self.baseline = model._baseline_prediction.ravel()[0]
        self.trees = [_compile(tree, self.cuts) for tree in nodes]
        bits = max((bit for tree in self.trees for *_, bit in tree.splits), default=0) + 1
        self.code_type: type[np.unsignedinteger[Any]] = np.uint8 if bits <= 8 else np.uint16

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def predict(self, X: Any) -> np.ndarray:
        """The model's predictions of the rows of X (a frame with the model's columns, or an array)."""
        if isinstance(X, pd.DataFrame):
            if list(X.columns) != self.features:
                return self.model.predict(X)  # type: ignore[no-any-return]
            X = X.to_numpy(np.float64)
        values = np.asarray(X, np.float64)
        low, high = self._bins(values)
        out = np.zeros(len(values))
        out += self.baseline
        code = np.empty(len(values), self.code_type)
        for tree in self.trees:
            code[:] = 0
            for feature, cut, missing_left, bit in tree.splits:
                goes_right = (low if missing_left else high)[feature] > cut
                code |= goes_right.astype(self.code_type) << self.code_type(bit)
            out += tree.table.take(code.astype(np.intp))
        return out

    def _bins(self, values: np.ndarray) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """Per used feature, the number of the model's thresholds below each value (x <= threshold k exactly
        when that number <= k); a missing value as the lowest bin where it goes left, the highest where it
        goes right."""
        low, high = {}, {}
        for feature, cuts in enumerate(self.cuts):
            if not len(cuts):
                continue
            column = values[:, feature]
            dtype = np.uint8 if len(cuts) < 255 else np.uint16
            binned = np.searchsorted(cuts, column).astype(dtype)
            missing = np.isnan(column)
            if missing.any():
                low[feature] = np.where(missing, 0, binned).astype(dtype)
                high[feature] = np.where(missing, np.iinfo(dtype).max, binned).astype(dtype)
            else:
                low[feature] = high[feature] = binned
        return low, high


def _compile(tree: np.ndarray, cuts: list[np.ndarray]) -> _Tree:
    """One tree as its splits (numbered breadth-first as in a complete tree) and its table of leaf values;
    a leaf above the full depth stands for all the complete tree's leaves below it."""
    depth = int(tree["depth"].max())
    splits: list[tuple[int, int, bool, int]] = []
    leaves = np.zeros(1 << depth)

    def walk(node: int, position: int, level: int) -> None:
        row = tree[node]
        if level == depth:
            leaves[position] = row["value"]
            return
        if row["is_leaf"]:
            walk(node, 2 * position, level + 1)  # no split: every row goes left, the bit stays 0
            walk(node, 2 * position + 1, level + 1)
            return
        feature = int(row["feature_idx"])
        cut = int(np.searchsorted(cuts[feature], row["num_threshold"]))
        splits.append((feature, cut, bool(row["missing_go_to_left"]), (1 << level) - 1 + position))
        walk(int(row["left"]), 2 * position, level + 1)
        walk(int(row["right"]), 2 * position + 1, level + 1)

    walk(0, 0, 0)
    codes = np.arange(1 << ((1 << depth) - 1))
    position = np.zeros(len(codes), np.int64)
    for level in range(depth):  # follow each bit pattern down the complete tree
        position = 2 * position + ((codes >> ((1 << level) - 1 + position)) & 1)
    return _Tree(splits, leaves[position])


def compilable(model: Any) -> bool:
    """Whether `CompiledTrees` reproduces this model's predictions exactly."""
    if not isinstance(model, HistGradientBoostingRegressor) or not hasattr(model, "_predictors"):
        return False
    categorical = getattr(model, "is_categorical_", None)
    return (
        model.n_trees_per_iteration_ == 1
        and (categorical is None or not np.any(categorical))
        and type(model._loss.link).__name__ == "IdentityLink"
        and all(int(p[0].nodes["depth"].max()) <= MAX_DEPTH for p in model._predictors)
    )


def compiled(model: Any) -> Any:
    """`CompiledTrees` of the model when it reproduces it exactly, else the model itself. This reads
    scikit-learn's private tree arrays: a release that renames them gets its own predict, not an error."""
    try:
        return CompiledTrees(model) if compilable(model) else model
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        log.warning("trees not compiled (%s: %s); scikit-learn's predict serves", type(exc).__name__, exc)
        return model


def compile_forecaster(forecaster: Any) -> Any:
    """A copy of a streams or popularity forecaster whose tree regressors predict through `CompiledTrees`
    (the same predictions, faster on large batches); the fitted forecaster itself is left as it is."""
    fast = copy.copy(forecaster)
    if isinstance(getattr(forecaster, "models", None), dict):
        fast.models = {key: compiled(model) for key, model in forecaster.models.items()}
    if isinstance(getattr(forecaster, "survivor_models", None), list):
        fast.survivor_models = [compiled(model) for model in forecaster.survivor_models]
    return fast
