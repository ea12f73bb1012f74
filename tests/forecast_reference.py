"""The reference the product's forecasts are checked against: every row up to the week loaded through the
ORM (no scoping, no resident store), then the same scoring. Slow; for tests and benchmarks only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlmodel.ext.asyncio.session import AsyncSession

from shared.config import Settings
from shared.events import TrackPrediction
from shared.forecasting.queries import load_chart_panel, load_popularity_panel, song_names
from shared.forecasting.registry import active_versions
from shared.forecasting.scoring import forecast_tracks, predict
from shared.predictions import latest_data_week, trending_ids
from shared.weeks import week_of


async def batch_songs(session: AsyncSession, week: dt.date | None = None) -> tuple[dt.date, list[str]]:
    """A week (default: the latest with trending songs) and its trending songs, as the predictor's batch
    picks them (`shared.predictions`)."""
    week = week or await latest_data_week(session)
    assert week is not None, "no data"
    week = week_of(week)
    return week, await trending_ids(session, week)


async def forecast_full_load(
    *,
    session: AsyncSession,
    settings: Settings,
    week: dt.date,
    track_ids: Sequence[str],
    horizons: Sequence[int] = (26, 52),
) -> list[TrackPrediction]:
    """The forecasts of songs `track_ids` at `week` from full panels (every row up to the week): what
    scoping and the resident store must reproduce exactly."""
    anchor, ids = week_of(week), list(track_ids)
    chart_panel = await load_chart_panel(session, max_week=anchor, demo=settings.demo)
    popularity, _ = await load_popularity_panel(session, max_week=anchor, demo=settings.demo)
    return predict(
        chart_panel, popularity, anchor=anchor, ids=ids, versions=await active_versions(session),
        names=await song_names(session, ids), settings=settings, horizons=horizons,
    )  # fmt: skip


async def forecast_trending(
    *, session: AsyncSession, settings: Settings, horizons: Sequence[int] = (26, 52)
) -> list[TrackPrediction]:
    """`forecast_tracks` of the latest week's trending songs."""
    week, ids = await batch_songs(session)
    return await forecast_tracks(
        session=session, settings=settings, anchors=dict.fromkeys(ids, week), horizons=horizons
    )
