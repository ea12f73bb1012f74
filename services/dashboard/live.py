"""Live updates: MQTT prediction messages fanned out to every open page over bounded per-client queues.

Each websocket client gets a queue of at most `queue_size` messages. A client that falls that far behind
is dropped (its page reconnects and resyncs from the REST view), so memory stays bounded however slow
or numerous the clients are. A message is serialised once and shared by every queue.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from shared.events import (
    Envelope,
    ModelUpdated,
    PredictionsLatest,
    ServiceStatus,
    Topics,
)
from shared.models import utcnow
from shared.mqtt import TopicRouter

from .service import TrendingRow, row_from_message

log = logging.getLogger(__name__)

CLOSE_TOO_SLOW = 1013  # "try again later": the page reconnects and resyncs


@dataclass(eq=False)
class Subscriber:
    """One websocket client's outgoing queue; `dropped` is set when it fell too far behind."""

    queue: asyncio.Queue[str]
    dropped: asyncio.Event = field(default_factory=asyncio.Event)


class Hub:
    """Fan-out of text messages to subscribers with bounded queues; slow subscribers are dropped."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._subscribers: set[Subscriber] = set()
        self.dropped_total = 0
        self.broadcast_total = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(queue=asyncio.Queue(maxsize=self.queue_size))
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def broadcast(self, text: str) -> int:
        """Queue `text` for every subscriber; returns how many got it. Full queues drop their client."""
        delivered = 0
        for subscriber in list(self._subscribers):
            try:
                subscriber.queue.put_nowait(text)
                delivered += 1
            except asyncio.QueueFull:
                self._drop(subscriber)
        self.broadcast_total += 1
        return delivered

    def close(self) -> None:
        """Release every subscriber (server shutting down)."""
        for subscriber in list(self._subscribers):
            self._drop(subscriber, counted=False)

    def _drop(self, subscriber: Subscriber, *, counted: bool = True) -> None:
        self._subscribers.discard(subscriber)
        subscriber.dropped.set()
        # Free the backlog now rather than when the connection finally closes.
        while not subscriber.queue.empty():
            subscriber.queue.get_nowait()
        if counted:
            self.dropped_total += 1
            log.info("dropped a websocket client that fell %d messages behind", self.queue_size)


def _key(row: TrendingRow) -> tuple[str, str, str]:
    return row.track_id, row.signal, row.region


def _fingerprint(row: TrendingRow) -> str:
    return row.model_dump_json(include={"current", "rank", "f26", "f52", "name", "artists", "demo"})


@dataclass
class ServiceSeen:
    state: str
    at: dt.datetime


class LiveFeed:
    """Turns MQTT messages into page updates and remembers what the status page shows about services."""

    def __init__(self, hub: Hub, topics: Topics) -> None:
        self.hub = hub
        self.topics = topics
        self.services: dict[str, ServiceSeen] = {}
        self.last_event_id: str | None = None
        self.last_received_at: dt.datetime | None = None
        self.connected_at: dt.datetime | None = None
        self.connected = asyncio.Event()  # set once subscribed: updates published from now on arrive
        self._sent: dict[tuple[str, str, str], str] = {}  # rows of the last message, to send only changes
        self._held: tuple[dt.date, int | None] | None = None  # week and version of the predictions held
        self.stale_ignored = 0
        self._models_seen: set[str] = set()  # model events already announced (retained ones come back)
        self.handle = self._router()  # consume_forever's message handler

    @property
    def subscriptions(self) -> list[str]:
        return [self.topics.predictions_latest, self.topics.model_updated, f"{self.topics.root}/status/+"]

    async def on_connect(self, client: aiomqtt.Client) -> None:
        self.connected_at = utcnow()
        self.connected.set()

    @property
    def malformed(self) -> int:
        """Messages skipped as malformed or of a schema version this dashboard does not understand."""
        return self.handle.rejected

    def _router(self) -> TopicRouter:
        """The feed's topics and what each becomes; parsing, version checks and rejects are the router's."""
        router = TopicRouter("dashboard")
        router.on(self.topics.predictions_latest, PredictionsLatest, self._on_predictions)
        router.on(self.topics.model_updated, ModelUpdated, self._on_model)
        router.on(f"{self.topics.root}/status/+", ServiceStatus, self._on_status)
        return router

    async def _on_predictions(self, event: Envelope[PredictionsLatest], message: aiomqtt.Message) -> None:
        if self._older_than_held(event):
            return
        self._held = (event.data.week, event.version)
        rows = {_key(r): r for r in map(row_from_message, event.data.predictions)}
        fresh = {key: _fingerprint(row) for key, row in rows.items()}
        changed = [row for key, row in rows.items() if self._sent.get(key) != fresh[key]]
        self._sent = fresh  # bounded by the size of one message
        self.last_event_id, self.last_received_at = event.event_id, utcnow()
        if changed:
            self.hub.broadcast(predictions_message(changed, event_id=event.event_id, week=event.data.week))

    def _older_than_held(self, event: Envelope[PredictionsLatest]) -> bool:
        """An older state than the one held: a broker that crashed restores its last save of the retained
        message on reconnection (an older week, or an older version of the same week)."""
        if self._held is None:
            return False
        week, version = self._held
        older_version = event.version is not None and version is not None and event.version < version
        older = event.data.week < week or (event.data.week == week and older_version)
        if older:
            self.stale_ignored += 1
            log.warning(
                "ignored an older predictions state (week %s, version %s; holding week %s, version %s)",
                event.data.week, event.version, week, version,
            )  # fmt: skip
        return older

    async def _on_model(self, event: Envelope[ModelUpdated], message: aiomqtt.Message) -> None:
        if event.event_id in self._models_seen:
            return
        self._models_seen.add(event.event_id)
        self.hub.broadcast(
            json.dumps(
                {
                    "type": "model",
                    **event.data.model_dump(
                        mode="json", include={"version", "signal", "horizon_weeks", "kind", "demo"}
                    ),
                }
            )
        )

    async def _on_status(self, event: Envelope[ServiceStatus], message: aiomqtt.Message) -> None:
        """A status delivered live (not a retained copy) happened now: an `offline` last will carries the
        time its service connected (the broker publishes the envelope it was given then)."""
        at = event.occurred_at if message.retain else utcnow()
        self.services[event.data.service] = ServiceSeen(state=event.data.state, at=at)


def predictions_message(rows: list[TrendingRow], *, event_id: str | None, week: dt.date | None) -> str:
    """The websocket message carrying updated rows (the page's one update format)."""
    body: dict[str, Any] = {
        "type": "predictions",
        "event_id": event_id,
        "week": week.isoformat() if week else None,
        "rows": [r.model_dump(mode="json", exclude={"trend"}) for r in rows],
    }
    return json.dumps(body, separators=(",", ":"))


def hello_message(feed: LiveFeed) -> str:
    """Sent when a page connects: which predictions event the server saw last, so the page can resync."""
    return json.dumps({"type": "hello", "event_id": feed.last_event_id})
