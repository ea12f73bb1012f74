"""Serialised forecast responses kept in memory, valid while the data they were built from is unchanged.

Every change that alters a forecast response is announced through the outbox in the transaction that
writes it: an ingest run (`db-updated`), new predictions, a newly active model (`model-updated`). So the
highest outbox id is a version of the data.

Two stores:
- `ResidentAnswers`: the answer of every song with an up-to-date batch forecast, built at start and kept
  up to date song by song: when the version moves, the songs the new outbox rows name (`changed_songs`)
  are dropped and rebuilt. Served without a database round trip.
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
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import Gauge
from sqlalchemy import case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from shared.events import Topics
from shared.metrics import REST_CACHE
from shared.models import Outbox, Prediction
from shared.predictions import latest_batch_week

from .batch_answers import ScoredWeek
from .reader import with_retry_on_dropped_connection

HITS, MISSES = REST_CACHE.labels("hit"), REST_CACHE.labels("miss")
RESIDENT_HITS = REST_CACHE.labels("resident")  # answered from the resident answers
RESIDENT_SONGS = Gauge("songpop_rest_resident_answers", "songs whose forecast answer is resident")
RESIDENT_BYTES = Gauge("songpop_rest_resident_bytes", "memory held by the resident answers (bytes)")
RESIDENT_PENDING = Gauge(
    "songpop_rest_resident_pending", "songs whose resident answer waits to be built or is being built"
)
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

# The outbox is the one record of what changed: every write that alters an answer stages its message in the
# same transaction (a song's new forecast on its own topic, an ingest run's new data as `db-updated`), so
# the outbox id is the data version and its rows say what moved. Ids are given when a row is written but
# become visible when its transaction commits, not always in id order (an ingest run finishing beside a
# batch's bulk write of its messages): a look counts again the rows of this many ids below the newest
# one it applied, and a row that appeared there since is a late commit (every answer is rebuilt then).
OUTBOX_LOOKBACK = 250_000


@dataclass(frozen=True)
class Applied:
    """The outbox rows the resident answers have applied: up to id `version`, and `count` rows above
    `version - OUTBOX_LOOKBACK` (to notice a late commit below `version`); `predictions`: the (id, event
    id) of the rows of prediction messages among the rows the last look applied, in id order (None when
    that look did not read them one by one: the first, or after a late commit)."""

    version: int
    count: int
    predictions: tuple[tuple[int, str], ...] | None = None

    @property
    def floor(self) -> int:
        return self.version - OUTBOX_LOOKBACK


def _window(previous: Applied | None) -> Any:
    """One statement, so one consistent view: the newest id, the rows above its lookback window's floor,
    and (after a previous look) the rows now up to the previous version above the previous floor."""
    newest = select(func.coalesce(func.max(col(Outbox.id)), 0)).scalar_subquery()
    in_window = func.sum(case((col(Outbox.id) > newest - OUTBOX_LOOKBACK, 1), else_=0))
    if previous is None:
        return select(func.max(col(Outbox.id)), in_window, literal(0)).where(
            col(Outbox.id) > newest - OUTBOX_LOOKBACK
        )
    up_to_previous = func.sum(case((col(Outbox.id) <= previous.version, 1), else_=0))
    return select(func.max(col(Outbox.id)), in_window, up_to_previous).where(col(Outbox.id) > previous.floor)


async def changed_songs(
    reader: AsyncEngine, previous: Applied | None, topics: Topics
) -> tuple[set[str], Applied]:
    """The songs whose answer may have changed since the outbox rows `previous` applied (None: every song
    with a prediction, the candidates of a first build), and the rows applied now: a song with a new
    forecast message; every song with a prediction after `db-updated` (any song's history may have moved),
    a batch's messages (one row for all its songs: `batch_messages`) or a late commit."""

    async def read() -> tuple[set[str], Applied]:
        async with reader.connect() as connection:
            newest, count, up_to_previous = (await connection.execute(_window(previous))).one()
            version = int(newest or (previous.version if previous else 0))
            applied = Applied(version=version, count=int(count or 0))
            if previous is None or int(up_to_previous or 0) != previous.count:
                return await _every_predicted_song(connection), applied
            query = (
                select(col(Outbox.id), col(Outbox.event_id), col(Outbox.topic))
                .where(col(Outbox.id) > previous.version, col(Outbox.id) <= applied.version)
                .order_by(col(Outbox.id))
            )
            rows = (await connection.execute(query)).all()
            song_topic = topics.prediction_for("")
            written = tuple((row.id, row.event_id) for row in rows if row.topic.startswith(song_topic))
            applied = replace(applied, predictions=written)
            changed = {topic for *_, topic in rows}
            if topics.db_updated in changed or topics.prediction_for("+") in changed:  # + : a batch's songs
                return await _every_predicted_song(connection), applied
            return {t[len(song_topic) :] for t in changed if t.startswith(song_topic)}, applied

    return await with_retry_on_dropped_connection(read)


async def _every_predicted_song(connection: Any) -> set[str]:
    query = select(col(Prediction.track_id)).distinct()
    return set((await connection.execute(query)).scalars().all())


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
        self.applied: Applied | None = None  # the outbox rows whose changes are applied
        self.batch_week: dt.date | None = None  # the latest batch's week when the changes were looked at
        self.pending: set[str] = set()  # songs dropped or never built: to (re)build
        self.building = 0  # songs taken from `pending` whose answers are being built: not ready until put
        self.batch: ScoredWeek | None = None  # this process's stored batch, its rows what the database holds
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
        """True once the first build is done and no rebuild is waiting or under way."""
        return self.version is not None and not self.pending and not self.building

    def expose_metrics(self) -> None:
        """Report this store at /metrics (read when scraped; one predictor app per process)."""
        RESIDENT_SONGS.set_function(lambda: len(self._bodies))
        RESIDENT_BYTES.set_function(self.memory_bytes)
        RESIDENT_PENDING.set_function(lambda: len(self.pending) + self.building)
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
