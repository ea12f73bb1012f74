"""What every `/v1/` request passes before its route: counting, added latency, injected faults (429s,
quota, 5xx, timeouts, expired tokens) and the bearer-token check; and the count of answered statuses."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from services.emulator.errors import ApiError
from services.emulator.state import EmulatorState


def emulator_state(request: Request) -> EmulatorState:
    """The emulator state of the app serving `request`."""
    return request.app.state.emulator  # type: ignore[no-any-return]


StateDep = Annotated[EmulatorState, Depends(emulator_state)]


def retry_after(value: float) -> str:
    """Retry-After as Spotify sends it (whole seconds), or a fraction when tests ask for sub-second waits."""
    return str(math.ceil(value)) if value >= 1 else f"{value:.3f}"


async def api_gate(request: Request, state: StateDep, authorization: str | None = Header(None)) -> None:
    """Count the request, add latency, inject faults, then check the bearer token."""
    route = request.scope.get("route")
    state.counters.by_endpoint[f"{request.method} {getattr(route, 'path', request.url.path)}"] += 1
    if state.latency_ms:
        await asyncio.sleep(state.latency_ms / 1000)
    decision = state.decide()
    if decision.kind in ("rate_limited", "penalty", "window"):
        raise ApiError(429, "API rate limit exceeded", headers={"Retry-After": retry_after(decision.value)})
    if decision.kind == "quota_exceeded":
        raise ApiError(
            429, "Quota exceeded for this developer account", reason="QUOTA_EXCEEDED",
            headers={"Retry-After": retry_after(decision.value)},
        )  # fmt: skip
    if decision.kind == "server_error":
        raise ApiError(int(decision.value), "Service unavailable")
    if decision.kind == "timeout":
        await asyncio.sleep(decision.value)
        raise ApiError(504, "Gateway timeout")
    if decision.kind == "expire_tokens":
        state.expire_tokens()
    if not authorization or not authorization.startswith("Bearer "):
        raise ApiError(401, "No token provided")
    if not state.token_valid(authorization.removeprefix("Bearer ").strip()):
        raise ApiError(401, "The access token expired")


class StatusCounter:
    """ASGI middleware counting the status codes of `/v1/` answers (lighter than an HTTP middleware)."""

    def __init__(self, app: Any, state: EmulatorState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.state.counters.by_status[message["status"]] += 1
            await send(message)

        await self.app(scope, receive, counting_send)
