"""The pre-start step (compose's `migrate` service): it waits with backoff for a database that is not up
yet and migrates once it answers; it gives up with a clear message when the database never comes; and
nothing migrates, or even connects, at import or app-creation time."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import text

from services.prestart import prestart
from shared.config import Settings
from shared.db import DatabaseUnavailable, make_engine
from tests.proxy import TcpProxy

ROOT = Path(__file__).resolve().parent.parent


def needs_mysql(settings: Settings) -> None:
    if not settings.database_url.startswith("mysql"):
        pytest.skip("needs MariaDB behind a proxy")


async def alembic_version(url: str) -> str | None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    finally:
        await engine.dispose()


async def test_prestart_waits_for_the_database_then_migrates(settings) -> None:
    needs_mysql(settings)
    async with TcpProxy("127.0.0.1", 3306) as proxy:
        waiting = Settings(
            **{**settings.model_dump(), "database_url": proxy.url_for(settings.database_url)}, _env_file=None
        )
        proxy.cut()  # the database container is still starting
        job = asyncio.create_task(prestart(waiting, within=30))
        await asyncio.sleep(1.5)
        assert not job.done(), "prestart gave up (or went ahead) while the database was down"
        proxy.restore()
        await asyncio.wait_for(job, 30)
    assert await alembic_version(settings.database_url)


async def test_prestart_gives_up_with_a_clear_message(settings) -> None:
    needs_mysql(settings)
    async with TcpProxy("127.0.0.1", 3306) as proxy:
        url = proxy.url_for(settings.database_url).replace("root@", "root:pw-that-stays-secret@")
        never = Settings(**{**settings.model_dump(), "database_url": url}, _env_file=None)
        proxy.cut()
        with pytest.raises(DatabaseUnavailable) as failure:
            await prestart(never, within=1)
    assert "unreachable" in str(failure.value) and "pw-that-stays-secret" not in str(failure.value)


IMPORT_EVERYTHING = textwrap.dedent(
    """
    import importlib, sys
    import shared.db

    def forbidden(*args, **kwargs):
        raise SystemExit("migrated or connected at import time")

    shared.db.migrate = shared.db.migrate_async = forbidden
    shared.db.wait_for_database = forbidden
    import sqlalchemy.ext.asyncio as sa_async
    original = sa_async.AsyncEngine.connect
    sa_async.AsyncEngine.connect = forbidden
    for name in ("services.cli", "services.ingestor.main", "services.trainer.main", "services.predictor.app",
                 "services.dashboard.app", "services.prestart", "services.stack"):
        importlib.import_module(name)
    from services.predictor.app import create_app as predictor
    from services.dashboard.app import create_app as dashboard
    from services.predictor.settings import PredictorSettings
    from services.dashboard.settings import DashboardSettings
    predictor(PredictorSettings(_env_file=None))
    dashboard(DashboardSettings(_env_file=None))
    print("clean")
    """
)


def test_nothing_migrates_or_connects_at_import_or_app_creation(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "SONGPOP_DATABASE_URL": "mysql+asyncmy://nobody:x@127.0.0.1:9/none",
        },
    )
    assert result.stdout.strip() == "clean", result.stderr[-2000:]
