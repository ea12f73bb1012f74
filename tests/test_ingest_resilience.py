"""Runs users can trust: the database disappearing mid-run leaves no partial batch and no partial week, and
the next run completes; a crash between commit and publish still delivers `db-updated` (real MariaDB,
Mosquitto, and a TCP proxy that cuts the database connection at a chosen statement)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from services.ingestor import main as ingestor_main
from services.ingestor.main import ingest_once, serve
from shared.db import DatabaseUnavailable
from shared.events import DbUpdated, parse
from shared.models import ChartEntry, ChartFile, IngestRun, Outbox, Snapshot, SnapshotStage
from shared.mqtt import make_client, topics
from shared.outbox import BrokerUnavailable
from tests.ingest_support import (
    WEEK,
    all_rows,
    chart_entries,
    count,
    emulator,
    emulator_chart,
    ingestor_settings,
    new_format,
    old_format,
    rows,
    write,
)
from tests.proxy import TcpProxy, mysql_proxy  # noqa: F401 - the fixture
from tests.servers import free_port

WEEKS = [dt.date(2024, 1, 1) + dt.timedelta(weeks=i) for i in range(3)]
SONGS_PER_CHART = 40


def chart_folder(folder: Path) -> set[tuple[str, dt.date]]:
    """Three weeks of global (new format) and US (old format) charts; returns every (song, week)."""
    pairs = set()
    for i, week in enumerate(WEEKS):
        thursday = week + dt.timedelta(days=3)
        weekly, us = chart_entries(SONGS_PER_CHART, seed=i), chart_entries(SONGS_PER_CHART, seed=50 + i)
        write(folder / f"regional-global-weekly-{thursday}.csv", new_format(weekly))
        write(folder / f"us_{week - dt.timedelta(days=3)}--{week + dt.timedelta(days=4)}.csv", old_format(us))
        pairs |= {(e.track_id, week) for e in weekly + us}
    return pairs


@contextlib.contextmanager
def cut_at(proxy: TcpProxy, statement: str, nth: int) -> Iterator[list[str]]:
    """Cut every connection through `proxy` just before the `nth` statement starting with `statement`
    is sent: the transaction it belongs to is open, so the cut lands in the middle of a batch."""
    seen: list[str] = []

    def before(conn, cursor, sql: str, params, context, executemany) -> None:
        if conn.engine.url.port == proxy.port and sql.lstrip().startswith(statement):
            seen.append(sql)
            if len(seen) == nth:
                proxy.cut()

    event.listen(Engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", before)


@pytest.mark.parametrize(
    ("statement", "nth"),
    [("INSERT INTO chart_entry", 2), ("INSERT INTO snapshot (", 1)],
    ids=["inside-the-second-chart-week", "while-publishing-the-snapshots"],
)
async def test_database_lost_mid_run_leaves_whole_batches_and_the_next_run_completes(
    settings,
    sessions,
    mysql_proxy,  # noqa: F811 - the fixture
    tmp_path,
    statement,
    nth,
) -> None:
    folder = tmp_path / "charts"
    pairs = chart_folder(folder)
    paths = sorted(folder.iterdir())
    async with emulator() as spotify:
        via_proxy = mysql_proxy.url_for(settings.database_url)
        ingestor = ingestor_settings(settings, spotify, database_url=via_proxy)
        with cut_at(mysql_proxy, statement, nth) as seen, pytest.raises(DatabaseUnavailable) as lost:
            await ingest_once(ingestor, kind="init", chart_paths=paths)
        assert len(seen) == nth and "lost the database" in str(lost.value)

        # seen through an unbroken connection: whole chart weeks only, and no snapshot published
        weeks_written = 1 if statement == "INSERT INTO chart_entry" else 3
        entries = await rows(sessions, ChartEntry, "week", "region")
        assert sorted({e[0] for e in entries}) == WEEKS[:weeks_written]
        assert len(entries) == weeks_written * 2 * SONGS_PER_CHART
        assert await count(sessions, ChartFile) == weeks_written * 2
        assert await count(sessions, Snapshot) == 0 and await count(sessions, Outbox) == 0
        staged = {p for p in pairs if p[1] in WEEKS[:weeks_written]}
        assert await count(sessions, SnapshotStage) == len(staged)
        (dead,) = await all_rows(sessions, IngestRun)
        assert dead.status == "running"  # it could not even record its failure

        mysql_proxy.restore()
        report = await ingest_once(ingestor, kind="init", chart_paths=paths)

    assert report.status == "ok", report.errors
    assert report.counts.chart_files_skipped_known == weeks_written * 2
    assert len(await rows(sessions, ChartEntry, "week", "region")) == len(WEEKS) * 2 * SONGS_PER_CHART
    assert set(await rows(sessions, Snapshot, "track_id", "week")) == pairs
    assert await count(sessions, SnapshotStage) == 0
    runs = {r.id: r for r in await all_rows(sessions, IngestRun)}
    assert runs[dead.id].status == "failed" and "abandoned" in runs[dead.id].errors[-1]
    assert runs[report.run_id].status == "ok"
    (event_row,) = await all_rows(sessions, Outbox)
    assert parse(event_row.payload, DbUpdated).data.snapshots == len(pairs)


async def test_commit_without_broker_still_delivers_db_updated_after_a_restart(
    settings,
    sessions,
    monkeypatch,
) -> None:
    monkeypatch.setattr(ingestor_main, "CHARTS_POLL_SECONDS", 0.2)
    monkeypatch.setattr(ingestor_main, "OUTBOX_RETRY_SECONDS", 0.2)
    nowhere = f"mqtt://127.0.0.1:{free_port()}"
    async with emulator() as spotify:
        ingestor = ingestor_settings(settings, spotify)
        emulator_chart(ingestor.charts_dir, spotify, WEEK)
        offline = ingestor_settings(settings, spotify, mqtt_url=nowhere)
        with pytest.raises(BrokerUnavailable, match="wait in the outbox"):
            await ingest_once(offline, kind="update")
        (run,) = await all_rows(sessions, IngestRun)
        (pending,) = await all_rows(sessions, Outbox)
        assert run.status == "ok" and pending.published_at is None  # committed, not yet announced

        db_updated = topics(settings).db_updated
        async with make_client(settings, "observer", announce=False) as observer:
            await observer.subscribe(db_updated, qos=1)
            service = asyncio.create_task(serve(ingestor))  # the ingestor service starting again
            try:
                first = await next_event(observer)
                assert first.event_id == pending.event_id and first.data.run_id == run.id
                # the service also watches the charts folder: a new file is ingested and announced
                emulator_chart(ingestor.charts_dir, spotify, WEEK - dt.timedelta(weeks=1))
                second = await next_event(observer)
                await all_published(sessions)
            finally:
                service.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await service
    assert second.data.chart_entries == 200 and second.data.run_id != run.id
    assert await count(sessions, ChartFile) == 2


async def all_published(sessions, within: float = 20.0) -> None:
    """Wait until every outbox row is marked published (the broker acknowledged it)."""
    async with asyncio.timeout(within):
        while not all(row.published_at for row in await all_rows(sessions, Outbox)):  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def next_event(client, within: float = 20.0):
    """The next db-updated envelope the client receives."""
    async with asyncio.timeout(within):
        async for message in client.messages:
            return parse(message.payload, DbUpdated)
    raise AssertionError("the subscription ended")
