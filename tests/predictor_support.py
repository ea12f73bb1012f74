"""Helpers of the predictor tests: songs written straight into the database, predictor settings and
apps pointed at the Spotify emulator, and MQTT observers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import string
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from services.emulator import EmulatorConfig
from services.emulator import create_app as create_emulator
from services.predictor.app import create_app as create_predictor
from services.predictor.settings import PredictorSettings
from shared.config import Settings
from shared.db import upsert
from shared.events import DbUpdated, Envelope, envelope
from shared.models import ChartEntry, Outbox, Prediction, ProcessedEvent, Snapshot, Track
from shared.mqtt import topics
from shared.outbox import add_event, flush_outbox
from shared.weeks import add_weeks, current_week
from tests.servers import serving

WEEK = current_week()
BASE62 = string.digits + string.ascii_letters
NOT_ON_SPOTIFY = "0" * 22  # a well-formed id the emulator's catalog does not hold


def random_track_id(rng: random.Random) -> str:
    return "".join(rng.choice(BASE62) for _ in range(22))


async def seed_songs(
    sessions: async_sessionmaker[AsyncSession],
    *,
    n: int = 12,
    weeks: int = 10,
    week: dt.date = WEEK,
    charted: int = 5,
    seed: int = 1,
) -> list[str]:
    """`n` songs with `weeks` weekly snapshots ending at `week` (trending that week); the first
    `charted` of them also on the global chart that week. Returns their ids."""
    rng = random.Random(seed)
    ids = [random_track_id(rng) for _ in range(n)]
    tracks, snapshots, charts = [], [], []
    for i, track_id in enumerate(ids):
        tracks.append(
            {
                "id": track_id,
                "name": f"Song {i} <b>",
                "artist_names": f"Artist {i % 4}",
                "release_date": add_weeks(week, -weeks - i),
                "is_demo": False,
            }
        )
        level = rng.uniform(30, 90)
        for back in range(weeks):
            snapshots.append(
                {
                    "track_id": track_id,
                    "week": add_weeks(week, -back),
                    "popularity": max(0, min(100, round(level - back * rng.uniform(-1, 2)))),
                    "popularity_source": "api",
                    "trending": back == 0,
                }
            )
        if i < charted:
            charts.append(
                {
                    "track_id": track_id,
                    "week": week,
                    "region": "global",
                    "rank": i + 1,
                    "streams": 5_000_000 - i * 100_000,
                }
            )
    async with sessions() as session:
        await upsert(session=session, model=Track, rows=tracks, keys=["id"])
        await upsert(session=session, model=Snapshot, rows=snapshots, keys=["track_id", "week"])
        await upsert(session=session, model=ChartEntry, rows=charts, keys=["track_id", "week", "region"])
        await session.commit()
    return ids


async def store_batch_predictions(
    sessions: async_sessionmaker[AsyncSession], ids: list[str], *, charted: int = 0, week: dt.date = WEEK
) -> dict[tuple[str, str], set[tuple[int, float, float, float, str]]]:
    """Predictions as a batch run with trained models stores them: popularity for every song, streams
    for the first `charted` (values of full precision: the DOUBLE columns give them back whole). Returns
    (horizon, value, lower, upper, model version) per (song, signal)."""
    rows: list[dict[str, Any]] = []
    for n, track_id in enumerate(ids):
        signals = [("popularity", "", 60.0 + n)]
        signals += [("streams", "global", 4e6 + n * 10_000)] if n < charted else []
        for signal, region, current in signals:
            for horizon in (26, 52):
                value = current * (0.9 if horizon == 26 else 0.8) / 3
                rows.append(
                    {"track_id": track_id, "week": week, "signal": signal, "region": region,
                     "horizon_weeks": horizon, "current": current, "value": value, "lower": value / 2,
                     "upper": value * 2, "model_version": f"{signal}-{horizon}w-7", "cold_start": False}
                )  # fmt: skip
    async with sessions() as session:
        await upsert(
            session=session, model=Prediction, rows=rows,
            keys=["track_id", "week", "signal", "region", "horizon_weeks"],
        )  # fmt: skip
        await session.commit()
    stored: dict[tuple[str, str], set[tuple[int, float, float, float, str]]] = {}
    for r in rows:
        stored.setdefault((r["track_id"], r["signal"]), set()).add(
            (r["horizon_weeks"], r["value"], r["lower"], r["upper"], r["model_version"])
        )
    return stored


def db_updated(run_id: int = 1, week: dt.date = WEEK, tracks: int = 12) -> Envelope[DbUpdated]:
    """A `db-updated` event as the ingestor publishes it."""
    data = DbUpdated(run_id=run_id, kind="update", week=week, tracks=tracks, snapshots=tracks)
    return envelope("ingestor", data)


def predictor_settings(settings: Settings, emulator_url: str = "", **extra: Any) -> PredictorSettings:
    """Predictor settings on the test's database, broker and topic root (and the emulator, if given)."""
    spotify = (
        {"spotify_api_url": f"{emulator_url}/v1", "spotify_accounts_url": emulator_url}
        if emulator_url
        else {}
    )
    return PredictorSettings(
        **{**settings.model_dump(), **(spotify if emulator_url else {}), **extra},
        _env_file=None,
    )


@contextlib.asynccontextmanager
async def running_emulator() -> AsyncIterator[tuple[Any, str]]:
    """The Spotify emulator app (its catalog is reachable through app.state) and its URL."""
    app = create_emulator(EmulatorConfig(mode="extended", n_tracks=300, start_week=WEEK))
    async with serving(app) as url:
        yield app, url


async def messages_until(client: aiomqtt.Client, done: Any, within: float = 20) -> list[aiomqtt.Message]:
    """Messages received until `done(messages)` is true (TimeoutError after `within` seconds)."""
    received: list[aiomqtt.Message] = []
    async with asyncio.timeout(within):
        async for message in client.messages:
            received.append(message)
            if done(received):
                return received
    return received


def use_interim_forecaster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing to do: shared.forecasting.forecast_tracks has landed (kept for the tests that call it)."""


@contextlib.asynccontextmanager
async def running_predictor(config: Any) -> AsyncIterator[Any]:
    """A predictor app serving on a socket, yielded once its MQTT consumer has subscribed."""
    app = create_predictor(config)
    async with serving(app):
        await asyncio.wait_for(app.state.consuming.wait(), 20)
        yield app


async def count(sessions, query) -> int:
    async with sessions() as session:
        return int((await session.exec(query)).one()[0])


def outbox_rows_on(topic: str):
    return select(func.count()).select_from(Outbox).where(col(Outbox.topic) == topic)


async def processed(sessions) -> set[str]:
    async with sessions() as session:
        rows = (await session.exec(select(ProcessedEvent.event_id))).all()  # type: ignore[call-overload]
    return {row[0] for row in rows}


async def publish_like_the_ingestor(settings, sessions, *events) -> None:
    """Stage `db-updated` events in the outbox and publish them, as an ingest run does."""
    t = topics(settings)
    async with sessions() as session:
        for event in events:
            add_event(session, topic=t.db_updated, event=event, retain=True)
        await session.commit()
    await flush_outbox(settings=settings, sessions=sessions, service="ingestor")
