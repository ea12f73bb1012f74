"""A tampered model artifact is refused by the running predictor: the active model's file on the shared
`models` volume no longer hashes to the sha256 registered with it (here it was replaced by a pickle that
would run code when loaded). The predictor never unpickles it, keeps answering over MQTT and REST with
forecasts flagged as the persistence fallback, and says so in its log. (The registry's own checks are
tested with the forecasting package.)"""

from __future__ import annotations

import asyncio
import logging

import httpx
from sqlalchemy import select

from services.predictor.app import create_app
from shared.db import session_scope
from shared.events import DbUpdated, envelope
from shared.models import ModelVersion, Prediction, ProcessedEvent
from shared.mqtt import make_client, publish_model, topics
from tests.predictor_support import WEEK, predictor_settings, running_emulator, seed_songs
from tests.security_support import EVIL, tampered_artifact
from tests.servers import serving


async def test_predictor_refuses_a_tampered_artifact_and_keeps_serving(
    settings, sessions, tmp_path, caplog
) -> None:
    caplog.set_level(logging.WARNING)
    ids = await seed_songs(sessions, n=8)
    marker = tmp_path / "unpickled"
    async with running_emulator() as (_, emulator_url):
        config = predictor_settings(settings, emulator_url)
        path, registered = tampered_artifact(config.models_dir, marker)
        async with session_scope(sessions) as session:
            session.add(
                ModelVersion(
                    version=EVIL,
                    signal="popularity",
                    horizon_weeks=26,
                    kind="gbm",
                    active=True,
                    artifact_path=str(path),
                    sha256=registered,
                )
            )
        app = create_app(config)
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            await asyncio.wait_for(app.state.consuming.wait(), 20)
            event = envelope("ingestor", DbUpdated(run_id=1, kind="update", week=WEEK, tracks=8, snapshots=8))
            async with make_client(settings, "ingestor-test", announce=False) as client:
                await publish_model(client, topics(settings).db_updated, event)
            async with asyncio.timeout(30):
                while True:
                    async with sessions() as session:
                        if await session.get(ProcessedEvent, ("predictor", event.event_id)):
                            break
                    await asyncio.sleep(0.1)
            rest = await http.get(f"/v1/tracks/{ids[0]}/forecast")
            status = await http.get("/healthz")
        async with make_client(settings, "cleanup", announce=False) as client:
            await client.publish(topics(settings).db_updated, b"", qos=1, retain=True)
            await client.publish(topics(settings).predictions_latest, b"", qos=1, retain=True)

    assert not marker.exists(), "the tampered artifact was unpickled"
    async with sessions() as session:
        stored = (await session.exec(select(Prediction))).scalars().all()
    assert stored, "no forecasts after the event"
    assert EVIL not in {p.model_version for p in stored}
    popularity_26 = [p for p in stored if p.signal == "popularity" and p.horizon_weeks == 26]
    assert popularity_26 and all(p.cold_start for p in popularity_26)  # flagged as the fallback
    assert rest.status_code == 200 and status.status_code == 200
    assert f'"model_version":"{EVIL}"' not in rest.text.replace(" ", "")
    assert any(EVIL in r.getMessage() and "refus" in r.getMessage() for r in caplog.records)
