"""Retention of the predictions: anchor weeks older than `SONGPOP_PREDICTION_RETENTION_WEEKS` are deleted in
short transactions (docs/operations.md)."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.models import Prediction
from shared.predictions import latest_batch_week
from shared.weeks import add_weeks

log = logging.getLogger(__name__)

PRUNE_BATCH = 20_000  # prediction rows deleted per transaction: short locks, bounded undo


async def prune_predictions(*, sessions: async_sessionmaker[AsyncSession], keep_weeks: int) -> int:
    """Delete the predictions of anchor weeks older than the newest `keep_weeks` weeks (0: keep all), a
    batch per transaction so readers and the next week's writes never wait long. Returns rows deleted."""
    if keep_weeks <= 0:
        return 0
    async with sessions() as session:
        newest = await latest_batch_week(session)
        if newest is None:
            return 0
        cutoff = add_weeks(newest, -(keep_weeks - 1))
        old = select(col(Prediction.week)).where(col(Prediction.week) < cutoff).distinct()
        weeks = list((await session.exec(old)).all())
    deleted = 0
    for week in sorted(weeks):
        deleted += await _prune_week(sessions, week)
    if deleted:
        log.info("retention: %d prediction(s) of weeks before %s deleted", deleted, cutoff)
    return deleted


async def _prune_week(sessions: async_sessionmaker[AsyncSession], week: dt.date) -> int:
    """Delete one week's predictions in ranges of songs of about `PRUNE_BATCH` rows, a transaction each:
    ranges of the primary key (week, track_id, ...), each found and deleted once, none read twice."""
    deleted, after = 0, None
    while True:
        in_week = [col(Prediction.week) == week]
        in_week += [] if after is None else [col(Prediction.track_id) > after]
        async with sessions() as session:
            boundary = select(col(Prediction.track_id)).where(*in_week).order_by(col(Prediction.track_id))
            last = (await session.exec(boundary.offset(PRUNE_BATCH - 1).limit(1))).first()
            upto = () if last is None else (col(Prediction.track_id) <= last,)
            result = await session.exec(delete(Prediction).where(*in_week, *upto))
            await session.commit()
        deleted += result.rowcount
        if last is None:
            return deleted
        after = last
