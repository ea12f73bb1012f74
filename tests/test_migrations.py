"""The Alembic migrations build exactly the schema the models describe (tables, columns, indexes,
constraints): a model change without its migration, or the reverse, fails here."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import metadata


def schema_differences(connection: Any) -> list[Any]:
    return compare_metadata(MigrationContext.configure(connection), metadata())


async def test_the_migrated_database_matches_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        differences = await connection.run_sync(schema_differences)
    assert differences == []
