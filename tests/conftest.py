"""Test infrastructure: the real MariaDB and Mosquitto when reachable (always with
SONGPOP_TEST_REAL_SERVICES=1, as in CI), else the embedded SQLite database and MQTT broker.

Each test session gets its own database; each test gets empty tables and its own MQTT topic root, so
tests (and developers running them side by side) never see each other's rows or messages.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.config import Settings
from shared.db import make_engine, make_sessionmaker, metadata, migrate
from shared.mqtt import EmbeddedBroker

REAL = os.environ.get("SONGPOP_TEST_REAL_SERVICES") == "1"
MYSQL_SERVER = os.environ.get("SONGPOP_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306")
MQTT_HOST, MQTT_PORT = "127.0.0.1", int(os.environ.get("SONGPOP_TEST_MQTT_PORT", "1883"))


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Infra:
    database_url: str
    mqtt_url: str
    kind: str  # "real" or "embedded"


async def _create_mysql_database(name: str) -> None:
    engine = make_engine(MYSQL_SERVER + "/")
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    await engine.dispose()


async def _drop_mysql_database(name: str) -> None:
    engine = make_engine(MYSQL_SERVER + "/")
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    await engine.dispose()


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """The database and broker of this test session, migrated to the latest schema."""
    mysql_up, mqtt_up = reachable("127.0.0.1", 3306), reachable(MQTT_HOST, MQTT_PORT)
    if REAL and not (mysql_up and mqtt_up):
        pytest.fail(
            "SONGPOP_TEST_REAL_SERVICES=1 but "
            + ("MariaDB 127.0.0.1:3306 " if not mysql_up else "")
            + (f"Mosquitto {MQTT_HOST}:{MQTT_PORT} " if not mqtt_up else "")
            + "is not reachable"
        )
    broker: EmbeddedBroker | None = None
    loop = asyncio.new_event_loop()
    if mysql_up:
        db_name = f"songpop_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        loop.run_until_complete(_create_mysql_database(db_name))
        database_url = f"{MYSQL_SERVER}/{db_name}"
    else:
        database_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'songpop.db'}"
    if mqtt_up:
        mqtt_url = f"mqtt://{MQTT_HOST}:{MQTT_PORT}"
    else:
        broker = EmbeddedBroker(port=free_port())
        mqtt_url = broker.url
    migrate(database_url)
    kind = "real" if mysql_up and mqtt_up else "embedded"
    if broker is None:
        yield Infra(database_url, mqtt_url, kind)
    else:
        # The embedded broker runs in its own thread so tests' event loops can come and go.
        import threading

        broker_loop = asyncio.new_event_loop()
        threading.Thread(target=broker_loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(broker.start(), broker_loop).result(timeout=10)
        yield Infra(database_url, mqtt_url, kind)
        asyncio.run_coroutine_threadsafe(broker.stop(), broker_loop).result(timeout=10)
        broker_loop.call_soon_threadsafe(broker_loop.stop)
    if mysql_up:
        loop.run_until_complete(_drop_mysql_database(database_url.rsplit("/", 1)[1]))
    loop.close()


@pytest.fixture
def topic_root() -> str:
    return f"test/{uuid.uuid4().hex[:10]}/songpop/v1"


@pytest.fixture
def settings(infra: Infra, topic_root: str, tmp_path: Path) -> Settings:
    """Settings pointing at this session's database and broker, with a unique topic root."""
    return Settings(
        database_url=infra.database_url,
        mqtt_url=infra.mqtt_url,
        mqtt_topic_root=topic_root,
        mqtt_client_prefix=f"t{uuid.uuid4().hex[:8]}",
        mqtt_reconnect_seconds=0.2,
        var_dir=tmp_path / "var",
        charts_dir=tmp_path / "charts",
        _env_file=None,
    )


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine on empty tables (every table emptied before the test)."""
    eng = make_engine(settings.effective_database_url)
    async with eng.begin() as conn:
        for table in reversed(metadata().sorted_tables):
            await conn.execute(table.delete())
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture
def quick_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer boosting rounds, for tests of the registry and of loading paths rather than of accuracy."""
    from shared.forecasting import training
    from shared.forecasting.models import BoostParams

    original = training.default_config

    def quick(signal: str) -> dict[str, object]:
        config = original(signal)
        config["params"] = BoostParams(max_iter=25, min_samples_leaf=20).as_dict()
        return config

    monkeypatch.setattr(training, "default_config", quick)
