"""Liveness of the services that serve no HTTP (ingestor, trainer): a task on the service's event loop
touches a file every `heartbeat_seconds`; `songpop health SERVICE` (the compose healthcheck) reads its age.
A hung loop (blocked, or the process stopped) stops the beats and the service turns unhealthy."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from shared.config import Settings

STALE_AFTER_BEATS = 3  # missed beats before a service counts as hung


def heartbeat_path(settings: Settings, service: str) -> Path:
    return settings.var_dir / "heartbeat" / service


async def beat_forever(settings: Settings, service: str) -> None:
    """Touch the service's heartbeat file now and every `heartbeat_seconds`, until cancelled."""
    path = heartbeat_path(settings, service)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        path.touch()
        await asyncio.sleep(settings.heartbeat_seconds)


def heartbeat_age(settings: Settings, service: str) -> float | None:
    """Seconds since the service's last beat; None if it never beat here."""
    try:
        return max(0.0, time.time() - heartbeat_path(settings, service).stat().st_mtime)
    except FileNotFoundError:
        return None


def stale_after(settings: Settings) -> float:
    return STALE_AFTER_BEATS * settings.heartbeat_seconds
