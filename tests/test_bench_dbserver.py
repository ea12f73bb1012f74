"""benchmarks/dbserver.py: sizes read as the server's options read them, the bench database measured, and
the buffer pool set for a run and put back after it (against the real MariaDB: skipped on SQLite). The
resize test grows the shared server's pool by one step for a few seconds and restores it."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from benchmarks import dbserver
from shared.db import upsert
from shared.models import Track, utcnow
from tests.conftest import MYSQL_SERVER, Infra

MB = 1024**2


@pytest.mark.parametrize(
    ("given", "size"),
    [
        ("4G", 4 * 1024**3),
        ("512m", 512 * MB),
        ("1.5G", 1536 * MB),
        ("4GiB", 4 * 1024**3),
        ("134217728", 134217728),
    ],
)
def test_sizes_read_in_binary_units(given: str, size: int) -> None:
    assert dbserver.parse_size(given) == size


@pytest.mark.parametrize("given", ["", "4X", "G", "-1G", "four"])
def test_what_is_not_a_size_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        dbserver.parse_size(given)


def server(infra: Infra) -> str:
    if not infra.database_url.startswith("mysql"):
        pytest.skip("needs the MariaDB server (SONGPOP_TEST_REAL_SERVICES=1)")
    return MYSQL_SERVER + "/"


def test_no_size_leaves_the_buffer_pool_as_it_is(infra: Infra) -> None:
    url = server(infra)
    before = asyncio.run(dbserver.current_buffer_pool(url))
    with dbserver.sized_buffer_pool(url, None) as inside:
        assert inside == before == asyncio.run(dbserver.current_buffer_pool(url))
    assert asyncio.run(dbserver.current_buffer_pool(url)) == before


def test_buffer_pool_set_for_the_block_and_restored_when_it_fails(infra: Infra) -> None:
    url = server(infra)
    before = asyncio.run(dbserver.current_buffer_pool(url))
    with (
        pytest.raises(RuntimeError, match="the run failed"),
        dbserver.sized_buffer_pool(url, before + 128 * MB) as inside,
    ):
        assert inside >= before + 128 * MB
        assert asyncio.run(dbserver.current_buffer_pool(url)) == inside
        raise RuntimeError("the run failed")
    assert asyncio.run(dbserver.current_buffer_pool(url)) == before


async def test_database_size_counts_every_table(
    infra: Infra, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    server(infra)
    name = infra.database_url.rsplit("/", 1)[1]
    now = utcnow()
    rows = [
        {"id": f"song{n:018d}", "name": f"Song {n}", "artist_names": "A", "updated_at": now}
        for n in range(5000)
    ]
    async with sessions() as session:
        await upsert(session=session, model=Track, rows=rows, keys=["id"])
        await session.commit()
    async with engine.connect() as conn:
        tables = {t.name: t for t in await dbserver.database_size(conn, name)}
    assert {"track", "snapshot", "prediction"} <= set(tables)
    track = tables["track"]
    assert 4000 <= track.rows <= 6000  # InnoDB's estimate, fresh after ANALYZE
    assert 30 < track.bytes_per_row < 1000
