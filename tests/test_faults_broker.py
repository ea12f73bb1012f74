"""Faults survived, nothing lost: the MQTT broker crashes or restarts in the middle of an ingest and in the
middle of a burst of predictions. The services run against a private Mosquitto (the project's config,
per-service users) that the tests kill and restart; every `db-updated` and every prediction message
staged in the outbox is delivered once the broker is back (QoS 1, persistent sessions, outbox)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col

import services.ingestor.main as ingestor_main
import services.predictor.app as predictor_app
from services.ingestor.main import ingest_once
from services.ingestor.settings import IngestorSettings
from services.predictor.app import create_app as create_predictor
from services.predictor.settings import PredictorSettings
from shared.config import Settings
from shared.db import session_scope
from shared.events import DbUpdated, ModelUpdated, Topics, envelope
from shared.models import IngestRun, Outbox, ProcessedEvent
from shared.outbox import BrokerUnavailable, add_event, flush_outbox, publish_pending
from shared.weeks import current_week
from tests.faults_support import OBSERVER, Collector, PrivateBroker, spotify_emulator
from tests.servers import free_port, serving

pytestmark = pytest.mark.skipif(
    not __import__("shutil").which("mosquitto"), reason="needs the mosquitto binary"
)

T = Topics("songpop/v1")
WEEK = current_week()


def on_broker(cls: type[Any], settings: Settings, broker: PrivateBroker, user: str, **extra: Any) -> Any:
    """`cls` settings on the test database, connected to the private broker as `user`."""
    values = {
        **settings.model_dump(),
        "mqtt_url": broker.url(user),
        "mqtt_topic_root": T.root,
        "mqtt_reconnect_seconds": 0.1,
        **extra,
    }
    return cls(**values, _env_file=None)


@pytest.fixture
def broker(tmp_path: Path):
    with PrivateBroker(tmp_path / "mosquitto") as running:
        yield running


@contextlib.asynccontextmanager
async def running_predictor(settings: PredictorSettings) -> AsyncIterator[Any]:
    """The predictor app served in this loop, its MQTT consumer connected."""
    app = create_predictor(settings)
    async with serving(app, port=settings.predictor_port):
        await asyncio.wait_for(app.state.consuming.wait(), 20)  # subscribed and caught up
        yield app


async def outbox_rows(sessions, topic: str | None = None) -> list[Outbox]:
    async with sessions() as session:
        query = select(Outbox).order_by(col(Outbox.id))
        if topic:
            query = query.where(col(Outbox.topic) == topic)
        return list((await session.exec(query)).scalars().all())


async def handled_by_predictor(sessions) -> set[str]:
    async with sessions() as session:
        query = select(col(ProcessedEvent.event_id)).where(col(ProcessedEvent.consumer) == "predictor")
        return set((await session.exec(query)).scalars().all())


async def everything_delivered(sessions, observer: Collector) -> bool:
    """Every outbox row is marked published and every staged prediction reached the observer."""
    rows = await outbox_rows(sessions)
    staged = {r.event_id for r in rows if r.topic == T.predictions_latest}
    return all(r.published_at is not None for r in rows) and staged <= set(
        observer.event_ids(T.predictions_latest)
    )


async def wait_for(check, within: float = 90.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polls the database
            await asyncio.sleep(0.1)


async def test_broker_crash_during_an_ingest_loses_no_event(settings, sessions, broker, monkeypatch) -> None:
    async with spotify_emulator(settings.charts_dir) as (_, spotify):
        ingestor = on_broker(IngestorSettings, settings, broker, "ingestor", **spotify)
        predictor = on_broker(
            PredictorSettings, settings, broker, "predictor", predictor_port=free_port(), **spotify
        )
        filters = [T.db_updated, T.predictions_latest]
        async with Collector(broker.url(OBSERVER), filters) as observer, running_predictor(predictor):
            crashes: list[str] = []

            def crash_broker(phase: str, done: int, total: int) -> None:
                if not crashes:
                    crashes.append(phase)
                    broker.stop(kill=True)

            with pytest.raises(BrokerUnavailable, match="wait in the outbox"):
                await ingest_once(ingestor, kind="update", progress=crash_broker)
            assert crashes, "the ingest never reported progress"
            async with sessions() as session:
                run = (await session.exec(select(IngestRun))).scalars().one()
            assert run.status == "ok"  # the data is committed although the broker is gone
            (pending,) = await outbox_rows(sessions, T.db_updated)
            assert pending.published_at is None

            broker.start()  # a fresh broker: the crash lost its in-memory sessions
            async with asyncio.timeout(20):
                await observer.subscribed.wait()
            # The ingestor service (restarted by compose after the failed run) publishes what is pending.
            monkeypatch.setattr(ingestor_main, "OUTBOX_RETRY_SECONDS", 0.2)
            idle = ingestor.model_copy(
                update={"charts_dir": settings.var_dir / "no-charts", "ingest_cron": "0 6 1 1 *"}
            )
            service = asyncio.create_task(ingestor_main.serve(idle))
            try:
                await observer.wait_until(lambda: pending.event_id in observer.event_ids(T.db_updated))
            finally:
                service.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await service
            await wait_for(lambda: _handled_all(sessions, {pending.event_id}))
            await observer.wait_until(lambda: bool(observer.event_ids(T.predictions_latest)))
            await wait_for(lambda: everything_delivered(sessions, observer))
    assert observer.connections >= 2


async def test_broker_restart_during_a_prediction_burst_loses_no_prediction(
    settings, sessions, broker, monkeypatch
) -> None:
    async with spotify_emulator(settings.charts_dir) as (_, spotify):
        ingestor = on_broker(IngestorSettings, settings, broker, "ingestor", **spotify)
        predictor = on_broker(
            PredictorSettings, settings, broker, "predictor", predictor_port=free_port(), **spotify
        )
        report = await ingest_once(ingestor, kind="update")  # songs to forecast; no predictor yet
        assert report.status == "ok"

        real_publish = publish_pending
        calls: list[int] = []
        armed = asyncio.Event()  # set once the burst is on its way

        async def publish_after_a_restart(**kwargs: Any) -> int:
            """The second publish of the burst finds the broker going down (and back 0.5 s later)."""
            if armed.is_set():
                calls.append(1)
                if len(calls) == 2:
                    broker.stop()
                    asyncio.get_running_loop().call_later(0.5, broker.start)
            return await real_publish(**kwargs)

        monkeypatch.setattr(predictor_app, "publish_pending", publish_after_a_restart)
        filters = [T.predictions_latest]
        async with Collector(broker.url(OBSERVER), filters) as observer, running_predictor(predictor):
            burst = [
                envelope(
                    "ingestor",
                    DbUpdated(run_id=report.run_id, kind="update", week=WEEK, tracks=1, snapshots=1),
                )
                for _ in range(4)
            ]
            armed.set()
            # One at a time: events that arrive together are handled as one (the newest of their kind).
            for event in burst:
                async with session_scope(sessions) as session:
                    add_event(session, topic=T.db_updated, event=event)
                await flush_when_up(ingestor, sessions)
                await wait_for(lambda handled={event.event_id}: _handled_all(sessions, handled))
            await wait_for(lambda: everything_delivered(sessions, observer))
    assert len(calls) >= 3, "the broker restart did not happen in the middle of the burst"
    assert observer.connections >= 2


async def flush_when_up(settings: IngestorSettings, sessions: Any, within: float = 20.0) -> None:
    """Publish the ingestor's pending events, retrying while the broker restarts."""
    async with asyncio.timeout(within):
        while True:
            try:
                await flush_outbox(settings=settings, sessions=sessions, service="ingestor")
                return
            except BrokerUnavailable:
                await asyncio.sleep(0.2)


async def _handled_all(sessions, expected: set[str]) -> bool:
    return expected <= await handled_by_predictor(sessions)


async def test_trainer_service_publishes_a_model_update_the_broker_missed(
    settings, sessions, broker, monkeypatch
) -> None:
    """A training run committed its model while the broker was down: the trainer service publishes the
    pending `model-updated` once the broker is back, not at next week's training."""
    import services.trainer.main as trainer_main
    from services.trainer.settings import TrainerSettings

    trainer = on_broker(TrainerSettings, settings, broker, "trainer", train_cron="0 6 1 1 *")
    event = envelope(
        "trainer", ModelUpdated(version="pop-26-1", signal="popularity", horizon_weeks=26, kind="gbm")
    )
    async with session_scope(sessions) as session:
        add_event(session, topic=T.model_updated, event=event, retain=True)
    broker.stop(kill=True)
    with pytest.raises(BrokerUnavailable):
        await flush_outbox(settings=trainer, sessions=sessions, service="trainer")
    broker.start()
    monkeypatch.setattr(trainer_main, "OUTBOX_RETRY_SECONDS", 0.2)
    async with Collector(broker.url(OBSERVER), [T.model_updated]) as observer:
        service = asyncio.create_task(trainer_main.serve(trainer))
        try:
            await observer.wait_until(lambda: event.event_id in observer.event_ids(T.model_updated))
            await wait_for(lambda: _all_published(sessions))  # marked once the broker acknowledged it
        finally:
            service.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await service


async def _all_published(sessions) -> bool:
    return all(row.published_at for row in await outbox_rows(sessions))


def test_reconnect_delays_back_off_with_jitter_up_to_a_cap() -> None:
    from shared.mqtt import RECONNECT_MAX_SECONDS, reconnect_delay

    samples = {n: [reconnect_delay(2.0, n) for _ in range(200)] for n in range(12)}
    assert all(1.0 <= d <= 2.0 for d in samples[0])  # the first retry comes quickly
    assert all(8.0 <= d <= 16.0 for d in samples[3])  # then doubles
    assert all(RECONNECT_MAX_SECONDS / 2 <= d <= RECONNECT_MAX_SECONDS for d in samples[11])  # capped
    assert len(set(samples[5])) > 100  # jittered: replicas do not reconnect in lockstep
