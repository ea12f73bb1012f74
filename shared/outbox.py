"""The transactional outbox: an event is stored in the same transaction as the data it announces and
published after commit, retried until the broker acknowledges. A crash in between loses nothing.

A row is a message as staged, or a description of messages that its producer builds when the row is
published (`is_built`: the payload is a JSON object whose first key is "built"; the producer's `Expand`
builds them, from what it just computed or from the stored data after a crash). The predictor's week of
100,000 per-song messages is one such row (topic `.../predictions/tracks/+`), staged and marked published
once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiomqtt
from sqlalchemy import func, update
from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import mqtt_bulk
from shared.config import Settings, redact_url
from shared.events import QOS, Envelope
from shared.gcpause import gc_paused
from shared.models import Outbox, utcnow
from shared.mqtt import address_of, effective_mqtt_url, make_client
from shared.ops_metrics import count_published

log = logging.getLogger(__name__)

OUTBOX_BATCH = 10_000  # rows read, published and marked at a time
PUBLISH_WINDOW = 100  # at most the client's MAX_INFLIGHT (shared.mqtt)
T = TypeVar("T")
Message = tuple[str, bytes, bool]  # topic, payload as published, retain


@dataclass(frozen=True)
class Staged:
    """An outbox row as the publisher reads it."""

    id: int
    event_id: str
    topic: str
    payload: str
    retain: bool


# The messages a built row describes, in order, in chunks (published as they come, so a batch never sits
# in memory whole): given by the producer that staged the row.
Expand = Callable[[Staged], AsyncIterator[Sequence[Message]]]
BUILT = '{"built":'  # how the payload of a row built when published begins


# The columns of `Staged` (not Outbox objects: rows by the thousand spent seconds becoming objects).
STAGED = sa_select(
    col(Outbox.id), col(Outbox.event_id), col(Outbox.topic), col(Outbox.payload), col(Outbox.retain)
)


def is_built(payload: str) -> bool:
    """Whether a row with `payload` describes messages its producer builds when it is published."""
    return payload.startswith(BUILT)


def add_event(
    session: AsyncSession,
    *,
    topic: str,
    event: Envelope[Any],
    retain: bool = False,
) -> Outbox:
    """Stage `event` for publishing; it becomes visible only if the surrounding transaction commits."""
    row = Outbox(
        event_id=event.event_id,
        topic=topic,
        producer=event.producer,
        # a retained state's `version` is its row id, put in front when published (`wire_payload`): an
        # unset one left in the payload would come after it and void it
        payload=event.model_dump_json(exclude={"version"} if event.version is None else None),
        retain=retain,
    )
    session.add(row)
    return row


async def publish_pending(
    *,
    sessions: async_sessionmaker[AsyncSession],
    client: aiomqtt.Client,
    producer: str | None = None,
    expand: Expand | None = None,
) -> int:
    """Publish every unpublished event in order (only `producer`'s, when given; `expand` builds the
    messages of its built rows); each read of rows is marked published once the broker has acknowledged
    all of their messages (QoS 1). A crash in between publishes them again: delivery is at least once, and
    consumers drop duplicates by event_id. Returns the messages published. Raises aiomqtt.MqttError if
    the broker goes away.

    With per-service broker users, pass `producer`: the ACL silently drops another service's topics (the
    broker still acknowledges them), so publishing them would mark them done and lose them.
    """
    with gc_paused():  # a week's batch is 100,000s of messages
        return await _publish_pending(sessions=sessions, client=client, producer=producer, expand=expand)


async def _publish_pending(
    *,
    sessions: async_sessionmaker[AsyncSession],
    client: aiomqtt.Client,
    producer: str | None,
    expand: Expand | None,
) -> int:
    published = 0
    while True:
        async with sessions() as session:
            query = STAGED.where(col(Outbox.published_at).is_(None))
            if producer is not None:
                query = query.where(col(Outbox.producer) == producer)
            query = query.order_by(col(Outbox.id)).limit(OUTBOX_BATCH)
            rows = [Staged(*row) for row in (await session.execute(query)).all()]
        if not rows:
            return published
        sent = await publish_rows(client, rows, expand)
        ids = [row.id for row in rows]
        async with sessions() as session:
            await session.exec(
                update(Outbox)
                .where(col(Outbox.id).in_(ids))
                .values(published_at=utcnow(), attempts=Outbox.attempts + 1)
            )
            await session.commit()
        published += sent
        log.info("published %d outbox event(s) (%d messages), last #%s on %s", len(rows), sent, ids[-1],
                 rows[-1].topic)  # fmt: skip


async def publish_rows(client: aiomqtt.Client, rows: Sequence[Staged], expand: Expand | None) -> int:
    """Publish the messages of `rows` in order: a run of staged messages at once, a built row's as its
    producer's `expand` gives them. Returns how many."""
    published = 0
    single: list[Message] = []
    for row in rows:
        if not is_built(row.payload):
            single.append((row.topic, wire_payload(row.id, row.payload, row.retain), row.retain))
            continue
        if expand is None:
            raise RuntimeError(f"outbox row #{row.id} ({row.topic}) is built when published: pass `expand`")
        published += await _publish_counted(client, single)
        single = []
        async for chunk in expand(row):
            await publish_in_order(client, chunk)
            count_published([row.topic], len(chunk))
            published += len(chunk)
    return published + await _publish_counted(client, single)


async def _publish_counted(client: aiomqtt.Client, messages: Sequence[Message]) -> int:
    if messages:
        await publish_in_order(client, messages)
        count_published([topic for topic, _, _ in messages])
    return len(messages)


async def publish_in_order(client: aiomqtt.Client, messages: Sequence[tuple[str, bytes, bool]]) -> None:
    """Publish (topic, payload, retain) messages at QoS 1 in their order, and return once the broker has
    acknowledged them all. A large batch takes the fast path (`shared.mqtt_bulk`: a connection of its
    own, with `client`'s address and credentials), a small one `client` itself."""
    address = address_of(client)
    if len(messages) >= mqtt_bulk.MIN_MESSAGES and mqtt_bulk.ENABLED and address is not None:
        async with mqtt_bulk.BulkPublisher(address) as publisher:
            await publisher.publish(messages)
        return
    await publish_each(client, messages)


async def publish_each(client: aiomqtt.Client, messages: Sequence[tuple[str, bytes, bool]]) -> None:
    """`publish_in_order` through `client`, with up to `PUBLISH_WINDOW` messages awaiting the broker's
    acknowledgement at once (one at a time, a week's 100,000 per-song messages wait for 100,000 round
    trips). Each publish hands its message to the client before it waits, and tasks start in the order
    they are created, so the messages leave in order. Raises the first failure, after cancelling the
    rest."""
    started: list[asyncio.Task[None]] = []
    waiting: set[asyncio.Task[None]] = set()
    try:
        for topic, payload, retain in messages:
            if len(waiting) >= PUBLISH_WINDOW:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            task = asyncio.create_task(client.publish(topic, payload, qos=QOS, retain=retain))
            started.append(task)
            waiting.add(task)
        if waiting:
            await asyncio.gather(*waiting)
    finally:
        for task in waiting:
            task.cancel()
        # Collect every outcome, so that the other publishes a lost broker failed are not left unretrieved.
        await asyncio.gather(*started, return_exceptions=True)


def wire_payload(row_id: int | None, payload: str, retain: bool) -> bytes:
    """The message as published: a retained state carries its outbox id as the envelope's `version`
    (monotonic: a later state is staged later), known only once the row is stored."""
    if not retain or row_id is None or not payload.startswith("{"):
        return payload.encode()
    return f'{{"version":{row_id},{payload[1:]}'.encode()


async def republish_retained(
    *,
    sessions: async_sessionmaker[AsyncSession],
    client: aiomqtt.Client,
    topic: str,
    producer: str,
    expand: Expand | None = None,
) -> int:
    """Publish again the latest published state on `topic` and the retained messages staged with it
    (`producer`'s, in the same transaction: its per-song topics, one built row): a broker that crashed may
    have restored an older save of them. Same payloads and versions: consumers holding them see
    duplicates. Returns the messages published."""
    async with sessions() as session:
        latest = (
            await session.exec(
                select(func.max(col(Outbox.id))).where(
                    col(Outbox.topic) == topic, col(Outbox.published_at).is_not(None)
                )
            )
        ).one()
        if latest is None:
            return 0
        batch = STAGED.where(
            col(Outbox.id) >= latest,
            col(Outbox.producer) == producer,
            col(Outbox.retain).is_(True),
            col(Outbox.published_at).is_not(None),
        )
        rows = [
            Staged(*row)
            for row in (await session.execute(batch.order_by(col(Outbox.id)))).all()
            if row[0] == latest or row[2] != topic
        ]
    published = await publish_rows(client, rows, expand)
    log.info("republished the latest retained state of %s (%d message(s))", topic, published)
    return published


class BrokerUnavailable(RuntimeError):
    """The MQTT broker could not be reached; staged events stay in the outbox for the next attempt.

    Raised after a one-shot run committed its data, it carries the run's `result` (so the caller can
    still report it) and how many events are `pending`.
    """

    def __init__(self, message: str, *, result: object = None, pending: int = 0) -> None:
        super().__init__(message)
        self.result, self.pending = result, pending


async def pending_events(*, sessions: async_sessionmaker[AsyncSession], producer: str) -> int:
    """How many of `producer`'s events wait in the outbox."""
    async with sessions() as session:
        query = select(func.count()).where(
            col(Outbox.published_at).is_(None), col(Outbox.producer) == producer
        )
        return (await session.exec(query)).one()


async def publish_after_run(
    result: T,
    *,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    service: str,
    expand: Expand | None = None,
) -> T:
    """A one-shot run's last step: publish its pending events (no connection when there are none) and
    return `result`; an unreachable broker raises BrokerUnavailable carrying `result` and the count."""
    pending = await pending_events(sessions=sessions, producer=service)
    if pending:
        try:
            await flush_outbox(settings=settings, sessions=sessions, service=service, expand=expand)
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(str(exc), result=result, pending=pending) from None
    return result


async def flush_outbox(
    *,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    service: str,
    expand: Expand | None = None,
) -> int:
    """Connect, publish every pending event `service` produced (`expand`: its built rows' messages),
    disconnect; returns the messages published. Raises BrokerUnavailable with a clear message."""
    try:
        # A publisher only: the service's status (and its last will) is the job of `stay_present`.
        async with make_client(settings, service, announce=False) as client:
            return await publish_pending(sessions=sessions, client=client, producer=service, expand=expand)
    except aiomqtt.MqttError as exc:
        raise BrokerUnavailable(
            f"MQTT broker {redact_url(effective_mqtt_url(settings))} is unreachable ({exc}); the data is "
            "committed and its events wait in the outbox, to be published on the next connection"
        ) from None
