"""Who may make the predictor spend the app's Spotify quota, and how fast: optional API keys on the
forecast endpoints (the ones that can reach Spotify) and a per-client limit on on-demand fetches. The
hourly cap on all of them is the Spotify client's (`shared.spotify.budget`)."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Iterable

from fastapi import HTTPException, Request
from pydantic import SecretStr

KEY_HEADER = "x-api-key"
FETCHES_PER_MINUTE = 30  # default per-client allowance (SONGPOP_REST_FETCH_PER_CLIENT_PER_MINUTE)
MAX_CLIENTS = 10_000  # clients whose allowance is remembered (least recently seen forgotten first)


class MissingApiKey(HTTPException):
    def __init__(self) -> None:
        super().__init__(
            status_code=401,
            detail="an API key is required: send it in the X-API-Key header (or Authorization: Bearer)",
            headers={"WWW-Authenticate": 'Bearer realm="songpop"'},
        )


class FetchLimited(HTTPException):
    """A client asked for more songs to fetch from Spotify than its allowance."""

    def __init__(self, retry_after: float, wanted: int) -> None:
        super().__init__(
            status_code=429,
            detail=f"too many songs to fetch from Spotify ({wanted}) for this client now; try again later",
            headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
        )


class ApiKeys:
    """The accepted keys (none: the API is open). A key is compared in constant time."""

    def __init__(self, keys: SecretStr | None) -> None:
        raw = keys.get_secret_value() if keys else ""
        self._keys = [k.strip().encode() for k in raw.split(",") if k.strip()]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def client(self, presented: str | None) -> str | None:
        """A label of the client holding `presented` (never the key itself), or None if not accepted."""
        if not presented:
            return None
        given = presented.encode()
        if not any(hmac.compare_digest(given, key) for key in self._keys):
            return None
        return "key-" + hashlib.sha256(given).hexdigest()[:12]

    def client_of_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """`client` of the key in raw ASGI headers (the resident fast path's check)."""
        return self.client(presented_key({k.decode("latin-1"): v.decode("latin-1") for k, v in headers}))


def presented_key(headers: dict[str, str]) -> str | None:
    """The key sent in `X-API-Key`, or as `Authorization: Bearer <key>` (header names in lower case)."""
    key = headers.get(KEY_HEADER)
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def caller(request: Request) -> str:
    """Who is asking: the key's label when keys are set (401 without a valid one), else the address."""
    keys: ApiKeys = request.app.state.api_keys
    if keys.enabled:
        label = keys.client(presented_key({k.lower(): v for k, v in request.headers.items()}))
        if label is None:
            raise MissingApiKey()
        return label
    return request.client.host if request.client else "unknown"


class ClientAllowance:
    """A token bucket per client: `per_minute` songs fetched on demand per minute, bursts up to as many."""

    def __init__(self, per_minute: int = FETCHES_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client: (tokens, at)

    def take(self, client: str, n: int) -> None:
        """Spend `n` fetches of `client`'s allowance, or raise FetchLimited (spending nothing)."""
        if n <= 0:
            return
        now, rate = time.monotonic(), self.per_minute / 60.0
        tokens, at = self._buckets.pop(client, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * rate)
        if n > tokens:
            self._remember(client, tokens, now)
            wait = (n - tokens) / rate if rate and n <= self.per_minute else 60.0
            raise FetchLimited(wait, n)
        self._remember(client, tokens - n, now)

    def _remember(self, client: str, tokens: float, at: float) -> None:
        self._buckets[client] = (tokens, at)
        while len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
