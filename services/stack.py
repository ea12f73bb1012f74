"""`songpop up`: the whole stack in one process, for a machine with Python and nothing else.

Embedded defaults: a SQLite file under var/, an in-process MQTT broker, and the Spotify emulator when no
credentials are set. The servers start first; on an empty database the stack then simulates a year or more
of weekly history from the emulator (labelled demo data everywhere) in the background, trains, and the
predictor forecasts, while the dashboard shows the build's progress (`shared.history_build`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
import uvicorn
from rich.console import Console

from services.dashboard.app import create_app as create_dashboard
from services.dashboard.settings import DashboardSettings
from services.dashboard.transport import UVICORN_WS_OPTIONS
from services.deferred import DeferredApp
from services.demo_history import build_demo_history, start_build
from services.emulator import TRENDING_PLAYLIST_ID, EmulatorConfig
from services.emulator import create_app as create_emulator
from services.ingestor.main import serve as serve_ingestor
from services.ingestor.settings import IngestorSettings
from services.predictor.settings import PredictorSettings
from services.trainer.settings import TrainerSettings
from shared.config import Settings
from shared.db import migrate_async
from shared.mqtt import EmbeddedBroker
from shared.weeks import current_week

log = logging.getLogger(__name__)
S = TypeVar("S", bound=Settings)
# Two years and a bit: the 52-week models need a year of targets beyond their training weeks and a
# held-back year for their backtest.
DEMO_WEEKS = 120
WARM_UP_SECONDS = 10.0
SERVICE_SETTINGS = (IngestorSettings, PredictorSettings, TrainerSettings, DashboardSettings)


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the stack (several servers share one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def derive(cls: type[S], settings: Settings, **overrides: Any) -> S:
    """A service's settings: the stack's values plus that service's own defaults and environment."""
    base = {
        k: v for k, v in settings.model_dump().items() if k in settings.model_fields_set or k in overrides
    }
    return cls(**{**base, **overrides})


def http_server(app: Any, host: str, port: int, **options: Any) -> QuietServer:
    return QuietServer(uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="on", **options))


async def start_server(server: QuietServer) -> asyncio.Task[None]:
    """Start `server` in the background and wait until it accepts connections."""
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises the start-up error (e.g. port in use)
            raise RuntimeError("server stopped during start-up")
        await asyncio.sleep(0.05)
    return task


async def warm_up(url: str) -> None:
    """Ask for the dashboard page once before the heavy work starts (the predictor's imports, the demo
    history): its templates and queries are then compiled, and the first visitor's page is quick."""
    try:
        async with httpx.AsyncClient(timeout=WARM_UP_SECONDS) as http:
            await http.get(url)
    except httpx.HTTPError as exc:  # the page will tell its visitor; nothing to stop for
        log.warning("the dashboard's first page failed (%s)", type(exc).__name__)


def load_predictor(settings: PredictorSettings) -> Any:
    """The predictor app (imported here, in a worker thread: see `DeferredApp`)."""
    from services.predictor.app import create_app

    return create_app(settings)


async def serve_trainer(settings: TrainerSettings) -> None:
    from services.trainer.main import serve  # the forecasting stack: imported once the servers answer

    await serve(settings)


async def without_cancel(task: asyncio.Task[None]) -> None:
    """Fail when `task` fails; cancelling this waiter leaves `task` alone (its server ends it)."""
    await asyncio.shield(task)


async def after(job: asyncio.Task[None] | None, service: Callable[[], Awaitable[None]]) -> None:
    """Run `service` once `job` (if any) has finished; its failure is this task's."""
    if job is not None:
        await job
    await service()


async def run_stack(
    settings: Settings,
    *,
    demo_weeks: int = DEMO_WEEKS,
    emulator_mode: Literal["extended", "development"] = "extended",
    console: Console,
) -> None:
    """Start everything, print the dashboard URL, and run until SIGINT/SIGTERM; then stop cleanly, and in
    any case end the process within `FORCE_EXIT_SECONDS`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop_signal, stop)
    settings.var_dir.mkdir(parents=True, exist_ok=True)

    broker = None
    if not settings.mqtt_url:
        broker = EmbeddedBroker(port=settings.mqtt_embedded_port)
        await broker.start()
    servers: list[tuple[QuietServer, asyncio.Task[None]]] = []
    background: list[asyncio.Task[None]] = []
    try:
        await migrate_async(settings.effective_database_url)
        emulator_state = None
        if settings.uses_emulator:
            emulator_app = create_emulator(EmulatorConfig(mode=emulator_mode, start_week=current_week()))
            emulator_state = emulator_app.state.emulator
            api = urlsplit(settings.effective_spotify_api_url)
            servers.append(
                await _serve(http_server(emulator_app, api.hostname or "127.0.0.1", api.port or 8002))
            )
            console.print(
                f"Spotify emulator ({emulator_mode} mode) on {api.scheme}://{api.netloc} — demo data"
            )

        trending_playlist = (
            TRENDING_PLAYLIST_ID if emulator_mode == "extended" and settings.uses_emulator else None
        )
        ingestor = derive(
            IngestorSettings,
            settings,
            spotify_trending_playlist_id=settings.spotify_trending_playlist_id or trending_playlist,
        )
        trainer = derive(TrainerSettings, settings)
        build = await start_build(settings, weeks=demo_weeks if emulator_state is not None else 0)

        predictor = derive(PredictorSettings, settings)
        dashboard = derive(DashboardSettings, settings)
        servers.append(
            await _serve(
                http_server(
                    create_dashboard(dashboard),
                    dashboard.dashboard_host,
                    dashboard.dashboard_port,
                    **UVICORN_WS_OPTIONS,
                )
            )
        )
        # The predictor answers at once (503 "starting") while the forecasting stack is imported.
        deferred = DeferredApp(lambda: load_predictor(predictor), name="predictor")
        servers.append(
            await _serve(http_server(deferred, predictor.predictor_host, predictor.predictor_port))
        )
        dashboard_url = f"http://{dashboard.dashboard_host}:{dashboard.dashboard_port}/"
        await warm_up(dashboard_url)
        background.append(asyncio.create_task(without_cancel(deferred.start()), name="predictor"))
        label = " (demo data from the Spotify emulator)" if settings.uses_emulator else ""
        console.print(f"[bold green]Dashboard:[/] {dashboard_url}{label}")
        console.print(f"REST API:  http://{predictor.predictor_host}:{predictor.predictor_port}/docs")
        console.print("Press Ctrl+C to stop.")
        history = None
        if build is not None:
            console.print(
                f"Empty database: simulating {build.weeks} weeks of demo history from the emulator…"
            )
            history = asyncio.create_task(
                build_demo_history(ingestor, trainer, emulator_state, build=build, console=console),
                name="demo-history",
            )
            background.append(history)
        # The scheduled services start on the finished history (a run of theirs meanwhile would race it).
        background.append(
            asyncio.create_task(after(history, lambda: serve_ingestor(ingestor)), name="ingestor")
        )
        background.append(asyncio.create_task(after(history, lambda: serve_trainer(trainer)), name="trainer"))
        await _wait(stop, background)
    finally:
        console.print("stopping…")
        await shut_down(background, servers, broker)
        console.print("stopped")


# A stop must always end the process: each stage of the clean stop has its seconds (the services say
# `offline` on the broker, servers finish their requests, open connections are cut, the embedded broker
# stops); whatever still runs then (a task that swallowed its cancellation, a client handler of the
# embedded broker) is left behind, and FORCE_EXIT_SECONDS after the signal the process exits regardless.
STOP_SERVICES_SECONDS, STOP_SERVERS_SECONDS, STOP_CONNECTIONS_SECONDS, STOP_BROKER_SECONDS = (
    4.0,
    3.0,
    1.0,
    1.0,
)
FORCE_EXIT_SECONDS = 13.0
RECANCEL_SECONDS = 1.0
EXIT_FORCED = 1


def on_stop_signal(stop: asyncio.Event) -> None:
    """The first SIGINT/SIGTERM starts the clean stop and arms the forced exit."""
    if not stop.is_set():
        arm_forced_exit(FORCE_EXIT_SECONDS)
        stop.set()


def arm_forced_exit(seconds: float) -> threading.Timer:
    """End the process `seconds` from now unless it has ended by itself (a daemon thread: it does not
    keep a finished process alive)."""

    def force() -> None:
        sys.stderr.write(f"shutdown did not finish within {seconds:.0f} s; exiting anyway\n")
        sys.stderr.flush()
        os._exit(EXIT_FORCED)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()
    return timer


async def shut_down(
    background: list[asyncio.Task[None]],
    servers: list[tuple[QuietServer, asyncio.Task[None]]],
    broker: EmbeddedBroker | None,
) -> None:
    """Stop the services, then the servers (new requests refused, then open connections cut), then the
    broker, each within its seconds."""
    await stop_tasks(background, within=STOP_SERVICES_SECONDS)
    for server, _ in reversed(servers):
        server.should_exit = True
    running = {task for _, task in servers if not task.done()}
    if running:
        _, running = await asyncio.wait(running, timeout=STOP_SERVERS_SECONDS)
    for server, _ in servers:
        server.force_exit = True  # open connections (a websocket page) no longer hold it up
    await stop_tasks(list(running), within=STOP_CONNECTIONS_SECONDS)
    if broker is not None:
        await stop_tasks([asyncio.create_task(broker.stop())], within=STOP_BROKER_SECONDS, cancel=False)


async def stop_tasks(tasks: list[asyncio.Task[Any]], *, within: float, cancel: bool = True) -> None:
    """Wait up to `within` seconds for `tasks` to end, cancelling them (again every RECANCEL_SECONDS: on
    Python 3.11 a cancellation that meets a finishing `asyncio.wait_for` is lost) unless `cancel` is
    False; the ones still running are logged and left behind."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pending = {task for task in tasks if not task.done()}
    while pending and loop.time() < deadline:
        if cancel:
            for task in pending:
                task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_SECONDS, deadline - loop.time()))
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("%s ended with %r while stopping", task.get_name(), task.exception())
    for task in pending:
        log.warning("%s did not stop within %.0f s; left behind", task.get_name(), within)


async def _serve(server: QuietServer) -> tuple[QuietServer, asyncio.Task[None]]:
    return server, await start_server(server)


async def _wait(stop: asyncio.Event, background: list[asyncio.Task[None]]) -> None:
    """Until asked to stop, or until a background task fails (its error is raised); one that finishes
    (the demo history) is done, not a reason to stop."""
    stopper = asyncio.create_task(stop.wait())
    running: set[asyncio.Task[Any]] = {stopper, *background}
    try:
        while not stopper.done():
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception():
                    raise task.exception()  # type: ignore[misc]
    finally:
        stopper.cancel()
