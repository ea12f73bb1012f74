"""Running `songpop` in tests: the SONGPOP_* environment that points a command at this test's database,
broker and emulator (or at free ports for `songpop up`), and waiting for a line a running command prints."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from tests.ingest_support import Emulator
from tests.servers import free_port


def environment(settings: Any, spotify: Emulator | None = None, **overrides: str) -> dict[str, str]:
    """SONGPOP_* variables pointing the command at this test's database, broker and emulator."""
    env = {
        "SONGPOP_DATABASE_URL": settings.database_url,
        "SONGPOP_MQTT_URL": settings.mqtt_url,
        "SONGPOP_MQTT_TOPIC_ROOT": settings.mqtt_topic_root,
        "SONGPOP_MQTT_CLIENT_PREFIX": settings.mqtt_client_prefix,
        "SONGPOP_VAR_DIR": str(settings.var_dir),
        "SONGPOP_CHARTS_DIR": str(settings.charts_dir),
        "SONGPOP_LOG_LEVEL": "WARNING",
    }
    if spotify is not None:
        env.update(SONGPOP_SPOTIFY_API_URL=f"{spotify.url}/v1", SONGPOP_SPOTIFY_ACCOUNTS_URL=spotify.url)
    env.update({f"SONGPOP_{key.upper()}": value for key, value in overrides.items()})
    return env


STARTUP_SECONDS = 240


def up_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a `songpop up` subprocess: files under `tmp_path`, every port free."""
    emulator = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONGPOP_")}
    env.update(
        SONGPOP_VAR_DIR=str(tmp_path / "var"),
        SONGPOP_CHARTS_DIR=str(tmp_path / "charts"),
        SONGPOP_MQTT_EMBEDDED_PORT=str(free_port()),
        SONGPOP_DASHBOARD_PORT=str(free_port()),
        SONGPOP_PREDICTOR_PORT=str(free_port()),
        SONGPOP_SPOTIFY_API_URL=f"http://127.0.0.1:{emulator}/v1",
        SONGPOP_SPOTIFY_ACCOUNTS_URL=f"http://127.0.0.1:{emulator}",
        **extra,
    )
    return env


async def wait_for_line(process: asyncio.subprocess.Process, marker: str, lines: list[str]) -> None:
    """Read the process's stderr into `lines` until one holds `marker`; fail if it exits first."""
    assert process.stderr is not None
    async with asyncio.timeout(STARTUP_SECONDS):
        while True:
            raw = await process.stderr.readline()
            if not raw:
                raise AssertionError("songpop up exited early:\n" + "".join(lines[-40:]))
            lines.append(raw.decode(errors="replace"))
            if marker in lines[-1]:
                return
