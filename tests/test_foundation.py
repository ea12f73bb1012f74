"""The shared foundation: settings, schema, upserts and the outbox against the real database and broker."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import func, select
from sqlmodel import col

from shared.config import ConfigError, Settings, load_settings
from shared.db import upsert
from shared.events import DbUpdated, envelope, parse
from shared.models import Outbox, Snapshot
from shared.mqtt import broker_address, make_client, topics
from shared.outbox import add_event, publish_pending


def test_placeholder_secret_refused_in_production() -> None:
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings(
            Settings,
            environment="production",
            spotify_client_id="abc",
            spotify_client_secret="changeme",
            _env_file=None,
        )


def test_secret_is_redacted() -> None:
    s = Settings(
        spotify_client_id="abc",
        spotify_client_secret="s3cr3t-value",
        mqtt_url="mqtt://svc:hunter2@broker:1883",
        _env_file=None,
    )
    shown = str(s.redacted()) + repr(s)
    assert "s3cr3t-value" not in shown and "hunter2" not in shown
    assert s.effective_spotify_api_url == "https://api.spotify.com/v1"


def test_broker_address() -> None:
    a = broker_address("mqtt://u:p@example.org:1884")
    assert (a.host, a.port, a.username, a.password) == ("example.org", 1884, "u", "p")


async def test_snapshot_upsert_is_idempotent(sessions) -> None:
    week = dt.date(2026, 11, 23)
    rows: list[dict[str, Any]] = [
        {"track_id": f"t{i}", "week": week, "popularity": i, "trending": True} for i in range(50)
    ]
    for popularity_shift in (0, 1):
        changed = [{**r, "popularity": r["popularity"] + popularity_shift} for r in rows]
        async with sessions() as session:
            await upsert(
                session=session,
                model=Snapshot,
                rows=changed,
                keys=["track_id", "week"],
                update=["popularity"],
                chunk=7,
            )
            await session.commit()
    async with sessions() as session:
        count = (await session.exec(select(func.count()).select_from(Snapshot))).one()[0]
        top = (await session.exec(select(Snapshot).where(col(Snapshot.track_id) == "t49"))).scalars().one()
    assert count == 50
    assert top.popularity == 50


async def test_outbox_publishes_after_commit(settings, sessions) -> None:
    t = topics(settings)
    event = envelope(
        "ingestor", DbUpdated(run_id=1, kind="update", week=dt.date(2026, 11, 23), tracks=3, snapshots=3)
    )
    async with sessions() as session:
        add_event(session, topic=t.db_updated, event=event, retain=True)
        await session.commit()
    async with make_client(settings, "test-sub", announce=False) as sub:
        await sub.subscribe(t.db_updated, qos=1)
        async with make_client(settings, "ingestor") as pub:
            assert await publish_pending(sessions=sessions, client=pub) == 1
            assert await publish_pending(sessions=sessions, client=pub) == 0
        message = await asyncio.wait_for(anext(aiter(sub.messages)), 10)
    got = parse(message.payload, DbUpdated)
    assert got.event_id == event.event_id and got.data.snapshots == 3
    async with sessions() as session:
        row = (await session.exec(select(Outbox))).scalars().one()
    assert row.published_at is not None
    assert got.version == row.id, "a retained state carries its outbox id (no unset version after it)"
    assert isinstance(sub, aiomqtt.Client)
