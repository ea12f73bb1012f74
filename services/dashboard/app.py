"""The dashboard web app: HTML pages, a small JSON API for resyncs, health probes and the `/ws` live feed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.config import load_settings
from shared.db import make_engine, make_sessionmaker, ping
from shared.history_build import awaited_build, read_build
from shared.metrics import instrument
from shared.models import ID_LEN
from shared.mqtt import consume_forever, make_client, topics
from shared.ops_metrics import DATABASE_GAUGES, refresh_forever

from . import formatting, service
from .live import CLOSE_TOO_SLOW, Hub, LiveFeed, Subscriber, hello_message
from .settings import DashboardSettings
from .transport import ask_reset

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SERVICE_NAME = "dashboard"
BROKER_PROBE_TIMEOUT = 3.0
BUILD_REFRESH_SECONDS = 3  # how often the progress page of a history build reloads itself
# Scripts only from our own files: even a name that slipped past escaping could not run.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


# ---------------------------------------------------------------- dependencies


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


def get_settings(request: Request) -> DashboardSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_feed(request: Request) -> LiveFeed:
    return request.app.state.feed  # type: ignore[no-any-return]


SessionDep = Annotated[AsyncSession, Depends(get_session)]
SettingsDep = Annotated[DashboardSettings, Depends(get_settings)]
FeedDep = Annotated[LiveFeed, Depends(get_feed)]
SignalQuery = Annotated[str | None, Query(pattern="^(popularity|streams)$")]
RegionQuery = Annotated[str | None, Query(max_length=16)]


# ---------------------------------------------------------------- health


class Health:
    """Database and broker reachability, probed at most once per `cache_seconds`."""

    def __init__(self, settings: DashboardSettings, engine: AsyncEngine) -> None:
        self.settings, self.engine = settings, engine
        self._checked_at = -1e9
        self._result: dict[str, bool] = {}
        self._lock = asyncio.Lock()

    async def check(self) -> dict[str, bool]:
        async with self._lock:
            if time.monotonic() - self._checked_at >= self.settings.dashboard_health_cache_seconds:
                database, broker = await asyncio.gather(ping(self.engine), self._broker_answers())
                self._result = {"database": database, "broker": broker}
                self._checked_at = time.monotonic()
            return dict(self._result)

    async def _broker_answers(self) -> bool:
        try:
            async with asyncio.timeout(BROKER_PROBE_TIMEOUT):
                async with make_client(self.settings, f"{SERVICE_NAME}-probe", announce=False):
                    return True
        except Exception:  # any failure to connect means "not ready"
            return False


# ---------------------------------------------------------------- templates


def make_templates() -> Jinja2Templates:
    """Jinja2 with autoescaping on for every template: song names come from outside."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    formatting.register(env)
    return Jinja2Templates(env=env)


# ---------------------------------------------------------------- app


def create_app(settings: DashboardSettings | None = None) -> FastAPI:
    """The dashboard app; the engine and the MQTT consumer live in its lifespan."""
    settings = settings or load_settings(DashboardSettings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.effective_database_url)
        hub = Hub(settings.dashboard_ws_queue)
        feed = LiveFeed(hub, topics(settings))
        app.state.engine, app.state.sessions = engine, make_sessionmaker(engine)
        app.state.hub, app.state.feed = hub, feed
        app.state.health = Health(settings, engine)
        consumer = asyncio.create_task(
            consume_forever(
                settings,
                SERVICE_NAME,
                feed.subscriptions,
                feed.handle,
                persistent=False,
                on_connect=feed.on_connect,
                announce=False,  # read-only MQTT user
            ),
            name="dashboard-mqtt",
        )
        # The database-derived gauges: exported here because the dashboard runs once per deployment.
        gauges = asyncio.create_task(refresh_forever(app.state.sessions), name="dashboard-gauges")
        try:
            yield
        finally:
            hub.close()
            for task in (consumer, gauges):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await engine.dispose()

    app = FastAPI(title="songpop dashboard", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    instrument(app, SERVICE_NAME, also=[DATABASE_GAUGES])
    templates = make_templates()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _add_error_handlers(app, templates)
    _add_security_headers(app)
    _add_pages(app, templates)
    _add_api(app)
    _add_websocket(app)
    return app


def _page(
    templates: Jinja2Templates, request: Request, name: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    feed: LiveFeed | None = getattr(request.app.state, "feed", None)
    context.setdefault("last_event_id", feed.last_event_id if feed else None)
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _add_security_headers(app: FastAPI) -> None:
    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def _add_error_handlers(app: FastAPI, templates: Jinja2Templates) -> None:
    async def database_down(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable while serving %s: %s", request.url.path, type(exc).__name__)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "database unavailable"}, status_code=503)
        return _page(
            templates,
            request,
            "error.html",
            503,
            title="Database unavailable",
            message="The database did not answer. This page will work again once it is back.",
        )

    app.add_exception_handler(OperationalError, database_down)
    app.add_exception_handler(DBAPIError, database_down)


async def _trending(
    session: AsyncSession, settings: DashboardSettings, signal: str | None, region: str | None
) -> service.TrendingView:
    """The trending table, as the page and its JSON resync both show it."""
    return await service.trending(
        session=session,
        signal=signal,
        region=region,
        default_region=settings.chart_region,
        limit=settings.dashboard_trending_limit,
        trend_weeks=settings.dashboard_trend_weeks,
    )


def _add_pages(app: FastAPI, templates: Jinja2Templates) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def trending_page(
        request: Request,
        session: SessionDep,
        settings: SettingsDep,
        signal: SignalQuery = None,
        region: RegionQuery = None,
    ) -> HTMLResponse:
        build = await awaited_build(session)
        if build is not None:  # `songpop up`'s first start: the progress until forecasts exist
            return _page(
                templates, request, "building.html", build=build, refresh_seconds=BUILD_REFRESH_SECONDS
            )
        view = await _trending(session, settings, signal, region)
        return _page(templates, request, "index.html", view=view)

    @app.get("/tracks/{track_id}", response_class=HTMLResponse, include_in_schema=False)
    async def track_page(
        request: Request,
        session: SessionDep,
        settings: SettingsDep,
        track_id: Annotated[str, PathParam(min_length=1, max_length=ID_LEN)],
        signal: SignalQuery = None,
        region: RegionQuery = None,
    ) -> HTMLResponse:
        detail = await service.track_detail(
            session=session,
            track_id=track_id,
            signal=signal,
            region=region,
            default_region=settings.chart_region,
        )
        if detail is None:
            return _page(
                templates,
                request,
                "error.html",
                404,
                title="Song not found",
                message=f"No song with id {track_id} is known here yet.",
            )
        return _page(templates, request, "track.html", detail=detail, chart=formatting.chart_data(detail))

    @app.get("/models", response_class=HTMLResponse, include_in_schema=False)
    async def models_page(request: Request, session: SessionDep) -> HTMLResponse:
        cards = await service.model_cards(session=session)
        return _page(templates, request, "models.html", cards=cards)

    @app.get("/status", response_class=HTMLResponse, include_in_schema=False)
    async def status_page(
        request: Request, session: SessionDep, settings: SettingsDep, feed: FeedDep
    ) -> HTMLResponse:
        view = await service.status_view(session=session)
        build = await read_build(session)
        health = await request.app.state.health.check()
        return _page(
            templates,
            request,
            "status.html",
            view=view,
            health=health,
            feed=feed,
            clients=len(request.app.state.hub),
            hub=request.app.state.hub,
            emulator=settings.uses_emulator,
            build=build,
        )


def _add_api(app: FastAPI) -> None:
    @app.get("/api/trending", response_model=service.TrendingView)
    async def trending_api(
        session: SessionDep,
        settings: SettingsDep,
        signal: SignalQuery = None,
        region: RegionQuery = None,
    ) -> service.TrendingView:
        """The trending table as JSON (what a page fetches to resync after reconnecting)."""
        return await _trending(session, settings, signal, region)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Alive."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        """Ready when the database and the broker both answer."""
        health = await request.app.state.health.check()
        ready = all(health.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", **health}, status_code=200 if ready else 503
        )


def _add_websocket(app: FastAPI) -> None:
    @app.websocket("/ws")
    async def live(websocket: WebSocket) -> None:
        """Push every prediction update to this page until it leaves or falls too far behind."""
        hub: Hub = websocket.app.state.hub
        await websocket.accept()  # then closed with a code a page understands, not an HTTP 403
        if len(hub) >= websocket.app.state.settings.dashboard_ws_max_clients:
            await websocket.close(code=CLOSE_TOO_SLOW, reason="too many open pages; retry later")
            return
        subscriber = hub.subscribe()
        try:
            await websocket.send_text(hello_message(websocket.app.state.feed))
            await _pump(websocket, subscriber, websocket.app.state.settings.dashboard_ws_send_timeout_seconds)
        except WebSocketDisconnect:
            pass
        finally:
            hub.unsubscribe(subscriber)


async def _pump(websocket: WebSocket, subscriber: Subscriber, send_timeout: float) -> None:
    """Send queued messages; stop when the client leaves, is dropped, or stalls a send."""

    async def send() -> None:
        while True:
            text = await subscriber.queue.get()
            async with asyncio.timeout(send_timeout):
                await websocket.send_text(text)

    async def receive() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return

    tasks = {
        asyncio.create_task(send()),
        asyncio.create_task(receive()),
        asyncio.create_task(subscriber.dropped.wait()),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    stalled = any(t.exception() is not None for t in done if not t.cancelled())
    if subscriber.dropped.is_set() or stalled:
        ask_reset(websocket.scope)  # its unsent messages would otherwise hold the connection for ever
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await websocket.close(code=CLOSE_TOO_SLOW, reason="too slow; reconnect")
