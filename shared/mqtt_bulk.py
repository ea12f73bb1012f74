"""The fast path of `shared.outbox.publish_in_order` for large batches: the same messages, in the same
order, at QoS 1, on a connection of its own that speaks just enough MQTT 3.1.1 to publish.

Through aiomqtt and paho each message costs a task, a future, paho's packet objects and its locks: about
100 us of Python per message, so a week's 100,000 per-song messages took 10 s or more (`make
bench-scale`). Here the PUBLISH packets are plain bytes written in large writes, with up to `WINDOW`
messages awaiting the broker's PUBACK at once (bounded like the plain path's window, only larger), and
the PUBACKs are read in bulk and checked against the packet ids in flight. A batch returns when the
broker has acknowledged every message of it, as the plain path does.

The connection uses the client's own broker address and credentials (`shared.mqtt.make_client` records
them), a clean session and an identifier of its own, and no last will; a broker that refuses it, goes
away or answers out of protocol raises `aiomqtt.MqttError`, which the outbox treats as the plain path's
failures (the batch stays unpublished and is sent again). `SONGPOP_BULK_PUBLISH=0` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import struct
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any

import aiomqtt

from shared.mqtt import BrokerAddress

ENABLED = os.environ.get("SONGPOP_BULK_PUBLISH", "1") != "0"
MIN_MESSAGES = 200  # below this the plain path is as fast
WINDOW = 2000  # messages awaiting their PUBACK at once (packet ids are 16 bits: well below 65,535)
WRITE_BYTES = 256 * 1024  # packets gathered per write
CONNECT_SECONDS = 10.0
ACK_SECONDS = 30.0  # the longest wait for the broker's next acknowledgement

_CONNECT, _CONNACK, _PUBLISH, _PUBACK, _DISCONNECT = 0x10, 0x20, 0x30, 0x40, 0xE0
_QOS1 = 0x02


def _varint(n: int) -> bytes:
    """MQTT's remaining-length encoding: 7 bits a byte, high bit set when more follow."""
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, address: BrokerAddress, keepalive: int = 60) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session, no will."""
    flags = (
        0x02 | (0x80 if address.username is not None else 0) | (0x40 if address.password is not None else 0)
    )
    body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _string(client_id)
    if address.username is not None:
        body += _string(address.username)
    if address.password is not None:
        body += _string(address.password)
    return bytes([_CONNECT]) + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, retain: bool, packet_id: int) -> bytes:
    """PUBLISH at QoS 1."""
    name = topic.encode()
    if not name or len(name) > 65535 or "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError(f"not a topic one can publish to: {topic!r}")
    header = bytes([_PUBLISH | _QOS1 | (1 if retain else 0)])
    return (
        header
        + _varint(2 + len(name) + 2 + len(payload))
        + _string(name)
        + struct.pack("!H", packet_id)
        + payload
    )


class BulkPublisher:
    """One connection to the broker for publishing batches; use as an async context manager."""

    def __init__(self, address: BrokerAddress) -> None:
        self.address = address
        self.client_id = f"songpop-bulk-{uuid.uuid4().hex[:12]}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 0

    async def __aenter__(self) -> BulkPublisher:
        context = ssl.create_default_context() if self.address.tls else None
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                self._reader, self._writer = await asyncio.open_connection(
                    self.address.host, self.address.port, ssl=context
                )
                self._writer.write(connect_packet(self.client_id, self.address))
                await self._writer.drain()
                answer = await self._reader.readexactly(4)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            await self._close()
            raise aiomqtt.MqttError(f"bulk publishing: cannot connect to the broker ({exc!r})") from exc
        if answer[0] != _CONNACK or answer[3] != 0:
            await self._close()
            raise aiomqtt.MqttError(
                f"bulk publishing: the broker refused the connection (CONNACK {answer.hex()})"
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(bytes([_DISCONNECT, 0]))
        await self._close()

    async def _close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def publish(self, messages: Sequence[tuple[str, bytes, bool]]) -> None:
        """Publish (topic, payload, retain) messages at QoS 1 in order; return once the broker has
        acknowledged all of them. Raises aiomqtt.MqttError if the connection fails."""
        if self._reader is None or self._writer is None:
            raise aiomqtt.MqttError("bulk publishing: not connected")
        in_flight: set[int] = set()  # packet ids sent and not yet acknowledged
        room = asyncio.Event()
        acks = asyncio.create_task(self._read_acks(in_flight, room, len(messages)))
        try:
            await self._send(messages, in_flight, room, acks)
            await acks
        finally:
            acks.cancel()
            await asyncio.gather(acks, return_exceptions=True)  # its failure is raised by `await acks`

    async def _send(
        self,
        messages: Sequence[tuple[str, bytes, bool]],
        in_flight: set[int],
        room: asyncio.Event,
        acks: asyncio.Task[None],
    ) -> None:
        assert self._writer is not None
        gathered: list[bytes] = []
        size = 0
        for topic, payload, retain in messages:
            while len(in_flight) >= WINDOW:
                await self._flush(gathered)
                gathered, size = [], 0
                room.clear()
                await _first_of(room.wait(), acks)
            self._next_id = self._next_id % 65535 + 1
            in_flight.add(self._next_id)
            gathered.append(publish_packet(topic, payload, retain, self._next_id))
            size += len(gathered[-1])
            if size >= WRITE_BYTES:
                await self._flush(gathered)
                gathered, size = [], 0
        await self._flush(gathered)

    async def _flush(self, packets: list[bytes]) -> None:
        assert self._writer is not None
        if packets:
            try:
                self._writer.write(b"".join(packets))
                await self._writer.drain()
            except (OSError, ssl.SSLError) as exc:
                raise aiomqtt.MqttError(f"bulk publishing: connection lost ({exc!r})") from exc

    async def _read_acks(self, in_flight: set[int], room: asyncio.Event, expected: int) -> None:
        """Read PUBACKs until `expected` messages are acknowledged; each must name a packet in flight."""
        assert self._reader is not None
        acknowledged = 0
        while acknowledged < expected:
            try:
                async with asyncio.timeout(ACK_SECONDS):
                    data = await self._reader.read(64 * 1024)
                    while len(data) % 4:  # PUBACKs are 4 bytes: read up to a whole number of them
                        data += await self._reader.readexactly(4 - len(data) % 4)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                raise aiomqtt.MqttError(
                    f"bulk publishing: no acknowledgement from the broker ({exc!r})"
                ) from exc
            if not data:
                raise aiomqtt.MqttError("bulk publishing: the broker closed the connection")
            for offset in range(0, len(data), 4):
                kind, length, packet_id = struct.unpack_from("!BBH", data, offset)
                if kind != _PUBACK or length != 2 or packet_id not in in_flight:
                    raise aiomqtt.MqttError(
                        f"bulk publishing: unexpected packet {data[offset : offset + 4].hex()}"
                    )
                in_flight.discard(packet_id)
            acknowledged += len(data) // 4
            room.set()


async def _first_of(wait: Coroutine[Any, Any, Any], task: asyncio.Task[None]) -> None:
    """Wait for `wait` or for `task` to end; a failed `task` raises here."""
    waiter = asyncio.ensure_future(wait)
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        task.result()
