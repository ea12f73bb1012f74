"""Dashboard abuse, beyond tests/test_dashboard.py (escaped trending rows, slow clients dropped, bounded
hub queues): markup in every outside-supplied text of the other pages (song pages and their embedded
chart data, service names from MQTT status messages, model versions) is rendered as text; a client
flooding the websocket, or sending a huge frame, neither grows the server's memory nor disturbs it."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from shared.db import session_scope
from shared.events import ServiceStatus, envelope
from shared.models import ModelVersion
from shared.mqtt import make_client, publish_model, topics
from tests.dashboard_support import Song, clear_retained, dashboard_settings, running_dashboard, seed

SCRIPT = "</script><script>alert('xss')</script>"
IMG = '<img src=x onerror="alert(1)">'


@pytest.fixture
async def dashboard(settings, sessions):
    async with running_dashboard(dashboard_settings(settings)) as running:
        yield running
    await clear_retained(settings)


def assert_inert(html: str) -> None:
    """No markup from the data survived as markup."""
    assert "<script>alert" not in html and "<img src=x" not in html
    assert 'onerror="alert' not in html


async def test_song_page_renders_markup_in_names_as_text(sessions, dashboard) -> None:
    song = Song("x" * 22, SCRIPT, artists=IMG)
    await seed(sessions, [song])
    async with httpx.AsyncClient(base_url=dashboard.url) as http:
        page = await http.get(f"/tracks/{song.track_id}")
        trending = await http.get("/")
    assert page.status_code == 200
    assert_inert(page.text)
    assert_inert(trending.text)
    assert "&lt;/script&gt;&lt;script&gt;" in page.text  # shown, as text
    data = page.text.split('id="track-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data  # the embedded JSON cannot close its <script> element


async def test_service_names_from_mqtt_are_text_on_the_status_page(settings, dashboard) -> None:
    async with make_client(settings, "evil", announce=False) as client:
        await publish_model(
            client,
            topics(settings).status("evil"),
            envelope("evil", ServiceStatus(service=IMG, state="online")),
            retain=True,
        )
        async with asyncio.timeout(10):
            while IMG not in dashboard.app.state.feed.services:  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.05)
        await client.publish(topics(settings).status("evil"), b"", qos=1, retain=True)
    async with httpx.AsyncClient(base_url=dashboard.url) as http:
        page = await http.get("/status")
    assert page.status_code == 200
    assert_inert(page.text)
    assert "&lt;img src=x" in page.text


async def test_model_versions_are_text_on_the_models_page(sessions, dashboard) -> None:
    async with session_scope(sessions) as session:
        session.add(
            ModelVersion(
                version=IMG[:60],
                signal="popularity",
                horizon_weeks=26,
                kind=SCRIPT[:60],
                active=True,
                metrics={"mae": 3.0},
            )
        )
    async with httpx.AsyncClient(base_url=dashboard.url) as http:
        page = await http.get("/models")
    assert page.status_code == 200
    assert_inert(page.text)


async def test_a_huge_websocket_frame_is_refused(dashboard) -> None:
    async with connect(dashboard.ws_url, max_size=None) as ws:
        await ws.recv()  # hello
        await ws.send("x" * 1_000_000)
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
    async with httpx.AsyncClient(base_url=dashboard.url) as http:
        assert (await http.get("/healthz")).status_code == 200


async def test_a_websocket_flood_does_not_grow_memory(dashboard) -> None:
    hub = dashboard.app.state.hub
    frame = "y" * 30_000  # under the frame limit
    tracemalloc.start()
    try:
        async with connect(dashboard.ws_url) as ws:
            await ws.recv()
            await ws.send(frame)  # warm up buffers once before measuring
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(1000):  # 30 MB through one connection
                await ws.send(frame)
            await (await ws.ping())  # the pong: the server has read everything sent before it
            async with httpx.AsyncClient(base_url=dashboard.url) as http:
                assert (await http.get("/healthz")).status_code == 200
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
            assert len(hub) == 1
    finally:
        tracemalloc.stop()
    assert grown < 5_000_000, f"memory grew by {grown} bytes after a 30 MB flood"
    async with asyncio.timeout(5):
        while len(hub):  # noqa: ASYNC110 - the server unsubscribes the closed client
            await asyncio.sleep(0.05)
