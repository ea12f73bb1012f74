"""The Spotify Web API emulator: both access modes, faults on demand, a catalog with weekly dynamics."""

from __future__ import annotations

import datetime as dt

from services.emulator.app import create_app
from services.emulator.catalog import Catalog, ChartRow
from services.emulator.config import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, EmulatorConfig
from services.emulator.lookups import DEMO_PLAYLIST_ID, TRENDING_PLAYLIST_ID
from services.emulator.state import EmulatorState, FaultPlan
from shared.weeks import current_week

__all__ = [
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_PLAYLIST_ID",
    "TRENDING_PLAYLIST_ID",
    "Catalog",
    "ChartRow",
    "EmulatorConfig",
    "EmulatorState",
    "FaultPlan",
    "create_app",
    "run",
    "serve",
]


def serve(config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 8002) -> None:
    """Run the emulator with uvicorn until interrupted (blocking)."""
    import logging

    import uvicorn

    config = config or EmulatorConfig()
    logging.getLogger(__name__).info(
        "Spotify emulator on http://%s:%d (%s mode, %d tracks, latency %.0f ms, week %s)",
        host, port, config.mode, config.n_tracks, config.latency_ms, config.start_week,
    )  # fmt: skip
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning", access_log=False)


def run(
    host: str = "127.0.0.1",
    port: int = 8002,
    mode: str = "development",
    latency_ms: float = 0.0,
    seed: int = 7,
    n_tracks: int = 20_000,
    *,
    start_week: dt.date | None = None,
    token_ttl_seconds: float = 3600.0,
) -> None:
    """Entry point for `songpop emulator`: build the config from plain arguments and serve."""
    config = EmulatorConfig(
        mode=mode,
        latency_ms=latency_ms,
        seed=seed,
        n_tracks=n_tracks,
        token_ttl_seconds=token_ttl_seconds,
        start_week=start_week or current_week(),
    )
    serve(config, host=host, port=port)
