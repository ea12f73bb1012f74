"""Prediction retention: the newest `SONGPOP_PREDICTION_RETENTION_WEEKS` anchor weeks are kept, older
ones pruned by week in batches; 0 keeps everything."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select

from services.predictor import retention
from services.predictor.settings import PredictorSettings
from shared.db import upsert
from shared.models import Prediction
from shared.weeks import add_weeks

NEWEST = dt.date(2026, 11, 23)
KEY = ["track_id", "week", "signal", "region", "horizon_weeks"]


async def seed(sessions: Any, weeks: int, songs: int = 30) -> None:
    rows = [
        {"track_id": f"song{s:018d}", "week": add_weeks(NEWEST, -back), "signal": "popularity", "region": "",
         "horizon_weeks": h, "value": 50.0, "model_version": "v"}
        for back in range(weeks)
        for s in range(songs)
        for h in (26, 52)
    ]  # fmt: skip
    async with sessions() as session:
        await upsert(session=session, model=Prediction, rows=rows, keys=KEY)
        await session.commit()


async def weeks_kept(sessions: Any) -> dict[dt.date, int]:
    async with sessions() as session:
        query = select(Prediction.week, func.count()).group_by(Prediction.week)  # type: ignore[call-overload]
        return dict((await session.exec(query)).all())


async def test_old_weeks_are_pruned_in_batches(sessions, monkeypatch) -> None:
    monkeypatch.setattr(retention, "PRUNE_BATCH", 70)  # several batches
    await seed(sessions, weeks=10)
    deleted = await retention.prune_predictions(sessions=sessions, keep_weeks=4)
    assert deleted == 6 * 30 * 2
    assert await weeks_kept(sessions) == {add_weeks(NEWEST, -back): 60 for back in range(4)}
    assert await retention.prune_predictions(sessions=sessions, keep_weeks=4) == 0


async def test_zero_keeps_everything(sessions) -> None:
    await seed(sessions, weeks=3)
    assert await retention.prune_predictions(sessions=sessions, keep_weeks=0) == 0
    assert len(await weeks_kept(sessions)) == 3


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONGPOP_PREDICTION_RETENTION_WEEKS", "12")
    assert PredictorSettings(_env_file=None).prediction_retention_weeks == 12
    assert PredictorSettings.model_fields["prediction_retention_weeks"].default == 60
