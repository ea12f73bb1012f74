"""The predictor's FastAPI app: REST API plus, in its lifespan, the MQTT consumer of db-updated and
model-updated events."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from shared.db import make_engine, make_sessionmaker
from shared.events import DbUpdated, Envelope, ModelUpdated, Topics
from shared.history_build import build_in_progress
from shared.limits import BodySizeLimit
from shared.metrics import instrument
from shared.mqtt import TopicRouter, consume_forever, topics
from shared.mqtt import announce_offline as mqtt_offline
from shared.outbox import Expand, publish_pending, republish_retained
from shared.spotify.budget import HourlyBudget
from shared.spotify.client import SpotifyClient
from shared.spotify.errors import SpotifyError, SpotifyPaused

from . import batch_messages, fastpath, retention, service, tracks
from .api import forecast_route, router
from .cache import ResidentAnswers, ResponseCache
from .deps import Clients
from .guard import ApiKeys, ClientAllowance
from .reader import make_reader
from .settings import PredictorSettings

log = logging.getLogger(__name__)
SERVICE = "predictor"
MIN_WARM_CHECK_SECONDS = 0.2


def subscriptions(settings: PredictorSettings, t: Topics) -> list[str]:
    """Event topics; on a real broker as a shared subscription so replicas split the work."""
    plain = [t.db_updated, t.model_updated]
    if settings.mqtt_url and settings.predictor_share_group:
        return [f"$share/{settings.predictor_share_group}/{topic}" for topic in plain]
    return plain


def make_router(app: FastAPI) -> TopicRouter:
    """db-updated and model-updated events both mean "forecast what is new"; the router has validated them."""
    settings: PredictorSettings = app.state.settings
    t = topics(settings)

    async def on_event(event: Envelope[DbUpdated] | Envelope[ModelUpdated], message: aiomqtt.Message) -> None:
        if await build_in_progress(app.state.sessions):
            log.info("event %s deferred: the history is being built (caught up once it is)", event.event_id)
            return
        stored = await handle_live(app, str(message.topic), event.event_id)
        await check_models(app)  # a model-updated event brings a new active model
        if stored:
            app.state.cache.expire()  # this replica serves its new forecasts at once
            app.state.resident.wake.set()
            await publish_pending(
                sessions=app.state.sessions, client=app.state.mqtt, producer=SERVICE, expand=expand(app)
            )
            await retention.prune_predictions(
                sessions=app.state.sessions, keep_weeks=settings.prediction_retention_weeks
            )

    router = TopicRouter(SERVICE)
    router.on(t.db_updated, DbUpdated, on_event)
    router.on(t.model_updated, ModelUpdated, on_event)
    return router


def expand(app: FastAPI) -> Expand:
    """How the publisher builds the messages of the predictor's batch rows (every song's own message)."""
    return batch_messages.expander(app.state.sessions, topics(app.state.settings))


async def handle_live(app: FastAPI, topic: str, event_id: str) -> bool:
    """Handle an event as it arrives. When it is one of the events the outbox holds unhandled (it always
    is, unless it came from elsewhere or was handled already), the catch-up handles the newest of each
    kind instead: a burst of events (a history build's, deferred) costs one scoring per kind, not one
    each. Returns whether forecasts were stored."""
    sessions, settings = app.state.sessions, app.state.settings
    async with sessions() as session:
        missed = await service.missed_events(session=session, topic=topic)
    if event_id in missed:
        return await service.catch_up(sessions=sessions, settings=settings, topics=topics(settings)) > 0
    handled = await service.handle_event(
        sessions=sessions, settings=settings, topics=topics(settings), event_id=event_id
    )
    return handled is not None


async def on_connect(app: FastAPI, client: aiomqtt.Client) -> None:
    """On every (re)connection: publish what is pending, then handle events missed while away."""
    app.state.mqtt = client
    await publish_pending(sessions=app.state.sessions, client=client, producer=SERVICE, expand=expand(app))
    if client is not app.state.republished_on:  # a new connection: the broker may have lost state
        app.state.republished_on = client
        await republish_retained(
            sessions=app.state.sessions,
            client=client,
            topic=topics(app.state.settings).predictions_latest,
            producer=SERVICE,
            expand=expand(app),
        )
    if await build_in_progress(app.state.sessions):
        log.info("catch-up deferred: the history is being built")
    elif await service.catch_up(
        sessions=app.state.sessions, settings=app.state.settings, topics=topics(app.state.settings)
    ):
        await publish_pending(
            sessions=app.state.sessions, client=client, producer=SERVICE, expand=expand(app)
        )
    app.state.consuming.set()


async def keep_catching_up(app: FastAPI) -> None:
    """Every `predictor_catch_up_seconds`, the reconnection steps again: events left behind (the database
    was away when one arrived, or the replica it went to stopped) are handled without waiting for a
    reconnection."""
    settings: PredictorSettings = app.state.settings
    while True:
        await asyncio.sleep(settings.predictor_catch_up_seconds)
        client = getattr(app.state, "mqtt", None)
        if client is None:
            continue
        try:
            await on_connect(app, client)
        except Exception as exc:  # database or broker still away: next pass
            log.warning(
                "catch-up pass failed (%s); next in %.0fs",
                type(exc).__name__,
                settings.predictor_catch_up_seconds,
            )


async def keep_answers_resident(app: FastAPI) -> None:
    """Build the resident answers at start, then keep them up to date as the data changes (looking every
    `rest_cache_check_seconds`, or at once when this replica stored new forecasts).
    `app.state.cache_warmed` is set after each pass, `cache_warmed_version` says for which data version."""
    clients: Clients = app.state.clients
    resident = clients.resident
    while True:
        try:
            await tracks.refresh_resident(clients=clients)
            if resident.version != app.state.cache_warmed_version and len(resident):
                log.info("resident answers: %d songs for data version %s", len(resident), resident.version)
            app.state.cache_warmed_version = resident.version
            app.state.cache_warmed.set()
        except Exception as exc:  # the database may be away: requests still work, try again later
            log.warning("refreshing the resident answers failed (%s); trying again", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            wait = max(clients.cache.check_seconds, MIN_WARM_CHECK_SECONDS)
            await asyncio.wait_for(resident.wake.wait(), wait)


async def check_models(app: FastAPI) -> None:
    """`app.state.refused_models`: the active models whose artifact is refused (`service.refused_models`)."""
    try:
        async with app.state.sessions() as session:
            app.state.refused_models = await service.refused_models(session=session)
    except Exception as exc:  # the database may be away at start: the next event checks again
        log.warning("checking the active models failed (%s)", type(exc).__name__)


async def announce_offline(app: FastAPI) -> None:
    """On a clean stop, say `offline` on the consumer's connection (see `shared.mqtt.announce_offline`)."""
    client = getattr(app.state, "mqtt", None)
    if client is not None:
        await mqtt_offline(client, app.state.settings, SERVICE)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: PredictorSettings = app.state.settings
    engine = make_engine(settings.effective_database_url)
    app.state.sessions = make_sessionmaker(engine)
    app.state.consuming = asyncio.Event()  # set once subscribed and caught up
    app.state.republished_on = None  # the connection the latest retained state was republished on
    fast = settings.predictor_fastpath
    reader = (fastpath.make_fast_reader if fast else make_reader)(settings.effective_database_url)
    app.state.cache = ResponseCache(
        reader, max_entries=settings.rest_cache_entries, check_seconds=settings.rest_cache_check_seconds
    )
    budget = HourlyBudget(settings.rest_fetch_per_hour)  # on-demand fetches' share of the app's quota
    async with SpotifyClient(settings, budget=budget) as spotify:
        app.state.spotify = spotify
        allowance = ClientAllowance(settings.rest_fetch_per_client_per_minute)
        app.state.clients = Clients(
            settings, app.state.sessions, reader, spotify, app.state.cache, app.state.resident, allowance
        )
        consumer = asyncio.create_task(
            consume_forever(
                settings,
                SERVICE,
                subscriptions(settings, topics(settings)),
                make_router(app),
                on_connect=lambda client: on_connect(app, client),
            )
        )
        app.state.cache_warmed, app.state.cache_warmed_version = asyncio.Event(), None
        warmer = asyncio.create_task(keep_answers_resident(app)) if settings.rest_cache_warm else None
        catcher = asyncio.create_task(keep_catching_up(app))
        checker = asyncio.create_task(check_models(app))  # at start, before any scoring needs them
        try:
            with fastpath.frozen_heap() if fast else contextlib.nullcontext():
                yield
        finally:
            await announce_offline(app)
            for task in (catcher, consumer, warmer, checker):
                if task is not None:
                    await stop(task)
    await reader.dispose()
    await engine.dispose()


STOP_RETRY_SECONDS = 1.0


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it, cancelling again while it runs on: on Python 3.11 a cancellation
    that meets a finishing `asyncio.wait_for` (aiomqtt's publish waits with one) is lost, and the MQTT
    consumer would then wait for messages for ever, holding up the shutdown."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=STOP_RETRY_SECONDS)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _where(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location if part != "body") or "body"


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable sentence per problem (plus pydantic's structured errors)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = "; ".join(f"{_where(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors)
    structured = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
    return JSONResponse(
        status_code=422,
        content={"detail": detail or "invalid request", "errors": jsonable_encoder(structured)},
    )


TAGS = [
    {"name": "forecasts", "description": "Forecasts of songs, one, many, or this week's trending ones"},
    {"name": "catalog", "description": "The models and the state of the system"},
    {"name": "operations", "description": "Liveness and readiness probes"},
]


def document_limits(app: FastAPI) -> None:
    """The OpenAPI document states the configured batch limit as `maxItems` (it is checked in the route,
    so a deployment's SONGPOP_PREDICTOR_MAX_BATCH shows in its own document)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        doc = build()
        request = doc["components"]["schemas"]["ForecastBatchRequest"]["properties"]["track_ids"]
        request["maxItems"] = app.state.settings.max_batch
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 (not a 500 with internals) while the database is unreachable; /readyz says the same."""
    log.warning("database unavailable while serving %s: %s", request.url.path, type(exc).__name__)
    return JSONResponse(
        status_code=503,
        content={"detail": "database unavailable; try again shortly"},
        headers={"Retry-After": "10"},
    )


async def spotify_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A song had to be fetched and Spotify refused or is pausing us: 503 (paused, with Retry-After) or
    502 (refused), never a 500."""
    log.warning("Spotify unavailable while serving %s: %s", request.url.path, exc)
    if isinstance(exc, SpotifyPaused):
        wait = max(1, int((exc.resume_at - dt.datetime.now(dt.UTC)).total_seconds()))
        return JSONResponse(
            status_code=503,
            content={"detail": "Spotify asked us to wait; try again later"},
            headers={"Retry-After": str(wait)},
        )
    return JSONResponse(status_code=502, content={"detail": "Spotify refused the request; try again later"})


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    """The predictor app; long-lived clients are created in its lifespan, not at import."""
    app = FastAPI(
        title="songpop predictor",
        summary="Forecasts of Spotify popularity and chart streams, 26 and 52 weeks ahead",
        version="1",
        lifespan=lifespan,
        openapi_tags=TAGS,
    )
    app.state.settings = settings or PredictorSettings()
    app.include_router(router)
    document_limits(app)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(SpotifyPaused, spotify_unavailable)
    app.add_exception_handler(SpotifyError, spotify_unavailable)
    app.add_middleware(BodySizeLimit)  # 413 before an oversized body is read into memory
    app.state.history_ready = False  # set by /readyz once no history build holds the forecasts back
    app.state.refused_models = {}  # version: why its artifact is refused (check_models)
    app.state.resident = ResidentAnswers()
    app.state.resident.expose_metrics()
    app.state.api_keys = ApiKeys(app.state.settings.api_keys)
    if app.state.settings.predictor_fastpath:
        app.add_middleware(
            fastpath.ResidentFastPath,
            resident=app.state.resident,
            route=forecast_route(),
            keys=app.state.api_keys,
        )
    instrument(app, SERVICE)  # outermost: times every request, the fast path's too
    return app
