"""`songpop up`: the whole stack in one process starts, serves the dashboard, publishes predictions,
and stops cleanly on Ctrl+C."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import httpx
import pytest

from shared.config import Settings
from shared.events import Envelope, PredictionsLatest, parse
from shared.mqtt import make_client, topics
from tests.cli_support import up_env, wait_for_line


async def latest_predictions(settings: Settings) -> Envelope[PredictionsLatest]:
    """The retained predictions, skipping what the embedded broker sends from other topics."""
    wanted = topics(settings).predictions_latest
    async with make_client(settings, "up-observer", announce=False) as observer:
        await observer.subscribe(wanted, qos=1)
        async with asyncio.timeout(30):
            async for message in observer.messages:
                if message.topic.matches(wanted):
                    return parse(message.payload, PredictionsLatest)
    raise AssertionError("no predictions")


async def run_up_and_check(env: dict[str, str], settings: Settings) -> list[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "up", "--weeks", "12",
        env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    lines: list[str] = []
    try:
        await wait_for_line(process, "Dashboard:", lines)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{env['SONGPOP_DASHBOARD_PORT']}") as http:
            page = await http.get("/")
            assert page.status_code == 200
            assert "demo" in page.text.lower()
        latest = await latest_predictions(settings)
        assert latest.data.count > 0
        assert all(p.demo for p in latest.data.predictions)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
    remaining = await asyncio.wait_for(process.stderr.read(), 60)  # type: ignore[union-attr]
    lines.append(remaining.decode(errors="replace"))
    assert await process.wait() == 0, "".join(lines[-40:])
    assert "stopped" in lines[-1]
    return lines


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_up_on_embedded_defaults(tmp_path: Path) -> None:
    """Nothing but Python: SQLite file, in-process broker, emulator."""
    env = up_env(tmp_path)
    settings = Settings(mqtt_url=f"mqtt://127.0.0.1:{env['SONGPOP_MQTT_EMBEDDED_PORT']}", _env_file=None)
    await run_up_and_check(env, settings)
    assert (tmp_path / "var" / "songpop.db").exists()


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_up_on_real_database_and_broker(tmp_path: Path, settings: Settings, engine) -> None:
    """The same stack pointed at this machine's MariaDB and Mosquitto."""
    env = up_env(
        tmp_path,
        SONGPOP_DATABASE_URL=settings.effective_database_url,
        SONGPOP_MQTT_URL=settings.mqtt_url,
        SONGPOP_MQTT_TOPIC_ROOT=settings.mqtt_topic_root,
    )
    await run_up_and_check(env, settings)
