"""Retained service status on the real broker: the predictor's (and, through `stay_present`, the ingestor's
and trainer's) is `online` while it runs, `offline` when it stops, and `offline` from its last will when its
connection vanishes (then `online` again once reconnected)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from services.predictor.app import create_app
from shared.events import ServiceStatus, parse
from shared.mqtt import make_client, stay_present, topics
from tests.predictor_support import messages_until, predictor_settings
from tests.servers import serving


def states(messages) -> list[str]:
    return [parse(m.payload, ServiceStatus).data.state for m in messages]


async def latest_retained_state(settings, service: str = "predictor") -> str:
    """What a new subscriber is told first."""
    async with make_client(settings, "late-observer", announce=False) as late:
        await late.subscribe(topics(settings).status(service), qos=1)
        return states(await messages_until(late, lambda got: len(got) == 1))[0]


async def test_status_is_online_while_running_and_offline_after_a_clean_stop(settings) -> None:
    config = predictor_settings(settings)
    app = create_app(config)
    async with serving(app), make_client(settings, "observer", announce=False) as observer:
        await asyncio.wait_for(app.state.consuming.wait(), 20)
        await observer.subscribe(topics(settings).status("predictor"), qos=1)
        assert states(await messages_until(observer, lambda got: len(got) == 1)) == ["online"]
    assert await latest_retained_state(settings) == "offline"


async def test_last_will_says_offline_when_the_connection_vanishes(settings) -> None:
    config = predictor_settings(settings)
    app = create_app(config)
    async with serving(app), make_client(settings, "observer", announce=False) as observer:
        await asyncio.wait_for(app.state.consuming.wait(), 20)
        await observer.subscribe(topics(settings).status("predictor"), qos=1)
        await messages_until(observer, lambda got: len(got) == 1)  # the retained "online"
        app.state.consuming.clear()

        # the predictor's TCP connection dies without an MQTT DISCONNECT, as in a crash
        app.state.mqtt._client.socket().shutdown(socket.SHUT_RDWR)

        got = await messages_until(observer, lambda got: states(got)[-1] == "online")
        assert states(got) == ["offline", "online"], "the will, then the reconnected predictor"
        await asyncio.wait_for(app.state.consuming.wait(), 20)


async def test_a_scheduled_service_is_online_while_it_runs_and_offline_after_a_clean_stop(settings) -> None:
    async with make_client(settings, "observer", announce=False) as observer:
        await observer.subscribe(topics(settings).status("trainer"), qos=1)
        presence = asyncio.create_task(stay_present(settings, "trainer"))
        try:
            assert states(await messages_until(observer, lambda got: len(got) == 1)) == ["online"]
        finally:
            presence.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await presence
        assert states(await messages_until(observer, lambda got: len(got) == 1)) == ["offline"]
    assert await latest_retained_state(settings, "trainer") == "offline"
