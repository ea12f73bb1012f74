"""Embedded stand-ins for one-shot commands (`songpop ingest ...`) on the embedded defaults.

`songpop up` runs the Spotify emulator itself; a one-shot command without Spotify credentials talks to the
emulator's fixed address, and when nothing answers there it runs one in-process for the length of the
command, so a new user's first `songpop ingest init` works without a second terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from services.emulator import EmulatorConfig
from services.emulator import create_app as create_emulator
from services.stack import http_server, quiet, start_server
from shared.config import Settings
from shared.weeks import current_week

log = logging.getLogger(__name__)
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
async def emulator_when_absent(settings: Settings) -> AsyncIterator[bool]:
    """Run the emulator in-process while the block runs if the settings point at its default address and
    none answers there; yields whether it started one."""
    api = urlsplit(settings.effective_spotify_api_url)
    host, port = api.hostname or "127.0.0.1", api.port or 80
    if not on_default_emulator(settings) or await answers(host, port):
        yield False
        return
    app = create_emulator(EmulatorConfig(mode="extended", start_week=current_week()))  # as `up`'s
    server = http_server(app, host, port)
    with quiet("uvicorn.error", "uvicorn.access"):
        try:
            task = await start_server(server)
        except (SystemExit, OSError):  # another one took the port since the probe: use that one
            yield False
            return
        log.info(
            "no Spotify emulator on %s:%d: running one in-process for this command (demo data)", host, port
        )
        try:
            yield True
        finally:
            server.should_exit = True
            await task
