"""Embedded stand-ins for one-shot commands (`songpop ingest ...`) on the embedded defaults.

`songpop up` runs the Spotify emulator itself; a one-shot command without Spotify credentials talks to the
emulator's fixed address, and when nothing answers there it runs one in-process (on a free local port) for
the length of the command, so a new user's first `songpop ingest init` works without a second terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import TypeVar
from urllib.parse import urlsplit

from services.demo_history import quiet
from services.emulator import EmulatorConfig
from services.emulator import create_app as create_emulator
from services.stack import http_server
from shared.config import Settings
from shared.weeks import current_week

log = logging.getLogger(__name__)
S = TypeVar("S", bound=Settings)
PROBE_SECONDS = 1.0


async def answers(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def on_default_emulator(settings: Settings) -> bool:
    """No credentials and no Spotify URL set: the emulator's fixed local address is the Spotify API."""
    return settings.uses_emulator and not settings.spotify_api_url and not settings.spotify_accounts_url


@contextlib.asynccontextmanager
async def emulator_when_absent(settings: S) -> AsyncIterator[S]:
    """The settings a one-shot command should use: unchanged, unless they point at the emulator's default
    address and none answers there; then an emulator runs in-process on a free local port while the block
    runs, and the yielded settings point at it. (A free port, not the default one: two commands at once,
    or another user's on this host, never meet on it.)"""
    api = urlsplit(settings.effective_spotify_api_url)
    if not on_default_emulator(settings) or await answers(api.hostname or "127.0.0.1", api.port or 80):
        yield settings
        return
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # bound here, so no other process can take the port in between
    port = listener.getsockname()[1]
    app = create_emulator(EmulatorConfig(mode="extended", start_week=current_week()))  # as `up`'s
    server = http_server(app, "127.0.0.1", port)
    with quiet("uvicorn.error", "uvicorn.access"):
        task = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the Spotify emulator stopped during start-up")
            await asyncio.sleep(0.02)
        log.info("no Spotify emulator on %s: running one in-process on port %d (demo data)", api.netloc, port)
        url = f"http://127.0.0.1:{port}"
        try:
            yield settings.model_copy(update={"spotify_api_url": f"{url}/v1", "spotify_accounts_url": url})
        finally:
            server.should_exit = True
            await task
            listener.close()
