"""Serving loads only the rows a song's features read (its own, its artists' other songs', every chart's
floor) and forecasts exactly what the full load forecasts, with active models on the real database."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.config import Settings
from shared.events import TrackPrediction
from shared.forecasting import forecast_tracks, queries, train_and_register
from shared.forecasting.features import anchor_chart_features, regions_of
from shared.forecasting.panel import ChartPanel, week_index
from shared.forecasting.synthetic import synthetic_charts
from shared.models import ChartEntry
from shared.weeks import week_of
from tests.forecast_reference import batch_songs, forecast_full_load
from tests.forecasting_support import store_charts

HORIZONS = (26,)


pytestmark = pytest.mark.usefixtures("quick_models")


def dumped(predictions: list[TrackPrediction]) -> list[dict[str, Any]]:
    return [p.model_dump() for p in predictions]


async def both_ways(
    session: AsyncSession, settings: Settings, ids: list[str] | None, week: dt.date | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    week, trending = await batch_songs(session, week)
    songs = list(dict.fromkeys(trending if ids is None else ids))
    scoped = await forecast_tracks(
        session=session, settings=settings, anchors=dict.fromkeys(songs, week), horizons=HORIZONS
    )
    full = await forecast_full_load(
        session=session, settings=settings, week=week, track_ids=songs, horizons=HORIZONS
    )
    return dumped(scoped), dumped(full)


async def test_scoped_forecasts_equal_the_full_load(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    frame = synthetic_charts(regions=3, weeks=80, size=40, seed=1)
    await store_charts(sessions, frame)
    activated = await train_and_register(sessions=sessions, settings=settings, horizons=HORIZONS)
    assert {v.signal for v in activated} == {"streams", "popularity"}

    last = frame["week"].max()
    now = frame[frame["week"] == last]
    busiest_artist = now.groupby("artist")["track"].nunique().idxmax()
    one = now[now["artist"] == busiest_artist]["track"].iloc[0]
    respelled = [t for t in now["track"].unique() if t.endswith(("a", "b", "c"))][:2]
    gone = frame[~frame["track"].isin(now["track"])]["track"].iloc[0]  # no data that week: left out
    handful = [one, *respelled, gone, *now["track"].unique()[:3].tolist()]

    async with sessions() as session:
        for ids in ([one], handful, None, [one, "0000000000000000unknown"]):
            scoped, full = await both_ways(session, settings, ids)
            assert scoped and scoped == full, ids
            assert {f["model_version"] for p in scoped for f in p["forecasts"]} == {
                v.version for v in activated
            }
        scored = {p["track_id"] for p in (await both_ways(session, settings, handful))[0]}
        assert scored == set(handful) - {gone}

        earlier = week_of(sorted(frame["week"].unique())[-10])
        scoped, full = await both_ways(session, settings, None, week=earlier)
        assert scoped and scoped == full


async def test_scoped_panels_hold_the_songs_and_their_artists_songs_only(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    frame = synthetic_charts(regions=3, weeks=40, size=40, seed=2)
    await store_charts(sessions, frame)
    last = frame["week"].max()
    now = frame[frame["week"] == last]
    song = now["track"].iloc[0]
    artist = now["artist"].iloc[0]
    async with sessions() as session:
        names = await queries.song_names(session, [song])
        panels = await queries.scoped_panels(session, week_of(last), [song], names, demo=False)
        total = (await session.execute(select(func.count()).select_from(ChartEntry))).scalar_one()
    assert panels is not None
    chart, popularity = panels
    artist_songs = set(frame[frame["artist"] == artist]["track"])
    assert set(chart.entries["track"]) == artist_songs
    assert set(popularity.obs["song"]) == artist_songs
    assert len(chart.entries) < total
    # the floors of the charts these songs read, as the full data has them, though few entries are loaded
    full_floors = np.log(frame.groupby(["region", "week"])["streams"].min().rename("full"))
    full_floors.index = full_floors.index.set_levels(
        [week_index(week_of(w)) for w in full_floors.index.levels[1]], level=1
    )
    loaded = chart.charts.set_index(["region", "week"])["log_floor"]
    assert set(chart.entries.groupby(["region", "week"]).groups) <= set(loaded.index)
    assert np.array_equal(loaded.to_numpy(), full_floors.loc[loaded.index].to_numpy())


async def test_scoped_panels_give_a_song_the_full_loads_features(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Feature by feature, at the anchor and at an earlier week: the features that count the charts that
    exist (files of the last year, share of the files since the first entry, runs) read every chart, not
    only those of the song's and its artist's weeks and the lagged weeks."""
    frame = synthetic_charts(regions=3, weeks=70, size=40, seed=6)
    await store_charts(sessions, frame)
    last = week_of(frame["week"].max())
    now = frame[frame["week"] == frame["week"].max()]
    song = now.groupby("track")["week"].count().idxmin()  # charting in fewest regions this week
    async with sessions() as session:
        names = await queries.song_names(session, [song])
        scoped = await queries.scoped_panels(session, last, [song], names, demo=False)
        full = await queries.load_chart_panel(session, max_week=last)
    assert scoped is not None
    regions = regions_of(full)
    for week in (last, week_of(sorted(frame["week"].unique())[-20])):

        def features(panel: ChartPanel) -> pd.DataFrame:
            entries = panel.entries
            at = entries.index[(entries["track"] == song) & (entries["week"] == week_index(week))]  # noqa: B023
            return anchor_chart_features(panel, regions, at).reset_index(drop=True)

        expected = features(full)
        if len(expected):
            pd.testing.assert_frame_equal(features(scoped[0]), expected)
