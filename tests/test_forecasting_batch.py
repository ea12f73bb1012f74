"""The batch scoring's columns (`ScoredBatch`): the predictor's rows built straight from them read back
(through the read model) as the prediction objects, and those objects are the full load's answers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.config import Settings
from shared.events import PERSISTENCE
from shared.forecasting import PanelStore, ScoredBatch, score_from_store, train_and_register
from shared.forecasting.synthetic import synthetic_charts
from shared.models import ChartEntry
from shared.predictions import Serving, predictions_from_rows, serving_of
from shared.weeks import week_of
from tests.forecast_reference import batch_songs, forecast_full_load
from tests.forecasting_support import store_charts

pytestmark = pytest.mark.usefixtures("quick_models")

STAMP = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def read_back(batch: ScoredBatch, serving: dict[str, Serving] | None = None) -> list[dict[str, Any]]:
    """The batch's stored rows as the read model reads them back (`predictions_from_rows`), with the
    serving methods of the model versions (`serving`; persistence needs none)."""
    ordered = sorted(
        batch.rows(STAMP), key=lambda r: (r["track_id"], r["signal"], r["region"], r["horizon_weeks"])
    )
    return [p.model_dump() for p in predictions_from_rows(ordered, serving or {})]


def rows_one_by_one(batch: ScoredBatch) -> list[dict[str, Any]]:
    """The stored rows built a dict at a time from the predictions (what `rows` gave before it built
    columns): the reference the columns are compared to, value and type."""
    return [
        {
            "track_id": block.tracks[i], "week": block.week, "signal": block.signal.value,
            "region": block.regions[i], "horizon_weeks": h.horizon, "current": block.current[i],
            "value": h.value[i], "lower": h.lower[i], "upper": h.upper[i], "p_chart": h.p_chart[i],
            "model_version": h.model_version, "cold_start": h.cold_start, "created_at": STAMP,
        }
        for block, i in batch.positions
        for h in block.horizons
        if h.value[i] is not None
    ]  # fmt: skip


def assert_rows_as_built_one_by_one(batch: ScoredBatch) -> None:
    rows, reference = list(batch.rows(STAMP)), rows_one_by_one(batch)
    assert rows == reference
    assert [list(map(type, r.values())) for r in rows] == [list(map(type, r.values())) for r in reference]


def as_stored(batch: ScoredBatch) -> list[dict[str, Any]]:
    """The batch's `TrackPrediction` objects without what the rows leave to other tables (the song's
    name, artists and demo flag, its chart rank)."""
    blank = {"name": "", "artists": "", "demo": False, "rank": None}
    found = [{**p.model_dump(), **blank} for p in batch.predictions()]
    return sorted(found, key=lambda p: (p["track_id"], p["signal"], p["region"]))


async def scored(
    session: AsyncSession, settings: Settings, panels: PanelStore, week: dt.date
) -> tuple[ScoredBatch, list[dict[str, Any]]]:
    """The store's batch (26 and 52 weeks) and the full load's answers of the same songs."""
    week, ids = await batch_songs(session, week)
    batch = await score_from_store(session=session, settings=settings, store=panels, week=week, track_ids=ids)
    full = await forecast_full_load(
        session=session, settings=settings, week=week, track_ids=batch.ids, horizons=(26, 52)
    )
    return batch, [p.model_dump() for p in full]


async def test_rows_from_columns_equal_the_rows_from_objects(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    frame = synthetic_charts(regions=3, weeks=70, size=40, seed=4)
    await store_charts(sessions, frame)
    week = week_of(frame["week"].max())
    panels = PanelStore()
    async with sessions() as session:  # no model yet: persistence everywhere
        await panels.refresh(session)
        batch, full = await scored(session, settings, panels, week)
        assert read_back(batch) == as_stored(batch)
        assert [p.model_dump() for p in batch.predictions()] == full
        assert {r["model_version"] for r in batch.rows(STAMP)} == {PERSISTENCE}
        assert_rows_as_built_one_by_one(batch)

    # 26 weeks from a model, 52 by persistence; a song without this week's streams has no persistence
    activated = await train_and_register(sessions=sessions, settings=settings, horizons=(26,))
    assert {v.signal for v in activated} == {"streams", "popularity"}
    async with sessions() as session:
        silent = (
            (await session.execute(select(col(ChartEntry.track_id)).where(col(ChartEntry.week) == week)))
            .scalars()
            .first()
        )
        await session.execute(
            update(ChartEntry).where(col(ChartEntry.track_id) == silent).values(streams=None)
        )
        await session.commit()
    async with sessions() as session:
        await panels.refresh(session)
        batch, full = await scored(session, settings, panels, week)
        rows = batch.rows(STAMP)
        serving = {v.version: serving_of(v.version, v.metrics) for v in activated}
        assert read_back(batch, serving) == as_stored(batch)
        assert [p.model_dump() for p in batch.predictions()] == full
        assert_rows_as_built_one_by_one(batch)
        assert len(batch) == len(full)
        assert {r["model_version"] == PERSISTENCE for r in rows} == {True, False}
        streams_of_silent = {
            r["horizon_weeks"] for r in rows if r["track_id"] == silent and r["signal"] == "streams"
        }
        assert streams_of_silent == {26}
        # every forecast the messages carry says what serves it: its model version's method and skill
        said = {
            (f["model_version"], f["method"], f["skill"])
            for p in batch.message_data()
            for f in p["forecasts"]
        }
        assert said == {
            (name, s.method, s.skill)
            for name, s in {**serving, PERSISTENCE: serving_of(PERSISTENCE, None)}.items()
        }
