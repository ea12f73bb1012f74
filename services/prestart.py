"""Pre-start step run before the services (compose's `migrate` service, `songpop migrate`): wait for the
database and the broker with backoff, then apply the migrations. Nothing migrates at import time."""

from __future__ import annotations

import logging

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from shared.config import Settings, redact_url
from shared.db import make_engine, migrate_async, wait_for_database
from shared.mqtt import broker_reachable, effective_mqtt_url
from shared.outbox import BrokerUnavailable

log = logging.getLogger(__name__)


async def wait_for_broker(settings: Settings, *, within: float) -> None:
    @retry(
        stop=stop_after_delay(within),
        wait=wait_exponential(multiplier=0.2, max=3),
        retry=retry_if_exception_type(ConnectionError),
        reraise=True,
    )
    async def attempt() -> None:
        if not await broker_reachable(settings):
            raise ConnectionError

    try:
        await attempt()
    except ConnectionError:
        raise BrokerUnavailable(
            f"MQTT broker {redact_url(effective_mqtt_url(settings))} is unreachable"
        ) from None


async def prestart(settings: Settings, *, within: float = 60.0) -> None:
    """Wait for the database and the broker, then migrate the schema to the latest revision."""
    engine = make_engine(settings.effective_database_url)
    try:
        await wait_for_database(engine, within=within)
    finally:
        await engine.dispose()
    if settings.mqtt_url:  # the embedded broker starts with the stack, not before it
        await wait_for_broker(settings, within=within)
    await migrate_async(settings.effective_database_url)
    log.info("schema up to date")
