"""The dashboard's websocket connections under uvicorn: its protocol, plus a way to cut a page that
stopped reading.

A page that stops reading fills the socket buffers (megabytes of unsent messages). Closing such a
connection the usual way keeps it: asyncio waits for its own buffer to drain before closing the socket,
and the kernel keeps a closed socket's unsent data while it retries delivery. So the app resets it
instead: it calls the `RESET_EXTENSION` callable this protocol puts in the ASGI scope's extensions, and
the connection ends with a TCP reset (SO_LINGER 0) as soon as the app is done with it, freeing both
buffers. Without this protocol (another uvicorn protocol, or a test client) the extension is absent and
connections end the usual way.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Any

log = logging.getLogger(__name__)

RESET_EXTENSION = "songpop.websocket.reset"
LINGER_ZERO = struct.pack("ii", 1, 0)  # on close, discard unsent data and send RST
RESET_GRACE_SECONDS = 1.0  # for the close frame to reach a page that still reads

try:  # uvicorn's protocol for the `websockets` package (its default when that package is installed)
    from uvicorn.protocols.websockets.websockets_sansio_impl import (
        WebSocketsSansIOProtocol as _UvicornProtocol,
    )
except ImportError:  # pragma: no cover - uvicorn moved it: its default protocol, without resets
    _UvicornProtocol = None  # type: ignore[assignment, misc]


def reset_when_closed(transport: asyncio.BaseTransport) -> bool:
    """Make the closing of `transport` a reset that frees its unsent data; False if it has no socket."""
    sock = transport.get_extra_info("socket")
    if sock is None or transport.is_closing():
        return False
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
    return True


if _UvicornProtocol is not None:

    class ResettableWebSocketProtocol(_UvicornProtocol):
        """uvicorn's websocket protocol, whose connections the app can ask to end with a reset."""

        _reset = False

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)
            if scope is not None:  # the handshake was accepted and the app is about to start
                scope["extensions"][RESET_EXTENSION] = self._ask_reset

        def _ask_reset(self) -> None:
            self._reset = reset_when_closed(self.transport)

        async def run_asgi(self) -> None:
            await super().run_asgi()
            if self._reset:  # a page still reading gets its close frame within the grace; others don't
                asyncio.get_running_loop().call_later(RESET_GRACE_SECONDS, self._abort)

        def _abort(self) -> None:
            if not getattr(self, "disconnected", False):
                log.info("reset a websocket connection whose page stopped reading")
            self.transport.abort()  # nothing when the connection is gone already

    WS_PROTOCOL: Any = ResettableWebSocketProtocol
else:  # pragma: no cover
    WS_PROTOCOL = "auto"


def ask_reset(scope: Any) -> None:
    """From the app: end this websocket connection with a reset once the app is done with it."""
    reset = scope.get("extensions", {}).get(RESET_EXTENSION)
    if callable(reset):
        reset()


# How the dashboard's uvicorn serves websockets (`services.dashboard.main.server` and `songpop up`).
UVICORN_WS_OPTIONS: dict[str, Any] = {
    "ws": WS_PROTOCOL,
    "ws_max_size": 64 * 1024,  # pages send nothing of substance; refuse big frames
    "ws_ping_interval": 20.0,
    "ws_ping_timeout": 20.0,
}
