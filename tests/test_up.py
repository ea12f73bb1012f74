"""`songpop up`: the whole stack in one process starts, answers at once (the dashboard shows the demo
history being built, the REST API says it is not ready yet), publishes predictions, and stops cleanly on
Ctrl+C."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from shared.config import Settings
from shared.events import Envelope, PredictionsLatest, parse
from shared.mqtt import make_client, topics
from tests.cli_support import STARTUP_SECONDS, up_env

# Generous for a loaded machine (a quiet one answers within 5 s: README); the history takes minutes.
FIRST_ANSWER_SECONDS = 60


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


async def first_answer(http: httpx.AsyncClient, path: str, *, since: float) -> httpx.Response:
    """The first answer (any status) at `path`, within FIRST_ANSWER_SECONDS of `since`."""
    while True:
        try:
            return await http.get(path)
        except httpx.TransportError:
            assert time.monotonic() - since < FIRST_ANSWER_SECONDS, f"{path}: no answer"
            await asyncio.sleep(0.2)


async def until_ready(http: httpx.AsyncClient) -> httpx.Response:
    """The predictor's /readyz once it says ready (within STARTUP_SECONDS)."""
    async with asyncio.timeout(STARTUP_SECONDS):
        while True:
            ready = await http.get("/readyz")
            if ready.status_code == 200:
                return ready
            await asyncio.sleep(1)


async def check_answers_while_building(env: dict[str, str], *, started: float) -> None:
    """The dashboard answers 200 with the build's progress, long before the history is built, and the
    REST API says it has no forecasts yet (503 with Retry-After) while staying alive."""
    dashboard = f"http://127.0.0.1:{env['SONGPOP_DASHBOARD_PORT']}"
    predictor = f"http://127.0.0.1:{env['SONGPOP_PREDICTOR_PORT']}"
    async with httpx.AsyncClient(base_url=dashboard) as http:
        page = await first_answer(http, "/", since=started)
    took = time.monotonic() - started
    assert page.status_code == 200 and took < FIRST_ANSWER_SECONDS, (page.status_code, took)
    assert "demo" in page.text.lower()
    building = re.search(r"building demo history: week (\d+) of (\d+)", page.text, re.IGNORECASE)
    assert building is not None and int(building[1]) < int(building[2]), page.text
    assert '<progress id="build-progress"' in page.text
    async with httpx.AsyncClient(base_url=predictor) as http:
        assert (await first_answer(http, "/healthz", since=started)).status_code == 200
        trending, ready = await http.get("/v1/trending"), await http.get("/readyz")
    for answer in (trending, ready):
        assert answer.status_code == 503 and int(answer.headers["retry-after"]) > 0, answer.text
        assert re.search("starting|demo history", answer.json()["detail"]), answer.text


async def check_forecasts_once_built(env: dict[str, str]) -> None:
    """Later /readyz turns ready, and the trending songs with forecasts replace the progress view."""
    predictor = f"http://127.0.0.1:{env['SONGPOP_PREDICTOR_PORT']}"
    async with httpx.AsyncClient(base_url=predictor) as http:
        await until_ready(http)
        trending = await http.get("/v1/trending")
    assert trending.status_code == 200 and trending.json()["count"] > 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{env['SONGPOP_DASHBOARD_PORT']}") as http:
        page = await http.get("/")
    assert page.status_code == 200 and "build-progress" not in page.text
    assert trending.json()["predictions"][0]["track_id"] in page.text


async def drain(process: asyncio.subprocess.Process, lines: list[str]) -> None:
    """Keep reading the log, so a full pipe never blocks the stack."""
    assert process.stderr is not None
    while raw := await process.stderr.readline():
        lines.append(raw.decode(errors="replace"))


async def run_up_and_check(env: dict[str, str], settings: Settings) -> list[str]:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "up", "--weeks", "12",
        env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    lines: list[str] = []
    reader = asyncio.create_task(drain(process, lines))
    try:
        await check_answers_while_building(env, started=started)
        await check_forecasts_once_built(env)
        latest = await latest_predictions(settings)
        assert latest.data.count > 0
        assert all(p.demo for p in latest.data.predictions)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
    await asyncio.wait_for(reader, 60)
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
