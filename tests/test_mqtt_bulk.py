"""The fast publishing path (`shared.mqtt_bulk`) against the plain one it replaces for large batches: the
same messages, in the same order, acknowledged before it returns; failures surface as the outbox expects."""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import pytest

from shared import mqtt_bulk
from shared.mqtt import BrokerAddress, address_of, broker_address, effective_mqtt_url, make_client, topics
from shared.outbox import publish_each, publish_in_order
from tests.predictor_support import messages_until

N = 2 * mqtt_bulk.MIN_MESSAGES


async def _received(settings: Any, publish: Any, topic: str) -> list[tuple[str, bytes, bool]]:
    """What a subscriber gets of N messages published by `publish(client, messages)`."""
    messages = [(f"{topic}/{i % 7}", f"message {i}".encode(), False) for i in range(N)]
    async with make_client(settings, "test-sub", announce=False) as sub:
        await sub.subscribe(f"{topic}/#", qos=1)
        async with make_client(settings, "predictor", announce=False) as pub:
            await publish(pub, messages)
        got = await messages_until(sub, lambda got: len(got) >= N)
    return [(str(m.topic), bytes(m.payload), bool(m.retain)) for m in got]


async def test_a_large_batch_takes_the_bulk_path_and_arrives_in_order(settings, monkeypatch) -> None:
    calls: list[int] = []
    original = mqtt_bulk.BulkPublisher.publish

    async def counting(self: mqtt_bulk.BulkPublisher, messages: Any) -> None:
        calls.append(len(messages))
        await original(self, messages)

    monkeypatch.setattr(mqtt_bulk.BulkPublisher, "publish", counting)
    monkeypatch.setattr(mqtt_bulk, "WINDOW", 50)  # many windows in one batch
    root = topics(settings).root
    bulk = await _received(settings, publish_in_order, f"{root}/bulk")
    plain = await _received(settings, publish_each, f"{root}/bulk")
    assert calls == [N]
    assert bulk == plain and [p for _, p, _ in bulk] == [f"message {i}".encode() for i in range(N)]


async def test_the_bulk_connection_uses_the_clients_address(settings) -> None:
    client = make_client(settings, "predictor", announce=False)
    assert address_of(client) == broker_address(effective_mqtt_url(settings))
    assert address_of(aiomqtt.Client("127.0.0.1", 1)) is None  # not ours: the plain path


async def test_bulk_failures_raise() -> None:
    with pytest.raises(ValueError, match="topic"):
        mqtt_bulk.publish_packet("bad/#", b"x", False, 1)
    with pytest.raises(aiomqtt.MqttError):  # nothing listens there
        async with mqtt_bulk.BulkPublisher(BrokerAddress("127.0.0.1", 1)):
            pass


async def test_a_broker_that_stops_answering_fails_the_batch(monkeypatch) -> None:
    """A broker that accepts the connection but never acknowledges: the batch raises, nothing hangs."""
    monkeypatch.setattr(mqtt_bulk, "ACK_SECONDS", 0.5)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(bytes([0x20, 2, 0, 0]))  # CONNACK, accepted
        await writer.drain()
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, mqtt_bulk.BulkPublisher(BrokerAddress("127.0.0.1", port)) as publisher:
        with pytest.raises(aiomqtt.MqttError, match="acknowledgement"):
            await asyncio.wait_for(publisher.publish([("a/b", b"1", True)] * 10), 10)
