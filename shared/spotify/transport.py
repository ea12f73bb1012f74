"""Every HTTP exchange with Spotify: counted, bounded in time, retried with backoff, paused on 429s.

- One limiter shared by every request: bounded concurrency; a 429 pauses the whole client for
  `Retry-After` (plus a margin); 5xx and timeouts are retried with exponential backoff and jitter, bounded.
- A `Retry-After` above the cap, a `QUOTA_EXCEEDED` body or a lasting outage stops the run cleanly:
  `SpotifyPaused` says when to resume, and every later request fails fast until then.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from shared.spotify.budget import HourlyBudget
from shared.spotify.errors import SpotifyError, SpotifyPaused, TransientFailure, error_message, error_reason
from shared.spotify.ratelimit import RateLimiter, retry_after_seconds
from shared.spotify.stats import SpotifyStats

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 0.5  # first wait after a 5xx or timeout, doubled each time
BACKOFF_CAP_SECONDS = 8.0
MAX_ATTEMPTS = 5  # per request, for 5xx and timeouts
MAX_RATE_LIMITED = 8  # 429s one request may meet before the run pauses instead of retrying again
RATE_LIMIT_MARGIN_SECONDS = 0.5  # waited beyond Retry-After
OUTAGE_PAUSE_SECONDS = 900.0  # resume delay after persistent 5xx/timeouts
QUOTA_PAUSE_SECONDS = 3600.0  # resume delay for QUOTA_EXCEEDED without a Retry-After
STOP_EXTENSION_SLACK = dt.timedelta(seconds=5)  # a later 429 extends a stop only beyond this


@dataclass(frozen=True)
class RetryPolicy:
    """How long a client waits and how often it tries before it pauses the run (tests set these near zero)."""

    max_retry_after: float  # a longer Retry-After stops the run instead of being waited out
    backoff_base: float = BACKOFF_BASE_SECONDS
    backoff_cap: float = BACKOFF_CAP_SECONDS
    max_attempts: int = MAX_ATTEMPTS
    max_rate_limited: int = MAX_RATE_LIMITED
    rate_limit_margin: float = RATE_LIMIT_MARGIN_SECONDS
    outage_pause: float = OUTAGE_PAUSE_SECONDS


class TokenSource(Protocol):
    """Where a request gets its bearer token, and asks for a new one after a 401."""

    async def token(self) -> str: ...

    async def renew(self, rejected: str) -> None: ...


class Transport:
    """The HTTP side of one client: its connections, limiter, retries and hourly budget."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        concurrency: int,
        timeout: float,
        policy: RetryPolicy,
        stats: SpotifyStats,
        budget: HourlyBudget | None = None,
    ) -> None:
        self._http, self._timeout, self._policy = http, timeout, policy
        self._budget = budget  # a cap on this client's requests per hour (the predictor's on-demand share)
        self.stats = stats
        self.limiter = RateLimiter(concurrency)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def get(
        self, url: str, *, endpoint: str, params: dict[str, Any] | None, tokens: TokenSource
    ) -> httpx.Response:
        """One logical GET: authorised, through the limiter, retried; any status but 429, 401 and 5xx
        is returned for the caller to read."""
        return await self.with_retries(endpoint, lambda: self._authorised_get(endpoint, url, params, tokens))

    async def with_retries(
        self, endpoint: str, attempt_once: Callable[[], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        """Run `attempt_once` until it answers, retrying transient failures with backoff; a lasting
        outage stops the client for `outage_pause`."""
        policy = self._policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=wait_exponential_jitter(
                initial=policy.backoff_base, max=policy.backoff_cap, jitter=policy.backoff_base
            ),
            retry=retry_if_exception_type(TransientFailure),
            before_sleep=self._note_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await attempt_once()
        except TransientFailure as exc:
            raise self.stop(
                policy.outage_pause,
                f"Spotify kept failing on {endpoint} ({exc}) after {policy.max_attempts} tries",
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _note_retry(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.info("Spotify request failed (%s); retry %d", exc, state.attempt_number)

    async def _authorised_get(
        self, endpoint: str, url: str, params: dict[str, Any] | None, tokens: TokenSource
    ) -> httpx.Response:
        """One try: waits for the limiter, handles 429 (shared pause) and one 401 renewal."""
        renewed, rate_limited = False, 0
        while True:
            token = await tokens.token()
            async with self.limiter.slot():
                self._spend_budget(endpoint)
                headers = {"Authorization": f"Bearer {token}"}
                response = await self.send(endpoint, "GET", url, params=params, headers=headers)
            if response.status_code == 429:
                rate_limited += 1
                self.on_rate_limited(response, endpoint, rate_limited)
                self.stats.retries += 1
                continue
            if response.status_code == 401 and not renewed:
                renewed = True
                self.stats.retries += 1
                await tokens.renew(token)
                continue
            if response.status_code == 401:
                raise SpotifyError(
                    f"Spotify rejected a fresh access token on {endpoint}: {error_message(response)}"
                )
            if response.status_code >= 500:
                self.stats.server_errors += 1
                raise TransientFailure(f"HTTP {response.status_code}")
            return response

    def _spend_budget(self, endpoint: str) -> None:
        """Count the request against the hourly cap; past it, pause this call (not the whole client)."""
        if self._budget is not None and not self._budget.try_spend():
            self.stats.budget_refused += 1
            raise SpotifyPaused(
                self._budget.resumes_at(),
                f"the cap of {self._budget.per_hour} Spotify requests per hour is reached ({endpoint})",
            )

    async def send(self, endpoint: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one HTTP request, counting it; timeouts and broken connections become `TransientFailure`."""
        self.stats.requests += 1
        self.stats.by_endpoint[endpoint] += 1
        try:
            async with asyncio.timeout(self._timeout):  # also bounds transports that ignore httpx timeouts
                return await self._http.request(method, url, **kwargs)
        except (httpx.TimeoutException, TimeoutError):
            self.stats.timeouts += 1
            raise TransientFailure("timeout") from None
        except httpx.TransportError as exc:
            raise TransientFailure(type(exc).__name__) from None

    def on_rate_limited(self, response: httpx.Response, endpoint: str, times: int) -> None:
        """Pause the whole client for a short Retry-After; stop the run for a long one or a spent quota."""
        policy = self._policy
        self.stats.rate_limited += 1
        retry_after = retry_after_seconds(response)
        if error_reason(response) == "QUOTA_EXCEEDED":
            raise self.stop(
                retry_after if retry_after is not None else QUOTA_PAUSE_SECONDS,
                "the developer account's Spotify quota is used up (QUOTA_EXCEEDED)",
            )
        wait = retry_after if retry_after is not None else 1.0
        if wait > policy.max_retry_after:
            raise self.stop(
                wait, f"Spotify asked to wait {wait:.0f} s, more than the {policy.max_retry_after:.0f} s cap"
            )
        if times > policy.max_rate_limited:
            raise self.stop(
                max(wait, policy.max_retry_after), f"Spotify rate-limited {endpoint} {times} times in a row"
            )
        if self.limiter.pause_for(wait + policy.rate_limit_margin):
            self.stats.rate_limit_wait_seconds += wait
            log.warning("Spotify rate limit on %s: every request waits %.3g s", endpoint, wait)

    def stop(self, seconds: float, reason: str) -> SpotifyPaused:
        """Stop every request of the client until `seconds` from now; log it once."""
        resume_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
        current = self.limiter.stopped
        # Requests in flight when the first long 429 came back meet the same penalty: keep one pause.
        if current is not None and resume_at <= current.resume_at + STOP_EXTENSION_SLACK:
            return current
        paused = SpotifyPaused(resume_at, reason)
        self.limiter.stop(paused)
        log.warning("Stopping Spotify requests until %s UTC: %s", f"{resume_at:%Y-%m-%d %H:%M:%S}", reason)
        return paused
