"""Waiting for a dependency (database, broker) to come up, with exponential backoff (tenacity)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

BACKOFF_START_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 3.0


async def wait_until(probe: Callable[[], Awaitable[bool]], *, within: float) -> bool:
    """Call `probe` with growing pauses until it returns True (then True) or `within` seconds pass (False)."""

    @retry(
        stop=stop_after_delay(within),
        wait=wait_exponential(multiplier=BACKOFF_START_SECONDS, max=BACKOFF_MAX_SECONDS),
        retry=retry_if_exception_type(ConnectionError),
        reraise=True,
    )
    async def attempt() -> None:
        if not await probe():
            raise ConnectionError

    try:
        await attempt()
    except ConnectionError:
        return False
    return True
