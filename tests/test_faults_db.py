"""Faults survived, nothing lost, on the database side and in the processes themselves:

- MariaDB unreachable (a TCP proxy in front of it is cut) while the predictor runs: it stays alive
  (/healthz 200), says it is not ready (/readyz 503, REST 503 without internals), an event that arrives
  meanwhile is handled once the database is back, and readiness recovers on its own. (The ingestion side
  of the same fault, no partial week visible and the next run completing, is tested by the ingestion
  tests.)
- The trainer with the database unreachable fails cleanly (DatabaseUnavailable naming the database
  without its password) and trains normally once it is back.
- A process killed with SIGKILL between its commit and its publish: the event waits in the outbox and
  is delivered when a service starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from services.predictor.app import create_app as create_predictor
from services.predictor.settings import PredictorSettings
from services.trainer.main import train_once
from services.trainer.settings import TrainerSettings
from shared.config import Settings
from shared.db import DatabaseUnavailable, session_scope
from shared.events import DbUpdated, PredictionsLatest, TrackPrediction, envelope, parse
from shared.models import Outbox, ProcessedEvent
from shared.mqtt import make_client, topics
from shared.outbox import add_event, flush_outbox
from shared.weeks import current_week
from tests.predictor_support import messages_until, seed_songs
from tests.proxy import TcpProxy
from tests.servers import free_port, serving

ROOT = Path(__file__).resolve().parent.parent


def needs_mysql(settings: Settings) -> None:
    if not settings.database_url.startswith("mysql"):
        pytest.skip("needs MariaDB (the proxy cuts a TCP connection)")


def with_values(cls: type[Any], settings: Settings, **values: Any) -> Any:
    return cls(**{**settings.model_dump(), **values}, _env_file=None)


@contextlib.asynccontextmanager
async def running_predictor(settings: PredictorSettings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_predictor(settings)
    async with serving(app, port=settings.predictor_port) as url, httpx.AsyncClient(base_url=url) as http:
        async with asyncio.timeout(20):
            while not hasattr(app.state, "mqtt"):  # noqa: ASYNC110 - set by the consumer's on_connect
                await asyncio.sleep(0.05)
        yield app, http


async def handled(sessions, event_id: str) -> bool:
    async with sessions() as session:
        return await session.get(ProcessedEvent, ("predictor", event_id)) is not None


async def eventually(check, within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polls the database
            await asyncio.sleep(0.1)


async def test_predictor_survives_the_database_going_away(settings, sessions) -> None:
    needs_mysql(settings)
    async with TcpProxy("127.0.0.1", 3306) as proxy:
        predictor = with_values(
            PredictorSettings,
            settings,
            predictor_port=free_port(),
            predictor_catch_up_seconds=0.5,
            database_url=proxy.url_for(settings.database_url),
        )
        async with running_predictor(predictor) as (app, http):
            assert (await http.get("/readyz")).status_code == 200

            proxy.cut()
            assert (await http.get("/healthz")).status_code == 200
            not_ready = await http.get("/readyz")
            assert not_ready.status_code == 503
            assert "database unreachable" in not_ready.text
            down = await http.get("/v1/trending")
            assert down.status_code == 503, down.text
            assert "Traceback" not in down.text and proxy.upstream[0] not in down.text

            # An event arrives while the database is away: it must not be lost.
            event = envelope(
                "ingestor", DbUpdated(run_id=1, kind="update", week=current_week(), tracks=0, snapshots=0)
            )
            async with session_scope(sessions) as session:  # the ingestor's own, unbroken connection
                add_event(session, topic=topics(settings).db_updated, event=event)
            await flush_outbox(settings=settings, sessions=sessions, service="ingestor")
            await asyncio.sleep(1.0)
            assert not await handled(sessions, event.event_id)

            proxy.restore()
            await eventually(lambda: _ready(http))
            await eventually(lambda: handled(sessions, event.event_id))
            assert (await http.get("/v1/trending")).status_code == 200


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def test_trainer_fails_cleanly_without_database_and_trains_when_it_is_back(settings, sessions) -> None:
    needs_mysql(settings)
    async with TcpProxy("127.0.0.1", 3306) as proxy:
        url = proxy.url_for(settings.database_url).replace("root@", "root:s3cret-pw@")
        trainer = with_values(TrainerSettings, settings, database_url=url)
        proxy.cut()
        with pytest.raises(DatabaseUnavailable) as failure:
            await train_once(trainer)
        assert "s3cret-pw" not in str(failure.value) and "unreachable" in str(failure.value)
    # Back (straight to the server): the same pass runs to the end on an empty database.
    activated = await train_once(with_values(TrainerSettings, settings), sessions=sessions)
    assert isinstance(activated, list)


# ---------------------------------------------------------------- killed between commit and publish

COMMIT_THEN_HANG = textwrap.dedent(
    """
    import asyncio, sys, uuid
    from services.predictor.service import predict_trending
    from services.predictor.settings import PredictorSettings
    from shared.db import make_engine, make_sessionmaker, session_scope
    from shared.events import DbUpdated, envelope
    from shared.mqtt import topics
    from shared.outbox import add_event
    from shared.weeks import current_week

    async def main():
        role, database_url, mqtt_url, root = sys.argv[1:5]
        settings = PredictorSettings(database_url=database_url, mqtt_url=mqtt_url, mqtt_topic_root=root,
                                     _env_file=None)
        sessions = make_sessionmaker(make_engine(settings.effective_database_url))
        if role == "ingestor":  # what an ingest run commits last: its db-updated event
            event = envelope("ingestor", DbUpdated(run_id=7, kind="update", week=current_week(), tracks=3,
                                                   snapshots=3))
            async with session_scope(sessions) as session:
                add_event(session, topic=topics(settings).db_updated, event=event)
        else:  # the predictor: predictions and their messages, in one transaction
            await predict_trending(sessions=sessions, settings=settings, topics=topics(settings),
                                   event_id=str(uuid.uuid4()))
        print("committed", flush=True)  # the publish would come next
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def commit_and_get_killed(settings: Settings, role: str) -> None:
    """Run `role`'s commit in a process and SIGKILL it right after, before it can publish."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            COMMIT_THEN_HANG,
            role,
            settings.database_url,
            settings.mqtt_url,
            settings.mqtt_topic_root,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line == "committed", process.stderr.read() if process.stderr else "no output"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL


async def pending(sessions, topic: str) -> list[Outbox]:
    async with sessions() as session:
        query = select(Outbox).where(col(Outbox.topic) == topic, col(Outbox.published_at).is_(None))
        return list((await session.exec(query)).scalars().all())


async def test_ingestor_killed_between_commit_and_publish_delivers_after_restart(settings, sessions) -> None:
    t = topics(settings)
    commit_and_get_killed(settings, "ingestor")
    (row,) = await pending(sessions, t.db_updated)

    async with make_client(settings, "observer", announce=False) as observer:
        await observer.subscribe(t.db_updated, qos=1)
        # The restarted ingestor publishes what is pending (its publisher loop, or its next run).
        assert await flush_outbox(settings=settings, sessions=sessions, service="ingestor") == 1
        async with asyncio.timeout(10):
            message = await anext(aiter(observer.messages))
        await observer.publish(t.db_updated, b"", qos=1, retain=True)  # clear the retained copy
    delivered = parse(message.payload, DbUpdated)
    assert delivered.event_id == row.event_id and delivered.data.run_id == 7
    assert await pending(sessions, t.db_updated) == []
    assert await flush_outbox(settings=settings, sessions=sessions, service="ingestor") == 0  # once only


async def test_predictor_killed_between_commit_and_publish_delivers_after_restart(settings, sessions) -> None:
    t = topics(settings)
    commit_and_get_killed(settings, "predictor")
    (row,) = await pending(sessions, t.predictions_latest)

    predictor = with_values(PredictorSettings, settings, predictor_port=free_port())
    async with make_client(settings, "observer", announce=False) as observer:
        await observer.subscribe(t.predictions_latest, qos=1)
        async with running_predictor(predictor):  # publishes what is pending as soon as it connects
            async with asyncio.timeout(20):
                message = await anext(aiter(observer.messages))
        await observer.publish(t.predictions_latest, b"", qos=1, retain=True)
    assert parse(message.payload, PredictionsLatest).event_id == row.event_id
    assert await pending(sessions, t.predictions_latest) == []


async def test_every_songs_message_is_delivered_after_a_kill_between_commit_and_publish(
    settings, sessions
) -> None:
    """The songs' messages are one outbox row, built when published: the process that computed them is
    gone, so the restarted predictor builds them from the stored predictions, every song's, with the
    batch's version and event ids (the UUID 5 of each song in the row's event id)."""
    t = topics(settings)
    ids = await seed_songs(sessions, n=40, charted=6)
    commit_and_get_killed(settings, "predictor")
    (row,) = await pending(sessions, t.prediction_for("+"))

    predictor = with_values(PredictorSettings, settings, predictor_port=free_port())
    async with make_client(settings, "observer", announce=False) as observer:
        await observer.subscribe(t.prediction_for("+"), qos=1)
        async with running_predictor(predictor):
            got = await messages_until(observer, lambda got: len({str(m.topic) for m in got}) == len(ids))
        for track_id in ids:  # clear the retained copies
            await observer.publish(t.prediction_for(track_id), b"", qos=1, retain=True)
    events = {str(m.topic).rsplit("/", 1)[-1]: parse(m.payload, TrackPrediction) for m in got}
    assert set(events) == set(ids)
    namespace = uuid.UUID(row.event_id)
    assert {k: e.event_id for k, e in events.items()} == {k: str(uuid.uuid5(namespace, k)) for k in ids}
    assert {e.version for e in events.values()} == {row.id}
    assert all(e.data.track_id == k and e.data.forecasts for k, e in events.items())
    assert await pending(sessions, t.prediction_for("+")) == []
