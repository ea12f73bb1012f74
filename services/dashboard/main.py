"""Run the dashboard: `run()` on its own, `serve()` inside another event loop (as `songpop up` does)."""

from __future__ import annotations

import asyncio

import uvicorn

from shared.config import load_settings

from .app import create_app
from .settings import DashboardSettings
from .transport import UVICORN_WS_OPTIONS


def server(settings: DashboardSettings) -> uvicorn.Server:
    """A uvicorn server for the dashboard on `dashboard_host:dashboard_port`."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.dashboard_host,
        port=settings.dashboard_port,
        log_level=settings.log_level.lower(),
        **UVICORN_WS_OPTIONS,
    )
    return uvicorn.Server(config)


async def serve(settings: DashboardSettings | None = None) -> None:
    """Serve until cancelled or told to exit (runs in the caller's event loop)."""
    await server(settings or load_settings(DashboardSettings)).serve()


def run(settings: DashboardSettings | None = None) -> None:
    """Serve the dashboard (blocking) on port `dashboard_port` (8000 by default)."""
    asyncio.run(serve(settings))
