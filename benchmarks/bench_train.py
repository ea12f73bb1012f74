"""Training time and memory: the trainer's full work on 1,000,000 synthetic snapshot rows.

For each signal, the same code `train_and_register` runs once the rows are loaded: panel, features, the
rolling-origin backtest (model and baselines), and the final fit, for the 26- and 52-week horizons.
  - streams: 1,000,000 weekly chart entries (10 regions x 500 weeks x Top 200);
  - popularity: 1,000,000 weekly popularity snapshots (7,692 songs x 130 weeks).
Next to it, in the same run, the original system's approach on the same rows (one ridge regression) as the
baseline. Prints seconds, CPU seconds and peak memory (resident set size) against the targets: < 2 minutes,
< 2 GB.

Speed-ups must not change a forecast: after timing, a digest of what was fitted (every candidate's backtest
metrics, and the final and fold models' served and own forecasts of every 10th labelled anchor) is compared
with the digest that the code before the speed-ups recorded on the same rows (`bench_train_forecasts.json`;
`--record` rewrites it). Floating point may differ on another CPU: a mismatch there means re-record with the
old code on that machine before comparing.
Run: `make bench-train` (or `python -m benchmarks.bench_train --rows 1000000`).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge

from shared.forecasting import training
from shared.forecasting.dataset import chart_set, popularity_set
from shared.forecasting.features import cached_chart_features, chart_features, regions_of
from shared.forecasting.panel import ChartPanel, PopularityPanel, _chart_panel, _popularity_panel
from shared.forecasting.synthetic import synthetic_charts

TARGET_SECONDS = 120.0
TARGET_BYTES = 2 * 1024**3
HORIZONS = (26, 52)
RECORDED = Path(__file__).with_name("bench_train_forecasts.json")
DIGEST_EVERY = 10  # forecasts of every 10th labelled anchor enter the digest


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


def timed(work: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and CPU seconds (all threads) of `work`, and its result."""
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - start, time.process_time() - cpu, result


def train_streams(panel: ChartPanel) -> list[tuple[training.Candidate, Any]]:
    config = training.default_config("streams")
    fitted = []
    for horizon in HORIZONS:
        work = training._streams_work(panel, horizon, config, False, None)
        assert work is not None, "not enough synthetic history"
        candidate, fit_all = work
        fitted.append((candidate, fit_all()))
        del work, fit_all  # as the trainer does: this horizon's data is not held during the next one
    return fitted


def train_popularity(panel: PopularityPanel) -> list[tuple[training.Candidate, Any]]:
    config = training.default_config("popularity")
    fitted = []
    for horizon in HORIZONS:
        work = training._popularity_work(panel, horizon, config, False, None)
        assert work is not None, "not enough synthetic history"
        candidate, fit_all = work
        fitted.append((candidate, fit_all()))
        del work, fit_all  # as the trainer does: this horizon's data is not held during the next one
    return fitted


def forecasts_digest(candidate: training.Candidate, model: Any, X: pd.DataFrame) -> str:
    """A digest of the backtest's metrics and of the final and fold models' forecasts of the anchors `X`."""
    backtest = candidate.backtest
    digest = hashlib.sha256(
        json.dumps(
            [backtest.model, backtest.baselines, backtest.served, backtest.folds, backtest.n_test],
            sort_keys=True,
            default=str,
        ).encode()
    )
    for forecaster in (model, backtest.calibration):
        for forecast in (forecaster.predict(X), forecaster.predict_model(X)):
            for key in sorted(forecast):
                digest.update(key.encode() + np.ascontiguousarray(forecast[key], np.float64).tobytes())
    return digest.hexdigest()[:16]


def streams_digests(panel: ChartPanel, fitted: list[tuple[training.Candidate, Any]]) -> dict[str, str]:
    regions = regions_of(panel)
    digests = {}
    for horizon, (candidate, model) in zip(HORIZONS, fitted, strict=True):
        data = chart_set(panel, horizon, regions, features=cached_chart_features(panel, regions))
        digests[f"streams {horizon}w"] = forecasts_digest(candidate, model, data.X.iloc[::DIGEST_EVERY])
    return digests


def popularity_digests(
    panel: PopularityPanel, fitted: list[tuple[training.Candidate, Any]]
) -> dict[str, str]:
    digests = {}
    for horizon, (candidate, model) in zip(HORIZONS, fitted, strict=True):
        X = popularity_set(panel, horizon * 7).X.iloc[::DIGEST_EVERY]
        digests[f"popularity {horizon}w"] = forecasts_digest(candidate, model, X)
    return digests


def compare_with_recorded(rows: int, digests: dict[str, str], record: bool) -> None:
    """Print whether the forecasts equal those recorded by the code before the speed-ups (or record them)."""
    recorded = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
    mine = recorded.setdefault(str(rows), {})
    if record:
        mine.update(digests)
        RECORDED.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
        print(f"  forecasts recorded in {RECORDED.name}: {digests}")
        return
    for name, digest in digests.items():
        before = mine.get(name)
        verdict = (
            "no recorded run for these rows"
            if before is None
            else "identical to the recorded run"
            if before == digest
            else f"DIFFERENT from the recorded run ({before})"
        )
        print(f"  {name} forecasts {digest}: {verdict}")


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
    parser.add_argument("--record", action="store_true", help="record the forecasts as the reference")
    args = parser.parse_args()
    print(f"bench-train: {args.rows:,} synthetic snapshot rows per signal, horizons {HORIZONS}")
    digests: dict[str, str] = {}
    if args.signal in ("streams", "both"):
        make_seconds, _, panel = timed(lambda: chart_rows(args.rows))
        print(f"  streams: generated {len(panel.entries):,} chart rows in {make_seconds:.1f} s")
        base_seconds, base_cpu, _ = timed(lambda: original_streams(panel))
        panel.cache.clear()  # the ridge's features indexed the panel: the training starts without it
        seconds, cpu, fitted = timed(lambda: train_streams(panel))
        for horizon, (candidate, _) in zip(HORIZONS, fitted, strict=True):
            print(f"    {horizon}w backtest: {candidate.backtest.model}")
        print(
            f"  streams training: {seconds:.1f} s, CPU {cpu:.1f} s ({verdict(seconds)}); original approach "
            f"(one ridge, no backtest) {base_seconds:.1f} s, CPU {base_cpu:.1f} s; "
            f"peak memory so far {peak_rss_bytes() / 1024**2:,.0f} MB"
        )
        digests.update(streams_digests(panel, fitted))
        del panel, fitted
    if args.signal in ("popularity", "both"):
        make_seconds, _, pop_panel = timed(lambda: popularity_rows(args.rows))
        print(f"  popularity: generated {len(pop_panel.obs):,} snapshot rows in {make_seconds:.1f} s")
        seconds, cpu, pop_fitted = timed(lambda: train_popularity(pop_panel))
        for horizon, (candidate, _) in zip(HORIZONS, pop_fitted, strict=True):
            print(f"    {horizon}w backtest: {candidate.backtest.model}")
        print(f"  popularity training: {seconds:.1f} s, CPU {cpu:.1f} s ({verdict(seconds)})")
        digests.update(popularity_digests(pop_panel, pop_fitted))
    peak = peak_rss_bytes()
    print(
        f"peak memory {peak / 1024**2:,.0f} MB "
        f"({'ok' if peak < TARGET_BYTES else 'OVER the 2 GB target'}; includes the generated data)"
    )
    compare_with_recorded(args.rows, digests, args.record)


if __name__ == "__main__":
    main()
