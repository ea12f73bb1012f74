"""What a benchmark needs to know about the MariaDB/MySQL server it measures: how big InnoDB's buffer pool
is next to the benchmark's data (a working set larger than the pool makes a run measure the disk, not
songpop), how many pages a stretch read from the disk, and a buffer pool sized for one run and put back
after it (`sized_buffer_pool`: the server is shared, so its previous size is restored in a `finally`)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import make_engine

UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
RESIZE_TIMEOUT = 300.0  # seconds: growing the pool by GBs takes a few, shrinking it evicts pages first


def parse_size(value: str) -> int:
    """Bytes in `4G`, `512M`, `1.5g`, `4GiB` or `134217728` (binary units, as the server's own options)."""
    match = SIZE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r} (e.g. 4G, 512M, 134217728)")
    return int(float(match[1]) * UNITS[match[2].upper()])


def megabytes(size: int) -> str:
    return f"{size / 1024**2:,.0f} MB"


@dataclass(frozen=True)
class TableSize:
    name: str
    rows: int  # InnoDB's estimate (exact after ANALYZE for small tables, within a few % for large ones)
    bytes: int  # data + indexes

    @property
    def bytes_per_row(self) -> float:
        return self.bytes / self.rows if self.rows else 0.0


async def buffer_pool_size(conn: AsyncConnection) -> int:
    return int((await conn.execute(text("SELECT @@GLOBAL.innodb_buffer_pool_size"))).scalar_one())


async def pages_read_from_disk(conn: AsyncConnection) -> int:
    """Buffer pool misses (pages read from the disk) since the server started, every session's."""
    result = await conn.execute(text("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_reads'"))
    return int(result.one()[1])


async def database_size(conn: AsyncConnection, database: str) -> list[TableSize]:
    """Each table of `database`, largest first, after ANALYZE (InnoDB's sizes otherwise lag bulk loads)."""
    query = text("SELECT table_name FROM information_schema.TABLES WHERE table_schema = :db")
    names = (await conn.execute(query, {"db": database})).scalars()
    tables = [f"`{database}`.`{name}`" for name in names]
    if tables:
        await conn.execute(text(f"ANALYZE TABLE {', '.join(tables)}"))
    rows = await conn.execute(
        text(
            "SELECT table_name, table_rows, data_length + index_length FROM information_schema.TABLES "
            "WHERE table_schema = :db ORDER BY data_length + index_length DESC"
        ),
        {"db": database},
    )
    return [TableSize(name, int(count or 0), int(size or 0)) for name, count, size in rows]


async def _resize_done(conn: AsyncConnection, wanted: int) -> bool:
    status = (await conn.execute(text("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_resize_status'"))).first()
    busy = status is not None and bool(status[1]) and not str(status[1]).startswith("Completed")
    return not busy and await buffer_pool_size(conn) == wanted


async def set_buffer_pool(conn: AsyncConnection, size: int) -> int:
    """Set the global buffer pool size and wait until the server has resized it (it does so in the
    background, in whole chunks: the size it settles on may be rounded up); returns that size."""
    await conn.execute(text(f"SET GLOBAL innodb_buffer_pool_size = {int(size)}"))
    wanted = await buffer_pool_size(conn)  # rounded by the server
    deadline = time.monotonic() + RESIZE_TIMEOUT
    while not await _resize_done(conn, wanted):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the buffer pool did not reach {megabytes(wanted)} in {RESIZE_TIMEOUT:.0f} s")
        await asyncio.sleep(0.5)
    return wanted


async def current_buffer_pool(server_url: str) -> int:
    engine = make_engine(server_url)
    try:
        async with engine.connect() as conn:
            return await buffer_pool_size(conn)
    finally:
        await engine.dispose()


async def _resize(server_url: str, size: int) -> int:
    engine = make_engine(server_url)
    try:
        async with engine.connect() as conn:
            return await set_buffer_pool(conn, size)
    finally:
        await engine.dispose()


@contextlib.contextmanager
def sized_buffer_pool(server_url: str, size: int | None) -> Iterator[int]:
    """The server's buffer pool at `size` bytes inside the block (None: left as it is) and its previous
    size restored after it, whatever happens (each on a connection of its own: a run takes minutes);
    yields the size in force. Not for an event loop's thread (it runs its own)."""
    previous = asyncio.run(current_buffer_pool(server_url))
    if size is None or size == previous:
        yield previous
        return
    try:
        yield asyncio.run(_resize(server_url, size))
    finally:
        asyncio.run(_resize(server_url, previous))
