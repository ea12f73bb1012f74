"""The Alembic migrations build exactly the schema the models describe (tables, columns, indexes,
constraints): a model change without its migration, or the reverse, fails here."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import MIGRATIONS_DIR, make_engine, metadata


def schema_differences(connection: Any) -> list[Any]:
    return compare_metadata(MigrationContext.configure(connection), metadata())


async def test_the_migrated_database_matches_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        differences = await connection.run_sync(schema_differences)
    assert differences == []


def _alembic(url: str) -> Any:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@contextlib.asynccontextmanager
async def fresh_database(infra: Any, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of the session's kind (MariaDB or SQLite), dropped after."""
    if not infra.database_url.startswith("mysql"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    server, name = infra.database_url.rsplit("/", 1)[0], f"songpop_mig_{uuid.uuid4().hex[:8]}"
    admin = make_engine(server + "/")
    async with admin.begin() as conn:
        await conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield f"{server}/{name}"
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        await admin.dispose()


PREDICTION = (  # backticks: SIGNAL is a reserved word in MySQL (SQLite takes them too)
    "INSERT INTO prediction (track_id, week, `signal`, region, horizon_weeks, value, model_version, "
    "cold_start, created_at) VALUES (:t, '2026-11-23', 'popularity', '', :h, :v, 'v1', 0, '2026-11-23')"
)


async def predictions(url: str) -> list[tuple[Any, ...]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            query = "SELECT track_id, horizon_weeks, value FROM prediction ORDER BY track_id, horizon_weeks"
            return [tuple(r) for r in (await conn.execute(text(query))).all()]
    finally:
        await engine.dispose()


async def test_the_prediction_key_migration_keeps_the_rows_both_ways(infra, tmp_path) -> None:
    """0009 (the natural key as primary key, DOUBLE values) up and down: the rows stay, the schema is the
    models' after the upgrade, and the surrogate id and unique key come back with the downgrade."""
    async with fresh_database(infra, tmp_path) as url:
        config = _alembic(url)
        await asyncio.to_thread(command.upgrade, config, "0008")
        engine = make_engine(url)
        try:
            async with engine.begin() as conn:
                for t, h, v in [("b", 26, 50.5), ("a", 52, 0.25), ("a", 26, 71.0)]:
                    await conn.execute(text(PREDICTION), {"t": t, "h": h, "v": v})
        finally:
            await engine.dispose()
        rows = await predictions(url)
        await asyncio.to_thread(command.upgrade, config, "head")
        assert await predictions(url) == rows
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                assert await conn.run_sync(schema_differences) == []
                exact = 61.234567890123456
                await conn.execute(
                    text("UPDATE prediction SET value = :v WHERE track_id = 'b'"), {"v": exact}
                )
                assert (
                    await conn.execute(text("SELECT value FROM prediction WHERE track_id = 'b'"))
                ).scalar() == exact
                await conn.rollback()
        finally:
            await engine.dispose()
        await asyncio.to_thread(command.downgrade, config, "0008")
        assert await predictions(url) == rows
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                ids = (await conn.execute(text("SELECT id FROM prediction ORDER BY id"))).scalars().all()
                assert len(set(ids)) == 3
                with pytest.raises(IntegrityError):
                    await conn.execute(text(PREDICTION), {"t": "a", "h": 26, "v": 1.0})
        finally:
            await engine.dispose()


async def test_the_snapshot_week_index_migration_both_ways(infra, tmp_path) -> None:
    """0010: snapshot's week index holds `trending` after the upgrade, `week` alone after the downgrade."""

    def week_index(connection: Any) -> list[str]:
        indexes = inspect(connection).get_indexes("snapshot")
        return next(list(i["column_names"]) for i in indexes if i["name"] == "ix_snapshot_week")

    async with fresh_database(infra, tmp_path) as url:
        config = _alembic(url)
        both = ["week", "trending"]
        steps = (
            (command.upgrade, "head", both),
            (command.downgrade, "0009", ["week"]),
            (command.upgrade, "head", both),
        )
        for step, revision, columns in steps:
            await asyncio.to_thread(step, config, revision)
            engine = make_engine(url)
            try:
                async with engine.connect() as conn:
                    assert await conn.run_sync(week_index) == columns
            finally:
                await engine.dispose()
