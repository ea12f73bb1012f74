"""MQTT plumbing shared by the services: clients from settings, JSON publishing, a resilient consumer
loop, and the embedded broker used when no `SONGPOP_MQTT_URL` is set."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import aiomqtt
from pydantic import BaseModel, ValidationError

from shared.config import Settings
from shared.events import QOS, SCHEMA_VERSION, Envelope, ServiceStatus, Topics, envelope, parse, preview
from shared.metrics import MQTT_RECEIVED, MQTT_REJECTED

log = logging.getLogger(__name__)

Handler = Callable[[aiomqtt.Message], Awaitable[None]]
D = TypeVar("D", bound=BaseModel)
EventHandler = Callable[[Envelope[D], aiomqtt.Message], Awaitable[None]]


@dataclass(frozen=True)
class Route(Generic[D]):
    topic_filter: str
    model: type[D]
    handler: EventHandler[D]


class TopicRouter:
    """Topic filter -> (event model, handler), the one place where a consumer's messages are parsed, their
    schema version checked and rejects counted (`songpop_mqtt_rejected_total`). A handler receives a
    validated envelope of its route's model; malformed or foreign-version messages never reach it."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.rejected = 0
        self._routes: list[Route[Any]] = []

    def on(self, topic_filter: str, model: type[D], handler: EventHandler[D]) -> None:
        """Send messages on `topic_filter` (MQTT wildcards allowed) to `handler` as `Envelope[model]`."""
        self._routes.append(Route(topic_filter, model, handler))

    async def __call__(self, message: aiomqtt.Message) -> None:
        route = next((r for r in self._routes if message.topic.matches(r.topic_filter)), None)
        if route is None:
            return
        topic = str(message.topic)
        MQTT_RECEIVED.labels(self.service, topic.rsplit("/", 1)[-1]).inc()
        payload = message.payload if isinstance(message.payload, bytes | str) else b""
        if not payload:  # an emptied retained topic (its state was cleared): nothing to handle
            return
        try:
            event = parse(payload, route.model)
        except ValidationError as exc:
            self._reject(topic, f"malformed: {exc.error_count()} validation errors", payload)
            return
        if event.schema_version != SCHEMA_VERSION:
            self._reject(topic, f"schema version {event.schema_version} not understood", payload)
            return
        await route.handler(event, message)

    def _reject(self, topic: str, why: str, payload: bytes | str) -> None:
        self.rejected += 1
        MQTT_REJECTED.labels(self.service).inc()
        log.warning("%s: skipped a message on %s (%s): %s", self.service, topic, why, preview(payload))


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False


MAX_INFLIGHT = 100  # QoS 1 messages sent and not yet acknowledged


def broker_address(url: str) -> BrokerAddress:
    """Parse `mqtt://user:pw@host:port` (or `mqtts://`)."""
    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if tls else 1883),
        username=parts.username,
        password=parts.password,
        tls=tls,
    )


def effective_mqtt_url(settings: Settings) -> str:
    """The configured broker, or the embedded one on its fixed local port."""
    return settings.mqtt_url or f"mqtt://127.0.0.1:{settings.mqtt_embedded_port}"


def topics(settings: Settings) -> Topics:
    return Topics(settings.mqtt_topic_root)


def client_id(settings: Settings, service: str, *, unique: bool = False) -> str:
    """A stable id per service and host (persistent sessions survive restarts), or a unique one."""
    suffix = uuid.uuid4().hex[:8] if unique else socket.gethostname()
    return f"{settings.mqtt_client_prefix}-{service}-{suffix}"[:128]


def status_payload(service: str, state: str) -> bytes:
    return envelope(service, ServiceStatus(service=service, state=state)).model_dump_json().encode()


def make_client(
    settings: Settings,
    service: str,
    *,
    persistent: bool = False,
    identifier: str | None = None,
    announce: bool = True,
) -> aiomqtt.Client:
    """A client for `service`; with `announce`, its last will marks it `offline` (retained)."""
    address = broker_address(effective_mqtt_url(settings))
    will = (
        aiomqtt.Will(
            topics(settings).status(service), status_payload(service, "offline"), qos=QOS, retain=True
        )
        if announce
        else None
    )
    client = aiomqtt.Client(
        address.host,
        address.port,
        username=address.username,
        password=address.password,
        identifier=identifier or client_id(settings, service, unique=not persistent),
        clean_session=not persistent,
        will=will,
        tls_params=aiomqtt.TLSParameters() if address.tls else None,
        timeout=10,
        max_inflight_messages=MAX_INFLIGHT,  # paho's default of 20 caps shared.outbox's publishing window
    )
    # publishing with a window keeps up to MAX_INFLIGHT calls pending: not worth aiomqtt's warning each
    client.pending_calls_threshold = 2 * MAX_INFLIGHT
    _addresses[client] = address
    return client


_addresses: weakref.WeakKeyDictionary[aiomqtt.Client, BrokerAddress] = weakref.WeakKeyDictionary()


def address_of(client: aiomqtt.Client) -> BrokerAddress | None:
    """The broker address and credentials `client` was made with (by `make_client`; None otherwise)."""
    return _addresses.get(client)


async def publish_model(
    client: aiomqtt.Client, topic: str, message: BaseModel, *, retain: bool = False
) -> None:
    """Publish a pydantic model (normally an Envelope) as JSON at QoS 1."""
    await client.publish(topic, message.model_dump_json().encode(), qos=QOS, retain=retain)


async def announce_online(client: aiomqtt.Client, settings: Settings, service: str) -> None:
    await client.publish(
        topics(settings).status(service), status_payload(service, "online"), qos=QOS, retain=True
    )


OFFLINE_ANNOUNCE_SECONDS = 3.0  # a clean stop waits at most this long for the broker


async def announce_offline(client: aiomqtt.Client, settings: Settings, service: str) -> None:
    """Say `offline` ourselves on a clean stop: the broker sends the last will only for a client that
    vanished, so without this the retained status would stay `online`."""
    try:
        async with asyncio.timeout(OFFLINE_ANNOUNCE_SECONDS):
            await client.publish(
                topics(settings).status(service), status_payload(service, "offline"), qos=QOS, retain=True
            )
    except (aiomqtt.MqttError, TimeoutError) as exc:
        log.warning("%s: could not announce offline (%s); the retained status may say online", service, exc)


async def stay_present(settings: Settings, service: str) -> None:
    """The status of a long-running service that consumes nothing (ingestor, trainer): one connection saying
    `online` (retained) while the service runs, `offline` by its last will if the service vanishes, and by
    itself on a clean stop (cancellation). Reconnects with backoff. Runs until cancelled."""
    failures = 0
    while True:
        try:
            async with make_client(settings, service) as client:
                failures = 0
                await announce_online(client, settings, service)
                log.info("%s connected to MQTT: status online", service)
                try:
                    async for _ in client.messages:  # nothing subscribed: returns only when the link breaks
                        pass
                except asyncio.CancelledError:
                    await announce_offline(client, settings, service)
                    raise
        except aiomqtt.MqttError as exc:
            delay = reconnect_delay(settings.mqtt_reconnect_seconds, failures)
            failures += 1
            log.warning("%s: status connection lost (%s); reconnecting in %.1fs", service, exc, delay)
            await asyncio.sleep(delay)


async def consume_forever(
    settings: Settings,
    service: str,
    subscriptions: Sequence[str],
    handle: Handler,
    *,
    persistent: bool = True,
    on_connect: Callable[[aiomqtt.Client], Awaitable[None]] | None = None,
    announce: bool = True,
) -> None:
    """Subscribe and hand every message to `handle`, reconnecting with backoff when the broker goes away.

    A handler that raises is logged and the message skipped: one bad message never stops a service.
    With `announce=False` the client publishes nothing (no status, no last will): read-only users.
    Runs until cancelled.
    """
    failures = 0
    while True:
        try:
            async with make_client(settings, service, persistent=persistent, announce=announce) as client:
                failures = 0
                if announce:
                    await announce_online(client, settings, service)
                for topic in subscriptions:
                    await client.subscribe(topic, qos=QOS)
                log.info("%s connected to MQTT, subscribed to %s", service, ", ".join(subscriptions))
                if on_connect:
                    try:
                        await on_connect(client)
                    except aiomqtt.MqttError:
                        raise
                    except Exception:  # e.g. the database is down: keep consuming, catch up later
                        log.exception("%s: on-connect step failed; consuming anyway", service)
                async for message in client.messages:
                    if not subscribed_to(message.topic, subscriptions):
                        # Some brokers (amqtt, the embedded one) deliver retained messages of other topics.
                        log.debug("%s: ignored a message on unsubscribed %s", service, message.topic)
                        continue
                    try:
                        await handle(message)
                    except Exception:
                        log.exception("%s: handling a message on %s failed; skipped", service, message.topic)
        except aiomqtt.MqttError as exc:
            delay = reconnect_delay(settings.mqtt_reconnect_seconds, failures)
            failures += 1
            log.warning("%s: MQTT connection lost (%s); reconnecting in %.1fs", service, exc, delay)
            await asyncio.sleep(delay)


RECONNECT_MAX_SECONDS = 60.0
SHARED_PREFIX = "$share/"


def subscribed_to(topic: aiomqtt.Topic, subscriptions: Sequence[str]) -> bool:
    """Whether `topic` matches one of the filters (shared subscriptions match their inner filter)."""
    for subscription in subscriptions:
        if subscription.startswith(SHARED_PREFIX):
            subscription = subscription.split("/", 2)[2]
        if topic.matches(subscription):
            return True
    return False


def reconnect_delay(base: float, failures: int, *, cap: float = RECONNECT_MAX_SECONDS) -> float:
    """Exponential backoff with jitter: about base, 2*base, 4*base... up to `cap`, never below base/2."""
    ceiling = min(cap, base * 2 ** min(failures, 16))
    return max(base / 2, random.uniform(ceiling / 2, ceiling))


class ProbeNoise(logging.Filter):
    """A readiness probe (`broker_reachable`) connects and leaves without speaking MQTT; amqtt logs an error
    and a warning for each one, which under a probe every few seconds would bury the real messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No data to decode MQTT packet fixed header" not in record.getMessage()


class EmbeddedBroker:
    """An in-process MQTT broker (amqtt) for `songpop up` and for tests on machines without Mosquitto."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker_log = logging.getLogger("amqtt.broker")
        if not any(isinstance(f, ProbeNoise) for f in broker_log.filters):
            broker_log.addFilter(ProbeNoise())
        self._broker = Broker(config)
        await self._broker.start()
        log.info("embedded MQTT broker listening on %s", self.url)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None


async def broker_reachable(settings: Settings, *, within: float = 2.0) -> bool:
    """True when the broker accepts a TCP connection (readiness checks; no MQTT session is opened)."""
    address = broker_address(effective_mqtt_url(settings))
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address.host, address.port), within)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True
