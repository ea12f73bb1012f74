"""Training time and memory: the trainer's full work on 1,000,000 synthetic snapshot rows.

For each signal, the same code `train_and_register` runs once the rows are loaded: panel, features, the
rolling-origin backtest (model and baselines), and the final fit, for the 26- and 52-week horizons.
  - streams: 1,000,000 weekly chart entries (10 regions x 500 weeks x Top 200);
  - popularity: 1,000,000 weekly popularity snapshots (7,692 songs x 130 weeks).
Next to it, in the same run, the original system's approach on the same rows (one ridge regression) as the
baseline. Prints seconds and peak memory (resident set size) against the targets: < 2 minutes, < 2 GB.
Run: `make bench-train` (or `python -m benchmarks.bench_train --rows 1000000`).
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge

from shared.forecasting import training
from shared.forecasting.features import chart_features, regions_of
from shared.forecasting.panel import ChartPanel, PopularityPanel, _chart_panel, _popularity_panel
from shared.forecasting.synthetic import synthetic_charts

TARGET_SECONDS = 120.0
TARGET_BYTES = 2 * 1024**3
HORIZONS = (26, 52)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def chart_rows(n: int) -> ChartPanel:
    regions, size = 10, 200
    weeks = max(60, n // (regions * size))
    frame = synthetic_charts(regions=regions, weeks=weeks, size=size, seed=42)
    frame["week"] = [(d - pd.Timestamp("1970-01-05").date()).days // 7 for d in frame["week"]]
    return _chart_panel(frame.head(n))


def popularity_rows(n: int, weeks: int = 130) -> PopularityPanel:
    rng = np.random.default_rng(42)
    songs = n // weeks
    start = rng.integers(0, 40, songs)
    peak = rng.uniform(40, 95, songs)
    decay = rng.gamma(2.0, 0.4, songs)
    week = np.tile(np.arange(weeks), songs)
    song = np.repeat(np.arange(songs), weeks)
    age = np.maximum(week - start[song], 0)
    popularity = np.clip(peak[song] - decay[song] * age + rng.normal(0, 2, len(week)), 0, 100).round()
    first_monday = 19_000  # days since 1970, a Monday
    obs = pd.DataFrame(
        {
            "song": [f"{s:022d}" for s in song],
            "day": first_monday + 7 * week,
            "popularity": popularity,
            "position": np.nan,
        }
    )
    songs_frame = pd.DataFrame(
        {
            "release_day": first_monday + 7 * start - rng.integers(0, 300, songs),
            "duration_ms": rng.integers(120_000, 300_000, songs).astype(float),
            "explicit": (rng.random(songs) < 0.3).astype(float),
            "album_type": rng.integers(0, 2, songs).astype(float),
            "total_tracks": rng.integers(1, 20, songs).astype(float),
            "artist": [f"a{s % 3000}" for s in range(songs)],
            "name": "",
            "artists": "",
        },
        index=pd.Index([f"{s:022d}" for s in range(songs)], name="song"),
    )
    return _popularity_panel(obs, songs_frame)


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def train_streams(panel: ChartPanel) -> list[Any]:
    config = training.default_config("streams")
    fitted = []
    for horizon in HORIZONS:
        work = training._streams_work(panel, horizon, config, False, None)
        assert work is not None, "not enough synthetic history"
        candidate, fit_all = work
        fitted.append((candidate.backtest.model, fit_all()))
    return fitted


def train_popularity(panel: PopularityPanel) -> list[Any]:
    config = training.default_config("popularity")
    fitted = []
    for horizon in HORIZONS:
        work = training._popularity_work(panel, horizon, config, False, None)
        assert work is not None, "not enough synthetic history"
        candidate, fit_all = work
        fitted.append((candidate.backtest.model, fit_all()))
    return fitted


def original_streams(panel: ChartPanel) -> Ridge:
    """The original system's approach on the same rows: one linear regression, no backtest."""
    features = chart_features(panel, regions_of(panel))
    X = features[["level", "log_rank", "log_floor"]].to_numpy(float)
    return Ridge().fit(X, features["level"].to_numpy(float))


def verdict(seconds: float) -> str:
    return "ok" if seconds < TARGET_SECONDS else "OVER the 2-minute target"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--signal", choices=["streams", "popularity", "both"], default="both")
    args = parser.parse_args()
    print(f"bench-train: {args.rows:,} synthetic snapshot rows per signal, horizons {HORIZONS}")
    if args.signal in ("streams", "both"):
        make_seconds, panel = timed(lambda: chart_rows(args.rows))
        print(f"  streams: generated {len(panel.entries):,} chart rows in {make_seconds:.1f} s")
        base_seconds, _ = timed(lambda: original_streams(panel))
        seconds, fitted = timed(lambda: train_streams(panel))
        for horizon, (metrics, _) in zip(HORIZONS, fitted, strict=True):
            print(f"    {horizon}w backtest: {metrics}")
        print(
            f"  streams training: {seconds:.1f} s ({verdict(seconds)}); original approach (one ridge, no "
            f"backtest) {base_seconds:.1f} s; peak memory so far {peak_rss_bytes() / 1024**2:,.0f} MB"
        )
        del panel, fitted
    if args.signal in ("popularity", "both"):
        make_seconds, pop_panel = timed(lambda: popularity_rows(args.rows))
        print(f"  popularity: generated {len(pop_panel.obs):,} snapshot rows in {make_seconds:.1f} s")
        seconds, fitted = timed(lambda: train_popularity(pop_panel))
        for horizon, (metrics, _) in zip(HORIZONS, fitted, strict=True):
            print(f"    {horizon}w backtest: {metrics}")
        print(f"  popularity training: {seconds:.1f} s ({verdict(seconds)})")
    peak = peak_rss_bytes()
    print(
        f"peak memory {peak / 1024**2:,.0f} MB "
        f"({'ok' if peak < TARGET_BYTES else 'OVER the 2 GB target'}; includes the generated data)"
    )


if __name__ == "__main__":
    main()
