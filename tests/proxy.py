"""A TCP proxy for fault tests: clients connect to the proxy instead of a server (MariaDB, Mosquitto, ...),
and the test can cut every open connection, refuse new ones, let them back, or stop the proxy.

    async with TcpProxy("127.0.0.1", 3306) as proxy:
        url = proxy.url_for("mysql+asyncmy://root@127.0.0.1:3306/db")   # ...@127.0.0.1:<proxy.port>/db
        ...
        proxy.cut()       # every connection dropped (RST), new ones refused: the server looks gone
        proxy.restore()   # new connections go through again

`cut()` is synchronous so it can be called from any callback (a progress hook, a SQLAlchemy event)
at the exact moment a test wants the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:<port> to `upstream_host:upstream_port`, with faults on demand."""

    def __init__(self, upstream_host: str, upstream_port: int, *, port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port  # 0: any free port, known after start()
        self.is_open = True
        self.accepted = 0  # connections forwarded so far
        self.refused = 0  # connections refused while cut
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def open_connections(self) -> int:
        """Client connections currently forwarded."""
        return len(self._tasks)

    async def start(self) -> int:
        """Listen (on the same port again after a stop, if it had one) and return the port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Cut every connection and stop listening: clients get connection refused."""
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Abort every open connection (both sides) and refuse new ones until restore()."""
        self.is_open = False
        for transport in list(self._transports):
            transport.abort()  # type: ignore[attr-defined]  # every transport here is a socket transport
        self._transports.clear()

    def drop(self) -> None:
        """Abort the open connections but keep accepting new ones (a blip, not an outage)."""
        self.cut()
        self.is_open = True

    def restore(self) -> None:
        """Accept and forward new connections again."""
        self.is_open = True

    def url_for(self, url: str) -> str:
        """`url` (any scheme, with or without credentials) pointed at this proxy instead of its host."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.is_open:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        self._transports.update((writer.transport, up_writer.transport))
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._tasks.discard(task)
            self._transports.difference_update((writer.transport, up_writer.transport))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@pytest.fixture
async def mysql_proxy(infra) -> AsyncIterator[TcpProxy]:
    """A proxy in front of this test session's MariaDB (skipped on the embedded SQLite database)."""
    if not infra.database_url.startswith("mysql"):
        pytest.skip("needs MariaDB: the embedded SQLite database has no connection to cut")
    parts = urlsplit(infra.database_url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 3306) as proxy:
        yield proxy
