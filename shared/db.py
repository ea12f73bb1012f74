"""Database engine, sessions, migrations and the dialect-aware bulk upsert every writer uses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import Table, case, func, text, true
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import bulkload
from shared.readiness import wait_until

log = logging.getLogger(__name__)

# Rows per executemany call. The statement is compiled once and cached; the driver folds each call into
# multi-row INSERTs of at most ~1 MB (asyncmy) or SQLAlchemy batches them (SQLite).
UPSERT_CHUNK = 5000
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached; the message names it without its password."""


def make_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for MySQL (asyncmy) or SQLite (aiosqlite)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return create_async_engine(url, echo=echo, connect_args={"timeout": 30})
    return create_async_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_recycle=3600,
        pool_size=10,
        connect_args=bulkload.local_infile_connect_args(url),  # the bulk writes' LOAD DATA LOCAL
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@asynccontextmanager
async def session_scope(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    async with sessions() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def ping(engine: AsyncEngine) -> bool:
    """True when the database answers a trivial query."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:  # any driver error means "not ready"
        return False


async def wait_for_database(engine: AsyncEngine, *, within: float = 30.0) -> None:
    """Wait (with backoff) until the database answers, or raise DatabaseUnavailable."""
    if not await wait_until(lambda: ping(engine), within=within):
        raise DatabaseUnavailable(
            f"database {engine.url.render_as_string(hide_password=True)} is unreachable"
        )


def migrate(url: str) -> None:
    """Bring the schema to the latest Alembic revision (synchronous; call before serving)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


async def migrate_async(url: str) -> None:
    """Run the migrations from async code without blocking the event loop."""
    import asyncio

    await asyncio.to_thread(migrate, url)


MergeRule = Literal["replace", "keep_known", "or"]


def _merged(rule: MergeRule, old: Any, new: Any) -> Any:
    """The SQL value of a column on conflict: the new value, the new one unless NULL, or a logical OR."""
    if rule == "replace":
        return new
    if rule == "keep_known":
        return func.coalesce(new, old)
    return case((new == true(), true()), else_=old)


async def upsert(
    *,
    session: AsyncSession,
    model: type[SQLModel],
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    update: Sequence[str] | Mapping[str, MergeRule] = (),
    chunk: int = UPSERT_CHUNK,
) -> int:
    """Insert `rows`; where the unique `keys` already exist, update the `update` columns.

    `update` lists columns to replace, or maps each to a merge rule ("keep_known" keeps the stored value
    when the new one is NULL; "or" for flags that, once true, stay true). Every row has the same keys.
    Large writes take the bulk path (`shared.bulkload`: a staged LOAD DATA on MySQL, the driver's own
    executemany on SQLite), smaller ones `plain_upsert`; both give the same rows. The caller owns the
    transaction. Returns the number of rows sent.
    """
    if len(rows) < bulkload.MIN_ROWS or not bulkload.ENABLED:
        return await plain_upsert(
            session=session, model=model, rows=rows, keys=keys, update=update, chunk=chunk
        )
    return await bulk_upsert(session=session, model=model, rows=rows, keys=keys, update=update)


def _rules(update: Sequence[str] | Mapping[str, MergeRule]) -> Mapping[str, MergeRule]:
    return update if isinstance(update, Mapping) else {column: "replace" for column in update}


async def bulk_upsert(
    *,
    session: AsyncSession,
    model: type[SQLModel],
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    update: Sequence[str] | Mapping[str, MergeRule] = (),
) -> int:
    """`upsert` by the bulk path of the session's database (the plain path where it cannot run)."""
    if not rows:
        return 0
    table: Table = model.__table__  # type: ignore[attr-defined]
    connection = await session.connection()
    rules = _rules(update)
    if connection.dialect.name == "sqlite":
        stmt = _upsert_statement(table, "sqlite", keys, rules)
        return await bulkload.sqlite_upsert(connection, table, stmt, rows)
    if await bulkload.accepts_local_loads(connection):
        return await bulkload.mysql_upsert(connection, table, rows, keys, rules, _merged)
    return await plain_upsert(session=session, model=model, rows=rows, keys=keys, update=update)


async def plain_upsert(
    *,
    session: AsyncSession,
    model: type[SQLModel],
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    update: Sequence[str] | Mapping[str, MergeRule] = (),
    chunk: int = UPSERT_CHUNK,
) -> int:
    """`upsert` as multi-row statements in chunks (`ON DUPLICATE KEY UPDATE` on MySQL, `ON CONFLICT` on
    SQLite): the reference the bulk path is checked against."""
    if not rows:
        return 0
    table: Table = model.__table__  # type: ignore[attr-defined]
    connection = await session.connection()
    stmt = _upsert_statement(table, connection.dialect.name, keys, _rules(update))
    for part in in_chunks(rows, chunk):
        # executemany with one cached statement: rendering a 2,000-row VALUES clause per chunk cost ~10x more.
        await connection.execute(stmt, part)
    return len(rows)


def _upsert_statement(table: Table, dialect: str, keys: Sequence[str], rules: Mapping[str, MergeRule]) -> Any:
    """The dialect's INSERT ... ON DUPLICATE KEY UPDATE / ON CONFLICT statement for `table`."""
    stmt: Any
    if dialect == "mysql":
        stmt = mysql_insert(table)
        if not rules:
            # A no-op update rather than INSERT IGNORE, which would also turn real errors into warnings.
            return stmt.on_duplicate_key_update({keys[0]: table.c[keys[0]]})
        merged = {c: _merged(r, table.c[c], stmt.inserted[c]) for c, r in rules.items()}
        return stmt.on_duplicate_key_update(merged)
    stmt = sqlite_insert(table)
    if not rules:
        return stmt.on_conflict_do_nothing(index_elements=list(keys))
    return stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: _merged(r, table.c[c], stmt.excluded[c]) for c, r in rules.items()},
    )


def metadata() -> Any:
    """The metadata of every table (importing the models registers them)."""
    import shared.models  # noqa: F401

    return SQLModel.metadata


T = TypeVar("T")
IN_LIST_SIZE = 1000  # values per IN (...) list: short statements, and the planner keeps using the index


def in_chunks(values: Sequence[T], size: int = IN_LIST_SIZE) -> Iterator[list[T]]:
    """`values` in slices of at most `size`: one IN list, or one executemany, each."""
    for start in range(0, len(values), size):
        yield list(values[start : start + size])
