"""Bulk writes: upsert 200,000 weekly snapshot rows into MariaDB next to a plain executemany of the same rows.

Timings per round, interleaved over several rounds (median and best reported), in a throwaway database:
  - baseline: the driver's plain `executemany` of `INSERT INTO snapshot ... VALUES (...)` (asyncmy folds
    it into multi-row statements itself), in one transaction;
  - `shared.db.plain_upsert` (the multi-row `ON DUPLICATE KEY UPDATE` every write used before the bulk
    path) into the empty table, for reference;
  - `shared.db.upsert` (the bulk path: staged `LOAD DATA LOCAL` and one merge) inserting the rows into the
    empty table (the first ingest of a week);
  - `shared.db.upsert` of the same rows again, every one a duplicate key merged with the snapshot merge
    rules (a repeated or resumed run);
  - `shared.db.upsert` of 200,000 new rows into the table already holding 200,000.
Prints rows/s for each and the ratio to the baseline; the targets are >= 150,000 rows/s and >= 2.5x the
baseline for the bulk upserts (the verdict is printed, not turned into an exit code: timings depend on
what else the machine is doing). Run: `make bench-db` (or `python -m benchmarks.bench_db --rows 200000`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text

from shared.catalog import SNAPSHOT_MERGE
from shared.db import make_engine, make_sessionmaker, migrate, plain_upsert, session_scope, upsert
from shared.models import Snapshot, utcnow

TARGET_ROWS_PER_SECOND = 150_000
TARGET_RATIO = 2.5
MYSQL_SERVER = os.environ.get("SONGPOP_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306")
COLUMNS = ["track_id", "week", "popularity", "popularity_source", "trending", "is_demo", "updated_at"]
FIRST_WEEK = dt.date(2021, 1, 4)


def snapshot_rows(n: int, *, weeks: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """`n` distinct (song, week) rows: n / weeks songs, each over `weeks` ISO weeks."""
    now = utcnow()
    rows = []
    for i in range(offset, offset + n):
        song, week = divmod(i, weeks)
        rows.append(
            {
                "track_id": f"{song:022d}",
                "week": FIRST_WEEK + dt.timedelta(weeks=week),
                "popularity": (song * 7 + week) % 101,
                "popularity_source": "api",
                "trending": week % 3 == 0,
                "is_demo": False,
                "updated_at": now,
            }
        )
    return rows


LABELS = {
    "baseline": "baseline: plain executemany INSERT",
    "plain": "previous upsert (plain path), empty table",
    "empty": "upsert, empty table",
    "duplicates": "upsert, same rows again (all duplicates)",
    "growing": "upsert, new rows into a full table",
}


async def timed(n: int, work: Callable[[], Awaitable[None]]) -> float:
    """Rows per second of `work` writing `n` rows."""
    start = time.perf_counter()
    await work()
    return n / (time.perf_counter() - start)


async def run(rows_n: int, rounds: int) -> None:
    db_name = f"songpop_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(MYSQL_SERVER + "/")
    async with admin.begin() as conn:
        await conn.execute(text(f"CREATE DATABASE `{db_name}` CHARACTER SET utf8mb4"))
    url = f"{MYSQL_SERVER}/{db_name}"
    engine = make_engine(url)
    try:
        await asyncio.to_thread(migrate, url)
        sessions = make_sessionmaker(engine)
        rows = snapshot_rows(rows_n)
        more = snapshot_rows(rows_n, offset=rows_n)

        async def empty() -> None:
            async with engine.begin() as conn:
                await conn.execute(text("TRUNCATE TABLE snapshot"))  # no purge backlog

        async def plain_executemany() -> None:
            sql = f"INSERT INTO snapshot ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
            params = [tuple(row[c] for c in COLUMNS) for row in rows]
            async with engine.connect() as conn:
                raw = await conn.get_raw_connection()
                cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
                await cursor.executemany(sql, params)
                await raw.driver_connection.commit()  # type: ignore[union-attr]
                await cursor.close()

        def upserting(batch: list[dict[str, Any]], write: Any = upsert) -> Callable[[], Awaitable[None]]:
            async def work() -> None:
                async with session_scope(sessions) as session:
                    await write(
                        session=session,
                        model=Snapshot,
                        rows=batch,
                        keys=["track_id", "week"],
                        update=SNAPSHOT_MERGE,
                    )

            return work

        async def one_round() -> dict[str, float]:
            """The four timings, interleaved so that load from elsewhere hits them alike."""
            rates = {}
            await empty()
            rates["baseline"] = await timed(rows_n, plain_executemany)
            await empty()
            rates["plain"] = await timed(rows_n, upserting(rows, plain_upsert))
            await empty()
            rates["empty"] = await timed(rows_n, upserting(rows))
            rates["duplicates"] = await timed(rows_n, upserting(rows))
            rates["growing"] = await timed(rows_n, upserting(more))
            async with engine.connect() as conn:
                stored = (await conn.execute(text("SELECT COUNT(*) FROM snapshot"))).scalar_one()
            assert stored == 2 * rows_n, f"expected {2 * rows_n} rows, found {stored}"
            return rates

        where = engine.url.render_as_string(hide_password=True)
        print(f"bench-db: {rows_n:,} snapshot rows x {rounds} interleaved rounds, MariaDB {where}")
        results = [await one_round() for _ in range(rounds)]
        report(results)
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS `{db_name}`"))
        await admin.dispose()


def report(results: list[dict[str, float]]) -> None:
    """Median and best rows/s per variant, the ratio of medians to the baseline, and the verdict."""
    median = {k: statistics.median(r[k] for r in results) for k in LABELS}
    print(f"  {'':<44} {'median rows/s':>14} {'best rows/s':>12} {'vs baseline':>12}")
    for key, label in LABELS.items():
        best = max(r[key] for r in results)
        ratio = median[key] / median["baseline"]
        print(f"  {label:<44} {median[key]:>14,.0f} {best:>12,.0f} {ratio:>11.2f}x")
    slowest = min(median[k] for k in ("empty", "duplicates", "growing"))
    ratio = slowest / median["baseline"]
    verdict = "meets" if slowest >= TARGET_ROWS_PER_SECOND and ratio >= TARGET_RATIO else "MISSES"
    print(
        f"  slowest bulk upsert (median) {slowest:,.0f} rows/s, {ratio:.2f}x the baseline: {verdict} the "
        f"target of {TARGET_ROWS_PER_SECOND:,} rows/s and {TARGET_RATIO}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.rounds))


if __name__ == "__main__":
    main()
