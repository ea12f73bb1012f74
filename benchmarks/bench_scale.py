"""How the cost of a new week grows: the predictor's whole `db-updated` handling at 10,000, 100,000 and
1,000,000 songs, next to the time the server takes to `LOAD DATA` the same prediction rows.

For each size, in its own process (so its peak memory is its own) and its own MariaDB database:
  1. `--weeks` weekly snapshots of every song (popularity known, every song trending in the latest week)
     and a weekly top-200 chart, written through the bulk path in chunks;
  2. the real models (fitted once per run by `bench_scoring.register_models`, copied into each database);
  3. the predictor app started in-process on the real broker (its lifespan: MQTT consumer, resident
     answers), one `db-updated` handled untimed (the resident panel store's cold load), a new week written
     and announced as an ingest run does (its `db-updated` staged in the outbox);
  4. timed: the handling of that `db-updated` exactly as the app's handler does it (claim,
     store refresh, scoring, predictions stored, messages staged, commit; publishing every message to the
     broker; the resident answers rebuilt for every song), with its phases;
  5. the reference: `LOAD DATA LOCAL` of the same prediction rows into an empty copy of the table.
Prints, per size, seconds and microseconds per song, the phases (the store's refresh and its checksum
queries apart from the scoring; the garbage collector's seconds; the CPU seconds of this process, of the
database server and of the broker where they run here, and the wall time that work needs at least on
this machine's cores), the peak memory of the process (and per
song), the LOAD DATA time, and the database's size next to the server's InnoDB buffer pool with the pages
the server read from the disk meanwhile: a database larger than the pool is flagged, its figures then
include the disk's. `--buffer-pool 4G` sets the pool for the run and restores the previous size after.
Targets (issue 14): < 3 s at 100,000 songs, < 30 s and < 4 GB at 1,000,000, time per song not growing with
size; verdicts printed, not exit codes (timings depend on what else the machine does). Run:
`make bench-scale` (`--sizes 10000,100000,1000000` to choose sizes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from benchmarks import dbserver
from shared import bulkload
from shared.db import make_engine, make_sessionmaker, migrate, upsert
from shared.events import DbUpdated, Envelope, IngestKind, envelope
from shared.models import ChartEntry, Prediction, Snapshot, Track, utcnow
from shared.mqtt import topics
from shared.outbox import add_event
from shared.weeks import add_weeks, current_week

MYSQL_SERVER = os.environ.get("SONGPOP_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306")
MQTT_URL = os.environ.get("SONGPOP_BENCH_MQTT_URL", "mqtt://127.0.0.1:1883")
FILL_CHUNK = 50_000
CHART_SIZE = 200
TARGETS = {100_000: (3.0, None), 1_000_000: (30.0, 4 * 1024**3)}  # songs: (seconds, peak bytes)


# ---------------------------------------------------------------- data


def song_id(n: int) -> str:
    return f"bench{n:017d}"  # 22 characters, like a Spotify id


async def fill(url: str, songs: int, weeks: int) -> None:
    """Every song with `weeks` weekly snapshots (trending in the latest), a top-200 chart each week."""
    latest = current_week()
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        for start in range(0, songs, FILL_CHUNK):
            ids = [song_id(n) for n in range(start, min(songs, start + FILL_CHUNK))]
            async with sessions() as session:
                await write_tracks(session, ids, latest, weeks)
                for back in range(weeks - 1, -1, -1):
                    await write_week(session, ids, add_weeks(latest, -back), start == 0)
                await session.commit()
    finally:
        await engine.dispose()


async def write_tracks(session: Any, ids: list[str], latest: dt.date, weeks: int) -> None:
    now = utcnow()
    rows = [
        {"id": i, "name": f"Song {i[-6:]}", "artist_names": f"Artist {hash(i) % 5000}",
         "release_date": add_weeks(latest, -weeks - hash(i) % 300), "updated_at": now}
        for i in ids
    ]  # fmt: skip
    await upsert(session=session, model=Track, rows=rows, keys=["id"])


async def write_week(session: Any, ids: list[str], week: dt.date, with_chart: bool) -> None:
    """The week's snapshots of `ids` (and, with `with_chart`, its chart, drawn from them)."""
    rng = random.Random(week.toordinal())
    now = utcnow()
    rows = [
        {"track_id": i, "week": week, "popularity": rng.randint(0, 100), "popularity_source": "api",
         "trending": True, "updated_at": now}
        for i in ids
    ]  # fmt: skip
    await upsert(session=session, model=Snapshot, rows=rows, keys=["track_id", "week"])
    if with_chart:
        chart = [
            {"track_id": i, "week": week, "region": "global", "rank": r + 1, "streams": 9_000_000 // (r + 1)}
            for r, i in enumerate(rng.sample(ids, min(CHART_SIZE, len(ids))))
        ]
        await upsert(session=session, model=ChartEntry, rows=chart, keys=["track_id", "week", "region"])


async def new_week(url: str, songs: int, topic: str) -> tuple[float, str]:
    """The next week of every song, written as an ingest run writes it and announced as it announces it (a
    `db-updated` on `topic` staged in the outbox when the run ends, `services.ingestor.runs`); seconds
    taken and the event's id (the handling claims it, as it would the ingestor's message)."""
    start = time.perf_counter()
    week = add_weeks(current_week(), 1)
    engine = make_engine(url)
    try:
        for first in range(0, songs, FILL_CHUNK):
            ids = [song_id(n) for n in range(first, min(songs, first + FILL_CHUNK))]
            async with make_sessionmaker(engine)() as session:
                await write_week(session, ids, week, first == 0)
                await session.commit()
        async with make_sessionmaker(engine)() as session:  # the run's end: its event
            event = announce(week, songs)
            add_event(session, topic=topic, event=event, retain=True)
            await session.commit()
    finally:
        await engine.dispose()
    return time.perf_counter() - start, event.event_id


def announce(week: dt.date, songs: int) -> Envelope[DbUpdated]:
    """The `db-updated` of a weekly run that wrote `week` for `songs` songs (and one chart)."""
    data = DbUpdated(run_id=0, kind=IngestKind.UPDATE, week=week, tracks=songs, snapshots=songs,
                     chart_entries=min(CHART_SIZE, songs))  # fmt: skip
    return envelope("ingestor", data)


# ---------------------------------------------------------------- databases and models


async def create_database(tag: str) -> tuple[str, str]:
    name = f"songpop_bench_scale_{tag}_{uuid.uuid4().hex[:6]}"
    admin = make_engine(MYSQL_SERVER + "/")
    async with admin.begin() as conn:
        await conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    await admin.dispose()
    url = f"{MYSQL_SERVER}/{name}"
    await asyncio.to_thread(migrate, url)
    return url, name


async def drop_database(name: str) -> None:
    admin = make_engine(MYSQL_SERVER + "/")
    async with admin.begin() as conn:
        await conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    await admin.dispose()


async def copy_models(url: str, template: str) -> None:
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text(f"INSERT INTO model_version SELECT * FROM `{template}`.model_version"))
    await engine.dispose()


# ---------------------------------------------------------------- one size (child process)


def memory(field: str) -> int:
    """A `/proc/self/status` figure (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


SERVERS = {"the database server": ("mariadbd", "mysqld"), "the broker": ("mosquitto",)}


def server_cpu(procfs: Path = Path("/proc")) -> dict[str, float]:
    """CPU seconds used so far by the database server and the broker where they run on this machine (by
    process name; a server elsewhere is left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for proc in procfs.iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            name = (proc / "comm").read_text().strip()
            label = next((label for label, names in SERVERS.items() if name in names), None)
            if label is not None:
                after_name = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                used[label] = used.get(label, 0.0) + (int(after_name[11]) + int(after_name[12])) / tick
    return used


def cpu_meanwhile(app_seconds: float, before: dict[str, float]) -> dict[str, float]:
    """The CPU seconds the handling took in this process and in each local server, and what they mean on
    this machine's cores: the shortest wall time that work could take, however well it overlapped."""
    servers = {label: seconds - before.get(label, 0.0) for label, seconds in server_cpu().items()}
    cores = os.cpu_count() or 1
    total = app_seconds + sum(servers.values())
    return {
        "CPU meanwhile: this process (all threads)": app_seconds,
        **{f"  {label}": seconds for label, seconds in servers.items()},
        f"  all of it over {cores} cores: the wall time it needs at least": total / cores,
    }


class Peaks:
    """The process's peak memory per stretch of the run: each `cut` reads the kernel's high-water mark
    (VmHWM) since the previous cut, then resets it to the current RSS (`/proc/self/clear_refs`), so every
    stretch has a peak of its own; `overall` is the highest of them."""

    def __init__(self) -> None:
        self.overall = 0
        self.stretches: dict[str, tuple[int, int]] = {}  # label -> (peak, RSS at its end)

    def cut(self, label: str | None = None) -> None:
        peak = memory("VmHWM")
        self.overall = max(self.overall, peak)
        if label is not None:
            self.stretches[label] = (max(peak, self.stretches.get(label, (0, 0))[0]), memory("VmRSS"))
        with contextlib.suppress(OSError):  # kernels without it: every stretch reports the run's peak
            Path("/proc/self/clear_refs").write_text("5")


class GcClock:
    """Seconds the garbage collector ran (any thread: it holds the GIL throughout) and its full collections,
    counted while `running`: a collection of the oldest generation visits every object the process holds,
    so at 1,000,000 songs each costs more and the same work triggers as many."""

    def __init__(self) -> None:
        self.seconds, self.full, self._start = 0.0, 0, 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._start
        self.full += info["generation"] == 2

    @contextlib.contextmanager
    def running(self) -> Iterator[GcClock]:
        gc.callbacks.append(self._callback)
        try:
            yield self
        finally:
            gc.callbacks.remove(self._callback)


def measured_steps(peaks: Peaks, clock: GcClock) -> Any:
    """The handler's `Steps` (seconds per step), also cutting `peaks` at the end of each step and
    recording the garbage collector's seconds in each (`gc_seconds`)."""
    from services.predictor.batch_write import Steps

    class MeasuredSteps(Steps):
        def __init__(self) -> None:
            super().__init__()
            self.gc_seconds: dict[str, float] = {}

        @contextlib.contextmanager
        def __call__(self, name: str) -> Iterator[None]:
            peaks.cut()
            collecting = clock.seconds
            with super().__call__(name):
                yield
            self.gc_seconds[name] = self.gc_seconds.get(name, 0.0) + clock.seconds - collecting
            peaks.cut(f"  {name}")

    return MeasuredSteps()


@contextlib.contextmanager
def store_refresh_timed() -> Iterator[dict[str, float]]:
    """The resident store's refresh timed apart from the scoring it shares a step with: its checksum query
    of each table and the whole refresh (the rest of it reloads what changed), seconds by label."""
    from shared.forecasting import store

    seconds: dict[str, float] = {}
    sums, refresh = store._sums, store.PanelStore.refresh

    async def timed_sums(session: Any, key: str, row_hash: str, source: str) -> Any:
        start = time.perf_counter()
        try:
            return await sums(session, key, row_hash, source)
        finally:
            seconds[f"checksums of {source.split()[1]}"] = time.perf_counter() - start

    async def timed_refresh(self: Any, session: Any) -> Any:
        start = time.perf_counter()
        try:
            return await refresh(self, session)
        finally:
            seconds["the store's refresh"] = time.perf_counter() - start

    store._sums, store.PanelStore.refresh = timed_sums, timed_refresh  # type: ignore[method-assign]
    try:
        yield seconds
    finally:
        store._sums, store.PanelStore.refresh = sums, refresh  # type: ignore[method-assign]


def with_refresh(steps: dict[str, float], refresh: dict[str, float]) -> dict[str, float]:
    """The handler's steps with the store's refresh (and its checksums) under the step that holds it."""
    phases: dict[str, float] = {}
    for name, seconds in steps.items():
        phases[f"  {name}"] = seconds
        if name == "refresh and scoring" and refresh:
            whole = refresh.pop("the store's refresh", 0.0)
            phases["    of which the store's refresh"] = whole
            phases.update({f"      {label}": value for label, value in refresh.items()})
    return phases


async def handle(app: Any, event_id: str, peaks: Peaks) -> dict[str, float]:
    """What the app's handler does for one `db-updated` (`services.predictor.app.make_handler`), then the
    wait until the resident answers are rebuilt for the new data."""
    from services.predictor import batch_messages, service
    from services.predictor.cache import data_version
    from shared.outbox import publish_pending

    settings, clients = app.state.settings, app.state.clients
    clock = GcClock()
    steps = measured_steps(peaks, clock)
    peaks.stretches.clear()
    peaks.cut()
    with clock.running():
        start, cpu_start, servers_start = time.perf_counter(), time.process_time(), server_cpu()
        with store_refresh_timed() as refresh:
            await service.handle_event(sessions=app.state.sessions, settings=settings,
                                       topics=topics(settings), event_id=event_id, steps=steps)  # fmt: skip
        stored, gc_stored = time.perf_counter(), clock.seconds
        peaks.cut("  after the steps")
        app.state.cache.expire()
        clients.resident.wake.set()
        published = await publish_pending(
            sessions=app.state.sessions, client=app.state.mqtt, producer="predictor",
            expand=batch_messages.expander(app.state.sessions, topics(settings)),
        )  # fmt: skip
        sent, gc_sent = time.perf_counter(), clock.seconds
        peaks.cut("published")
        version = await data_version(clients.reader)
        cpu = time.process_time()
        # a pass of the app's warmer finished after applying this version (pending empties as chunks start)
        while not (app.state.cache_warmed_version == version and clients.resident.ready):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        done = time.perf_counter()
        rebuild_cpu = time.process_time() - cpu  # the process's, every thread (the gzip worker's too)
        cpu_used = cpu_meanwhile(time.process_time() - cpu_start, servers_start)
    peaks.cut("resident answers rebuilt")
    return {
        "total": done - start,
        "handled (its steps below)": stored - start,
        **with_refresh(steps.seconds, refresh),
        f"published ({published:,} messages)": sent - stored,
        "resident answers rebuilt": done - sent,
        "  the process's CPU meanwhile (all threads)": rebuild_cpu,
        f"garbage collector, all threads ({clock.full} full collections)": clock.seconds,
        "  while handled": gc_stored,
        **{f"    in {name}": seconds for name, seconds in steps.gc_seconds.items() if seconds >= 0.05},
        "  while published": gc_sent - gc_stored,
        "  while the resident answers were rebuilt": clock.seconds - gc_sent,
        **cpu_used,
    }


async def load_data_reference(url: str) -> tuple[int, float]:
    """Rows and seconds to LOAD DATA LOCAL the new week's prediction rows (read back from the table, after
    the measured run: holding them through it would add to its peak) into an empty copy of the table."""
    engine = make_engine(url)
    table = Prediction.__table__  # type: ignore[attr-defined]
    columns = list(table.columns)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                select(*columns).where(table.c.week == select(func.max(table.c.week)).scalar_subquery())
            )
            rows = [dict(row) for row in result.mappings()]
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE prediction_copy LIKE prediction")
            data = bulkload.tsv(rows, columns, {}, conn.dialect)
            start = time.perf_counter()
            with bulkload._registered(data) as name:
                names = ", ".join(f"`{c.name}`" for c in columns)
                await conn.exec_driver_sql(
                    f"LOAD DATA LOCAL INFILE '{name}' INTO TABLE prediction_copy ({names})"
                )
            return len(rows), time.perf_counter() - start
    finally:
        await engine.dispose()


async def server_reads(url: str) -> tuple[int, int]:
    """The buffer pool's size and the pages the server has read from the disk so far."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await dbserver.buffer_pool_size(conn), await dbserver.pages_read_from_disk(conn)
    finally:
        await engine.dispose()


async def database_tables(url: str, name: str) -> list[tuple[str, int, int]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return [(t.name, t.rows, t.bytes) for t in await dbserver.database_size(conn, name)]
    finally:
        await engine.dispose()


async def one_size(songs: int, weeks: int, template: str, keep: bool) -> dict[str, Any]:
    from services.predictor.app import create_app
    from services.predictor.settings import PredictorSettings

    url, name = await create_database(str(songs))
    try:
        fill_start = time.perf_counter()
        await fill(url, songs, weeks)
        await copy_models(url, template)
        filled = time.perf_counter() - fill_start
        peaks = Peaks()
        root = f"bench/{uuid.uuid4().hex[:8]}/songpop/v1"
        settings = PredictorSettings(
            database_url=url, mqtt_url=MQTT_URL, mqtt_topic_root=root,
            predictor_catch_up_seconds=3600, mqtt_client_prefix=f"bench-{uuid.uuid4().hex[:8]}",
            _env_file=None,
        )  # fmt: skip
        app = create_app(settings)
        rss_before = memory("VmRSS")
        try:
            async with app.router.lifespan_context(app):
                await wait_for(app.state.consuming.wait, 120)
                cold = await handle(app, "bench-cold", peaks)
                rss_warm = memory("VmRSS")  # the resident store loaded, the resident answers built
                week_seconds, announced = await new_week(url, songs, topics(settings).db_updated)
                pool, reads_before = await server_reads(url)
                timed = await handle(app, announced, peaks)
                reads = (await server_reads(url))[1] - reads_before
        except BaseException:
            # a failed run's retained messages would stay in a persistent broker (GBs at 1,000,000 songs)
            with contextlib.suppress(Exception):
                await clear_retained(root, songs)
            raise
        peaks.cut()
        peak = peaks.overall
        tables = await database_tables(url, name)  # before the reference adds its copy
        prediction_rows, reference = await load_data_reference(url)
        cleared, left = await clear_retained(root, songs)
        return {
            "songs": songs, "fill_seconds": filled, "cold_total": cold["total"],
            "week_write_seconds": week_seconds,
            "phases": timed, "seconds": timed["total"], "peak_bytes": peak, "rss_before_app": rss_before,
            "rss_warm": rss_warm, "memory": peaks.stretches,
            "prediction_rows": prediction_rows, "load_data_seconds": reference,
            "retained_cleared": cleared, "retained_left": left,
            "buffer_pool_bytes": pool, "pages_read_from_disk": reads, "tables": tables,
        }  # fmt: skip
    finally:
        if not keep:
            await drop_database(name)


async def clear_retained(root: str, songs: int) -> tuple[int, int]:
    """Remove the retained messages of the run (one per song: a persistent broker would otherwise keep every
    run's, 1,000,000 songs are 3 GB of Mosquitto's memory and disk): every song's topic, the latest state and
    whatever else the broker hands back as retained under `root` get an empty retained message. Returns how
    many topics were cleared and how many retained messages the broker still hands back after (0 expected).
    The topics are named, not only collected by subscribing: the broker hands back about 1,000 at once."""
    from shared.events import Topics
    from shared.mqtt import broker_address
    from shared.mqtt_bulk import BulkPublisher

    address = broker_address(MQTT_URL)
    names = Topics(root)
    topics = {names.predictions_latest, *(names.prediction_for(song_id(n)) for n in range(songs))}
    topics |= set(await retained_topics(address, root))
    ordered = sorted(topics)
    async with BulkPublisher(address) as publisher:
        for start in range(0, len(ordered), 10_000):
            await publisher.publish([(topic, b"", True) for topic in ordered[start : start + 10_000]])
    return len(ordered), len(await retained_topics(address, root))


async def retained_topics(address: Any, root: str) -> list[str]:
    """The topics under `root` whose retained message the broker hands back on subscribing."""
    import aiomqtt

    retained: list[str] = []
    async with aiomqtt.Client(address.host, address.port, username=address.username,
                              password=address.password, identifier=f"bench-clear-{uuid.uuid4().hex[:8]}",
                              ) as client:  # fmt: skip
        await client.subscribe(f"{root}/#", qos=0)
        with contextlib.suppress(TimeoutError):
            while True:  # the retained ones come at once on subscribing; 2 s of silence ends them
                async with asyncio.timeout(2):
                    message = await anext(client.messages)
                if message.retain:
                    retained.append(str(message.topic))
    return retained


async def wait_for(step: Callable[[], Awaitable[Any]], within: float) -> None:
    await asyncio.wait_for(step(), within)


# ---------------------------------------------------------------- the run (parent process)


def report(result: dict[str, Any]) -> list[str]:
    songs, seconds = result["songs"], result["seconds"]
    peak = result["peak_bytes"]
    lines = [
        f"{songs:>9,} songs: {seconds:6.2f} s ({seconds / songs * 1e6:6.1f} us/song), peak memory "
        f"{peak / 1024**2:,.0f} MB ({(peak - result['rss_before_app']) / songs / 1024:.1f} kB/song above the "
        f"{result['rss_before_app'] / 1024**2:,.0f} MB before the app); LOAD DATA of the same "
        f"{result['prediction_rows']:,} prediction rows {result['load_data_seconds']:.2f} s; "
        f"{result['retained_cleared']:,} retained topics of the run cleared from the broker "
        f"({result['retained_left']:,} retained left)",
    ]
    lines += [
        f"      {label:<58} {value:6.2f} s" for label, value in result["phases"].items() if label != "total"
    ]
    mb = 1024**2
    lines.append(
        f"      memory: {result['rss_before_app'] / mb:,.0f} MB before the app, "
        f"{result['rss_warm'] / mb:,.0f} MB with the store loaded and the answers built; then, per "
        "stretch of the new week (peak / at its end):"
    )
    lines += [
        f"      {label:<58} {peak / mb:6,.0f} / {rss / mb:6,.0f} MB"
        for label, (peak, rss) in result["memory"].items()
    ]
    lines += database_report(result)
    target = TARGETS.get(songs)
    if target:
        ok = seconds < target[0] and (target[1] is None or peak < target[1])
        limit = f"< {target[0]:.0f} s" + (f" and < {target[1] / 1024**3:.0f} GB" if target[1] else "")
        lines.append(f"      target {limit}: {'met' if ok else 'MISSED'}")
    return lines


def database_report(result: dict[str, Any]) -> list[str]:
    """The bench database's size next to the server's buffer pool, and what the handling read from disk."""
    pool, songs = result["buffer_pool_bytes"], result["songs"]
    tables = result["tables"]
    total = sum(size for _, _, size in tables)
    mb = dbserver.megabytes
    lines = [
        f"      database {mb(total)} (data + indexes, {total / songs:,.0f} bytes/song) in a buffer pool of "
        f"{mb(pool)}; {result['pages_read_from_disk']:,} pages read from the disk during the handling "
        "(the server's count: other sessions' reads too)",
        "      " + "; ".join(f"{name} {rows:,} rows {mb(size)} ({size / rows:,.0f} B/row)"
                            for name, rows, size in tables if rows and size >= 1024**2),
    ]  # fmt: skip
    if total > pool:
        lines.append(
            f"      WARNING: the data ({mb(total)}) exceeds the buffer pool ({mb(pool)}): this figure "
            "measures the disk, not songpop (--buffer-pool 4G sizes the pool for the run)"
        )
    return lines


async def prepare_models(models_dir: Path) -> str:
    from benchmarks.bench_scoring import register_models

    url, name = await create_database("models")
    await register_models(url, models_dir)
    return name


def run(sizes: list[int], weeks: int, keep: bool, buffer_pool: int | None) -> None:
    with dbserver.sized_buffer_pool(MYSQL_SERVER + "/", buffer_pool) as pool:
        changed = f" (set for this run; {dbserver.megabytes(buffer_pool)} asked)" if buffer_pool else ""
        print(f"the server's InnoDB buffer pool: {dbserver.megabytes(pool)}{changed}", flush=True)
        run_sizes(sizes, weeks, keep)


def run_sizes(sizes: list[int], weeks: int, keep: bool) -> None:
    models_dir = Path(tempfile.mkdtemp(prefix="bench-scale-models-"))
    template = None
    try:
        print("fitting the models (once) ...", flush=True)
        template = asyncio.run(prepare_models(models_dir))
        results = []
        for songs in sizes:
            print(f"{songs:,} songs: filling and handling ...", flush=True)
            child = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_scale", "--one", str(songs), "--weeks", str(weeks),
                 "--template", template, *(["--keep"] if keep else [])],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            found = [line for line in child.stdout.splitlines() if line.startswith("{")]
            if child.returncode or not found:
                print(f"  failed ({child.returncode}):\n{child.stderr[-3000:]}", flush=True)
                continue
            results.append(json.loads(found[-1]))
            print("\n".join(report(results[-1])), flush=True)
        if len(results) > 1:
            per_song = [r["seconds"] / r["songs"] * 1e6 for r in results]
            growing = per_song[-1] > per_song[0] * 1.25
            print(f"time per song: {' -> '.join(f'{u:.1f}' for u in per_song)} us "
                  f"({'GROWS' if growing else 'does not grow'} with size)")  # fmt: skip
    finally:
        shutil.rmtree(models_dir, ignore_errors=True)
        if template and not keep:
            asyncio.run(drop_database(template))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated song counts")
    parser.add_argument("--weeks", type=int, default=4, help="weekly snapshots per song before the new one")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    parser.add_argument(
        "--buffer-pool", type=dbserver.parse_size, metavar="SIZE",
        help="the server's innodb_buffer_pool_size for the run (e.g. 4G), its previous size restored after "
        "(default: the server as it is)",
    )  # fmt: skip
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one size
    parser.add_argument("--template", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = asyncio.run(one_size(args.one, args.weeks, args.template, args.keep))
        print(json.dumps(result, default=str), flush=True)
        return
    with contextlib.suppress(KeyboardInterrupt):
        run([int(s) for s in args.sizes.split(",")], args.weeks, args.keep, args.buffer_pool)


if __name__ == "__main__":
    main()
