"""On-demand forecasts of many songs whose data ends at different weeks share one load and its indexes,
and answer exactly what forecasting them week by week answers (issue 12, item 4; timing: `make
bench-batch`)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.predictor.cache import ResidentAnswers, ResponseCache
from services.predictor.deps import Clients
from services.predictor.tracks import forecasts_for
from shared.config import Settings
from shared.forecasting import forecast_tracks, train_and_register
from shared.forecasting.synthetic import synthetic_charts
from shared.weeks import week_of
from tests.forecasting_support import store_charts
from tests.predictor_support import predictor_settings

pytestmark = pytest.mark.usefixtures("quick_models")
HORIZONS = (26,)


async def test_songs_at_many_anchor_weeks_forecast_as_week_by_week(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, engine
) -> None:
    frame = synthetic_charts(regions=3, weeks=70, size=40, seed=4)
    await store_charts(sessions, frame)
    assert await train_and_register(sessions=sessions, settings=settings, horizons=HORIZONS)
    last_week = frame.groupby("track")["week"].max().map(week_of)  # each song's latest data week
    weeks = sorted(last_week.unique())[-8:]
    anchors: dict[str, dt.date] = {}
    for week in weeks:  # a few songs of each of eight different anchor weeks
        anchors.update(dict.fromkeys(last_week[last_week == week].index[:6].tolist(), week))
    assert len(set(anchors.values())) == 8

    async with sessions() as session:
        shared = await forecast_tracks(session=session, settings=settings, anchors=anchors, horizons=HORIZONS)
        plain = []
        for week in weeks:
            songs = [t for t, w in anchors.items() if w == week]
            plain += await forecast_tracks(
                session=session, settings=settings, anchors=dict.fromkeys(songs, week), horizons=HORIZONS
            )
    key = lambda p: (p.track_id, p.signal, p.region)  # noqa: E731
    assert sorted(shared, key=key) == sorted(plain, key=key)
    assert {p.track_id for p in shared} == set(anchors)
    assert {p.week for p in shared} == set(weeks)

    # The REST path: the same answers with the shared scoring on and off.
    answers = []
    for on in (True, False):
        clients = Clients(
            predictor_settings(settings, rest_shared_scoring=on), sessions, engine, None,  # type: ignore[arg-type]
            ResponseCache(engine, max_entries=0, check_seconds=1), ResidentAnswers(),
        )  # fmt: skip
        found = await forecasts_for(clients=clients, track_ids=list(anchors))
        assert all(f.predictions and f.source == "on_demand" for f in found)
        answers.append([f.model_dump() for f in found])
    assert answers[0] == answers[1]
