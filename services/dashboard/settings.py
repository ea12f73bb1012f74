"""Dashboard settings (`SONGPOP_DASHBOARD_*` and the shared ones)."""

from __future__ import annotations

from pydantic import Field

from shared.config import Settings


class DashboardSettings(Settings):
    """What the dashboard needs on top of the shared settings."""

    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8000, ge=0, le=65535)
    dashboard_trending_limit: int = Field(default=200, ge=1, le=5000)
    dashboard_trend_weeks: int = Field(default=26, ge=2, le=260)
    # Messages waiting for one websocket client; a client that falls this far behind is dropped
    # (its page reconnects and resyncs) so a slow phone never makes the server hold unbounded memory.
    dashboard_ws_queue: int = Field(default=64, ge=1, le=10_000)
    dashboard_ws_max_clients: int = Field(default=1000, ge=1, le=100_000)
    dashboard_ws_send_timeout_seconds: float = Field(default=10.0, gt=0)
    # Per-song prediction messages arriving within this window are sent to pages as one batch.
    dashboard_batch_seconds: float = Field(default=0.05, ge=0)
    dashboard_health_cache_seconds: float = Field(default=5.0, ge=0)
