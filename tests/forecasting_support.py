"""Forecasting test data in the database: a synthetic charts frame stored as the ingestor would store it."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import upsert
from shared.forecasting.synthetic import chart_entry_rows
from shared.models import Album, ChartEntry, Snapshot, Track
from shared.weeks import week_of


def spelled(artist: str, track: str) -> str:
    """The track's artists as the database may spell them: other casing, featured artists after a comma."""
    if track.endswith(("a", "b", "c")):
        return f"{artist.upper()}, Guest {track[-3:]}"
    return artist


def popularity_of(frame: pd.DataFrame) -> pd.Series:
    """A popularity index that fades with weeks since the song's first chart (learnable, not constant)."""
    first = frame.groupby("track")["week"].transform("min")
    age = (pd.to_datetime(frame["week"]) - pd.to_datetime(first)).dt.days / 7
    noise = np.random.default_rng(3).normal(0, 2, len(frame))
    return (35 + 55 * np.exp(-age / 15) + noise).clip(0, 100).round().astype(int)


async def store_charts(sessions: async_sessionmaker[AsyncSession], frame: pd.DataFrame) -> None:
    """Store a synthetic charts frame as the ingestor would: albums, tracks (artists spelled variously),
    chart entries and trending snapshots with a learnable popularity."""
    tracks = frame.drop_duplicates("track")
    snapshots = frame.sort_values("rank").drop_duplicates(["track", "week"]).copy()
    snapshots["popularity"] = popularity_of(snapshots)
    albums = [
        {"id": f"album{i:017d}", "name": f"Album {i}", "album_type": kind, "total_tracks": 1 + i * 4}
        for i, kind in enumerate(("single", "album", "compilation"))
    ]
    async with sessions() as session:
        await upsert(session=session, model=Album, rows=albums, keys=["id"])
        await upsert(
            session=session,
            model=Track,
            rows=[
                {
                    "id": t,
                    "name": n,
                    "artist_names": spelled(a, t),
                    "release_date": week_of(w) - dt.timedelta(days=i % 30),
                    "duration_ms": 150_000 + 997 * i,
                    "explicit": i % 3 == 0,
                    "album_id": albums[i % 3]["id"],
                }
                for i, (t, n, a, w) in enumerate(tracks[["track", "name", "artist", "week"]].values)
            ],
            keys=["id"],
        )
        await upsert(
            session=session,
            model=ChartEntry,
            rows=chart_entry_rows(frame),
            keys=["track_id", "week", "region"],
        )
        await upsert(
            session=session,
            model=Snapshot,
            rows=[
                {"track_id": t, "week": week_of(w), "trending": True, "popularity": int(p)}
                for t, w, p in snapshots[["track", "week", "popularity"]].values
            ],
            keys=["track_id", "week"],
        )
        await session.commit()
