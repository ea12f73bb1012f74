"""Faster, identical inference for the fitted gradient-boosted trees, for batch scoring.

scikit-learn's `HistGradientBoostingRegressor.predict` walks every tree over every row of a float64 matrix
(200 trees x 100,000 rows read the matrix 200 times). `CompiledTrees` does the same arithmetic on much less
memory: each feature is binned once per batch against the thresholds the trees use (one byte per value; the
models of a forecaster share their bins), each shallow tree becomes a table indexed by the bit pattern of its
split decisions, all trees are evaluated at once on chunks of rows (one gather and one comparison for every
split), and the leaf values are added in the trees' order onto the same baseline, in float64: the predictions
are scikit-learn's, bit for bit (`tests/test_forecasting_inference.py`). Models it cannot reproduce exactly
(categorical splits, deeper trees, a non-identity link, several trees per iteration) keep scikit-learn's
predict, and so does any model whose compiled trees, once built, disagree with its own predict on probe rows
over every threshold (`_agrees`): reading scikit-learn's private arrays is checked against its public API.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

MAX_DEPTH = 4  # a tree of depth d has up to 2^d - 1 splits: its table has 2^(2^d - 1) entries
CHUNK = 2048  # rows evaluated at once: the (splits of all trees, rows) temporaries stay within a few MB


class _Binner:
    """The bins of a batch against the thresholds of one or several models (a forecaster's quantile models
    share them): searchsorted costs as much as the trees, so a batch is binned once for all of them. A
    batch stays in its own float type (the features are float32: half the memory of a float64 copy),
    converted to float64 (what scikit-learn compares in, exactly) one column at a time."""

    def __init__(self, cuts: list[np.ndarray]) -> None:
        self.cuts = cuts
        self.used = [feature for feature, values in enumerate(cuts) if len(values)]
        self.row_of = {feature: 1 + 2 * i for i, feature in enumerate(self.used)}
        self.bin_type = np.uint8 if max(map(len, cuts), default=0) < 255 else np.uint16
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (values, bins) of the last batch

    def bins(self, values: np.ndarray) -> np.ndarray:
        """Per used feature, two rows of the number of thresholds below each value (x <= threshold k exactly
        when that number <= k): a missing value in the lowest bin (for splits sending it left), then in the
        highest (sending it right: searchsorted puts NaN last); row 0 stays 0."""
        last = self._last  # read once: replaced whole, never changed in place
        if last is not None and _same_bits(last[0], values):
            return last[1]
        bins = np.zeros((1 + 2 * len(self.used), len(values)), self.bin_type)
        for i, feature in enumerate(self.used):
            column = values[:, feature].astype(np.float64)
            binned = np.searchsorted(self.cuts[feature], column)
            bins[2 + 2 * i] = binned
            binned[np.isnan(column)] = 0
            bins[1 + 2 * i] = binned
        self._last = (values.copy(), bins)
        return bins

    def forget(self) -> None:
        self._last = None


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two float arrays hold the same values bit for bit (NaN included)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    as_int = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(a.view(as_int), b.view(as_int)))


@dataclass
class _Tree:
    splits: list[tuple[int, float, bool, int]]  # (feature, threshold, missing goes left, bit) per split
    table: np.ndarray  # leaf value per bit pattern of the split decisions ("goes right" bits)


class CompiledTrees:
    """A fitted single-output `HistGradientBoostingRegressor` with identity link and numeric features, as
    lookup tables: `predict` returns exactly what the model's `predict` returns."""

    def __init__(self, model: HistGradientBoostingRegressor) -> None:
        self.model = model
        self.features = list(getattr(model, "feature_names_in_", []))
        nodes = [predictors[0].nodes for predictors in model._predictors]
        self.baseline = model._baseline_prediction.ravel()[0]
        # Every tree in the deepest tree's shape, so that all trees are evaluated at once (`_sum_trees`).
        depth = max(int(tree["depth"].max()) for tree in nodes)
        self.trees = [_compile(tree, depth) for tree in nodes]
        self.tables = np.concatenate([tree.table for tree in self.trees])
        self.offsets = (np.arange(len(nodes)) << ((1 << depth) - 1))[:, None]
        slots = max(1, (1 << depth) - 1)
        self.weights = (1 << np.arange(slots)).astype(np.uint8 if slots <= 8 else np.uint16)
        self.share(_Binner(_thresholds([self], int(model.n_features_in_))))

    def share(self, binner: _Binner) -> None:
        """Bin through `binner` (its thresholds include this model's): split slot `bit` of tree t compares
        bin row `rows[t, bit]` with `cuts[t, bit]`; an empty slot reads row 0, always 0, never above its 0."""
        self.binner = binner
        rows = np.zeros((len(self.trees), len(self.weights)), np.intp)
        cuts = np.zeros((len(self.trees), len(self.weights)), binner.bin_type)
        for t, tree in enumerate(self.trees):
            for feature, threshold, missing_left, bit in tree.splits:
                rows[t, bit] = binner.row_of[feature] + (0 if missing_left else 1)
                cuts[t, bit] = np.searchsorted(binner.cuts[feature], threshold)
        self.rows, self.cuts = rows.ravel(), cuts.reshape(-1, 1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def predict(self, X: Any) -> np.ndarray:
        """The model's predictions of the rows of X (a frame with the model's columns, or an array)."""
        if isinstance(X, pd.DataFrame):
            if list(X.columns) != self.features:
                return self.model.predict(X)
            X = X.to_numpy()
        values = np.asarray(X)
        if values.dtype not in (np.float32, np.float64):
            values = values.astype(np.float64)
        bins = self.binner.bins(values)
        out = np.empty(bins.shape[1])
        for start in range(0, len(out), CHUNK):
            out[start : start + CHUNK] = self._sum_trees(bins[:, start : start + CHUNK])
        return out

    def _sum_trees(self, bins: np.ndarray) -> np.ndarray:
        """The predictions of a chunk of binned rows: every split of every tree at once, then the leaf
        values added tree by tree onto the baseline as scikit-learn does (a pairwise sum rounds otherwise)."""
        right = (bins[self.rows] > self.cuts).view(np.uint8).reshape(len(self.trees), -1, bins.shape[1])
        codes = np.einsum("tsr,s->tr", right, self.weights)  # type: ignore[arg-type]  # bit pattern per tree
        leaves = self.tables.take(codes + self.offsets)  # (trees, rows)
        total = np.full(bins.shape[1], self.baseline)
        for leaf in leaves:
            total += leaf
        return total


def _thresholds(models: list[CompiledTrees], n_features: int) -> list[np.ndarray]:
    """Per feature, the sorted distinct thresholds of the models' splits."""
    used: list[list[float]] = [[] for _ in range(n_features)]
    for model in models:
        for tree in model.trees:
            for feature, threshold, _, _ in tree.splits:
                used[feature].append(threshold)
    return [np.unique(np.array(values, float)) for values in used]


def _compile(tree: np.ndarray, depth: int) -> _Tree:
    """One tree as its splits (numbered breadth-first as in a complete tree of the given depth) and its table
    of leaf values; a leaf above the full depth stands for all the complete tree's leaves below it."""
    splits: list[tuple[int, float, bool, int]] = []
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
        feature, threshold = int(row["feature_idx"]), float(row["num_threshold"])
        splits.append((feature, threshold, bool(row["missing_go_to_left"]), (1 << level) - 1 + position))
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
    """`CompiledTrees` of the model when it reproduces it exactly (checked on a sample), else the model."""
    return _compiled_together([model])[0]


def compile_forecaster(forecaster: Any) -> Any:
    """A copy of a streams or popularity forecaster whose tree regressors predict through `CompiledTrees`
    (the same predictions, faster on large batches); the fitted forecaster itself is left as it is."""
    fast = copy.copy(forecaster)
    if isinstance(getattr(forecaster, "models", None), dict):
        models = _compiled_together(list(forecaster.models.values()))
        fast.models = dict(zip(forecaster.models, models, strict=True))
    if isinstance(getattr(forecaster, "survivor_models", None), list):
        fast.survivor_models = _compiled_together(forecaster.survivor_models)
    return fast


def forget_batches(forecaster: Any) -> None:
    """Drop the last batch (and its bins) the compiled models of a forecaster keep for its next model: once
    the forecaster has predicted, they would only hold tens of bytes per row until the next batch."""
    models = (
        list(getattr(forecaster, "models", {}).values())
        if isinstance(getattr(forecaster, "models", None), dict)
        else []
    )
    models += list(getattr(forecaster, "survivor_models", None) or [])
    for model in models:
        if isinstance(model, CompiledTrees):
            model.binner.forget()


def _compiled_together(models: list[Any]) -> list[Any]:
    """The models compiled where possible, those of the same columns sharing one binner, each checked
    against its own predict (`_agrees`): any difference and the model serves itself."""
    fast = [_built(model) for model in models]
    groups: dict[tuple[tuple[str, ...], int], list[CompiledTrees]] = {}
    for model in fast:
        if isinstance(model, CompiledTrees):
            groups.setdefault((tuple(model.features), len(model.binner.cuts)), []).append(model)
    for group in groups.values():
        binner = _Binner(_thresholds(group, len(group[0].binner.cuts)))
        for model in group:
            model.share(binner)
    return [
        model if not isinstance(model, CompiledTrees) or _agrees(model) else model.model for model in fast
    ]


def _built(model: Any) -> Any:
    """`CompiledTrees` of a model it can represent, else the model. This reads scikit-learn's private tree
    arrays: a release that renames them gets its own predict, not an error."""
    try:
        return CompiledTrees(model) if compilable(model) else model
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        _warn_once(f"trees not compiled ({type(exc).__name__}: {exc}); scikit-learn's predict serves")
        return model


def _agrees(fast: CompiledTrees) -> bool:
    """Whether the compiled trees predict exactly what the model predicts on `probe_rows`: a release whose
    private arrays change meaning without changing shape is caught here, not in the forecasts."""
    rows = probe_rows(fast.binner.cuts)
    X: Any = pd.DataFrame(rows, columns=fast.features) if fast.features else rows
    try:
        # a few hundred rows: on a busy machine, OpenMP threads cost more than they save
        with threadpool_limits(limits=1, user_api="openmp"):
            same = np.array_equal(fast.predict(X), fast.model.predict(X), equal_nan=True)
    except (TypeError, ValueError, IndexError) as exc:
        same = False
        log.debug("compiled trees failed on the probe rows: %s", exc)
    if not same:
        _warn_once("compiled trees disagree with scikit-learn's predict; scikit-learn's predict serves")
    return same


PROBE_ROWS = 512  # at least: enough that every threshold, and the values around it, appear in each column


def probe_rows(cuts: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """Rows that put every split of the trees both ways: per feature, each of its thresholds, the midpoints
    between them, values beyond both ends, NaN and both infinities, shuffled (deterministically) so the
    rows reach many paths down each tree."""
    rng = np.random.default_rng(seed)
    values = [_probe_values(column) for column in cuts]
    n = max(PROBE_ROWS, *map(len, values))
    rows = np.empty((n, len(cuts)))
    for feature, column in enumerate(values):
        rows[:, feature] = rng.permutation(np.resize(column, n))
    return rows


def _probe_values(thresholds: np.ndarray) -> np.ndarray:
    """A feature's values on, between and beyond its thresholds (0 when no split reads it), and the
    missing and infinite values."""
    if not len(thresholds):
        return np.array([0.0, np.nan])
    span = max(1.0, float(thresholds[-1] - thresholds[0]))
    between = (thresholds[:-1] + thresholds[1:]) / 2
    ends = [thresholds[0] - span, thresholds[-1] + span, np.nan, np.inf, -np.inf]
    return np.concatenate([thresholds, between, ends])


@functools.cache
def _warn_once(message: str) -> None:
    """Log `message` as a warning the first time only (every artifact loaded would repeat it)."""
    log.warning(message)
