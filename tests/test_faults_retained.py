"""A broker that crashes restores its last save of the retained messages: an older week of predictions.
Open pages keep the newer week they hold (consumers compare the week and the envelope's version), and
the predictor publishes its latest retained state again when it reconnects (issue 12, item 2)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import websockets

from services.predictor.app import create_app as create_predictor
from services.predictor.settings import PredictorSettings
from shared.config import Settings
from shared.events import Topics
from shared.outbox import add_event, flush_outbox
from shared.weeks import add_weeks
from tests.dashboard_support import WEEK, dashboard_settings, prediction_event, running_dashboard, songs
from tests.faults_support import OBSERVER, Collector, PrivateBroker
from tests.servers import free_port, serving

pytestmark = pytest.mark.skipif(
    not __import__("shutil").which("mosquitto"), reason="needs the mosquitto binary"
)

T = Topics("songpop/v1")
OLD_WEEK, NEW_WEEK = add_weeks(WEEK, -20), WEEK


def on_broker(settings: Settings, broker: PrivateBroker, user: str) -> dict[str, Any]:
    return {**settings.model_dump(), "mqtt_url": broker.url(user), "mqtt_topic_root": T.root,
            "mqtt_reconnect_seconds": 0.1}  # fmt: skip


async def stage_and_publish(settings: Settings, sessions: Any, broker: PrivateBroker, week: Any) -> None:
    """Predictions of `week` staged and published as the predictor does (retained, through the outbox)."""
    async with sessions() as session:
        event = prediction_event(songs(5), shift=week.toordinal() % 50, week=week)  # values differ by week
        add_event(session, topic=T.predictions_latest, event=event, retain=True)
        await session.commit()
    publisher = Settings(**on_broker(settings, broker, "predictor"), _env_file=None)
    await flush_outbox(settings=publisher, sessions=sessions, service="predictor")


async def weeks_pushed(url: str, into: list[str], connected: asyncio.Event) -> None:
    """Record the week of every `predictions` message an open page receives."""
    async with websockets.connect(url) as ws:
        connected.set()
        while True:
            message = json.loads(await ws.recv())
            if message.get("type") == "predictions":
                into.append(message["week"])


def retained_week(observer: Collector) -> str | None:
    payloads = [p for t, p in observer.messages if t == T.predictions_latest and p]
    return json.loads(payloads[-1])["data"]["week"] if payloads else None


async def test_a_page_keeps_the_newer_week_when_the_broker_restores_an_older_one(
    settings: Settings, sessions: Any, tmp_path: Path
) -> None:
    with PrivateBroker(tmp_path / "mosquitto") as broker:
        await stage_and_publish(settings, sessions, broker, OLD_WEEK)
        broker.stop()  # a clean stop saves the older week
        broker.start()
        dashboard = dashboard_settings(Settings(**on_broker(settings, broker, "dashboard"), _env_file=None))
        async with running_dashboard(dashboard) as running:
            pushed: list[str] = []
            connected = asyncio.Event()
            page = asyncio.create_task(weeks_pushed(running.ws_url, pushed, connected))
            await asyncio.wait_for(connected.wait(), 10)
            await stage_and_publish(settings, sessions, broker, NEW_WEEK)  # not saved yet (autosave 60 s)
            async with asyncio.timeout(10):
                while NEW_WEEK.isoformat() not in pushed:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)

            feed = running.app.state.feed
            before = feed.connected_at
            broker.stop(kill=True)  # the crash: the broker restarts from its save, the older week
            broker.start()
            async with asyncio.timeout(20):
                while feed.connected_at == before:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # the restored retained message reaches the dashboard
            assert pushed[-1] == NEW_WEEK.isoformat(), pushed
            assert feed.stale_ignored == 1

            # The predictor republishes its latest state when it connects: the broker holds the newer week.
            predictor = PredictorSettings(**on_broker(settings, broker, "predictor"), _env_file=None,
                                          predictor_port=free_port(), rest_cache_warm=False)  # fmt: skip
            app = create_predictor(predictor)
            async with serving(app, port=predictor.predictor_port):
                await asyncio.wait_for(app.state.consuming.wait(), 20)
            async with Collector(broker.url(OBSERVER), [T.predictions_latest]) as observer:
                await observer.wait_until(lambda: retained_week(observer) is not None, within=10)
                assert retained_week(observer) == NEW_WEEK.isoformat()
            assert pushed[-1] == NEW_WEEK.isoformat(), pushed
            page.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await page
