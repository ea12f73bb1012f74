"""The bulk write path (`shared.bulkload`) against the plain upsert it replaces for large writes: the same
sequence of writes through each leaves the same rows, row for row, merge rules included, on MariaDB (the
session's database) and on SQLite."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import bulkload, db
from shared.catalog import SNAPSHOT_MERGE
from shared.db import (
    bulk_upsert,
    make_engine,
    make_sessionmaker,
    metadata,
    migrate_async,
    plain_upsert,
    upsert,
)
from shared.models import PREDICTION_KEY, PREDICTION_UPDATE, ChartEntry, Prediction, Snapshot
from shared.rowcolumns import RowColumns
from tests.conftest import Infra

WEEK = dt.date(2026, 11, 2)
STAMP = dt.datetime(2026, 11, 3, 8, 30, 15, 250_000, tzinfo=dt.UTC)


@pytest.fixture(params=["mariadb", "sqlite"])
async def backend(
    request: pytest.FixtureRequest, infra: Infra, tmp_path: Path
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Empty tables on MariaDB (the session's database, when the tests run on it) or on a fresh SQLite."""
    if request.param == "mariadb":
        if not infra.database_url.startswith("mysql"):
            pytest.skip("MariaDB is not reachable")
        url = infra.database_url
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'bulk.db'}"
        await migrate_async(url)
    engine = make_engine(url)
    await _empty(engine)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def _empty(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in reversed(metadata().sorted_tables):
            await conn.execute(table.delete())


Writer = Callable[..., Any]


async def _apply(
    sessions: async_sessionmaker[AsyncSession],
    write: Writer,
    model: type[SQLModel],
    batches: Sequence[Sequence[Mapping[str, Any]]],
    **how: Any,
) -> list[tuple[Any, ...]]:
    """Empty the table, write `batches` (one transaction each) with `write`, return its rows without ids."""
    table = model.__table__  # type: ignore[attr-defined]
    async with sessions() as session:
        await session.exec(table.delete())
        await session.commit()
    for batch in batches:
        async with sessions() as session:
            await write(session=session, model=model, rows=batch, **how)
            await session.commit()
    columns = [c for c in table.c if c.name != "id"]
    async with sessions() as session:
        rows = (await session.exec(select(*columns))).all()  # type: ignore[call-overload]
    return sorted(tuple(row) for row in rows)


async def _same_both_ways(
    sessions: async_sessionmaker[AsyncSession],
    model: type[SQLModel],
    batches: Sequence[list[dict[str, Any]]],
    **how: Any,
) -> list[tuple[Any, ...]]:
    plain = await _apply(sessions, plain_upsert, model, batches, **how)
    bulk = await _apply(sessions, bulk_upsert, model, batches, **how)
    assert len(bulk) == len(plain)
    assert bulk == plain
    return bulk


def _snapshots(n: int, *, shift: int) -> list[dict[str, Any]]:
    """Rows whose popularity is unknown for every third song and whose trending flag alternates with
    `shift`, so that a second write exercises every merge rule."""
    return [
        {
            "track_id": f"song-{i:05d}",
            "week": WEEK + dt.timedelta(weeks=i % 3),
            "popularity": None if (i + shift) % 3 == 0 else (i * 7 + shift) % 101,
            "popularity_source": None if (i + shift) % 3 == 0 else "api",
            "trending": (i + shift) % 2 == 0,
            "is_demo": i % 5 == 0 and shift == 0,
            "updated_at": STAMP + dt.timedelta(seconds=shift),
        }
        for i in range(shift * 300, shift * 300 + n)
    ]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several loads per write, so the chunking is exercised too."""
    monkeypatch.setattr(bulkload, "FIRST_CHUNK", 150)
    monkeypatch.setattr(bulkload, "LOAD_CHUNK", 400)


async def test_snapshot_merge_rules_match(backend, small_chunks) -> None:
    first, second = _snapshots(1000, shift=0), _snapshots(1000, shift=1)  # 700 shared keys, 300 new
    rows = await _same_both_ways(
        backend, Snapshot, [first, second], keys=["track_id", "week"], update=SNAPSHOT_MERGE
    )
    assert len(rows) == 1300
    by_key = {(r[0], r[1]): r for r in rows}
    # song 302: popularity known (94) then unknown -> kept; trending then not -> stays; time replaced
    song = by_key[("song-00302", WEEK + dt.timedelta(weeks=2))]
    assert (song[2], song[3], bool(song[4]), bool(song[5])) == (94, "api", True, False)
    assert song[6].replace(tzinfo=None) == (STAMP + dt.timedelta(seconds=1)).replace(
        tzinfo=None, microsecond=0
    ) or (song[6].replace(tzinfo=None) == (STAMP + dt.timedelta(seconds=1)).replace(tzinfo=None))


def _predictions(version: str, scale: float) -> list[dict[str, Any]]:
    return [
        {
            "track_id": f"song-{i:05d}", "week": WEEK, "signal": "streams" if i % 2 else "popularity",
            "region": "it" if i % 2 else "", "horizon_weeks": h, "current": None if i % 4 == 0 else i / 3,
            "value": scale * i / 7 + h, "lower": None if i % 6 == 0 else i / 11, "upper": i * 1.1e-7,
            "p_chart": 0.123456789012 if i % 2 else None, "model_version": version,
            "cold_start": i % 3 == 0, "created_at": STAMP,
        }
        for i in range(600)
        for h in (26, 52)
    ]  # fmt: skip


async def test_prediction_replace_matches(backend, small_chunks) -> None:
    rows = await _same_both_ways(
        backend,
        Prediction,
        [_predictions("v1", 1.0), _predictions("v2", 2.5)],
        keys=PREDICTION_KEY,
        update=PREDICTION_UPDATE,
    )
    assert len(rows) == 1200 and {r[10] for r in rows} == {"v2"}


async def test_rows_held_as_columns_store_what_their_dicts_store(backend, small_chunks) -> None:
    """The predictor's rows come as columns (`RowColumns`, no dict per row): loaded straight into the table,
    then merged out of key order, through the bulk path and the plain one, they leave the rows their dicts
    leave."""
    second = _predictions("v2", 2.5)
    random.Random(3).shuffle(second)
    batches = [_predictions("v1", 1.0), second]
    as_columns = [RowColumns({name: [row[name] for row in rows] for name in rows[0]}) for rows in batches]
    how: dict[str, Any] = {"keys": PREDICTION_KEY, "update": PREDICTION_UPDATE}
    plain = await _apply(backend, plain_upsert, Prediction, batches, **how)
    assert await _apply(backend, bulk_upsert, Prediction, as_columns, **how) == plain
    assert await _apply(backend, plain_upsert, Prediction, as_columns, **how) == plain
    assert len(plain) == 1200 and {r[10] for r in plain} == {"v2"}


async def test_new_rows_are_inserted_directly_and_existing_ones_merged(backend, monkeypatch) -> None:
    """On MariaDB a write of new rows goes straight into the table; one whose sample meets stored rows is
    merged through the stage at once; one that meets a key twice is undone and merged; the rows are the
    plain path's every time."""
    outcomes: list[bool] = []
    original = bulkload._inserted_directly

    async def recording(*args: Any) -> bool:
        outcomes.append(await original(*args))
        return outcomes[-1]

    monkeypatch.setattr(bulkload, "_inserted_directly", recording)
    first, second = _snapshots(900, shift=0), _snapshots(900, shift=1)  # 600 of the second exist
    new = _snapshots(600, shift=10)
    twice = new + [{**row, "popularity": None} for row in new[-50:]]  # new keys, the last 50 given twice
    await _same_both_ways(
        backend, Snapshot, [first, second, twice], keys=["track_id", "week"], update=SNAPSHOT_MERGE
    )
    async with backend() as session:
        mysql = (await session.connection()).dialect.name == "mysql"
    assert outcomes == ([True, False] if mysql else [])


async def test_prediction_keys_given_twice_merge_in_the_order_given(backend, small_chunks) -> None:
    """Predictions given twice in one write, shuffled and with case-variant ids (one key on MariaDB), end
    as the plain path's merges leave them (the direct insert meets the repeated keys and is undone)."""
    rows: list[dict[str, Any]] = [
        {"track_id": f"song-{i:05d}", "week": WEEK, "signal": "popularity", "region": "", "horizon_weeks": h,
         "current": None, "value": float(i), "lower": None, "upper": None, "p_chart": None,
         "model_version": "v1", "cold_start": False, "created_at": STAMP}
        for i in range(700)
        for h in (26, 52)
    ]  # fmt: skip
    again = [{**row, "track_id": row["track_id"].upper(), "value": -row["value"]} for row in rows[::3]]
    written = rows + again
    random.Random(7).shuffle(written)
    stored = await _same_both_ways(
        backend, Prediction, [written], keys=PREDICTION_KEY, update=PREDICTION_UPDATE
    )
    assert len(stored) in (1400, 1400 + len(again))


async def test_a_bad_prediction_fails_the_bulk_write_on_mariadb(backend) -> None:
    async with backend() as session:
        if (await session.connection()).dialect.name != "mysql":
            pytest.skip("SQLite does not check lengths")
        rows = [
            {"track_id": f"song-{i:05d}", "week": WEEK, "signal": "popularity", "region": "",
             "horizon_weeks": 26, "value": 1.0, "model_version": "v" * (200 if i == 300 else 1),
             "cold_start": False, "created_at": STAMP}
            for i in range(600)
        ]  # fmt: skip
        with pytest.raises(bulkload.BulkLoadRejected, match="model_version"):
            await bulk_upsert(
                session=session, model=Prediction, rows=rows, keys=PREDICTION_KEY, update=PREDICTION_UPDATE
            )


async def test_insert_only_keeps_existing_and_fills_defaults(backend) -> None:
    def chart(rank_shift: int) -> list[dict[str, Any]]:
        # no `source` nor `is_demo`: the columns' defaults apply
        return [
            {"track_id": f"song-{i:05d}", "week": WEEK, "region": "global", "rank": i + rank_shift,
             "streams": None if i % 10 == 0 else 1_000_000_000_000 + i}
            for i in range(700)
        ]  # fmt: skip

    rows = await _same_both_ways(
        backend, ChartEntry, [chart(0), chart(5)], keys=["track_id", "week", "region"]
    )
    assert len(rows) == 700
    assert {r[3] for r in rows} == set(range(700))  # the first write's ranks stay
    assert {(r[5], bool(r[6])) for r in rows} == {("chart", False)}


async def test_duplicate_keys_in_one_write(backend) -> None:
    once = _snapshots(600, shift=0)
    again = [{**row, "popularity": None, "trending": True, "updated_at": STAMP} for row in once[:200]]
    rows = await _same_both_ways(
        backend, Snapshot, [once + again], keys=["track_id", "week"], update=SNAPSHOT_MERGE
    )
    assert len(rows) == 600


async def test_columns_of_one_value_and_special_characters(backend, small_chunks) -> None:
    """Columns holding one value in every row (NULL included) go to the load as constants, not text; text
    with tabs, newlines and backslashes is escaped, in the loaded columns and the constant ones alike."""
    odd = "t\tn\nb\\ \\N"  # a tab, a newline, a backslash, a text NULL (VARCHAR(32))

    def rows(shift: int) -> list[dict[str, Any]]:
        return [
            {**row, "popularity": None, "popularity_source": odd, "trending": True, "track_id": f"{odd}-{i}"}
            for i, row in enumerate(_snapshots(900, shift=shift))
        ]

    stored = await _same_both_ways(
        backend, Snapshot, [rows(0), rows(1)], keys=["track_id", "week"], update=SNAPSHOT_MERGE
    )
    assert len(stored) == 900
    assert {(r[2], r[3], bool(r[4])) for r in stored} == {(None, odd, True)}
    assert all(r[0].startswith(odd) for r in stored)


async def test_rows_out_of_key_order_with_keys_given_twice(backend, small_chunks) -> None:
    """A shuffled write is loaded in key order; rows whose keys the server holds equal (case differs:
    one key on MariaDB's case-insensitive collation, two on SQLite) still merge in the order given."""
    once = _snapshots(900, shift=0)
    again = [
        {
            **row,
            "track_id": row["track_id"].upper(),
            "popularity": None,
            "trending": True,
            "updated_at": STAMP,
        }
        for row in once[::3]
    ]
    rows = once + again
    random.Random(14).shuffle(rows)
    stored = await _same_both_ways(
        backend, Snapshot, [rows], keys=["track_id", "week"], update=SNAPSHOT_MERGE
    )
    assert len(stored) in (900, 1200)


async def test_large_writes_take_the_bulk_path(backend, monkeypatch) -> None:
    calls: list[int] = []
    original = db.bulk_upsert

    async def counting(**kwargs: Any) -> int:
        calls.append(len(kwargs["rows"]))
        return await original(**kwargs)

    monkeypatch.setattr(db, "bulk_upsert", counting)
    async with backend() as session:
        for n in (10, bulkload.MIN_ROWS):
            await upsert(
                session=session, model=Snapshot, rows=_snapshots(n, shift=n), keys=["track_id", "week"]
            )
        dialect = (await session.connection()).dialect.name
        if dialect == "mysql":
            assert await bulkload.accepts_local_loads(await session.connection())
    assert calls == [bulkload.MIN_ROWS]


async def test_bad_values_fail_the_bulk_write_on_mariadb(backend) -> None:
    async with backend() as session:
        if (await session.connection()).dialect.name != "mysql":
            pytest.skip("SQLite does not check lengths")
        rows = _snapshots(600, shift=0)
        rows[300] = {**rows[300], "popularity_source": "x" * 200}  # VARCHAR(32): strict mode refuses it
        with pytest.raises(bulkload.BulkLoadRejected, match="popularity_source"):
            await bulk_upsert(
                session=session, model=Snapshot, rows=rows, keys=["track_id", "week"], update=SNAPSHOT_MERGE
            )


async def test_a_bad_value_in_every_row_fails_the_bulk_write_on_mariadb(backend) -> None:
    async with backend() as session:
        if (await session.connection()).dialect.name != "mysql":
            pytest.skip("SQLite does not check lengths")
        rows = [{**row, "popularity_source": "x" * 200} for row in _snapshots(600, shift=0)]  # a constant
        with pytest.raises(bulkload.BulkLoadRejected, match="popularity_source"):
            await bulk_upsert(
                session=session, model=Snapshot, rows=rows, keys=["track_id", "week"], update=SNAPSHOT_MERGE
            )


async def test_the_server_gets_no_other_file(backend) -> None:
    """A server asking for a file the client did not register (here: by our own statement) gets nothing."""
    async with backend() as session:
        connection = await session.connection()
        if connection.dialect.name != "mysql":
            pytest.skip("LOAD DATA is MySQL's")
        with pytest.raises(PermissionError, match="refused"):
            await connection.exec_driver_sql(
                "LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE chart_file (sha256)"
            )
    async with backend() as session:
        assert (await session.exec(text("SELECT COUNT(*) FROM chart_file"))).scalar() == 0
