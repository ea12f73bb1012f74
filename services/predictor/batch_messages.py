"""The retained messages of a batch scoring, built when they are published.

A week of 100,000 songs makes a `predictions/latest` message of up to 20,000 predictions (~13 MB) and
100,000 per-song messages (each song's headline prediction on `.../predictions/tracks/{track_id}`).
Staged as they are, they took 10 s to write and 12-24 s to read back and publish (`make bench-scale`).
Now the transaction that stores the predictions stages two small rows describing them
(`latest_row`, `songs_row`: the week, the envelope, on the topic `predictions/latest` and the filter
`.../predictions/tracks/+`), and publishing a row gets its messages (`expander`):
- built by this process from what it computed, in a thread while the server stores the predictions (the
  rows are staged first: their ids are the messages' version), kept in memory from its commit until the
  row is published (`prepare`);
- else from the stored predictions of the batch's week: the process that committed the rows is gone (a
  crash between commit and publish, a replica that stopped) or they are republished on a new connection.
  The same songs, topics, event ids, version and values, byte for byte (the values are stored as
  DOUBLE, migration 0009).

A message is the envelope (schema version, time and producer of the batch; `version` the row's id, higher
for every later batch), an event id (the latest state's: its row's; a song's: the UUID 5 of the song's id
in the namespace of its row's event id, the same wherever and however often it is built, so consumers drop
a redelivery by it) and the data, encoded by orjson straight from the scoring's dicts.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import hashlib
import uuid
from array import array
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Sequence
from itertools import accumulate
from typing import Any, overload

import orjson
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.events import Topics
from shared.models import ChartEntry
from shared.outbox import Expand, Message, Staged, is_built
from shared.predictions import week_prediction_data
from shared.signals import Signal

SONGS_PER_CHUNK = 10_000  # songs read back, built and published at a time when built from the database

# This process's batch whose messages wait to be published: a row's event id -> (the row's id, its
# messages, built while the predictions were stored; kept from the commit until the row is published).
_built: dict[str, tuple[int, Sequence[Message]]] = {}


def headlines(data: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per song, the prediction shown first (the popularity index where known, else its chart streams),
    sorted by song: what its topic carries."""
    best: dict[str, dict[str, Any]] = {}
    for p in data:
        if p["track_id"] not in best or p["signal"] == Signal.POPULARITY:
            best[p["track_id"]] = p
    return [best[track_id] for track_id in sorted(best)]


def _row(kind: str, topic: str, event_id: str, envelope: dict[str, Any], **batch: Any) -> dict[str, Any]:
    """An outbox row (its columns but `created_at`) describing messages built when it is published:
    `envelope` is their envelope fields but `event_id`, `version` and `data`."""
    descriptor = {"built": kind, **batch, "envelope": envelope}
    return {"event_id": event_id, "topic": topic, "producer": envelope["producer"],
            "payload": orjson.dumps(descriptor).decode(), "retain": True, "attempts": 0}  # fmt: skip


def latest_row(
    topics: Topics, *, event_id: str, envelope: dict[str, Any], week: dt.date, demo: bool, limit: int
) -> dict[str, Any]:
    """The row of the batch's `predictions/latest` message: its first `limit` predictions."""
    return _row("latest", topics.predictions_latest, event_id, envelope, week=week.isoformat(), demo=demo,
                limit=limit)  # fmt: skip


def songs_row(
    topics: Topics, *, event_id: str, envelope: dict[str, Any], week: dt.date, demo: bool
) -> dict[str, Any]:
    """The row of every song's message of the batch (its topic: the filter of theirs)."""
    return _row("songs", topics.prediction_for("+"), event_id, envelope, week=week.isoformat(), demo=demo)


def prepare(
    topics: Topics,
    latest: Staged,
    songs: Staged | None,
    parts: Iterable[list[dict[str, Any]]],
    *,
    keep: bool = False,
) -> list[dict[str, Any]]:
    """Build the messages of a batch about to be committed, whose rows are staged (`latest`: its latest
    state's, `songs`: its songs', None without predictions; their ids are the messages' version), from its
    predictions as JSON-ready dicts in parts of whole songs, in order (so that a part's dicts are freed
    once its messages are built), and keep them until the rows are published. Run in a thread while the
    predictions are stored (the server works meanwhile). Replaces an earlier batch still held (its
    messages will be built from the database). Returns every prediction with `keep`, else none."""
    described = orjson.loads(latest.payload)
    envelope = orjson.loads(songs.payload)["envelope"] if songs is not None else None
    shown: list[dict[str, Any]] = []
    song_list = SongMessages(songs, envelope, topics) if songs is not None and envelope is not None else None
    kept: list[dict[str, Any]] = []
    for part in parts:
        shown += part[: described["limit"] - len(shown)]
        if song_list is not None:
            song_list.extend(headlines(part))
        if keep:
            kept += part
    built: dict[str, tuple[int, Sequence[Message]]] = {
        latest.event_id: (latest.id, [latest_message(latest, described, shown)])
    }
    if songs is not None and song_list is not None:
        built[songs.event_id] = (songs.id, song_list)
    forget()
    _built.update(built)
    return kept


def forget() -> None:
    """Drop the messages held (a batch rolled back, or replaced)."""
    _built.clear()


def song_event_id(namespace: bytes, track_id: str) -> str:
    """`str(uuid.uuid5(uuid.UUID(bytes=namespace), track_id))`, three times as fast (100,000 a week)."""
    h = hashlib.sha1(namespace + track_id.encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def _fields(row: Staged, envelope: dict[str, Any]) -> bytes:
    """The opening of a message's envelope, up to its event id: `version` first."""
    return orjson.dumps({"version": row.id, **envelope})[:-1] + b',"event_id":"'


class SongMessages(Sequence[Message]):
    """The messages of a batch's songs (headline predictions) whose songs' row is `row`, held packed: what
    follows the envelope's common opening (`_fields`) in one buffer per part of songs added, each message's
    (topic, payload, retain) made when it is read. 1,000,000 songs' messages held as tuples took ~925 bytes
    a song until published, packed ~600."""

    def __init__(self, row: Staged, envelope: dict[str, Any], topics: Topics) -> None:
        self.fields, self.namespace = _fields(row, envelope), uuid.UUID(row.event_id).bytes
        self.topic_prefix = topics.prediction_for("")  # a song's topic: the prefix, then its id
        self.parts: list[tuple[list[str], bytes, array[int]]] = []  # songs, their bodies, where each ends
        self.firsts = [0]  # each part's first message, then the count

    def extend(self, songs: Sequence[dict[str, Any]]) -> None:
        """Add the messages of `songs` (headline predictions)."""
        bodies = [
            b"".join((song_event_id(self.namespace, song["track_id"]).encode(), b'","data":',
                      orjson.dumps(song), b"}"))
            for song in songs
        ]  # fmt: skip
        self.parts.append(
            ([song["track_id"] for song in songs], b"".join(bodies), array("q", accumulate(map(len, bodies))))
        )
        self.firsts.append(self.firsts[-1] + len(songs))

    def __len__(self) -> int:
        return self.firsts[-1]

    def __iter__(self) -> Iterator[Message]:
        for tracks, buffer, ends in self.parts:
            start = 0
            for track, end in zip(tracks, ends, strict=True):
                yield self.topic_prefix + track, self.fields + buffer[start:end], True
                start = end

    @overload
    def __getitem__(self, index: int) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> list[Message]: ...

    def __getitem__(self, index: int | slice) -> Message | list[Message]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        part = bisect.bisect_right(self.firsts, index) - 1
        tracks, buffer, ends = self.parts[part]
        k = index - self.firsts[part]
        start = ends[k - 1] if k else 0
        return self.topic_prefix + tracks[k], self.fields + buffer[start : ends[k]], True


def song_messages(
    row: Staged, envelope: dict[str, Any], topics: Topics, songs: Sequence[dict[str, Any]]
) -> SongMessages:
    """The messages of `songs` (headline predictions) of the batch whose songs' row is `row`."""
    messages = SongMessages(row, envelope, topics)
    messages.extend(songs)
    return messages


def latest_message(row: Staged, descriptor: dict[str, Any], shown: Sequence[dict[str, Any]]) -> Message:
    """The `predictions/latest` message of the batch whose latest-state row is `row`."""
    data = {"week": descriptor["week"], "count": len(shown), "predictions": shown}
    payload = b"".join((_fields(row, descriptor["envelope"]), row.event_id.encode(), b'","data":',
                        orjson.dumps(data), b"}"))  # fmt: skip
    return row.topic, payload, True


def expander(sessions: async_sessionmaker[AsyncSession], topics: Topics) -> Expand:
    """The publisher's `Expand` of the predictor's built rows."""

    async def expand(row: Staged) -> AsyncIterator[Sequence[Message]]:
        assert is_built(row.payload)
        built = _built.pop(row.event_id, None)
        if built is not None and built[0] == row.id:
            yield built[1]  # in memory already: one chunk (one connection to the broker)
            return
        descriptor = orjson.loads(row.payload)
        week = dt.date.fromisoformat(descriptor["week"])
        if descriptor["built"] == "latest":
            first = await stored_first(sessions, week=week, demo=descriptor["demo"], n=descriptor["limit"])
            yield [latest_message(row, descriptor, first)]
            return
        async for chunk in stored(sessions, week=week, demo=descriptor["demo"]):
            yield song_messages(row, descriptor["envelope"], topics, headlines(chunk))

    return expand


async def stored_first(
    sessions: async_sessionmaker[AsyncSession], *, week: dt.date, demo: bool, n: int
) -> list[dict[str, Any]]:
    """The first `n` stored predictions of the batch of `week`, in the scoring's order."""
    first: list[dict[str, Any]] = []
    async with contextlib.aclosing(stored(sessions, week=week, demo=demo)) as chunks:
        async for chunk in chunks:
            first += chunk[: n - len(first)]
            if len(first) >= n:
                break
    return first


async def stored(
    sessions: async_sessionmaker[AsyncSession], *, week: dt.date, demo: bool
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """The stored predictions of the batch of `week` as the scoring's dicts, in its order (by song, then
    signal), in chunks of whole songs: the read model's (`week_prediction_data`, one streamed read), with
    their chart rank (streams) and the batch's `demo`."""
    async with sessions() as session:
        ranks = await chart_ranks(session, week=week)
        data = week_prediction_data(session, week=week, chunk_rows=2 * SONGS_PER_CHUNK)
        async with contextlib.aclosing(data) as chunks:
            async for chunk in chunks:
                for p in chunk:
                    p["demo"] = demo
                    if p["signal"] == Signal.STREAMS:
                        p["rank"] = ranks.get((p["track_id"], p["region"]))
                yield chunk


async def chart_ranks(session: AsyncSession, *, week: dt.date) -> dict[tuple[str, str], int]:
    """(song, region) -> the song's rank on the region's chart of `week`."""
    query = select(col(ChartEntry.track_id), col(ChartEntry.region), col(ChartEntry.rank)).where(
        col(ChartEntry.week) == week
    )
    return {(track_id, region): rank for track_id, region, rank in (await session.exec(query)).all()}
