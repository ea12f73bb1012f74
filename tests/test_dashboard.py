"""The dashboard against the real database and broker: pages from rows, live updates over /ws, escaping,
bounded per-client queues."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.dashboard.live import CLOSE_TOO_SLOW, Hub
from shared.events import ModelUpdated, envelope
from shared.mqtt import make_client, publish_model, topics
from tests.dashboard_support import (
    Song,
    clear_retained,
    dashboard_settings,
    prediction_event,
    publish_latest,
    running_dashboard,
    seed,
    songs,
)

SCRIPT_NAME = "<script>alert(1)</script>"
WAIT = 10.0


async def next_of_type(ws, kind: str) -> dict:
    """The next websocket message of `kind` (within WAIT seconds)."""
    async with asyncio.timeout(WAIT):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == kind:
                return message


async def next_of_type_any(ws) -> dict:
    """The next websocket message other than hello."""
    async with asyncio.timeout(WAIT):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] != "hello":
                return message


@pytest.fixture
async def dashboard(settings, sessions):
    async with running_dashboard(dashboard_settings(settings)) as running:
        yield running
    await clear_retained(settings)


async def test_trending_page_shows_rows_from_the_database(sessions, dashboard) -> None:
    await seed(sessions, songs(3) + [Song("d" * 22, "Demo Song", demo=True, current=99.0)])
    async with httpx.AsyncClient(base_url=dashboard.url) as http:
        page = await http.get("/")
        api = (await http.get("/api/trending")).json()
    assert page.status_code == 200
    assert page.text.count('<tr data-track-id="') == 4
    assert "Song 2" in page.text and "Demo data" in page.text
    assert [r["rank"] for r in api["rows"]] == [1, 2, 3, 4]
    assert api["rows"][0]["name"] == "Demo Song" and api["rows"][0]["demo"] is True
    assert api["rows"][0]["f26"]["value"] == pytest.approx(99.0 - 2)
    assert len(api["rows"][0]["trend"]) == 12


async def test_published_predictions_reach_every_open_page(settings, sessions, dashboard) -> None:
    items = songs(5)
    await seed(sessions, items)
    event = prediction_event(items, shift=7.5)
    async with connect(dashboard.ws_url) as first, connect(dashboard.ws_url) as second:
        await next_of_type(first, "hello")
        await next_of_type(second, "hello")
        await publish_latest(settings, event)
        got = [await next_of_type(ws, "predictions") for ws in (first, second)]
    for message in got:
        assert message["event_id"] == event.event_id
        by_id = {r["track_id"]: r for r in message["rows"]}
        assert set(by_id) == {s.track_id for s in items}
        assert by_id[items[1].track_id]["f26"]["value"] == pytest.approx(items[1].current + 7.5)
    assert dashboard.app.state.feed.last_event_id == event.event_id


async def test_only_changed_rows_are_sent_again(settings, dashboard) -> None:
    items = songs(4)
    async with connect(dashboard.ws_url) as ws:
        await next_of_type(ws, "hello")
        await publish_latest(settings, prediction_event(items, shift=1))
        assert len((await next_of_type(ws, "predictions"))["rows"]) == 4
        changed = (
            prediction_event(items[:1], shift=1).data.predictions
            + prediction_event(items[1:], shift=2).data.predictions
        )
        event = prediction_event(items, shift=2)
        event.data.predictions = changed
        await publish_latest(settings, event)
        rows = (await next_of_type(ws, "predictions"))["rows"]
    assert sorted(r["track_id"] for r in rows) == sorted(s.track_id for s in items[1:])


async def test_malformed_payload_is_skipped(settings, dashboard) -> None:
    async with connect(dashboard.ws_url) as ws:
        await next_of_type(ws, "hello")
        async with make_client(settings, "bad-actor", announce=False) as client:
            await client.publish(topics(settings).predictions_latest, b'{"data": "nonsense"', qos=1)
        event = prediction_event(songs(1), shift=3)
        await publish_latest(settings, event)
        message = await next_of_type(ws, "predictions")
    assert message["event_id"] == event.event_id
    assert dashboard.app.state.feed.malformed == 1


async def test_song_names_are_escaped(settings, sessions, dashboard) -> None:
    evil = Song("e" * 22, SCRIPT_NAME, artists='"><img src=x onerror=alert(2)>')
    await seed(sessions, [evil])
    async with httpx.AsyncClient(base_url=dashboard.url) as http:
        responses = [await http.get(path) for path in ("/", f"/tracks/{evil.track_id}")]
    pages = [r.text for r in responses]
    assert all("script-src 'self'" in r.headers["content-security-policy"] for r in responses)
    for html in pages:
        assert SCRIPT_NAME not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_a_client_that_falls_behind_is_dropped(dashboard) -> None:
    hub: Hub = dashboard.app.state.hub
    async with connect(dashboard.ws_url) as slow:
        await next_of_type(slow, "hello")
        for i in range(hub.queue_size + 5):  # faster than any client can drain: no await in between
            hub.broadcast(json.dumps({"type": "noise", "i": i}))
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await slow.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_TOO_SLOW
    assert hub.dropped_total == 1 and len(hub) == 0


async def test_hub_queues_stay_bounded() -> None:
    hub = Hub(queue_size=3)
    slow, fast = hub.subscribe(), hub.subscribe()
    received = []
    for i in range(10):
        hub.broadcast(str(i))
        received.append(fast.queue.get_nowait())
        assert slow.queue.qsize() <= 3
    assert slow.dropped.is_set() and slow.queue.qsize() == 0
    assert received == [str(i) for i in range(10)]
    assert hub.dropped_total == 1 and len(hub) == 1


async def test_health_probes(dashboard) -> None:
    async with httpx.AsyncClient(base_url=dashboard.url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "database": True, "broker": True}


async def test_unknown_song_is_404(dashboard) -> None:
    async with httpx.AsyncClient(base_url=dashboard.url) as http:
        response = await http.get("/tracks/nosuchsong")
    assert response.status_code == 404 and "Song not found" in response.text


async def test_a_new_model_is_announced_once(settings, dashboard) -> None:
    event = envelope(
        "trainer", ModelUpdated(version="pop-26-v9", signal="popularity", horizon_weeks=26, kind="gbm")
    )
    async with connect(dashboard.ws_url) as ws:
        await next_of_type(ws, "hello")
        async with make_client(settings, "trainer-test", announce=False) as client:
            for _ in range(2):  # a redelivery (as after a reconnect) is not announced again
                await publish_model(client, topics(settings).model_updated, event, retain=True)
            await client.publish(topics(settings).model_updated, b"", qos=1, retain=True)
        await publish_latest(settings, prediction_event(songs(1), shift=1))
        kinds = [(await next_of_type_any(ws))["type"] for _ in range(2)]
    assert kinds == ["model", "predictions"]


async def test_open_pages_are_capped(settings) -> None:
    async with running_dashboard(dashboard_settings(settings, dashboard_ws_max_clients=2)) as running:
        async with connect(running.ws_url) as first, connect(running.ws_url) as second:
            await next_of_type(first, "hello")
            await next_of_type(second, "hello")
            async with connect(running.ws_url) as third:  # accepted, then closed with 1013 (not HTTP 403)
                with pytest.raises(ConnectionClosed) as refused:
                    await asyncio.wait_for(third.recv(), WAIT)
            assert refused.value.rcvd is not None and refused.value.rcvd.code == CLOSE_TOO_SLOW
        async with asyncio.timeout(WAIT):
            while len(running.app.state.hub):  # noqa: ASYNC110 - the server notices the pages leave
                await asyncio.sleep(0.02)
        async with connect(running.ws_url) as again:  # a slot is free again once a page leaves
            assert (await next_of_type(again, "hello"))["type"] == "hello"
