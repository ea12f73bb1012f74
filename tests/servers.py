"""Run ASGI apps on real sockets inside a test's event loop (lifespan entered, stopped cleanly)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _TestServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # several servers in one test process
        yield


def listening_socket(port: int | None) -> socket.socket:
    """A socket bound to `port` (any free one when None), held until the server listens on it: a port
    only looked up, then bound after the app's start-up, could meanwhile be taken as the local port of
    one of the app's own outgoing connections (seen: "address already in use" in CI)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port or 0))
    return sock


@contextlib.asynccontextmanager
async def serving(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 and yield its base URL; the server stops when the block ends."""
    sock = listening_socket(port)
    port = int(sock.getsockname()[1])
    server = _TestServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    _raise_start_failure(task)
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(SystemExit):  # a failed start is reported above, as an error of its test
            await task
        sock.close()


def _raise_start_failure(task: asyncio.Task[None]) -> None:
    """uvicorn exits the process when it cannot start; here that must fail one test, not the session."""
    try:
        task.result()
    except SystemExit as exc:
        raise RuntimeError(f"the server did not start (uvicorn exit {exc.code})") from None
    raise RuntimeError("server stopped during start-up")
