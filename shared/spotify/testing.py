"""Test and benchmark helpers: a SpotifyClient wired to an in-process emulator, timing knobs near zero."""

from __future__ import annotations

from typing import Any

import httpx

from shared.config import Settings
from shared.spotify.client import SpotifyClient

EMULATOR_BASE = "http://spotify-emulator"
FAST_KNOBS: dict[str, Any] = {
    "backoff_base": 0.01,
    "backoff_cap": 0.05,
    "rate_limit_margin": 0.01,
    "outage_pause": 300.0,
}


def emulator_settings(**overrides: Any) -> Settings:
    """Settings that point the client at an in-process emulator (no credentials: demo ones are sent)."""
    values: dict[str, Any] = {
        "spotify_api_url": f"{EMULATOR_BASE}/v1",
        "spotify_accounts_url": EMULATOR_BASE,
        "spotify_concurrency": 8,
        "spotify_timeout_seconds": 5.0,
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)


def emulator_client(app: Any, settings: Settings | None = None, **knobs: Any) -> SpotifyClient:
    """A SpotifyClient talking to the ASGI `app` in-process, with fast backoff and pauses."""
    return SpotifyClient(
        settings or emulator_settings(),
        transport=httpx.ASGITransport(app=app),
        **{**FAST_KNOBS, **knobs},
    )
