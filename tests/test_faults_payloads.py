"""Malformed or foreign MQTT payloads on every topic the predictor and the dashboard subscribe to: each is
logged (truncated: never the whole payload), counted and skipped, and the service stays up and handles
the next valid message. (The dashboard's basic malformed-JSON case is also in tests/test_dashboard.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from services.predictor.app import create_app as create_predictor
from shared.events import MAX_LOGGED_PAYLOAD, DbUpdated, ModelUpdated, envelope
from shared.models import ProcessedEvent
from shared.mqtt import make_client, publish_model, topics
from shared.weeks import current_week
from tests.dashboard_support import (
    clear_retained,
    dashboard_settings,
    prediction_event,
    running_dashboard,
    songs,
)
from tests.predictor_support import predictor_settings
from tests.servers import serving

HUGE = "A" * 1_000_000
MARKER = "Zq9-marker-"  # appears in every bad payload: its count in the logs shows how much was logged


def bad_payloads() -> dict[str, bytes]:
    """Every kind of wrong the broker can hand a subscriber (all carry MARKER)."""
    week = current_week().isoformat()
    return {
        "not-json": f"{MARKER} hello".encode(),
        "binary": b"\xff\xfe\x00\x81" + MARKER.encode() + bytes(range(256)),
        "json-array": json.dumps([MARKER, 1, 2]).encode(),
        "foreign-json": json.dumps({"device": MARKER, "temperature": 21.5}).encode(),
        "envelope-without-data": json.dumps({"schema_version": 1, "producer": MARKER}).encode(),
        "wrong-types": json.dumps(
            {"schema_version": 1, "producer": MARKER, "data": {"run_id": "x", "week": "soon", "version": 3}}
        ).encode(),
        "future-schema": json.dumps(
            {
                "schema_version": 99,
                "producer": MARKER,
                "data": {
                    "run_id": 1,
                    "kind": "update",
                    "week": week,
                    "tracks": 1,
                    "snapshots": 1,
                    "version": "v",
                    "signal": "popularity",
                    "horizon_weeks": 26,
                    "predictions": [],
                    "count": 0,
                    "service": "x",
                    "state": "online",
                },
            }
        ).encode(),
        "huge": json.dumps({"producer": MARKER, "data": HUGE}).encode(),
        "deeply-nested": (MARKER + "[" * 50_000 + "]" * 50_000).encode(),
    }


def assert_logged_briefly(caplog: pytest.LogCaptureFixture, expected_at_least: int) -> None:
    """Each bad message was logged, with at most a short excerpt of its payload."""
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert text.count(MARKER) >= expected_at_least, text[-2000:]
    assert HUGE[: MAX_LOGGED_PAYLOAD * 2] not in text
    assert max(len(r.getMessage()) for r in caplog.records) < 4 * MAX_LOGGED_PAYLOAD + 500


def rejected(service: str) -> float:
    return REGISTRY.get_sample_value("songpop_mqtt_rejected_total", {"service": service}) or 0.0


async def publish_raw(settings: Any, topic: str, payloads: dict[str, bytes]) -> None:
    async with make_client(settings, "garbage", announce=False) as client:
        for payload in payloads.values():
            await client.publish(topic, payload, qos=1)


@contextlib.asynccontextmanager
async def running_predictor(settings: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_predictor(predictor_settings(settings))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        await asyncio.wait_for(app.state.consuming.wait(), 20)
        yield app, http


async def test_predictor_skips_bad_payloads_on_every_topic_and_keeps_working(
    settings, sessions, caplog
) -> None:
    t = topics(settings)
    caplog.set_level(logging.WARNING)
    payloads = bad_payloads()
    before = rejected("predictor")
    async with running_predictor(settings) as (_, http):
        for topic in (t.db_updated, t.model_updated):
            await publish_raw(settings, topic, payloads)
        # Then a valid event: handled, so the consumer survived everything before it.
        good = envelope(
            "ingestor", DbUpdated(run_id=1, kind="update", week=current_week(), tracks=0, snapshots=0)
        )
        async with make_client(settings, "ingestor-test", announce=False) as client:
            await publish_model(client, t.db_updated, good)
        async with asyncio.timeout(20):
            while True:
                async with sessions() as session:
                    if await session.get(ProcessedEvent, ("predictor", good.event_id)):
                        break
                await asyncio.sleep(0.1)
        assert (await http.get("/healthz")).status_code == 200
    async with sessions() as session:  # none of the bad ones was taken for an event
        handled = (await session.exec(ProcessedEvent.__table__.select())).all()  # type: ignore[attr-defined]
    assert [row.event_id for row in handled] == [good.event_id]
    assert rejected("predictor") - before >= 2 * (len(payloads) - 1)
    assert_logged_briefly(caplog, expected_at_least=2 * (len(payloads) - 1))
    async with make_client(settings, "cleanup", announce=False) as client:
        await client.publish(t.db_updated, b"", qos=1, retain=True)


async def test_model_updated_that_is_valid_is_still_handled(settings, sessions) -> None:
    """The other subscribed topic, positively: a well-formed model-updated triggers a forecast pass."""
    t = topics(settings)
    async with running_predictor(settings):
        event = envelope(
            "trainer", ModelUpdated(version="v1", signal="popularity", horizon_weeks=26, kind="persistence")
        )
        async with make_client(settings, "trainer-test", announce=False) as client:
            await publish_model(client, t.model_updated, event)
        async with asyncio.timeout(20):
            while True:
                async with sessions() as session:
                    if await session.get(ProcessedEvent, ("predictor", event.event_id)):
                        break
                await asyncio.sleep(0.1)


async def test_dashboard_skips_bad_payloads_on_every_topic_and_keeps_working(settings, caplog) -> None:
    t = topics(settings)
    caplog.set_level(logging.WARNING)
    payloads = bad_payloads()
    async with running_dashboard(dashboard_settings(settings)) as dashboard:
        feed = dashboard.app.state.feed
        assert set(feed.subscriptions) >= {t.predictions_latest, t.model_updated}
        for topic in (t.predictions_latest, t.model_updated, t.status("predictor"), t.status("anything")):
            await publish_raw(settings, topic, payloads)
        event = prediction_event(songs(2), shift=1.0)
        async with make_client(settings, "predictor-test", announce=False) as client:
            await publish_model(client, t.predictions_latest, event)
        async with asyncio.timeout(20):
            while feed.last_event_id != event.event_id:  # noqa: ASYNC110 - the feed has no event for this
                await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=dashboard.url) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/")).status_code == 200
        assert feed.services == {}  # no bad status message was taken for a service's state
    assert feed.malformed >= 4 * (len(payloads) - 1)
    assert_logged_briefly(caplog, expected_at_least=4 * (len(payloads) - 1))
    await clear_retained(settings)
