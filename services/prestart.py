"""Pre-start step run before the services (compose's `migrate` service, `songpop migrate`): wait for the
database and the broker with backoff, then apply the migrations. Nothing migrates at import time."""

from __future__ import annotations

import logging

from shared.config import Settings, redact_url
from shared.db import make_engine, migrate_async, wait_for_database
from shared.mqtt import broker_reachable, effective_mqtt_url
from shared.outbox import BrokerUnavailable
from shared.readiness import wait_until

log = logging.getLogger(__name__)


async def wait_for_broker(settings: Settings, *, within: float) -> None:
    """Wait (with backoff) until the broker accepts connections, or raise BrokerUnavailable."""
    if not await wait_until(lambda: broker_reachable(settings), within=within):
        raise BrokerUnavailable(f"MQTT broker {redact_url(effective_mqtt_url(settings))} is unreachable")


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
