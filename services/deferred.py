"""An ASGI app served at once while the real one is still being imported and started.

`songpop up` serves the predictor's port with it: importing the predictor pulls in the forecasting stack
(numpy, pandas, scikit-learn: seconds of CPU), and the REST API should answer from the first second. Until
the real app has started, `/healthz` says alive and everything else is a 503 with `Retry-After`; then
every request, and the lifespan's end, go to the real app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)
STARTING_RETRY_AFTER_SECONDS = 2


class DeferredApp:
    """Answers for the app `load()` returns, once `start()` was called: `load` runs in a worker thread, so
    its imports do not hold up the other servers of the process; the app's lifespan runs in
    `self.started`, a task whose failure is the app's start-up error."""

    def __init__(self, load: Callable[[], Any], *, name: str) -> None:
        self.load, self.name = load, name
        self.app: ASGIApp | None = None
        self.started: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await self._starting(scope, send)
        # a websocket before the start is simply not accepted

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shut_down()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start(self) -> asyncio.Task[None]:
        """Import, build and start the real app in the background."""
        self.started = asyncio.create_task(self._run(), name=f"{self.name}-start")
        return self.started

    async def _run(self) -> None:
        """Import and build the app, enter its lifespan, serve it until the shutdown."""
        app = await asyncio.to_thread(self.load)
        async with app.router.lifespan_context(app):
            self.app = app
            log.info("%s started", self.name)
            await self._stop.wait()

    async def _shut_down(self) -> None:
        self._stop.set()
        if self.started is None:
            return
        if self.app is None:  # still importing or starting: no lifespan to end cleanly
            self.started.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # its error was the stack's already
            await self.started

    async def _starting(self, scope: Scope, send: Send) -> None:
        alive = scope["path"] == "/healthz"
        status, body = (
            (200, {"status": "ok"})
            if alive
            else (503, {"detail": f"the {self.name} is starting; try again shortly"})
        )
        headers = [(b"content-type", b"application/json")]
        if not alive:
            headers.append((b"retry-after", str(STARTING_RETRY_AFTER_SECONDS).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})
