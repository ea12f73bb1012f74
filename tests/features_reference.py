"""The feature code as it was before it was made faster, kept as the reference its replacement must equal bit
for bit (`tests/test_forecasting_speedups.py`): running aggregates grouped by the string keys themselves, and
lookups probing the sorted keys in the order asked."""

from __future__ import annotations

import numpy as np
import pandas as pd


def lookup_reference(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(keys, wanted)
    pos_clipped = np.minimum(pos, len(keys) - 1)
    found = (pos < len(keys)) & (keys[pos_clipped] == wanted) if len(keys) else np.zeros(len(wanted), bool)
    out = np.full(len(wanted), np.nan)
    out[found] = values[pos_clipped[found]]
    return out


def running_reference(entries: pd.DataFrame, starts: np.ndarray) -> pd.DataFrame:
    e = entries[["track", "region", "week", "rank", "log_streams", "artist", "above_floor"]].copy()
    e = e.sort_values(["track", "region", "week"], kind="stable")
    by_song_region = e.groupby(["track", "region"], sort=False)
    out = pd.DataFrame(index=e.index)
    out["weeks_on_chart"] = by_song_region.cumcount() + 1
    out["weeks_since_first"] = e["week"] - by_song_region["week"].transform("first")
    run_start = e["week"].where(pd.Series(starts, index=entries.index).reindex(e.index).to_numpy())
    out["streak"] = e["week"] - run_start.groupby([e["track"], e["region"]], sort=False).ffill() + 1
    out["peak_rank"] = by_song_region["rank"].cummin()
    out["best_above"] = by_song_region["above_floor"].cummax()
    peak_week = e["week"].where(e["rank"] == out["peak_rank"])
    out["weeks_since_peak"] = e["week"] - peak_week.groupby([e["track"], e["region"]], sort=False).ffill()

    same_week = e.groupby(["track", "week"], sort=False)
    out["regions_now"] = same_week["rank"].transform("size")
    out["mean_above_regions"] = same_week["above_floor"].transform("mean")
    ordered = e.sort_values(["track", "week"], kind="stable")
    count_so_far = ordered.groupby("track", sort=False).cumcount() + 1
    out["weeks_any_region"] = count_so_far.groupby([ordered["track"], ordered["week"]]).transform("max")
    first_any = e.groupby("track", sort=False)["week"].transform("min")
    out["weeks_since_first_any"] = e["week"] - first_any
    history_start = e.groupby("region", sort=False)["week"].transform("min")
    out["since_history_start"] = np.where(first_any <= history_start, e["week"] - history_start, np.nan)

    by_artist_week = e.groupby(["artist", "region", "week"], sort=False)
    out["artist_songs_now"] = by_artist_week["rank"].transform("size")
    ordered = e.sort_values(["artist", "region", "week"], kind="stable")
    artist_so_far = ordered.groupby(["artist", "region"], sort=False).cumcount() + 1
    out["artist_chart_weeks"] = artist_so_far.groupby(
        [ordered["artist"], ordered["region"], ordered["week"]]
    ).transform("max")
    return out.sort_index()
