"""Predictor entry points: the long-lived service (REST + MQTT) and one scoring pass for the CLI."""

from __future__ import annotations

import uuid

import uvicorn

from shared.db import make_engine, make_sessionmaker, wait_for_database
from shared.events import TrackPrediction
from shared.mqtt import topics
from shared.outbox import publish_after_run

from . import batch_messages
from .app import SERVICE, create_app
from .service import predict_trending
from .settings import PredictorSettings


def server(settings: PredictorSettings) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings), host=settings.predictor_host, port=settings.predictor_port, log_config=None
    )
    return uvicorn.Server(config)


async def serve(settings: PredictorSettings | None = None) -> None:
    """Run the predictor inside the caller's event loop until cancelled or stopped."""
    await server(settings or PredictorSettings()).serve()


async def predict_once(settings: PredictorSettings) -> list[TrackPrediction]:
    """Score the current trending songs now and publish (what `db-updated` triggers)."""
    engine = make_engine(settings.effective_database_url)
    try:
        await wait_for_database(engine, within=10)
        sessions = make_sessionmaker(engine)
        predictions = await predict_trending(
            sessions=sessions, settings=settings, topics=topics(settings), event_id=str(uuid.uuid4())
        )
        return await publish_after_run(
            list(predictions or []),
            settings=settings,
            sessions=sessions,
            service=SERVICE,
            expand=batch_messages.expander(sessions, topics(settings)),
        )
    finally:
        await engine.dispose()
