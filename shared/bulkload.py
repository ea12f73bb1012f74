"""The fast path of `shared.db.upsert` for large writes: the same rows, keys and merge rules, at the
database's speed.

- MySQL/MariaDB: the rows are rendered once as tab-separated text in memory (`shared.loadtext`; a
  column holding one value in every row is set by the load instead) and sent with `LOAD DATA LOCAL
  INFILE` into a temporary MEMORY table, then merged into the target with one `INSERT ... SELECT ... ON
  DUPLICATE KEY UPDATE` using the merge rules of the plain path. Measured against the driver's
  multi-row `executemany` (`make bench-db`): the driver spends most of its time escaping values one by
  one, the server parses loaded text several times faster than statements. What remains is InnoDB's
  own work, one B-tree insert per index and row: the tables written in bulk keep few indexes. A write
  whose rows are all new (a new week) is loaded straight into the target instead (`_inserted_directly`:
  tried when a sample of the rows finds none stored, undone to a savepoint at the first warning).
- SQLite: the plain path's statement, compiled once, run by the driver's own `executemany` over tuples
  converted by SQLAlchemy's bind processors (what the plain path does, without its per-row dict work).

`LOAD DATA LOCAL` makes the server ask the client for a file by name; asyncmy (0.2.x) cannot answer that
(it fails on the name's type) and would otherwise open any file a server names. `_install` gives it a
reader that serves only the in-memory buffers registered here; a name it does not know is refused. When
that cannot be installed, or the server refuses LOCAL loads (`local_infile=OFF`, MySQL 8's default), or
`SONGPOP_BULK_LOAD=0`, every write takes the plain path.

A LOCAL load turns data errors into warnings (the server cannot stop the client's stream): any warning
of the load into the staging table (which has no unique key) fails the write, as the plain path's strict
statements would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    literal,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateTable

from shared.loadtext import LoadText, column_defaults, key_order, load_text, rows_at, tsv, values_of

__all__ = ["BulkLoadRejected", "column_defaults", "mysql_upsert", "sqlite_upsert", "tsv"]

log = logging.getLogger(__name__)

ENABLED = os.environ.get("SONGPOP_BULK_LOAD", "1") != "0"
MIN_ROWS = 500  # below this the plain path's one statement is as fast
LOAD_CHUNK = 50_000  # rows per load and merge: bounds the text buffer and the MEMORY table
FIRST_CHUNK = 10_000  # the first load's rows: the only one rendered while the server waits
DIRECT_FIRST = True  # rows inserted straight into the target first (`_inserted_directly`)
_DIRECT = "songpop_bulk_direct"  # its savepoint
ORDER_BY_KEY = True  # rows loaded in key order when they come out of it (`shared.loadtext.key_order`)
STAGE_MEMORY_BYTES = 512 * 1024 * 1024  # the staging table's cap (memory is used as rows arrive)

_buffers: dict[bytes, str] = {}  # load name -> path of its in-memory file
_local_infile: dict[str, bool] = {}  # server URL -> whether it accepts LOCAL loads


class BulkLoadRejected(ValueError):
    """The server turned some loaded values into warnings (truncated, out of range, NULL in NOT NULL)."""


# ---------------------------------------------------------------- the driver's LOCAL INFILE reader


def _install() -> bool:
    """Give asyncmy a LOCAL INFILE reader serving only registered buffers; False if asyncmy lacks the hook."""
    try:
        from asyncmy import connection as driver
    except ImportError:
        return False
    original = getattr(driver, "LoadLocalFile", None)
    if original is None:
        return False
    if getattr(original, "songpop", False):
        return True

    class RegisteredBuffersOnly(original):  # type: ignore[misc, valid-type]
        songpop = True

        def __init__(self, filename: bytes | str, connection: Any) -> None:
            self.asked = filename.encode() if isinstance(filename, str) else bytes(filename)
            # a name not registered here opens nothing ("" cannot be opened): the server gets an empty file
            super().__init__(_buffers.get(self.asked, ""), connection)

        async def send_data(self) -> None:
            if self.asked in _buffers:
                return await super().send_data()  # type: ignore[no-any-return]
            with contextlib.suppress(Exception):
                await super().send_data()  # ends the exchange, so the connection stays usable
            raise PermissionError(f"LOAD DATA LOCAL of {self.asked!r} refused: not a songpop bulk load")

    setattr(driver, "LoadLocalFile", RegisteredBuffersOnly)  # noqa: B010 (a compiled module)
    return True


_installed: list[bool] = []  # whether the reader is installed, once asked (no import-time patching)


def installed() -> bool:
    """Install the reader on first use; True when asyncmy has it."""
    if not _installed:
        _installed.append(_install())
    return _installed[0]


def local_infile_connect_args(url: str) -> dict[str, Any]:
    """The connect arguments that let the MySQL driver answer LOCAL loads (none if it cannot)."""
    return {"local_infile": True} if url.startswith("mysql+asyncmy") and installed() else {}


@contextlib.contextmanager
def _registered(data: bytes) -> Iterator[str]:
    """`data` as an in-memory file the driver may send, under a fresh name; yields the name."""
    name = f"songpop-bulk-{uuid.uuid4().hex}"
    fd = os.memfd_create(name) if hasattr(os, "memfd_create") else None
    try:
        if fd is not None:
            os.write(fd, data)
            path = f"/proc/self/fd/{fd}"  # opened again by the driver, from the start
        else:  # not Linux: a temporary file
            handle, path = tempfile.mkstemp(prefix=name)
            with os.fdopen(handle, "wb") as file:
                file.write(data)
        _buffers[name.encode()] = path
        yield name
    finally:
        _buffers.pop(name.encode(), None)
        if fd is not None:
            os.close(fd)
        else:
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(path)


# ---------------------------------------------------------------- MySQL / MariaDB


async def accepts_local_loads(connection: AsyncConnection) -> bool:
    """True when the fast path can run on this connection's server (asked once per server)."""
    if not ENABLED or connection.dialect.driver != "asyncmy" or not installed():
        return False
    server = connection.engine.url.render_as_string(hide_password=True)
    if server not in _local_infile:
        value = (await connection.exec_driver_sql("SELECT @@local_infile")).scalar()
        _local_infile[server] = bool(int(value or 0))
        if not _local_infile[server]:
            log.warning(
                "the database refuses LOAD DATA LOCAL (local_infile=OFF): bulk writes take the plain path"
            )
    return _local_infile[server]


async def mysql_upsert(
    connection: AsyncConnection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    rules: Mapping[str, Any],
    merged: Callable[[Any, Any, Any], Any],
) -> int:
    """Load `rows` into `table`: staged, then merged with `rules` (`merged(rule, old, new)` gives a
    column's SQL); without rules the rows that exist are kept as they are. The text of the next chunk
    is rendered in a thread while the server merges the current one."""
    defaults = column_defaults(table, list(rows[0]))
    columns = [table.c[name] for name in [*rows[0], *defaults]]
    order = await asyncio.to_thread(key_order, rows, _clustered(table, keys)) if ORDER_BY_KEY else None

    def render(bounds: tuple[int, int]) -> LoadText:
        start, stop = bounds
        part = rows[start:stop] if order is None else rows_at(rows, order[start:stop])
        return load_text(part, columns, defaults, connection.dialect)

    direct = DIRECT_FIRST and not await _any_stored(connection, table, rows, keys)
    if direct and await _inserted_directly(connection, table.name, render, _chunks(len(rows))):
        return len(rows)
    match = _match_by_id(table, keys)
    stage = await _create_stage(connection, table, columns, match)
    statements = _merge_statements(connection.dialect, table, stage, columns, match, rules, merged)
    probe = _probe(connection.dialect, table, stage, match) if match is not None else None
    try:
        async with contextlib.aclosing(_rendered_ahead(render, _chunks(len(rows)))) as texts:
            async for chunk in texts:
                await _load(connection, stage.name, chunk)
                if probe is not None and not (await connection.execute(probe)).first():
                    statements_now = statements[1:]  # new rows (by a sample): no ids to look up
                else:
                    statements_now = statements
                for statement in statements_now:
                    await connection.execute(statement)
                await _emptied(connection, stage)
    finally:  # (a connection that dies loses its temporary tables anyway)
        await connection.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS `{stage.name}`")
    return len(rows)


def _chunks(n: int) -> list[tuple[int, int]]:
    """The bounds of each load of `n` rows: a small first one (the server starts while the rest is
    rendered), then `LOAD_CHUNK` rows each."""
    bounds = [(0, min(n, FIRST_CHUNK))]
    bounds += [(start, min(n, start + LOAD_CHUNK)) for start in range(FIRST_CHUNK, n, LOAD_CHUNK)]
    return bounds


def _clustered(table: Table, keys: Sequence[str]) -> Sequence[str]:
    """The columns rows are sorted by for a load: the primary key's, in the table's order, when `keys`
    name that key in another order (InnoDB's clustered order), else `keys` as the caller gave them."""
    primary = [c.name for c in table.primary_key.columns]
    return primary if set(primary) == set(keys) else keys


async def _rendered_ahead(
    render: Callable[[tuple[int, int]], LoadText], starts: Sequence[tuple[int, int]]
) -> AsyncGenerator[LoadText]:
    """`render(start)` of each start in turn, the next one rendered in a thread while this one is used."""
    following: asyncio.Future[LoadText] | None = None
    try:
        for i, start in enumerate(starts):
            data = render(start) if following is None else await following
            following = None
            if i + 1 < len(starts):
                following = asyncio.ensure_future(asyncio.to_thread(render, starts[i + 1]))
            yield data
    finally:
        if following is not None:
            following.cancel()


@dataclass(frozen=True)
class _IdMatch:
    """Staged rows are matched to the ids of the rows they update (`id`) through the unique index over
    the write's keys (`index`, named so that no statistics can turn the lookup into a scan)."""

    id: Column[Any]
    index: str
    keys: Sequence[str]


def _match_by_id(table: Table, keys: Sequence[str]) -> _IdMatch | None:
    """How staged rows find their ids: when the table's primary key is one integer column (a surrogate
    id, not among `keys`) and a unique index covers exactly `keys`; None otherwise."""
    primary = list(table.primary_key.columns)
    if len(primary) != 1 or not isinstance(primary[0].type, Integer) or primary[0].name in keys:
        return None
    unique: list[UniqueConstraint | Index] = [
        *(c for c in table.constraints if isinstance(c, UniqueConstraint)),
        *(i for i in table.indexes if i.unique),
    ]
    for candidate in unique:
        if [c.name for c in candidate.columns] == list(keys) and isinstance(candidate.name, str):
            return _IdMatch(primary[0], candidate.name, keys)
    return None


async def _create_stage(
    connection: AsyncConnection, table: Table, columns: Sequence[Column[Any]], match: _IdMatch | None
) -> Table:
    """A temporary table for the loaded rows: the target's columns (and, to be matched by id, a column
    for the id of the row each updates), no keys nor indexes."""
    ids = [] if match is None else [Column(match.id.name, match.id.type, nullable=True)]
    stage = Table(
        f"songpop_stage_{table.name}",
        MetaData(),
        *ids,
        *(Column(c.name, _stage_type(c), nullable=c.nullable) for c in columns),
        prefixes=["TEMPORARY"],
        mysql_engine=_stage_engine(columns),
    )
    await connection.exec_driver_sql(f"SET SESSION max_heap_table_size = {STAGE_MEMORY_BYTES}")
    await connection.execute(CreateTable(stage))
    return stage


async def _emptied(connection: AsyncConnection, stage: Table) -> None:
    """The staging table made new for the next load. Not `DELETE`: MEMORY reuses the freed rows' places,
    and its rows must be read in the order they were loaded, so that rows given twice in one write merge
    in that order; nor `TRUNCATE`, which commits the caller's transaction."""
    await connection.exec_driver_sql(f"DROP TEMPORARY TABLE `{stage.name}`")
    await connection.execute(CreateTable(stage))


def _merge_statements(
    dialect: Dialect,
    table: Table,
    stage: Table,
    columns: Sequence[Column[Any]],
    match: _IdMatch | None,
    rules: Mapping[str, Any],
    merged: Callable[[Any, Any, Any], Any],
) -> list[Any]:
    """The statements that merge the staged rows into `table`, in order: `INSERT INTO table SELECT ...
    FROM stage ON DUPLICATE KEY UPDATE` with the merge rules, preceded, when rows can be matched by id,
    by the statement that gives each staged row the id of the row it updates.

    Inserted with that id, a row that exists collides on the primary key, which InnoDB finds before
    writing anything, instead of on the unique key, after a new row was put into the primary key and
    must be taken out again (measured: about half the server's time for rows that exist, `make
    bench-db`). Rows that collide anyway (a key twice in one write, a row inserted meanwhile by another
    transaction) merge by the unique key, as in the plain path.
    """
    names = [c.name for c in columns]
    if match is None:
        stmt = mysql_insert(table).from_select(names, select(*(stage.c[n] for n in names)))
        statements: list[Any] = []
    else:
        source = select(*stage.c)
        if not rules:  # insert only: the rows that exist are not even sent to the merge
            source = source.where(stage.c[match.id.name].is_(None))
        stmt = mysql_insert(table).from_select([match.id.name, *names], source)
        statements = [_fill_ids(dialect, table, stage, match)]
    if not rules:  # a no-op update: the plain path's way of keeping what exists
        return [*statements, stmt.on_duplicate_key_update({names[0]: table.c[names[0]]})]
    update = {c: merged(r, table.c[c], stmt.inserted[c]) for c, r in rules.items()}
    return [*statements, stmt.on_duplicate_key_update(update)]


def _fill_ids(dialect: Dialect, table: Table, stage: Table, match: _IdMatch) -> Any:
    """`UPDATE stage JOIN table SET stage.id = table.id` through the unique index, the stage read first
    (the table updated in place: a multi-table UPDATE defers the others' changes to temporary tables)."""
    q = dialect.identifier_preparer.quote
    on = " AND ".join(f"existing.{q(k)} = {q(stage.name)}.{q(k)}" for k in match.keys)
    return text(
        f"UPDATE {q(stage.name)} STRAIGHT_JOIN {q(table.name)} AS existing FORCE INDEX ({q(match.index)}) "
        f"ON {on} SET {q(stage.name)}.{q(match.id.name)} = existing.{q(match.id.name)}"
    )


SAMPLE_ROWS = 64


def _probe(dialect: Dialect, table: Table, stage: Table, match: _IdMatch) -> Any:
    """Whether any of the first `SAMPLE_ROWS` staged rows exists in `table` (one row, or none)."""
    q = dialect.identifier_preparer.quote
    keys = ", ".join(q(k) for k in match.keys)
    on = " AND ".join(f"existing.{q(k)} = sample.{q(k)}" for k in match.keys)
    return text(
        f"SELECT 1 FROM (SELECT {keys} FROM {q(stage.name)} LIMIT {SAMPLE_ROWS}) AS sample STRAIGHT_JOIN "
        f"{q(table.name)} AS existing FORCE INDEX ({q(match.index)}) ON {on} LIMIT 1"
    )


def _stage_engine(columns: Sequence[Column[Any]]) -> str:
    """MEMORY (the fastest to load) unless a column is a TEXT/BLOB/JSON one, which MEMORY cannot hold."""
    unfit = (Text, LargeBinary, JSON)
    return "InnoDB" if any(isinstance(c.type, unfit) for c in columns) else "MEMORY"


def _stage_type(column: Column[Any]) -> Any:
    """The staging column's type: the target's, but datetimes keep their microseconds, so that the
    server's own conversion into the target column (truncating on MariaDB, rounding on MySQL) is the one
    an INSERT of the plain path gets, and the load raises no truncation warning."""
    return mysql.DATETIME(fsp=6) if isinstance(column.type, DateTime) else column.type


async def _any_stored(
    connection: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]
) -> bool:
    """Whether any of `SAMPLE_ROWS` rows spread over the write exists in `table` by `keys` (one indexed
    lookup): a write that rewrites stored rows goes to the staged merge without trying the direct load."""
    sample = rows[:: max(1, len(rows) // SAMPLE_ROWS)][:SAMPLE_ROWS]
    key = tuple_(*(table.c[k] for k in keys))
    query = select(literal(1)).where(key.in_([tuple(row[k] for k in keys) for row in sample])).limit(1)
    return (await connection.execute(query)).first() is not None


async def _inserted_directly(
    connection: AsyncConnection,
    table_name: str,
    render: Callable[[tuple[int, int]], LoadText],
    bounds: Sequence[tuple[int, int]],
) -> bool:
    """Try the write as plain inserts: every chunk loaded straight into the target, no stage nor merge
    (a new week's rows are all new: the server's work halves). Where no row of the write exists yet, an
    insert is what the merge would do, so the rows are the same. Any warning (a key that exists or is
    given twice, a value the server would change) undoes the loads, back to a savepoint, and returns
    False: the write then takes the staged path, which merges such rows or refuses such values."""
    await connection.exec_driver_sql(f"SAVEPOINT {_DIRECT}")
    async with contextlib.aclosing(_rendered_ahead(render, bounds)) as texts:
        async for chunk in texts:
            await _load_text(connection, f"IGNORE INTO TABLE `{table_name}`", chunk)
            if await _warnings(connection):
                await connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {_DIRECT}")
                log.debug("%s: rows exist or values refused; the write takes the staged path", table_name)
                return False
    await connection.exec_driver_sql(f"RELEASE SAVEPOINT {_DIRECT}")
    return True


async def _load(connection: AsyncConnection, table_name: str, chunk: LoadText) -> None:
    """LOAD DATA LOCAL of `chunk` into the staging table `table_name`; BulkLoadRejected on any warning."""
    await _load_text(connection, f"INTO TABLE `{table_name}`", chunk)
    warnings = await _warnings(connection)
    if warnings:  # (level, code, message)
        raise BulkLoadRejected(f"{table_name}: " + "; ".join(str(w[2]) for w in warnings))


async def _warnings(connection: AsyncConnection) -> list[tuple[Any, ...]]:
    """The first warnings of the last statement (level, code, message)."""
    return [tuple(w) for w in (await connection.exec_driver_sql("SHOW WARNINGS LIMIT 3")).all()]


async def _load_text(connection: AsyncConnection, into: str, chunk: LoadText) -> None:
    """`LOAD DATA LOCAL INFILE ... {into} ...` of `chunk` (`into`: "INTO TABLE ...", maybe IGNORE'd)."""
    names = ", ".join(f"`{c.name}`" for c in chunk.columns)
    with _registered(chunk.data) as name:
        statement = f"LOAD DATA LOCAL INFILE '{name}' {into} CHARACTER SET utf8mb4 ({names})"
        if chunk.fixed:
            assigned = ", ".join(f"`{column}` = %s" for column in chunk.fixed)
            await connection.exec_driver_sql(f"{statement} SET {assigned}", tuple(chunk.fixed.values()))
        else:
            await connection.exec_driver_sql(statement)


# ---------------------------------------------------------------- SQLite


async def sqlite_upsert(
    connection: AsyncConnection, table: Table, stmt: Any, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Run the plain path's compiled `stmt` with the driver's own executemany over converted tuples."""
    defaults = column_defaults(table, list(rows[0]))
    compiled = stmt.compile(dialect=connection.dialect, column_keys=[*rows[0], *defaults])
    order = compiled.positiontup
    binds = [compiled.binds[name] for name in order]
    processors = [b.type._cached_bind_processor(connection.dialect) for b in binds]
    keys = [b.key for b in binds]
    columns = []
    for key, process in zip(keys, processors, strict=True):
        values = values_of(rows, key, defaults)
        columns.append(values if process is None else [process(v) for v in values])
    params = list(zip(*columns, strict=True)) if columns else [() for _ in rows]
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection  # aiosqlite: executemany runs in its thread, in sqlite3's C loop
    for start in range(0, len(params), LOAD_CHUNK):
        await driver.executemany(compiled.string, params[start : start + LOAD_CHUNK])  # type: ignore[union-attr]
    return len(rows)
