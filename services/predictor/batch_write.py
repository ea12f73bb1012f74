"""How a batch's forecasts are written: the predictions stored while their messages are built in a thread,
the retained messages and alerts staged in the outbox (published after the commit), and the seconds of each
step (`Steps`)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db import upsert
from shared.events import ForecastAlert, Topics, TrackPrediction
from shared.forecasting.scoring import ScoredBatch
from shared.models import PREDICTION_KEY, PREDICTION_UPDATE, Outbox, Prediction
from shared.outbox import STAGED, Staged

from . import batch_messages, messages

T = TypeVar("T")


async def stage_batch(
    session: AsyncSession, *, topics: Topics, week: dt.date, demo: bool, latest_limit: int, songs: bool
) -> tuple[Staged, Staged | None]:
    """Stage the rows of the batch's retained messages (its latest state; its songs', when `songs`) in the
    outbox, and return them as the publisher will read them (their ids are the messages' version)."""
    rows = messages.batch_rows(topics=topics, week=week, demo=demo, latest_limit=latest_limit, songs=songs)
    await upsert(session=session, model=Outbox, rows=rows, keys=["event_id"])
    query = STAGED.where(col(Outbox.event_id).in_([row["event_id"] for row in rows])).order_by(col(Outbox.id))
    staged = [Staged(*row) for row in (await session.execute(query)).all()]
    return staged[0], staged[1] if songs else None


async def stage_alerts(session: AsyncSession, *, topics: Topics, alerts: Sequence[ForecastAlert]) -> None:
    """Stage the batch's alerts (after its retained messages: published after them)."""
    await upsert(session=session, model=Outbox, rows=messages.alert_rows(topics=topics, alerts=alerts),
                 keys=["event_id"])  # fmt: skip


MESSAGE_PART = 10_000  # predictions turned into dicts, then messages, at a time


def song_parts(batch: ScoredBatch, size: int) -> list[tuple[int, int]]:
    """The batch's predictions (by song, then signal) in ranges of about `size`, each of whole songs."""
    songs = [block.tracks[i] for block, i in batch.positions]
    bounds, start = [], 0
    while start < len(songs):
        stop = min(start + size, len(songs))
        while stop < len(songs) and songs[stop] == songs[stop - 1]:
            stop += 1
        bounds.append((start, stop))
        start = stop
    return bounds


def build_messages(
    batch: ScoredBatch | None, topics: Topics, latest: Staged, songs: Staged | None, keep: bool
) -> list[dict[str, Any]]:
    """The batch's messages, built from its predictions as JSON-ready dicts a part at a time and kept until
    they are published (`batch_messages.prepare`); returns the dicts when `keep` (for the alerts). Run in a
    thread while the predictions are stored."""
    bounds = [] if batch is None else song_parts(batch, MESSAGE_PART)
    parts = (batch.message_data(a, b) for a, b in bounds if batch is not None)
    return batch_messages.prepare(topics, latest, songs, parts, keep=keep)


async def store_and_build(
    session: AsyncSession, rows: Sequence[Mapping[str, Any]], build: Callable[[], T], steps: Steps
) -> T:
    """Store the prediction `rows` while `build` runs in a thread (the server loads and indexes the rows
    meanwhile: Python would only wait); returns what `build` returned, and records its seconds in `steps`.
    If storing fails, the messages built are dropped."""

    def timed() -> tuple[T, float]:
        start = time.perf_counter()
        return build(), time.perf_counter() - start

    building = asyncio.ensure_future(asyncio.to_thread(timed))
    try:
        await upsert(
            session=session,
            model=Prediction,
            rows=rows,
            keys=PREDICTION_KEY,
            update=PREDICTION_UPDATE,
        )
    except BaseException:
        await asyncio.gather(building, return_exceptions=True)
        batch_messages.forget()
        raise
    built, seconds = await building
    steps.seconds["messages built (in a thread, while storing)"] = seconds
    return built


class BatchPredictions(Sequence[TrackPrediction]):
    """A batch scoring's predictions as `TrackPrediction` objects, built only if someone reads them (the
    predictor's own messages and rows come from the columns)."""

    def __init__(self, batch: ScoredBatch | None) -> None:
        self.batch = batch

    @functools.cached_property
    def _objects(self) -> list[TrackPrediction]:
        return self.batch.predictions() if self.batch is not None else []

    def __len__(self) -> int:
        return len(self.batch) if self.batch is not None else 0

    def __getitem__(self, index: Any) -> Any:
        return self._objects[index]


class Steps:
    """Seconds spent in each step of a batch (logged with it; `make bench-scale` prints them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.seconds.items())
