"""Settings of the Spotify Web API emulator."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from shared.spotify.auth import EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET
from shared.weeks import current_week, week_of

DEMO_CLIENT_ID = EMULATOR_CLIENT_ID  # fixed demo credentials the client sends when none are configured
DEMO_CLIENT_SECRET = EMULATOR_CLIENT_SECRET


class EmulatorConfig(BaseModel):
    """How the emulator behaves: access mode, latency, catalog size and seed, token lifetime, start week."""

    mode: Literal["development", "extended"] = "development"
    latency_ms: float = Field(default=0.0, ge=0)
    n_tracks: int = Field(default=20_000, ge=200, le=500_000)
    seed: int = 7
    token_ttl_seconds: float = Field(default=3600.0, gt=0)
    start_week: dt.date = Field(default_factory=current_week)
    client_id: str = DEMO_CLIENT_ID
    client_secret: str = Field(default=DEMO_CLIENT_SECRET, repr=False)
    # Spotify publishes no number; None disables the rolling 30-second window (faults still inject 429s).
    rate_limit_per_30s: int | None = Field(default=None, ge=1)
    # Requests ignoring Retry-After that double the lockout (None: never escalate).
    escalate_after_violations: int | None = Field(default=50, ge=1)

    @field_validator("start_week")
    @classmethod
    def _monday(cls, day: dt.date) -> dt.date:
        return week_of(day)
