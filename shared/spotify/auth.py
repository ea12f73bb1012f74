"""The client-credentials token: which credentials, cached, renewed shortly before it expires, renewed
once after a 401."""

from __future__ import annotations

import asyncio
import time

import httpx

from shared.config import Settings
from shared.spotify.errors import SpotifyError, TransientFailure, error_message
from shared.spotify.transport import Transport

EMULATOR_CLIENT_ID = "songpop-emulator"  # the emulator's fixed demo credentials (not secrets)
EMULATOR_CLIENT_SECRET = "emulator"  # noqa: S105
TOKEN_RENEW_MARGIN_SECONDS = 60.0  # renew this long before expiry (at most half the token's lifetime)
TOKEN_ENDPOINT = "POST /api/token"


def client_credentials(settings: Settings) -> tuple[str, str]:
    """The (client id, secret) to send: the configured app's, or the emulator's demo pair."""
    if settings.uses_emulator:
        return EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET
    assert settings.spotify_client_id and settings.spotify_client_secret
    return settings.spotify_client_id, settings.spotify_client_secret.get_secret_value()


class TokenCache:
    """The access token of one client, shared by its concurrent requests (one renewal at a time)."""

    def __init__(
        self,
        transport: Transport,
        *,
        accounts_url: str,
        client_id: str,
        secret: str,
        renew_margin: float = TOKEN_RENEW_MARGIN_SECONDS,
    ) -> None:
        self._transport, self._accounts = transport, accounts_url
        self.client_id, self._secret = client_id, secret
        self._renew_margin = renew_margin
        self._token: str | None = None
        self._renew_at = 0.0  # time.monotonic()
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:  # never shows the secret or the token
        return f"TokenCache(client_id={self.client_id!r})"

    async def token(self) -> str:
        """A token that is not about to expire, fetched when needed."""
        if self._token is not None and time.monotonic() < self._renew_at:
            return self._token
        async with self._lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                await self._transport.with_retries(TOKEN_ENDPOINT, self._fetch)
        assert self._token is not None
        return self._token

    async def renew(self, rejected: str) -> None:
        """Replace a token the API rejected with 401, unless a concurrent request did already."""
        async with self._lock:
            if self._token == rejected:
                self._transport.stats.token_renewals_after_401 += 1
                await self._transport.with_retries(TOKEN_ENDPOINT, self._fetch)

    async def _fetch(self) -> httpx.Response:
        """Ask the accounts service for a client-credentials token and cache it."""
        transport = self._transport
        await transport.limiter.wait_ready()
        transport.stats.token_requests += 1
        response = await transport.send(
            TOKEN_ENDPOINT,
            "POST",
            f"{self._accounts}/api/token",
            data={"grant_type": "client_credentials"},
            auth=httpx.BasicAuth(self.client_id, self._secret),
        )
        if response.status_code == 429:
            transport.on_rate_limited(response, TOKEN_ENDPOINT, 1)
            raise TransientFailure("token endpoint rate limited")
        if response.status_code >= 500:
            raise TransientFailure(f"HTTP {response.status_code} from the token endpoint")
        if response.status_code != 200:
            raise SpotifyError(
                f"Spotify refused the client credentials of client id {self.client_id!r} "
                f"(HTTP {response.status_code}: {error_message(response)}); check SONGPOP_SPOTIFY_CLIENT_ID "
                "and SONGPOP_SPOTIFY_CLIENT_SECRET"
            )
        try:
            body = response.json()
            token, lifetime = str(body["access_token"]), float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise SpotifyError("the token endpoint answered without an access_token") from None
        self._token = token
        self._renew_at = time.monotonic() + lifetime - min(self._renew_margin, lifetime / 2)
        return response
