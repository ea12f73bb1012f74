"""The transactional outbox: an event is stored in the same transaction as the data it announces and
published after commit, retried until the broker acknowledges. A crash in between loses nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

import aiomqtt
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared import mqtt_bulk
from shared.config import Settings, redact_url
from shared.events import QOS, Envelope
from shared.models import Outbox, utcnow
from shared.mqtt import address_of, effective_mqtt_url, make_client
from shared.ops_metrics import count_published

log = logging.getLogger(__name__)

OUTBOX_BATCH = 10_000  # messages read, published and marked at a time
PUBLISH_WINDOW = 100  # at most the client's MAX_INFLIGHT (shared.mqtt)
T = TypeVar("T")


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
        payload=event.model_dump_json(),
        retain=retain,
    )
    session.add(row)
    return row


async def publish_pending(
    *, sessions: async_sessionmaker[AsyncSession], client: aiomqtt.Client, producer: str | None = None
) -> int:
    """Publish every unpublished event in order (only `producer`'s, when given); each batch is marked
    published once the broker has acknowledged all of it (QoS 1). A crash in between republishes the
    batch: delivery is at least once, and consumers drop duplicates by event_id. Raises aiomqtt.MqttError
    if the broker goes away.

    With per-service broker users, pass `producer`: the ACL silently drops another service's topics (the
    broker still acknowledges them), so publishing them would mark them done and lose them.
    """
    published = 0
    while True:
        async with sessions() as session:
            # the columns, not Outbox objects: a week's 100,000 messages spent seconds becoming objects
            columns = select(col(Outbox.id), col(Outbox.topic), col(Outbox.payload), col(Outbox.retain))
            query = columns.where(col(Outbox.published_at).is_(None))
            if producer is not None:
                query = query.where(col(Outbox.producer) == producer)
            query = query.order_by(col(Outbox.id)).limit(OUTBOX_BATCH)
            rows = (await session.exec(query)).all()
        if not rows:
            return published
        ids = [row_id for row_id, _, _, _ in rows]
        topics = [topic for _, topic, _, _ in rows]
        messages = [(topic, wire_payload(i, payload, retain), retain) for i, topic, payload, retain in rows]
        await publish_in_order(client, messages)
        async with sessions() as session:
            await session.exec(
                update(Outbox)
                .where(col(Outbox.id).in_(ids))
                .values(published_at=utcnow(), attempts=Outbox.attempts + 1)
            )
            await session.commit()
        published += len(rows)
        count_published(topics)
        log.info("published %d outbox event(s), last #%s on %s", len(rows), ids[-1], topics[-1])


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
    *, sessions: async_sessionmaker[AsyncSession], client: aiomqtt.Client, topic: str, producer: str
) -> int:
    """Publish again the latest published state on `topic` and the retained messages staged with it
    (`producer`'s, in the same transaction: its per-song topics): a broker that crashed may have
    restored an older save of them. Same payloads and versions: consumers holding them see duplicates."""
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
        batch = select(Outbox).where(
            col(Outbox.id) >= latest,
            col(Outbox.producer) == producer,
            col(Outbox.retain).is_(True),
            col(Outbox.published_at).is_not(None),
        )
        rows = [
            row
            for row in (await session.exec(batch.order_by(col(Outbox.id)))).all()
            if row.id == latest or row.topic != topic
        ]
    await publish_in_order(
        client, [(row.topic, wire_payload(row.id, row.payload, True), True) for row in rows]
    )
    log.info("republished the latest retained state of %s (%d message(s))", topic, len(rows))
    return len(rows)


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
    result: T, *, settings: Settings, sessions: async_sessionmaker[AsyncSession], service: str
) -> T:
    """A one-shot run's last step: publish its pending events (no connection when there are none) and
    return `result`; an unreachable broker raises BrokerUnavailable carrying `result` and the count."""
    pending = await pending_events(sessions=sessions, producer=service)
    if pending:
        try:
            await flush_outbox(settings=settings, sessions=sessions, service=service)
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(str(exc), result=result, pending=pending) from None
    return result


async def flush_outbox(
    *, settings: Settings, sessions: async_sessionmaker[AsyncSession], service: str
) -> int:
    """Connect, publish every pending event `service` produced, disconnect. Raises BrokerUnavailable with
    a clear message."""
    try:
        # A publisher only: the service's status (and its last will) is the job of `stay_present`.
        async with make_client(settings, service, announce=False) as client:
            return await publish_pending(sessions=sessions, client=client, producer=service)
    except aiomqtt.MqttError as exc:
        raise BrokerUnavailable(
            f"MQTT broker {redact_url(effective_mqtt_url(settings))} is unreachable ({exc}); the data is "
            "committed and its events wait in the outbox, to be published on the next connection"
        ) from None
