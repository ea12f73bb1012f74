"""The dashboard in a real headless chromium: the table fills, a published prediction appears without a
reload, the page reconnects by itself, the track chart is drawn, and hostile song names stay text."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from shared.events import ModelUpdated, envelope
from shared.models import AppState, IngestRun, ModelVersion
from shared.mqtt import make_client, publish_model, topics
from tests.dashboard_support import (
    WEEK,
    Song,
    clear_retained,
    dashboard_settings,
    prediction_event,
    publish_latest,
    running_dashboard,
    seed,
    seed_streams,
    songs,
)

pytestmark = pytest.mark.browser

SCRIPT_NAME = "<script>alert(1)</script>"
IMG_NAME = "<img src=x onerror=alert(3)>"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 10_000


def catalog() -> list[Song]:
    """A mix of ordinary, demo and hostile songs."""
    items = [
        Song("s" * 22, SCRIPT_NAME, "Mallory & <b>Friends</b>", current=71.0),
        Song("a" * 22, "Blinding Lights (Remastered 2026) — a rather long song title", "The Weeknd", 88.0),
        Song("b" * 22, "Espresso", "Sabrina Carpenter", current=97.0, demo=True),
    ]
    return items + songs(9)


async def seed_system(sessions) -> None:
    """Models, access state and runs for the model and status pages."""
    async with sessions() as session:
        for horizon, mae in ((26, 6.8), (52, 9.1)):
            session.add(
                ModelVersion(
                    version=f"popularity-{horizon}w-20261123",
                    signal="popularity",
                    horizon_weeks=horizon,
                    kind="gbm",
                    n_train=18_400,
                    train_start=dt.date(2024, 1, 1),
                    train_end=dt.date(2026, 5, 25),
                    metrics={"mae": mae, "coverage80": 0.81, "n_test": 2300},
                    baselines={
                        "persistence": {"mae": mae + 2.1, "coverage80": 0.64},
                        "naive": {"mae": mae + 4},
                    },
                    active=True,
                    is_demo=True,
                )
            )
        session.add(
            AppState(
                key="spotify",
                value={
                    "mode": "development",
                    "lacks": ["track popularity", "artist followers"],
                    "emulator": True,
                    "probed_at": "2026-11-23T09:00:00+00:00",
                },
            )
        )
        session.add(
            AppState(
                key="trainer",
                value={
                    "next_run": "2026-11-30T11:00:00+00:00",
                    "last_run": "2026-11-23T11:00:05+00:00",
                    "cron": "0 12 * * 1",
                    "timezone": "Europe/Rome",
                },
            )
        )
        session.add(
            IngestRun(
                kind="update",
                status="ok",
                week=WEEK,
                access_mode="development",
                counts={"tracks": 12, "snapshots": 12},
            )
        )
        await session.commit()


@pytest.fixture
async def dashboard(settings, sessions):
    await seed(sessions, catalog(), history_weeks=30)
    await seed_system(sessions)
    async with running_dashboard(dashboard_settings(settings)) as running:
        yield running
    await clear_retained(settings)


async def open_page(browser, url: str, viewport: dict[str, int], problems: list[str], **options: Any) -> Any:
    """A new page that records script errors and any dialog (an executed alert() would open one)."""
    page = await browser.new_page(viewport=viewport, **options)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    page.on("console", lambda msg: problems.extend([f"console: {msg.text}"] if msg.type == "error" else []))
    await page.goto(url)
    return page


async def wait_live(page) -> None:
    await page.wait_for_selector('#live[data-state="live"]', timeout=WAIT_MS)


async def test_table_fills_and_updates_live(browser, dashboard, settings, screenshot_dir: Path) -> None:
    problems: list[str] = []
    page = await open_page(browser, dashboard.url + "/", DESKTOP, problems)
    await wait_live(page)
    assert await page.locator("#trending tbody tr").count() == len(catalog())
    hostile = page.locator(f'tr[data-track-id="{"s" * 22}"] a.name')
    assert await hostile.text_content() == SCRIPT_NAME
    assert await page.locator("#demo-banner").is_visible()
    await page.screenshot(path=screenshot_dir / "trending-desktop.png", full_page=True)

    await page.evaluate("window.__notReloaded = true")
    items = catalog()
    newcomer = Song("n" * 22, IMG_NAME, "Someone New", current=33.0)
    event = prediction_event([*items, newcomer], shift=4.0)
    await publish_latest(settings, event)
    target = items[1]
    cell = page.locator(f'tr[data-track-id="{target.track_id}"] td[data-col="f26"] .v')
    await page.wait_for_function(
        "([sel, text]) => document.querySelector(sel)?.textContent === text",
        arg=[f'tr[data-track-id="{target.track_id}"] td[data-col="f26"] .v', f"{target.current + 4:.0f}"],
        timeout=WAIT_MS,
    )
    assert await cell.text_content() == f"{target.current + 4:.0f}"
    assert await page.evaluate("window.__notReloaded === true")
    updated = await page.locator(f'#trending tbody tr[data-event="{event.event_id}"]').count()
    assert updated == len(items) + 1
    assert await page.locator(f'tr[data-track-id="{"n" * 22}"] a.name').text_content() == IMG_NAME
    await page.screenshot(path=screenshot_dir / "trending-live-update.png", full_page=True)

    await page.locator('th[data-sort="current"] button').click()
    first = await page.locator("#trending tbody tr").first.get_attribute("data-track-id")
    assert first == "b" * 22  # Espresso, 97: the highest current value
    assert problems == []


async def test_page_reconnects_by_itself(browser, dashboard, settings) -> None:
    problems: list[str] = []
    page = await open_page(browser, dashboard.url + "/", DESKTOP, problems)
    await wait_live(page)
    hub = dashboard.app.state.hub
    for i in range(hub.queue_size + 2):  # overflow the page's queue: the server drops it
        hub.broadcast(json.dumps({"type": "noise", "i": i}))
    await page.wait_for_selector('#live[data-state="reconnecting"]', timeout=WAIT_MS)
    await wait_live(page)
    items = catalog()[:2]
    await publish_latest(settings, prediction_event(items, shift=-6.0))
    selector = f'tr[data-track-id="{items[0].track_id}"] td[data-col="f26"] .v'
    await page.wait_for_function(
        "([sel, text]) => document.querySelector(sel)?.textContent === text",
        arg=[selector, f"{items[0].current - 6:.0f}"],
        timeout=WAIT_MS,
    )
    assert hub.dropped_total == 1

    # A page that missed an update while disconnected refetches the table when it reconnects.
    await page.evaluate("document.body.dataset.event = 'an-event-this-page-never-saw'")
    for i in range(hub.queue_size + 2):
        hub.broadcast(json.dumps({"type": "noise", "i": i}))
    await page.wait_for_selector('#trending tbody tr[data-event="resync"]', timeout=WAIT_MS)
    assert await page.locator('#trending tbody tr[data-event="resync"]').count() == len(catalog())
    assert problems == []


async def test_track_page_draws_its_chart(browser, dashboard, settings, screenshot_dir: Path) -> None:
    problems: list[str] = []
    song = catalog()[1]
    page = await open_page(browser, f"{dashboard.url}/tracks/{song.track_id}", DESKTOP, problems)
    await page.wait_for_selector("#chart canvas", timeout=WAIT_MS)
    columns = await page.evaluate("window.songpopChart.data.map((c) => c.length)")
    assert columns[0] == 30 + 2  # 30 weeks of history, then the 26- and 52-week forecasts
    assert len(columns) == 5
    box = await page.locator("#chart canvas").bounding_box()
    assert box is not None and box["width"] > 600 and box["height"] > 200
    await page.screenshot(path=screenshot_dir / "track-desktop.png", full_page=True)

    await wait_live(page)
    await publish_latest(settings, prediction_event([song], shift=9.0))
    await page.wait_for_function(
        "text => document.querySelector('.card[data-horizon=\"26\"] .fc-value').textContent === text",
        arg=f"{song.current + 9:.0f}",
        timeout=WAIT_MS,
    )
    hostile = await open_page(browser, f"{dashboard.url}/tracks/{'s' * 22}", PHONE, problems)
    await hostile.wait_for_selector("#chart canvas", timeout=WAIT_MS)
    assert (await hostile.locator("#track-name").text_content() or "").strip() == SCRIPT_NAME
    await hostile.screenshot(path=screenshot_dir / "track-phone.png", full_page=True)
    assert problems == []


async def test_pages_read_well_on_a_phone(browser, dashboard, screenshot_dir: Path) -> None:
    problems: list[str] = []
    for name in ("", "models", "status"):
        page = await open_page(browser, f"{dashboard.url}/{name}", PHONE, problems)
        await page.wait_for_load_state("load")
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"/{name} is wider than a phone screen by {overflow}px"
        await page.screenshot(path=screenshot_dir / f"{name or 'trending'}-phone.png", full_page=True)
    for name in ("models", "status"):
        page = await open_page(browser, f"{dashboard.url}/{name}", DESKTOP, problems)
        await page.screenshot(path=screenshot_dir / f"{name}-desktop.png", full_page=True)
    for name in ("", f"tracks/{'a' * 22}"):
        page = await open_page(browser, f"{dashboard.url}/{name}", DESKTOP, problems, color_scheme="dark")
        await page.wait_for_load_state("load")
        shot = "trending" if not name else "track"
        await page.screenshot(path=screenshot_dir / f"{shot}-dark.png", full_page=True)
    assert problems == []


async def test_a_new_week_replaces_the_table(browser, dashboard, settings, sessions) -> None:
    problems: list[str] = []
    page = await open_page(browser, dashboard.url + "/", DESKTOP, problems)
    await wait_live(page)
    next_week = WEEK + dt.timedelta(weeks=1)
    still = catalog()[:3]
    newcomer = Song("w" * 22, "New This Week", "Fresh Face", current=64.0)
    await seed(sessions, [*still, newcomer], week=next_week)  # the predictor stores, then publishes
    await publish_latest(settings, prediction_event([*still, newcomer], shift=1.0, week=next_week))
    await page.wait_for_function(
        "text => document.getElementById('week').textContent === text",
        arg=next_week.isoformat(),
        timeout=WAIT_MS,
    )
    await page.wait_for_function(
        "() => document.querySelectorAll('#trending tbody tr').length === 4", timeout=WAIT_MS
    )
    shown = await page.eval_on_selector_all("#trending tbody tr", "rows => rows.map(r => r.dataset.trackId)")
    assert set(shown) == {s.track_id for s in [*still, newcomer]}
    assert problems == []


async def test_a_new_model_shows_a_notice(browser, dashboard, settings, screenshot_dir: Path) -> None:
    problems: list[str] = []
    page = await open_page(browser, dashboard.url + "/models", PHONE, problems)
    await wait_live(page)
    model = ModelUpdated(version=IMG_NAME, signal="popularity", horizon_weeks=52, kind="gbm")
    event = envelope("trainer", model)
    async with make_client(settings, "trainer-test", announce=False) as client:
        await publish_model(client, topics(settings).model_updated, event)
    notice = page.locator("#notice")
    await notice.wait_for(state="visible", timeout=WAIT_MS)
    assert IMG_NAME in (await notice.text_content() or "")
    assert await page.locator("#notice img").count() == 0
    await page.screenshot(path=screenshot_dir / "models-notice-phone.png")
    assert problems == []


async def test_streams_view_and_chart(browser, dashboard, sessions, screenshot_dir: Path) -> None:
    items = catalog()[:5]
    await seed_streams(sessions, items, history_weeks=30)
    problems: list[str] = []
    page = await open_page(browser, f"{dashboard.url}/?signal=streams&region=global", DESKTOP, problems)
    await wait_live(page)
    assert await page.locator("#trending tbody tr").count() == len(items)
    first = page.locator("#trending tbody tr").first
    assert await first.locator('td[data-col="current"]').text_content() == "2.4M"
    assert "% charting" in (await first.locator('td[data-col="f26"]').text_content() or "")
    await page.screenshot(path=screenshot_dir / "trending-streams.png", full_page=True)
    url = f"{dashboard.url}/tracks/{items[0].track_id}?signal=streams&region=global"
    track = await open_page(browser, url, DESKTOP, problems)
    await track.wait_for_selector("#chart canvas", timeout=WAIT_MS)
    assert (await track.evaluate("window.songpopChart.data[0].length")) == 30 + 2
    await track.screenshot(path=screenshot_dir / "track-streams.png", full_page=True)
    assert problems == []
