"""Serialised forecast responses kept in memory, valid while the data they were built from is unchanged.

Every change that alters a forecast response is announced through the outbox in the transaction that
writes it: an ingest run (`db-updated`), new predictions, a newly active model (`model-updated`). So the
highest outbox id is a version of the data.

Two stores:
- `ResidentAnswers`: the answer of every song with an up-to-date batch forecast, built at start and kept
  up to date song by song: when the version moves, the songs whose rows changed since the previous look
  (`changed_songs`) are dropped and rebuilt. Served without a database round trip.
- `ResponseCache`: other answers (songs forecast on demand), least recently used first out, emptied
  whenever the version moves. The version is read at most once per `check_seconds` for all requests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from shared.metrics import REST_CACHE
from shared.models import ChartEntry, Outbox, Prediction, Snapshot, SnapshotStage, Track, utcnow
from shared.predictions import latest_batch_week

from .reader import with_retry_on_dropped_connection

HITS, MISSES = REST_CACHE.labels("hit"), REST_CACHE.labels("miss")
RESIDENT_HITS = REST_CACHE.labels("resident")  # answered from the resident answers
RESIDENT_SONGS = Gauge("songpop_rest_resident_answers", "songs whose forecast answer is resident")
RESIDENT_BYTES = Gauge("songpop_rest_resident_bytes", "memory held by the resident answers (bytes)")
RESIDENT_PENDING = Gauge("songpop_rest_resident_pending", "songs whose resident answer waits to be built")
RESIDENT_VERSION = Gauge("songpop_rest_resident_version", "data version of the resident answers (-1: none)")


async def data_version(reader: AsyncEngine) -> int:
    """The id of the newest outbox event (0 before the first)."""

    async def read() -> int:
        async with reader.connect() as connection:
            return int((await connection.execute(select(func.max(Outbox.id)))).scalar() or 0)

    return await with_retry_on_dropped_connection(read)


class ResponseCache:
    """Least-recently-used JSON bodies by track id, dropped whenever the data version moves."""

    def __init__(self, reader: AsyncEngine, *, max_entries: int, check_seconds: float) -> None:
        self._reader = reader
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self.max_entries = max_entries
        self.check_seconds = check_seconds
        self.version: int | None = None
        self._checked_at = float("-inf")
        self._checking = asyncio.Lock()
        self.hits = self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._entries

    async def current_version(self) -> int | None:
        """The data version, re-read when the last reading is older than `check_seconds`; None when
        the cache is off."""
        if not self.enabled:
            return None
        if time.monotonic() - self._checked_at >= self.check_seconds:
            async with self._checking:  # one reading for all the requests waiting on it
                if time.monotonic() - self._checked_at >= self.check_seconds:
                    version = await data_version(self._reader)
                    if version != self.version:
                        self._entries.clear()
                        self.version = version
                    self._checked_at = time.monotonic()
        return self.version

    def get(self, track_id: str) -> bytes | None:
        body = self._entries.get(track_id)
        if body is None:
            self.misses += 1
            MISSES.inc()
            return None
        self._entries.move_to_end(track_id)
        self.hits += 1
        HITS.inc()
        return body

    def put(self, track_id: str, body: bytes, *, built_at_version: int | None) -> None:
        """Keep `body` unless the data version moved while it was being built."""
        if not self.enabled or built_at_version is None or built_at_version != self.version:
            return
        self._entries[track_id] = body
        self._entries.move_to_end(track_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def expire(self) -> None:
        """Re-read the data version on the next request (this process just changed the data)."""
        self._checked_at = float("-inf")


# ---------------------------------------------------------------- resident answers

# Rows are stamped by their writer's clock before their transaction commits: a look for changed songs
# reaches this far back before the previous look, so a row written during it (or by a writer whose clock
# is somewhat behind) is still found. Songs changed within the lag are simply rebuilt once more.
CHANGE_LAG = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Watermark:
    """Where the previous look for changed songs stopped: rows stamped at or after `since` (snapshots:
    `snapshot_since`, earlier when an ingest run's staged rows wait to be published with their fetch-time
    stamps) and chart entries after `chart_id` may be new."""

    since: dt.datetime
    snapshot_since: dt.datetime
    chart_id: int


async def _scalar(connection: Any, query: Any) -> Any:
    return (await connection.execute(query)).scalar()


async def next_watermark(connection: Any) -> Watermark:
    """Read BEFORE looking for changes: whatever commits after this is found by the next look."""
    since = utcnow() - CHANGE_LAG
    staged_since = await _scalar(connection, select(func.min(col(SnapshotStage.updated_at))))
    chart_id = await _scalar(connection, select(func.max(col(ChartEntry.id))))
    snapshot_since = min(since, _aware(staged_since)) if staged_since is not None else since
    return Watermark(since=since, snapshot_since=snapshot_since, chart_id=int(chart_id or 0))


def _aware(stamp: dt.datetime) -> dt.datetime:
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


async def changed_songs(reader: AsyncEngine, previous: Watermark | None) -> tuple[set[str], Watermark]:
    """The songs whose answer may have changed since `previous` (None: every song with a prediction, the
    candidates of a first build), and the watermark for the next look.

    Every write that alters an answer stamps its rows: predictions (`created_at`), snapshots and songs
    (`updated_at`, also when an upsert updates them), new chart entries (their id; an entry rewritten in
    place comes with its song's snapshot of that week, staged in the same transaction)."""

    async def read() -> tuple[set[str], Watermark]:
        async with reader.connect() as connection:
            mark = await next_watermark(connection)
        # one statement per table, side by side: each scans its table (no index on the stamps), and a
        # UNION's duplicate removal cost MariaDB ~20x more when every song changed
        found = await asyncio.gather(*(_ids(reader, query) for query in _changed_queries(previous)))
        return set().union(*found), mark

    return await with_retry_on_dropped_connection(read)


async def _ids(reader: AsyncEngine, query: Any) -> list[str]:
    async with reader.connect() as connection:
        return list((await connection.execute(query)).scalars().all())


def _changed_queries(previous: Watermark | None) -> list[Any]:
    if previous is None:
        return [select(col(Prediction.track_id)).distinct()]
    return [
        select(col(Prediction.track_id)).where(col(Prediction.created_at) >= previous.since).distinct(),
        select(col(Snapshot.track_id)).where(col(Snapshot.updated_at) >= previous.snapshot_since).distinct(),
        select(col(Track.id)).where(col(Track.updated_at) >= previous.since),
        select(col(ChartEntry.track_id)).where(col(ChartEntry.id) > previous.chart_id).distinct(),
    ]


async def left_the_batch(
    reader: AsyncEngine, previous_week: dt.date | None
) -> tuple[set[str], dt.date | None]:
    """When a new batch week arrived since `previous_week`: the songs of the previous batch (their answer
    was their `/v1/trending` row, and may now be a forecast from later data); and the latest batch week."""

    async def read() -> tuple[set[str], dt.date | None]:
        async with reader.connect() as connection:
            week = await latest_batch_week(connection)
            if previous_week is None or week == previous_week:
                return set(), week
            query = select(col(Prediction.track_id)).where(col(Prediction.week) == previous_week).distinct()
            return set((await connection.execute(query)).scalars().all()), week

    return await with_retry_on_dropped_connection(read)


class ResidentAnswers:
    """The gzipped answer of every song whose batch forecast is up to date, kept for the life of the
    process and served without touching the database.

    Only `services.predictor.tracks.refresh_resident` writes it: when the data version moves, the songs
    whose rows changed are dropped at once (their requests go to the database until they are rebuilt),
    then rebuilt in chunks. Each answer is replaced whole, so a reader sees an old complete answer, none,
    or the new complete one: never part of a rebuild."""

    def __init__(self) -> None:
        self._bodies: dict[str, bytes] = {}
        self._nbytes = 0  # of the keys and bodies held (the dict's own table is added when asked)
        self.version: int | None = None  # the data version whose changes are applied (or queued)
        self.watermark: Watermark | None = None
        self.batch_week: dt.date | None = None  # the latest batch's week when the changes were looked at
        self.pending: set[str] = set()  # songs dropped or never built: to (re)build
        self.checked_at = float("-inf")
        self.wake = asyncio.Event()  # set to look for new data now rather than at the next check

    def __len__(self) -> int:
        return len(self._bodies)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._bodies

    def get(self, track_id: str) -> bytes | None:
        return self._bodies.get(track_id)

    @property
    def ready(self) -> bool:
        """True once the first build is done and no rebuild is waiting."""
        return self.version is not None and not self.pending

    def expose_metrics(self) -> None:
        """Report this store at /metrics (read when scraped; one predictor app per process)."""
        RESIDENT_SONGS.set_function(lambda: len(self._bodies))
        RESIDENT_BYTES.set_function(self.memory_bytes)
        RESIDENT_PENDING.set_function(lambda: len(self.pending))
        RESIDENT_VERSION.set_function(lambda: -1 if self.version is None else self.version)

    def memory_bytes(self) -> int:
        """What the answers hold in memory: bodies, keys and the dict's table."""
        return self._nbytes + sys.getsizeof(self._bodies)

    def drop(self, track_ids: Iterable[str]) -> None:
        """Forget these songs' answers and queue them for a rebuild."""
        for track_id in track_ids:
            body = self._bodies.pop(track_id, None)
            if body is not None:
                self._nbytes -= sys.getsizeof(track_id) + sys.getsizeof(body)
            self.pending.add(track_id)

    def put(self, track_id: str, body: bytes) -> None:
        old = self._bodies.get(track_id)
        if old is not None:
            self._nbytes -= sys.getsizeof(track_id) + sys.getsizeof(old)
        self._bodies[track_id] = body
        self._nbytes += sys.getsizeof(track_id) + sys.getsizeof(body)
