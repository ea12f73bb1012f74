"""A page that never reads is disconnected and its unsent data freed (issue 12, item 5; past the cap a
page is closed with 1013: tests/test_dashboard.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from services.dashboard.live import Hub
from shared.config import Settings
from tests.dashboard_support import dashboard_settings, running_dashboard

BIG = json.dumps({"type": "noise", "pad": "x" * 65_536})  # a week's predictions are about this big
LISTEN, TIME_WAIT = "0A", "06"


def server_side_connections(port: int) -> int:
    """Open TCP connections whose local end is `port` (the server's side), from the kernel's table."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port, state = int(fields[1].rsplit(":", 1)[1], 16), fields[3]
            if local_port == port and state not in (LISTEN, TIME_WAIT):
                count += 1
    return count


async def never_reading_client(port: int) -> socket.socket:
    """A websocket client that completes the handshake and then never reads a byte."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")  # fmt: skip
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the kernel's TCP table")
async def test_a_page_that_never_reads_is_disconnected_and_freed(settings: Settings) -> None:
    dashboard = dashboard_settings(settings, dashboard_ws_queue=8, dashboard_ws_send_timeout_seconds=1.0)
    async with running_dashboard(dashboard) as running:
        hub: Hub = running.app.state.hub
        port = dashboard.dashboard_port
        stuck = await never_reading_client(port)
        try:
            async with asyncio.timeout(30):
                while len(hub) == 0:  # noqa: ASYNC110 - the server registers the page
                    await asyncio.sleep(0.02)
                while hub.dropped_total == 0:  # far more than the socket buffers hold
                    hub.broadcast(BIG)
                    await asyncio.sleep(0.002)
            assert server_side_connections(port) == 1  # dropped from the hub, but still connected
            async with asyncio.timeout(15):
                while server_side_connections(port):  # noqa: ASYNC110 - the server aborts it
                    await asyncio.sleep(0.1)
            assert len(hub) == 0
            # The server holds no page any more: a new one gets its place and its messages.
            async with connect(running.ws_url) as page:
                assert json.loads(await page.recv())["type"] == "hello"
                hub.broadcast(json.dumps({"type": "noise", "n": 1}))
                assert json.loads(await page.recv()) == {"type": "noise", "n": 1}
        finally:
            stuck.close()
