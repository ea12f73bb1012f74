"""Synthetic but plausible chart and popularity histories, for tests and benchmarks (never real data).

Songs enter a region's chart at some level above its floor, then decay at a song-specific rate with noise;
a few are evergreens. Each week's chart is the region's top `size` active songs, so songs drop off, and
some come back, as on real charts. Popularity follows the same life cycle on a 0-100 scale.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from shared.weeks import week_of

REGION_CODES = ("global", "it", "de", "fr", "us", "gb", "es", "br", "jp", "mx", "kr", "ar", "nl", "se", "pl")
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
OLD_DISCLAIMER = ',,,"Note that these figures are generated using a formula that protects against any artificial inflation of chart positions.",'  # noqa: E501


def fake_track_id(number: int) -> str:
    """A 22-character base-62 id, unique per number."""
    chars = []
    for _ in range(22):
        number, rest = divmod(number, 62)
        chars.append(ALPHABET[rest])
    return "".join(reversed(chars))


def synthetic_charts(
    *,
    regions: int = 3,
    weeks: int = 120,
    size: int = 200,
    start: dt.date = dt.date(2018, 1, 5),
    seed: int = 0,
) -> pd.DataFrame:
    """Weekly charts: columns track, region, week (the chart's last day), rank, streams, artist, name."""
    rng = np.random.default_rng(seed)
    region_names = [*REGION_CODES, *(f"x{i:02d}" for i in range(regions))][:regions]
    n_songs = int(size * weeks * 0.12) + size * 3
    base = rng.normal(11.5, 0.8, n_songs)
    decay = np.where(
        rng.random(n_songs) < 0.08, rng.uniform(0.0, 0.01, n_songs), rng.gamma(2.0, 0.03, n_songs)
    )
    release = rng.integers(-20, weeks, n_songs)
    artist = rng.integers(0, max(10, n_songs // 6), n_songs)
    frames = []
    for r, region in enumerate(region_names):
        offset = 1.5 if region == "global" else rng.normal(0, 0.4)
        appeal = rng.normal(0, 0.5, n_songs)  # how much this region likes each song
        noise = np.zeros(n_songs)
        for w in range(weeks):
            age = w - release
            alive = age >= 0
            noise = 0.7 * noise + rng.normal(0, 0.08, n_songs)
            level = base + offset + appeal + noise - decay * np.maximum(age, 0) + 0.002 * w
            level[~alive] = -np.inf
            top = np.argsort(-level)[:size]
            top = top[np.isfinite(level[top])]
            chart_day = start + dt.timedelta(weeks=w, days=6)
            frames.append(
                pd.DataFrame(
                    {
                        "song": top,
                        "region": region,
                        "week": chart_day,
                        "rank": np.arange(1, len(top) + 1),
                        "streams": np.exp(level[top]).round().astype(np.int64),
                    }
                )
            )
        del r
    charts = pd.concat(frames, ignore_index=True)
    songs = charts["song"].to_numpy()
    charts["track"] = [fake_track_id(int(s) * 7919 + seed) for s in songs]
    charts["artist"] = [f"Artist {artist[s]}" for s in songs]
    charts["name"] = [f"Song {s}" for s in songs]
    return charts.drop(columns="song")[["track", "region", "week", "rank", "streams", "artist", "name"]]


def chart_entry_rows(charts: pd.DataFrame) -> list[dict[str, object]]:
    """`chart_entry` rows of a charts frame (as `synthetic_charts` makes them, or a panel's entries with
    dated weeks); entries without streams are left out."""
    known = charts[charts["streams"].notna()]
    return [
        {"track_id": t, "region": r, "week": week_of(w), "rank": int(k), "streams": int(s)}
        for t, r, w, k, s in known[["track", "region", "week", "rank", "streams"]].values
    ]


def write_chart_files(charts: pd.DataFrame, folder: Path, *, new_format: bool = False) -> list[Path]:
    """One CSV per (region, week) in the old spotifycharts format or the new charts.spotify.com format."""
    paths = []
    for (region, day), chart in charts.groupby(["region", "week"], sort=True):
        if new_format:
            path = folder / f"regional-{region}-weekly-{day.isoformat()}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8-sig", newline="") as handle:
                writer = csv.writer(handle, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
                writer.writerow(
                    [
                        "rank",
                        "uri",
                        "artist_names",
                        "track_name",
                        "source",
                        "peak_rank",
                        "previous_rank",
                        "weeks_on_chart",
                        "streams",
                    ]
                )
                for row in chart.itertuples():
                    writer.writerow(
                        [
                            row.rank,
                            f"spotify:track:{row.track}",
                            row.artist,
                            row.name,
                            "Label",
                            row.rank,
                            -1,
                            1,
                            f"{row.streams:,}",
                        ]
                    )
        else:
            start = day - dt.timedelta(days=6)
            path = (
                folder
                / str(region)
                / f"{region}_{start.isoformat()}--{(day + dt.timedelta(days=1)).isoformat()}.csv"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8", newline="") as handle:
                handle.write(OLD_DISCLAIMER + "\n")
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(["Position", "Track Name", "Artist", "Streams", "URL"])
                for row in chart.itertuples():
                    writer.writerow(
                        [
                            row.rank,
                            row.name,
                            row.artist,
                            row.streams,
                            f"https://open.spotify.com/track/{row.track}",
                        ]
                    )
        paths.append(path)
    return paths


def synthetic_popularity(
    *,
    lists: int = 3,
    days: int = 500,
    size: int = 50,
    start: dt.date = dt.date(2023, 5, 18),
    seed: int = 0,
    prefix: str = "",
) -> dict[str, pd.DataFrame]:
    """Daily top-`size` playlists with each song's popularity (the history-file columns), per playlist."""
    rng = np.random.default_rng(seed)
    n_songs = size * days // 12 + size * 2
    peak = rng.uniform(55, 95, n_songs)
    decay = rng.gamma(2.0, 0.02, n_songs)
    release = rng.integers(-60, days, n_songs)
    duration = rng.integers(120_000, 300_000, n_songs)
    album = rng.choice(["single", "album"], n_songs)
    explicit = rng.random(n_songs) < 0.3
    out = {}
    for i in range(lists):
        taste = rng.normal(0, 6, n_songs)
        rows = []
        for d in range(days):
            age = d - release
            pop = peak - decay * np.maximum(age, 0) * 3 + rng.normal(0, 1.0, n_songs)
            pop = np.clip(np.where(age < 2, 0, pop), 0, 100)
            score = np.where(age >= 0, pop + taste, -np.inf)
            top = np.argsort(-score)[:size]
            day = start + dt.timedelta(days=d)
            for position, s in enumerate(top, 1):
                release_day = start + dt.timedelta(days=int(release[s]))
                rows.append(
                    (
                        day.isoformat(),
                        position,
                        f"{prefix}Song {s}",
                        f"{prefix}Artist {s % 97} & Guest {s % 13}",
                        int(round(pop[s])),
                        int(duration[s]),
                        album[s],
                        1 if album[s] == "single" else 12,
                        release_day.isoformat(),
                        bool(explicit[s]),
                        "",
                    )
                )
        out[f"{prefix}list-{i}"] = pd.DataFrame(
            rows,
            columns=[
                "date",
                "position",
                "song",
                "artist",
                "popularity",
                "duration_ms",
                "album_type",
                "total_tracks",
                "release_date",
                "is_explicit",
                "album_cover_url",
            ],
        )
    return out


def write_popularity_files(lists: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in lists.items():
        path = folder / f"spotify-streaming-top-50-{name}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths
