"""Spotify's accounts service: `POST /api/token` (client credentials, in the form or as Basic auth)."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from services.emulator.gate import StateDep


def _seconds_value(value: float) -> float | int:
    """Whole seconds as an integer (Spotify's shape); fractions only when tests ask for them."""
    return int(value) if float(value).is_integer() else value


def make_accounts_router() -> APIRouter:
    """The token endpoint."""
    router = APIRouter()

    @router.post("/api/token")
    async def token(request: Request, state: StateDep, authorization: str | None = Header(None)) -> Response:
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        grant_type = form.get("grant_type")
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            try:
                client_id, _, client_secret = base64.b64decode(authorization[6:]).decode().partition(":")
            except ValueError:
                client_id = client_secret = None
        if grant_type != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if (client_id, client_secret) != (state.config.client_id, state.config.client_secret):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Invalid client"}, status_code=400
            )
        return JSONResponse(
            {
                "access_token": state.issue_token(),
                "token_type": "Bearer",
                "expires_in": _seconds_value(state.config.token_ttl_seconds),
            }
        )

    return router
