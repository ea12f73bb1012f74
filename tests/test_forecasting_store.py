"""The predictor's resident panel store: forecasts from it equal the full load's, and a refresh sees every
change to the database (added, rewritten and deleted rows, whatever their timestamps say), reloading only
the weeks and song buckets that changed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.config import Settings
from shared.forecasting import PanelStore, score_from_store, train_and_register
from shared.forecasting.queries import load_popularity_panel
from shared.forecasting.synthetic import synthetic_charts
from shared.models import ChartEntry, Snapshot, Track
from shared.weeks import add_weeks, week_of
from tests.forecast_reference import batch_songs, forecast_full_load
from tests.forecasting_support import store_charts

pytestmark = pytest.mark.usefixtures("quick_models")

HORIZONS = (26,)
LONG_AGO = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)  # a timestamp no watermark would look at


async def both(
    session: AsyncSession, settings: Settings, panels: PanelStore, week: dt.date | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Forecasts of the week's trending songs from the store and from the full load."""
    week, ids = await batch_songs(session, week)
    batch = await score_from_store(
        session=session, settings=settings, store=panels, week=week, track_ids=ids, horizons=HORIZONS
    )
    resident = batch.predictions()
    full = await forecast_full_load(
        session=session, settings=settings, week=week, track_ids=ids, horizons=HORIZONS
    )
    return [p.model_dump() for p in resident], [p.model_dump() for p in full]


def value_of(forecasts: list[dict[str, Any]], track: str, signal: str) -> float:
    return next(p["current"] for p in forecasts if p["track_id"] == track and p["signal"] == signal)


async def test_store_forecasts_equal_the_full_load_and_see_every_change(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    frame = synthetic_charts(regions=3, weeks=70, size=40, seed=4)
    await store_charts(sessions, frame)
    activated = await train_and_register(sessions=sessions, settings=settings, horizons=HORIZONS)
    assert {v.signal for v in activated} == {"streams", "popularity"}
    panels = PanelStore()
    async with sessions() as session:
        cold = await panels.refresh(session)
        assert cold.full and cold.rows > len(frame)
        resident, full = await both(session, settings, panels)
        assert resident and resident == full
        earlier = week_of(sorted(frame["week"].unique())[-12])
        resident, full = await both(session, settings, panels, earlier)
        assert resident and resident == full
        if session.bind.dialect.name == "mysql":  # type: ignore[union-attr]
            again = await panels.refresh(session)
            assert not again.changed  # nothing changed: nothing read but checksums

    last = week_of(frame["week"].max())
    now = frame[frame["week"] == frame["week"].max()]
    song, other = now["track"].iloc[0], now["track"].iloc[1]
    old_week = week_of(sorted(frame["week"].unique())[-30])
    async with sessions() as session:
        # rewritten in place, with an old timestamp: this week's popularity, an old week's chart streams
        await session.execute(
            update(Snapshot)
            .where(col(Snapshot.track_id) == song, col(Snapshot.week) == last)
            .values(popularity=3, updated_at=LONG_AGO)
        )
        await session.execute(
            update(ChartEntry)
            .where(col(ChartEntry.week) == old_week)
            .values(streams=col(ChartEntry.streams) * 2)
        )
        # a song joins another artist's group; a chart entry disappears
        await session.execute(update(Track).where(col(Track.id) == other).values(artist_names="Someone Else"))
        gone = (
            (await session.execute(select(col(ChartEntry.id)).where(col(ChartEntry.week) == last)))
            .scalars()
            .first()
        )
        await session.execute(delete(ChartEntry).where(col(ChartEntry.id) == gone))
        await session.commit()

    async with sessions() as session:
        changed = await panels.refresh(session)
        if session.bind.dialect.name == "mysql":  # type: ignore[union-attr]
            assert not changed.full
            assert set(changed.chart_weeks) == {old_week, last}
            assert changed.snapshot_weeks == [last]
            assert changed.song_buckets == 1
        resident, full = await both(session, settings, panels)
        assert resident == full
        assert value_of(resident, song, "popularity") == 3

    # one new week: a chart and snapshots of new and known songs
    new_week = add_weeks(last, 1)
    newcomer = "0000000000000newcomer0"
    rows = now.assign(week=pd.Timestamp(new_week).date(), streams=now["streams"] + 7)
    rows = pd.concat([rows, rows.head(1).assign(track=newcomer, rank=999)])
    await store_charts(sessions, rows)
    async with sessions() as session:
        added = await panels.refresh(session)
        if session.bind.dialect.name == "mysql":  # type: ignore[union-attr]
            assert added.chart_weeks == [new_week] and added.snapshot_weeks == [new_week]
            assert added.rows < cold.rows / 10  # one week and the new songs, not the history
        resident, full = await both(session, settings, panels)
        assert resident == full
        assert newcomer in {p["track_id"] for p in resident}
        assert {p["week"] for p in resident} == {new_week}


async def test_store_follows_emptied_tables(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await store_charts(sessions, synthetic_charts(regions=2, weeks=8, size=20, seed=5))
    panels = PanelStore()
    async with sessions() as session:
        await panels.refresh(session)
        week, ids = await batch_songs(session)
        assert len(panels.panels()[0].entries) > 0
        for table in (ChartEntry, Snapshot, Track):
            await session.execute(delete(table))
        await session.commit()
    async with sessions() as session:
        await panels.refresh(session)
        chart, popularity = panels.panels()
        assert len(chart.entries) == 0 and len(popularity.obs) == 0
        emptied = await score_from_store(
            session=session, settings=settings, store=panels, week=week, track_ids=ids
        )
        assert ids and len(emptied) == 0 and emptied.predictions() == []


async def test_store_holds_the_full_loads_rows_as_compact_columns(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    frame = synthetic_charts(regions=2, weeks=10, size=30, seed=6)
    await store_charts(sessions, frame)
    store = PanelStore()
    async with sessions() as session:
        await store.refresh(session)
        full, _ = await load_popularity_panel(session)
    _, popularity = store.panels()
    # the same observations (another row order: features do not depend on it) and the same songs
    by_key = ["song", "day"]
    ours = popularity.obs.assign(song=popularity.obs["song"].astype(str)).sort_values(by_key)
    theirs = full.obs.sort_values(by_key)
    assert len(ours) == len(theirs) > 0
    pd.testing.assert_frame_equal(
        ours.reset_index(drop=True), theirs.reset_index(drop=True), check_dtype=False
    )
    pd.testing.assert_frame_equal(
        popularity.songs.sort_index(), full.songs.sort_index(), check_dtype=False, check_index_type=False
    )
    # each song id once; a week's values as a code and a value per song, not rows of objects
    assert len(store.ids) == frame["track"].nunique()
    assert isinstance(popularity.obs["song"].dtype, pd.CategoricalDtype)
    for week in store.snapshots.values():
        assert week.codes.dtype == np.int32 and week.popularity.dtype == np.float32
