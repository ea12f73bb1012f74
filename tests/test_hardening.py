"""The smaller holes of issue 12, item 8: an oversized event id is a clean reject, a chunked oversized body
a 413, a last will received live is dated when it arrives (not when its service connected), and a refused
model shows at start-up."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.predictor.app import create_app as create_predictor
from shared.config import Settings
from shared.db import session_scope
from shared.events import DbUpdated, ServiceStatus, envelope
from shared.limits import MAX_BODY_BYTES
from shared.models import ModelVersion, ProcessedEvent, utcnow
from shared.mqtt import make_client, publish_model, topics
from shared.weeks import current_week
from tests.dashboard_support import dashboard_settings, running_dashboard
from tests.predictor_support import predictor_settings
from tests.security_support import EVIL, tampered_artifact
from tests.servers import serving


async def handled(sessions: Any, event_id: str, within: float = 20) -> None:
    async with asyncio.timeout(within):
        while True:
            async with sessions() as session:
                if await session.get(ProcessedEvent, ("predictor", event_id)):
                    return
            await asyncio.sleep(0.1)


async def test_an_oversized_event_id_is_rejected_without_a_database_error(
    settings: Settings, sessions: Any, caplog: pytest.LogCaptureFixture
) -> None:
    t = topics(settings)
    caplog.set_level(logging.WARNING)
    app = create_predictor(predictor_settings(settings))
    good = envelope(
        "ingestor", DbUpdated(run_id=1, kind="update", week=current_week(), tracks=0, snapshots=0)
    )
    bad = json.loads(good.model_dump_json()) | {"event_id": "e" * 5000}
    async with serving(app):
        await asyncio.wait_for(app.state.consuming.wait(), 20)
        async with make_client(settings, "ingestor-test", announce=False) as client:
            await client.publish(t.db_updated, json.dumps(bad).encode(), qos=1)
            await publish_model(client, t.db_updated, good)
        await handled(sessions, good.event_id)
        async with make_client(settings, "cleanup", announce=False) as client:
            await client.publish(t.db_updated, b"", qos=1, retain=True)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert any("malformed" in r.getMessage() for r in caplog.records)


@pytest.fixture
async def predictor_url(settings: Settings) -> AsyncIterator[str]:
    async with serving(create_predictor(predictor_settings(settings))) as url:
        yield url


async def test_a_chunked_body_over_the_limit_gets_413(predictor_url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the size shows only while reading
        yield b'{"track_ids": ["'
        for _ in range(2 * MAX_BODY_BYTES // 65_536):
            yield b"a" * 65_536
        yield b'"]}'

    async with httpx.AsyncClient(base_url=predictor_url, timeout=30) as http:
        response = await http.post(
            "/v1/forecasts", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413, response.text
        assert "larger than" in response.json()["detail"]
        small = await http.post("/v1/forecasts", json={"track_ids": ["not an id"]})
        assert small.status_code == 422  # the server is fine afterwards


async def test_a_last_will_received_live_is_dated_on_arrival(settings: Settings) -> None:
    async with running_dashboard(dashboard_settings(settings)) as running:
        feed = running.app.state.feed
        will = envelope("ingestor", ServiceStatus(service="ingestor", state="offline"))
        will.occurred_at = utcnow() - dt.timedelta(hours=3)  # the will was set when the service connected
        async with make_client(settings, "broker-as-will", announce=False) as client:
            await publish_model(client, topics(settings).status("ingestor"), will)  # delivered live
        async with asyncio.timeout(10):
            while "ingestor" not in feed.services:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    seen = feed.services["ingestor"]
    assert seen.state == "offline" and abs((utcnow() - seen.at).total_seconds()) < 30


async def test_a_refused_model_shows_at_start_up(settings: Settings, sessions: Any, tmp_path) -> None:
    """Before any scoring: `/v1/models` says why the active model is refused and `/readyz` names it."""
    config = predictor_settings(settings)
    marker = tmp_path / "unpickled"
    path, registered = tampered_artifact(config.models_dir, marker)
    async with session_scope(sessions) as session:
        session.add(ModelVersion(version=EVIL, signal="popularity", horizon_weeks=26, kind="gbm",
                                 active=True, artifact_path=str(path), sha256=registered))  # fmt: skip
    async with serving(create_predictor(config)) as url, httpx.AsyncClient(base_url=url) as http:
        async with asyncio.timeout(20):
            while True:  # the check runs in the background at start
                listed = {m["version"]: m for m in (await http.get("/v1/models")).json()}
                if listed[EVIL].get("refused"):
                    break
                await asyncio.sleep(0.1)
        ready = (await http.get("/readyz")).json()
    assert "does not match" in listed[EVIL]["refused"] and str(path) not in listed[EVIL]["refused"]
    assert ready["models"] == f"refused: {EVIL}"
    assert not marker.exists()  # checked, never unpickled
