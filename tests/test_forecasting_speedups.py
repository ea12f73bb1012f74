"""The faster training computes what the code before it did, bit for bit: the running aggregates and lookups
against their reference implementation (`tests/features_reference.py`), and models fitted side by side in
threads against the same models fitted one after the other."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_info

from shared.forecasting import models
from shared.forecasting.dataset import ChartSet, PopularitySet, chart_set
from shared.forecasting.features import (
    POPULARITY_FEATURES,
    _lookup_features,
    _running,
    chart_features,
    regions_of,
)
from shared.forecasting.models import PopularityForecaster, StreamsForecaster, side_by_side
from shared.forecasting.panel import ChartIndex, ChartPanel, _chart_panel, lookup, thin_charts
from shared.forecasting.synthetic import synthetic_charts
from tests.features_reference import lookup_reference, running_reference


def chart_panel(seed: int, weeks: int = 90) -> ChartPanel:
    frame = synthetic_charts(regions=3, weeks=weeks, size=40, seed=seed)
    frame["week"] = [(d - pd.Timestamp("1970-01-05").date()).days // 7 for d in frame["week"]]
    return _chart_panel(frame)


def with_missing_artists(panel: ChartPanel) -> ChartPanel:
    entries = panel.entries.copy()
    entries.loc[entries.index % 7 == 0, "artist"] = None
    entries.loc[entries.index % 11 == 0, "artist"] = ""
    return ChartPanel(entries, panel.charts)


@pytest.mark.parametrize("variant", ["weekly", "monthly", "irregular", "missing artists"])
def test_running_aggregates_equal_the_reference(variant: str) -> None:
    panel = chart_panel(seed=3)
    panel = {
        "weekly": panel,
        "monthly": thin_charts(panel, "monthly"),
        "irregular": thin_charts(panel, "irregular"),
        "missing artists": with_missing_artists(panel),
    }[variant]
    index = ChartIndex(panel, regions_of(panel))
    above = _lookup_features(panel.entries, index)["above_floor"].to_numpy()
    entries = panel.entries.assign(above_floor=above)
    starts = index.run_starts(index.entry_keys, index.entry_chart_keys)
    expected = running_reference(entries, starts)
    assert len(expected) > 1000 and expected["artist_chart_weeks"].notna().any()
    pd.testing.assert_frame_equal(
        _running(entries, starts).astype(float), expected.astype(float), check_exact=True
    )


def test_lookup_equals_the_reference() -> None:
    rng = np.random.default_rng(1)
    keys = np.sort(rng.choice(1_000_000, 20_000, replace=False))
    values = rng.normal(size=len(keys))
    wanted = np.concatenate([keys[rng.permutation(len(keys))] - rng.integers(0, 3, len(keys)), [-5, 2**40]])
    got = lookup(keys, values, wanted)
    assert np.isnan(got).any() and (~np.isnan(got)).sum() > len(keys) // 4
    np.testing.assert_array_equal(got, lookup_reference(keys, values, wanted))
    np.testing.assert_array_equal(lookup(keys[:0], values[:0], wanted), np.full(len(wanted), np.nan))


def labelled(seed: int) -> ChartSet:
    panel = chart_panel(seed=seed, weeks=120)
    regions = regions_of(panel)
    return chart_set(panel, 26, regions, features=chart_features(panel, regions))


def popularity_set(n: int, seed: int) -> PopularitySet:
    """Songs whose next popularity depends on a few of their features."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.uniform(0, 100, (n, len(POPULARITY_FEATURES))), columns=POPULARITY_FEATURES)
    future = X["popularity"] + 0.1 * X["pop_delta_7"] - 0.05 * X["age_days"] + rng.normal(0, 3, n)
    songs = np.array([f"song{i % 500}" for i in range(n)])
    return PopularitySet(X=X, song=songs, day=np.arange(n), future=np.clip(future.to_numpy(), 0, 100))


def forecasts(model: StreamsForecaster | PopularityForecaster, X: pd.DataFrame) -> dict[str, np.ndarray]:
    return {**model.predict_model(X), "points": np.array([model.n_train, getattr(model, "conformal", 0.0)])}


def test_fits_side_by_side_equal_fits_in_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    data, test = labelled(seed=5), labelled(seed=6)
    pop_train, pop_test = popularity_set(3000, seed=1), popularity_set(1000, seed=2)
    results = []
    for workers in (1, 2):
        monkeypatch.setattr(models, "FIT_WORKERS", workers)
        streams = StreamsForecaster(horizon=26, regions=["it"], params=models.BoostParams(max_iter=30))
        streams.fit(data)
        popularity = PopularityForecaster(horizon=182, params=models.BoostParams(max_iter=30))
        popularity.fit(pop_train)
        assert streams.classifier is not None and len(streams.survivor_models) == 5
        results.append((forecasts(streams, test.X), forecasts(popularity, pop_test.X)))
    for sequential, threaded in zip(*results, strict=True):
        assert sequential.keys() == threaded.keys()
        for key in sequential:
            np.testing.assert_array_equal(sequential[key], threaded[key])


def test_each_worker_runs_one_openmp_thread() -> None:
    def openmp_threads() -> list[int]:
        return [int(lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "openmp"]

    seen = side_by_side([openmp_threads] * 4, workers=2)
    assert seen and all(threads == [models.FIT_THREADS] * len(threads) and threads for threads in seen)
