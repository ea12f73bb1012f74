"""Helpers for the dashboard tests, browser tests and the end-to-end benchmark: seed rows, run the app."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dashboard.main import server
from services.dashboard.settings import DashboardSettings
from shared.config import Settings
from shared.db import upsert
from shared.events import Forecast, PredictionsLatest, TrackPrediction, envelope
from shared.models import ChartEntry, Prediction, Snapshot, Track
from shared.mqtt import make_client, publish_model, topics
from shared.weeks import add_weeks

WEEK = dt.date(2026, 11, 23)
MODEL = "pop-test-1"


@dataclass(frozen=True)
class Song:
    track_id: str
    name: str
    artists: str = "Some Artist"
    current: float = 50.0
    demo: bool = False


def songs(n: int, *, demo: bool = False) -> list[Song]:
    """`n` distinct songs with 22-character ids and spread-out current values."""
    return [
        Song(f"{i:022d}", f"Song {i}", f"Artist {i % 7}", current=float(20 + (i * 37) % 80), demo=demo)
        for i in range(n)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dashboard_settings(settings: Settings, **overrides: object) -> DashboardSettings:
    """Dashboard settings on the test's database, broker and topic root, on a free port."""
    values = {**settings.model_dump(), "dashboard_port": free_port(), **overrides}
    return DashboardSettings(**values, _env_file=None)


def past_popularity(song: Song, index: int, weeks_ago: int) -> int:
    """A plausible weekly history ending at the song's current value: a climb with a wobble."""
    if weeks_ago == 0:
        return int(song.current)
    wobble = 3 * math.sin(weeks_ago / 2.5 + index)
    return max(0, min(100, round(song.current - 0.8 * weeks_ago + wobble)))


async def seed(
    sessions: async_sessionmaker[AsyncSession],
    items: Sequence[Song],
    *,
    week: dt.date = WEEK,
    history_weeks: int = 12,
    with_chart: bool = False,
) -> None:
    """Tracks, weekly popularity history up to `week`, and 26/52-week popularity predictions."""
    tracks = [{"id": s.track_id, "name": s.name, "artist_names": s.artists, "is_demo": s.demo} for s in items]
    snapshots = [
        {
            "track_id": s.track_id,
            "week": add_weeks(week, -k),
            "popularity": past_popularity(s, i, k),
            "trending": True,
            "is_demo": s.demo,
        }
        for i, s in enumerate(items)
        for k in range(history_weeks)
    ]
    predictions = [
        {
            "track_id": s.track_id,
            "week": week,
            "signal": "popularity",
            "region": "",
            "horizon_weeks": h,
            "current": s.current,
            "value": s.current - h / 13,
            "lower": s.current - 10 - h / 5,
            "upper": s.current + 5,
            "model_version": MODEL,
        }
        for s in items
        for h in (26, 52)
    ]
    async with sessions() as session:
        await upsert(session=session, model=Track, rows=tracks, keys=["id"], update=["name"])
        await upsert(
            session=session, model=Snapshot, rows=snapshots, keys=["track_id", "week"], update=["popularity"]
        )
        await upsert(
            session=session,
            model=Prediction,
            rows=predictions,
            keys=["track_id", "week", "signal", "region", "horizon_weeks"],
            update=["value"],
        )
        if with_chart:
            chart: list[dict[str, Any]] = [
                {
                    "track_id": s.track_id,
                    "week": week,
                    "region": "global",
                    "rank": i + 1,
                    "streams": 1_000_000 - i * 1000,
                }
                for i, s in enumerate(items)
            ]
            await upsert(
                session=session,
                model=ChartEntry,
                rows=chart,
                keys=["track_id", "week", "region"],
                update=["rank"],
            )
        await session.commit()


async def seed_streams(
    sessions: async_sessionmaker[AsyncSession],
    items: Sequence[Song],
    *,
    week: dt.date = WEEK,
    history_weeks: int = 20,
    region: str = "global",
) -> None:
    """Weekly chart positions and streams up to `week`, and 26/52-week streams predictions."""
    chart: list[dict[str, Any]] = [
        {
            "track_id": s.track_id,
            "week": add_weeks(week, -k),
            "region": region,
            "rank": i + 1,
            "streams": round((2_400_000 - i * 150_000) * (1 + 0.04 * k) * (1 + 0.05 * math.sin(k + i))),
        }
        for i, s in enumerate(items)
        for k in range(history_weeks)
    ]
    current: dict[str, float] = {row["track_id"]: row["streams"] for row in chart if row["week"] == week}
    predictions = [
        {
            "track_id": s.track_id,
            "week": week,
            "signal": "streams",
            "region": region,
            "horizon_weeks": h,
            "current": current[s.track_id],
            "value": current[s.track_id] * (0.7 if h == 26 else 0.45),
            "lower": current[s.track_id] * (0.3 if h == 26 else 0.12),
            "upper": current[s.track_id] * (1.1 if h == 26 else 0.95),
            "p_chart": 0.6 if h == 26 else 0.35,
            "model_version": "streams-test-1",
        }
        for s in items
        for h in (26, 52)
    ]
    async with sessions() as session:
        await upsert(
            session=session,
            model=ChartEntry,
            rows=chart,
            keys=["track_id", "week", "region"],
            update=["rank", "streams"],
        )
        await upsert(
            session=session,
            model=Prediction,
            rows=predictions,
            keys=["track_id", "week", "signal", "region", "horizon_weeks"],
            update=["value"],
        )
        await session.commit()


def prediction_event(items: Sequence[Song], *, shift: float, week: dt.date = WEEK):
    """An Envelope[PredictionsLatest] whose 26-week forecast of each song is `current + shift`."""
    predictions = [
        TrackPrediction(
            track_id=s.track_id,
            name=s.name,
            artists=s.artists,
            week=week,
            signal="popularity",
            current=s.current,
            demo=s.demo,
            forecasts=[
                Forecast(
                    horizon_weeks=26,
                    value=s.current + shift,
                    lower=s.current + shift - 8,
                    upper=s.current + shift + 6,
                    model_version=MODEL,
                ),
                Forecast(
                    horizon_weeks=52,
                    value=s.current + shift / 2,
                    lower=s.current - 15,
                    upper=s.current + 9,
                    model_version=MODEL,
                ),
            ],
        )
        for s in items
    ]
    latest = PredictionsLatest(week=week, count=len(predictions), predictions=predictions)
    return envelope("predictor", latest)


async def publish_latest(settings: Settings, event) -> None:
    """Publish a predictions event as the predictor does (QoS 1, retained)."""
    async with make_client(settings, "predictor-test", announce=False) as client:
        await publish_model(client, topics(settings).predictions_latest, event, retain=True)


async def clear_retained(settings: Settings) -> None:
    """Remove this test's retained predictions from the broker."""
    async with make_client(settings, "cleanup", announce=False) as client:
        await client.publish(topics(settings).predictions_latest, b"", qos=1, retain=True)


@dataclass
class RunningDashboard:
    url: str
    app: FastAPI

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


@asynccontextmanager
async def running_dashboard(
    settings: DashboardSettings, *, wait_mqtt: bool = True
) -> AsyncIterator[RunningDashboard]:
    """The dashboard served by uvicorn in this event loop, lifespan entered, MQTT consumer connected."""
    srv = server(settings)
    task = asyncio.create_task(srv.serve())
    try:
        async with asyncio.timeout(20):
            while not srv.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
            app = srv.config.loaded_app
            while not hasattr(app, "state"):  # middleware wrappers: find the FastAPI app
                app = app.app
            if wait_mqtt:
                await app.state.feed.connected.wait()
        yield RunningDashboard(url=f"http://127.0.0.1:{settings.dashboard_port}", app=app)
    finally:
        srv.should_exit = True
        await task
