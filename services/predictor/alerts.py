"""Forecast alerts of a batch: songs whose 26-week forecast crossed a threshold or moved a lot since last week
(off by default: `SONGPOP_ALERT_THRESHOLD` / `SONGPOP_ALERT_MOVE`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.events import ForecastAlert, TrackPrediction
from shared.models import Prediction

from .settings import PredictorSettings


async def previous_values(
    *, session: AsyncSession, week: dt.date, track_ids: Sequence[str], horizon: int = 26
) -> dict[tuple[str, str], float]:
    """Each song's (and signal's) latest forecast at `horizon` before `week`, to detect big moves."""
    if not track_ids:
        return {}
    ids = sorted(set(track_ids))
    latest = (
        select(col(Prediction.track_id), col(Prediction.signal), func.max(col(Prediction.week)).label("week"))
        .where(
            col(Prediction.track_id).in_(ids),
            col(Prediction.week) < week,
            col(Prediction.horizon_weeks) == horizon,
        )
        .group_by(col(Prediction.track_id), col(Prediction.signal))
        .subquery()
    )
    query = select(col(Prediction.track_id), col(Prediction.signal), col(Prediction.value)).join(
        latest,
        (col(Prediction.track_id) == latest.c.track_id)
        & (col(Prediction.signal) == latest.c.signal)
        & (col(Prediction.week) == latest.c.week)
        & (Prediction.horizon_weeks == horizon),
    )
    return {(t, s): v for t, s, v in (await session.exec(query)).all()}


def alerts_for(
    predictions: Sequence[TrackPrediction | dict[str, Any]],
    previous: dict[tuple[str, str], float],
    *,
    threshold: float | None,
    move: float | None,
    horizon: int = 26,
) -> list[ForecastAlert]:
    """Songs whose forecast crossed `threshold` upwards or moved by more than `move` since last week
    (`predictions` as objects or as their dicts, `ScoredBatch.message_data`)."""
    alerts = []
    for p in predictions:
        data = p if isinstance(p, dict) else p.model_dump()
        forecast = next((f for f in data["forecasts"] if f["horizon_weeks"] == horizon), None)
        if forecast is None:
            continue
        value, before = forecast["value"], previous.get((data["track_id"], data["signal"]))
        common: dict[str, Any] = {
            "track_id": data["track_id"],
            "name": data["name"],
            "signal": data["signal"],
            "horizon_weeks": horizon,
        }
        if threshold is not None and value >= threshold and (before is None or before < threshold):
            alerts.append(
                ForecastAlert(**common, reason="threshold", value=value, previous=before, threshold=threshold)
            )
        elif move is not None and before is not None and abs(value - before) > move:
            alerts.append(ForecastAlert(**common, reason="moved", value=value, previous=before))
    return alerts


async def find_alerts(
    session: AsyncSession,
    settings: PredictorSettings,
    data: Sequence[dict[str, Any]],
    *,
    week: dt.date,
    songs: Sequence[str],
) -> list[ForecastAlert]:
    """The alerts of a batch (`alerts_for`); without alert settings (the default) none, and last week's
    forecasts are not read (100,000 songs' took seconds)."""
    threshold, move = settings.alert_threshold, settings.alert_move
    if threshold is None and move is None:
        return []
    previous = await previous_values(session=session, week=week, track_ids=songs)
    return alerts_for(data, previous, threshold=threshold, move=move)
