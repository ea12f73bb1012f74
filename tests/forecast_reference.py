"""The reference the product's forecasts are checked against: every row up to the week loaded through the
ORM (no scoping, no resident store), then the same scoring. Slow; for tests and benchmarks only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlmodel.ext.asyncio.session import AsyncSession

from shared.config import Settings
from shared.events import TrackPrediction
from shared.forecasting.queries import (
    load_chart_panel,
    load_popularity_panel,
    song_names,
)
from shared.forecasting.registry import active_versions
from shared.forecasting.scoring import predict
from shared.predictions import latest_data_week, trending_ids
from shared.weeks import week_of


async def forecast_full_load(
    *,
    session: AsyncSession,
    settings: Settings,
    week: dt.date | None = None,
    track_ids: Sequence[str] | None = None,
    horizons: Sequence[int] = (26, 52),
) -> list[TrackPrediction]:
    """`forecast_tracks`' answers from full panels (every row up to the week): what scoping and the resident
    store must reproduce exactly."""
    anchor = week or await latest_data_week(session)
    if anchor is None:
        return []
    anchor = week_of(anchor)
    ids = list(track_ids) if track_ids is not None else await trending_ids(session, anchor)
    if not ids:
        return []
    chart_panel = await load_chart_panel(session, max_week=anchor, demo=settings.demo)
    popularity, _ = await load_popularity_panel(session, max_week=anchor, demo=settings.demo)
    return predict(
        chart_panel, popularity, anchor=anchor, ids=ids, versions=await active_versions(session),
        names=await song_names(session, ids), settings=settings, horizons=horizons,
    )  # fmt: skip
