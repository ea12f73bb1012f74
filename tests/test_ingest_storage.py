"""Storage rules behind every ingest: bulk upserts in chunks, merge rules, and staged snapshots published
in one step, on MariaDB and on the embedded SQLite database alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import bulkload
from shared.catalog import publish_staged_snapshots, upsert_snapshots
from shared.db import make_engine, make_sessionmaker, migrate_async, session_scope
from shared.models import Snapshot, SnapshotStage, utcnow
from tests.ingest_support import count, rows

WEEK = dt.date(2024, 1, 1)


def snapshot(track_id: str, popularity: int | None, trending: bool, source: str | None = None) -> dict:
    return {
        "track_id": track_id,
        "week": WEEK,
        "popularity": popularity,
        "popularity_source": source if popularity is not None else None,
        "trending": trending,
        "is_demo": False,
        "updated_at": utcnow(),
    }


@pytest.fixture(params=["session-database", "sqlite"])
async def any_sessions(request, sessions, tmp_path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """This session's database (MariaDB here), and a fresh embedded SQLite one."""
    if request.param == "session-database":
        yield sessions
        return
    url = f"sqlite+aiosqlite:///{tmp_path / 'songpop.db'}"
    await migrate_async(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def test_staged_rows_publish_at_once_with_the_merge_rules(any_sessions) -> None:
    async with session_scope(any_sessions) as session:
        await upsert_snapshots(session=session, rows=[snapshot("a", 50, False, "api")], staged=False)
        staged = [snapshot("a", None, True), snapshot("b", 7, True, "history"), snapshot("c", None, False)]
        await upsert_snapshots(session=session, rows=staged, staged=True)
    assert await count(any_sessions, Snapshot) == 1  # nothing staged is visible yet

    async with session_scope(any_sessions) as session:
        assert await publish_staged_snapshots(session=session) == 3
    columns = ("track_id", "popularity", "popularity_source", "trending")
    # a chart's "trended" does not erase the API's popularity; a known value is never replaced by NULL
    assert await rows(any_sessions, Snapshot, *columns) == [
        ("a", 50, "api", True),
        ("b", 7, "history", True),
        ("c", None, None, False),
    ]
    assert await count(any_sessions, SnapshotStage) == 0
    async with session_scope(any_sessions) as session:
        assert await publish_staged_snapshots(session=session) == 0  # nothing twice


async def test_bulk_upsert_sends_chunks_never_row_by_row(sessions, engine, monkeypatch) -> None:
    """The plain path (the bulk path's fallback, tests/test_bulk_writes.py) sends chunks of rows."""
    monkeypatch.setattr(bulkload, "ENABLED", False)
    statements: list[tuple[str, bool, int]] = []

    def seen(conn, cursor, sql, params, context, executemany) -> None:
        if sql.lstrip().startswith("INSERT INTO snapshot_stage"):
            statements.append((sql, executemany, len(params) if executemany else 1))

    many = [snapshot(f"t{i:05d}", i % 101, i % 2 == 0) for i in range(12_000)]
    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with session_scope(sessions) as session:
            assert await upsert_snapshots(session=session, rows=many, staged=True) == 12_000
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
    assert [(flag, n) for _, flag, n in statements] == [(True, 5000), (True, 5000), (True, 2000)]
    assert await count(sessions, SnapshotStage) == 12_000
