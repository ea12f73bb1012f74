"""The deployment as compose runs it, without Docker: the same commands (`songpop migrate`, `songpop serve
ingestor|predictor|trainer|dashboard`) as separate processes, each with its own MQTT user on a Mosquitto
started with the project's config and ACL, in production mode with JSON logs. A chart file dropped in
the charts folder flows through: ingestor → db-updated → predictor → predictions → dashboard; a
training run (the CLI, as the trainer's user) completes and any model it activates reaches the broker.
Every process stops cleanly on SIGTERM, logs JSON lines and no traceback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import col

from shared.models import Outbox, ProcessedEvent
from tests.faults_support import OBSERVER, Collector, PrivateBroker, Process, spotify_emulator, until_up
from tests.servers import free_port

pytestmark = pytest.mark.skipif(
    not __import__("shutil").which("mosquitto"), reason="needs the mosquitto binary"
)
ROOT_TOPIC = "songpop/v1"


async def eventually(check, within: float = 60.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polls other processes' effects
            await asyncio.sleep(0.2)


async def test_compose_like_stack_runs_end_to_end(settings, sessions, tmp_path: Path) -> None:
    charts = tmp_path / "charts"
    with PrivateBroker(tmp_path / "mosquitto") as broker:
        async with spotify_emulator(charts) as (_, spotify):
            common = {
                "SONGPOP_ENVIRONMENT": "production",
                "SONGPOP_LOG_FORMAT": "json",
                "SONGPOP_DATABASE_URL": settings.database_url,
                "SONGPOP_MQTT_TOPIC_ROOT": ROOT_TOPIC,
                "SONGPOP_VAR_DIR": str(tmp_path / "var"),
                "SONGPOP_CHARTS_DIR": str(charts),
                "SONGPOP_SPOTIFY_API_URL": spotify["spotify_api_url"],
                "SONGPOP_SPOTIFY_ACCOUNTS_URL": spotify["spotify_accounts_url"],
                "SONGPOP_MQTT_RECONNECT_SECONDS": "0.2",
            }

            def env(user: str, **extra: str) -> dict[str, str]:
                return {**common, "SONGPOP_MQTT_URL": broker.url(user), **extra}

            migrate = Process(["migrate", "--wait", "20"], env("ingestor"), tmp_path, "migrate")
            migrate_log = await asyncio.to_thread(migrate.wait, 60)
            assert migrate.process.returncode == 0, migrate_log

            predictor_port, dashboard_port = free_port(), free_port()
            services = {
                "predictor": Process(
                    ["serve", "predictor"],
                    env("predictor", SONGPOP_PREDICTOR_PORT=str(predictor_port)),
                    tmp_path,
                    "predictor",
                ),
                "dashboard": Process(
                    ["serve", "dashboard"],
                    env("dashboard", SONGPOP_DASHBOARD_PORT=str(dashboard_port)),
                    tmp_path,
                    "dashboard",
                ),
                "trainer": Process(
                    ["serve", "trainer"], env("trainer", SONGPOP_TRAIN_CRON="0 6 1 1 *"), tmp_path, "trainer"
                ),
            }
            logs: dict[str, str] = {}
            topics = [f"{ROOT_TOPIC}/events/#", f"{ROOT_TOPIC}/predictions/latest"]
            try:
                async with Collector(broker.url(OBSERVER), topics) as observer:
                    predictor_url = f"http://127.0.0.1:{predictor_port}"
                    dashboard_url = f"http://127.0.0.1:{dashboard_port}"
                    await until_up(predictor_url)
                    await until_up(dashboard_url)
                    # The ingestor service finds this week's chart file in the watched folder.
                    services["ingestor"] = Process(
                        ["serve", "ingestor"], env("ingestor"), tmp_path, "ingestor"
                    )
                    db_updated = f"{ROOT_TOPIC}/events/db-updated"
                    latest = f"{ROOT_TOPIC}/predictions/latest"
                    await observer.wait_until(lambda: bool(observer.event_ids(db_updated)), 90)
                    await observer.wait_until(lambda: bool(observer.event_ids(latest)), 90)

                    async with httpx.AsyncClient(timeout=30) as http:

                        async def dashboard_has_rows() -> bool:
                            rows = (await http.get(f"{dashboard_url}/api/trending")).json()["rows"]
                            return len(rows) > 0

                        await eventually(dashboard_has_rows)
                        trending = (await http.get(f"{predictor_url}/v1/trending")).json()
                        assert trending["count"] > 0
                        status_page = (await http.get(f"{dashboard_url}/status")).text
                        ready = [
                            (await http.get(f"{url}/readyz")).status_code
                            for url in (predictor_url, dashboard_url)
                        ]
                        metrics = (await http.get(f"{predictor_url}/metrics")).text

                    # A training run (the CLI one-shot, as the trainer's user) announces model-updated.
                    train = Process(["train"], env("trainer"), tmp_path, "train")
                    logs["train"] = await asyncio.to_thread(train.wait, 110)
                    model_updated = f"{ROOT_TOPIC}/events/model-updated"
                    async with sessions() as session:
                        query = select(col(Outbox.event_id)).where(col(Outbox.topic) == model_updated)
                        models = (await session.exec(query)).scalars().all()
                    await observer.wait_until(lambda: set(models) <= set(observer.event_ids(model_updated)))
            finally:
                for name, process in services.items():
                    logs[name] = process.stop()

    assert ready == [200, 200]
    assert "predictor" in status_page  # announced itself online on its status topic
    assert "songpop_mqtt_received_total" in metrics
    assert train.process.returncode == 0, logs["train"][-2000:]
    async with sessions() as session:
        handled = (await session.exec(select(func.count()).select_from(ProcessedEvent))).one()[0]
    assert handled >= 1
    for name, output in logs.items():
        assert "Traceback" not in output, f"{name}:\n{output[-3000:]}"
        for line in output.splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                assert {"time", "level", "logger", "message"} <= set(entry), line
                assert "\\u001b" not in line, line  # no terminal colour codes in structured logs
    for name, process in services.items():
        assert process.process.returncode in (0, -15), f"{name} exited with {process.process.returncode}"
