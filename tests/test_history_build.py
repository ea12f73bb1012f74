"""While `songpop up` builds its demo history, what answers says so: the dashboard shows the progress, the
REST API answers 503 with Retry-After where it needs forecasts, /readyz is not ready until they exist, and
the predictor defers events until the build is done, then handles the newest of each kind once
(docs/operations.md#the-first-start-of-songpop-up); the /readyz probes this invites leave the embedded
broker's log clean."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from services.deferred import DeferredApp
from services.demo_history import start_build
from services.predictor.app import create_app as create_predictor
from shared.config import Settings
from shared.history_build import HistoryBuild, Phase, read_build, write_build
from shared.models import Prediction, utcnow
from shared.mqtt import EmbeddedBroker, broker_reachable, topics
from tests.dashboard_support import Song, dashboard_settings, running_dashboard, seed
from tests.predictor_support import (
    count,
    db_updated,
    outbox_rows_on,
    predictor_settings,
    processed,
    publish_like_the_ingestor,
    running_predictor,
    seed_songs,
)
from tests.servers import free_port, serving


@contextlib.asynccontextmanager
async def recording(events: list[str]) -> AsyncIterator[None]:
    """A lifespan that notes its start and its end."""
    events.append("start")
    yield
    events.append("stop")


def build(phase: Phase, week: int = 0, weeks: int = 10) -> HistoryBuild:
    return HistoryBuild(phase=phase, week=week, weeks=weeks, started_at=utcnow())


async def test_dashboard_shows_the_build_until_forecasts_exist(settings, sessions) -> None:
    async with (
        running_dashboard(dashboard_settings(settings), wait_mqtt=False) as dashboard,
        httpx.AsyncClient(base_url=dashboard.url) as http,
    ):
        await write_build(sessions, build(Phase.simulating, week=3))
        simulating = await http.get("/")
        await write_build(sessions, build(Phase.done, week=10))
        forecasting = await http.get("/")
        await seed(sessions, [Song("s" * 22, "First Song", "Someone", current=50.0)])
        trending, status = await http.get("/"), await http.get("/status")
    assert simulating.status_code == 200
    assert "Building demo history: week 3 of 10" in simulating.text
    assert '<progress id="build-progress" max="100" value="27">' in simulating.text
    assert '<meta http-equiv="refresh"' in simulating.text
    assert forecasting.status_code == 200 and "computing the first forecasts" in forecasting.text
    assert trending.status_code == 200 and "build-progress" not in trending.text
    assert "First Song" in trending.text
    assert "10 weeks built" in status.text


async def test_rest_says_not_ready_while_the_history_is_built(settings, sessions) -> None:
    await write_build(sessions, build(Phase.training, week=10))
    async with (
        serving(create_predictor(predictor_settings(settings))) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        trending, ready, alive = [await http.get(p) for p in ("/v1/trending", "/readyz", "/healthz")]
        status = (await http.get("/v1/status")).json()
        await write_build(sessions, build(Phase.interrupted, week=4))
        after_interruption, ready_after = await http.get("/v1/trending"), await http.get("/readyz")
    for answer in (trending, ready):
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "5"
        assert answer.json()["detail"] == "no forecasts yet: training the models on 10 weeks of demo history"
    assert alive.status_code == 200
    assert status["history_build"]["phase"] == "training" and status["history_build"]["weeks"] == 10
    assert after_interruption.status_code == 200 and after_interruption.json()["count"] == 0
    assert ready_after.status_code == 200


async def test_events_wait_for_the_build_then_the_newest_is_handled(settings, sessions) -> None:
    await seed_songs(sessions, n=5)
    config = predictor_settings(settings)
    t = topics(config)
    weeks = [db_updated(run_id=n) for n in range(1, 4)]
    await write_build(sessions, build(Phase.simulating, week=3, weeks=4))
    async with running_predictor(config):
        await publish_like_the_ingestor(settings, sessions, *weeks)
        await asyncio.sleep(1.0)  # delivered and deferred: nothing may be handled meanwhile
        assert await processed(sessions) == set()
        await write_build(sessions, build(Phase.done, week=4, weeks=4))
        last = db_updated(run_id=4)
        await publish_like_the_ingestor(settings, sessions, last)
        async with asyncio.timeout(30):
            while True:
                if await processed(sessions) == {e.event_id for e in [*weeks, last]}:
                    break
                await asyncio.sleep(0.1)
    assert await count(sessions, outbox_rows_on(t.predictions_latest)) == 1, "one forecast, not one per week"
    assert await count(sessions, select(func.count()).select_from(Prediction)) > 0


async def test_deferred_app_answers_while_the_real_one_loads() -> None:
    loaded, lifespan = threading.Event(), list[str]()

    def load() -> FastAPI:
        loaded.wait(10)  # a slow import, in a worker thread
        app = FastAPI(lifespan=lambda app: recording(lifespan))

        @app.get("/v1/trending")
        async def trending() -> dict[str, int]:
            return {"count": 1}

        return app

    deferred = DeferredApp(load, name="predictor")
    async with serving(deferred) as url, httpx.AsyncClient(base_url=url) as http:
        starting, alive = await http.get("/v1/trending"), await http.get("/healthz")
        deferred.start()
        loaded.set()
        async with asyncio.timeout(10):
            while True:
                started = await http.get("/v1/trending")
                if started.status_code == 200:
                    break
                await asyncio.sleep(0.02)
    assert starting.status_code == 503 and starting.headers["retry-after"] == "2"
    assert starting.json() == {"detail": "the predictor is starting; try again shortly"}
    assert alive.status_code == 200
    assert started.status_code == 200 and started.json() == {"count": 1}
    assert lifespan == ["start", "stop"], "the real app's lifespan ran, and ended with the server"


async def test_a_build_left_unfinished_is_marked_interrupted_on_the_next_start(settings, sessions) -> None:
    fresh = await start_build(settings, weeks=12)
    assert fresh is not None and fresh.phase == Phase.simulating and fresh.weeks == 12
    await seed_songs(sessions, n=3)  # some weeks were stored, then the process ended
    assert await start_build(settings, weeks=12) is None, "a database with history is not rebuilt"
    async with sessions() as session:
        left = await read_build(session)
    assert left is not None and left.phase == Phase.interrupted and not left.in_progress


async def test_a_readiness_probe_leaves_no_error_in_the_embedded_brokers_log(caplog) -> None:
    """`songpop up`'s /readyz probes the embedded broker with a bare TCP connection, as often as asked."""
    broker = EmbeddedBroker(port=free_port())
    await broker.start()
    try:
        with caplog.at_level(logging.WARNING, logger="amqtt"):
            for _ in range(3):
                assert await broker_reachable(Settings(mqtt_url=broker.url, _env_file=None))
            await asyncio.sleep(0.5)  # the broker notices the connections end
    finally:
        await broker.stop()
    assert not [r for r in caplog.records if r.name.startswith("amqtt")], caplog.text
