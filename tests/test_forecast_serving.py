"""Every forecast answer says which method serves it and its skill against the best naive answer (issue 11),
from its model version's serving info: REST (one song, a batch), `/v1/trending` and the dashboard's rows
here; the batch's MQTT messages in tests/test_forecasting_batch.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dashboard import service as dashboard
from services.predictor.app import create_app
from shared.config import Settings
from shared.models import ModelVersion
from shared.predictions import Serving, serving_of
from tests.predictor_support import predictor_settings, running_emulator, seed_songs, store_batch_predictions
from tests.servers import serving

SHRUNK = {"method": "shrunk", "toward": "naive", "weight": 0.5, "skill": 0.1234, "best_naive": "naive"}
LOSING_MODEL = {"method": "model", "toward": None, "weight": 1.0, "skill": -0.05, "best_naive": "drift"}
# what each stored version serves (store_batch_predictions' versions); the 52-week ones are not registered
EXPECTED = {
    "popularity-26w-7": ("shrunk 0.5 toward naive", 0.1234),
    "streams-26w-7": ("model", -0.05),
    "popularity-52w-7": ("model", None),
    "streams-52w-7": ("model", None),
}


def test_serving_of_says_the_method_and_its_skill() -> None:
    assert serving_of("v1", {"serving": SHRUNK}) == Serving("shrunk 0.5 toward naive", 0.1234)
    assert serving_of("v1", {"serving": LOSING_MODEL}) == Serving("model", -0.05)
    floored = {"method": "floored", "toward": "naive", "weight": 1.0, "skill": 0.16}
    assert serving_of("v1", {"serving": floored}) == Serving("model floored at naive", 0.16)
    assert serving_of(
        "v1", {"serving": {"method": "naive", "toward": "naive", "weight": 0.0, "skill": 0.0}}
    ) == (Serving("naive", 0.0))
    assert serving_of("v1", {"fingerprint": "x"}) == Serving("model", None)  # registered before issue 11
    assert serving_of("persistence", None) == Serving("persistence", None)  # no usable model


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_emulator() as (_, emulator_url):
        # answers read from the database (resident answers built before the test's rows are tested elsewhere)
        config = predictor_settings(settings, emulator_url, rest_cache_entries=0, rest_cache_warm=False)
        app = create_app(config)
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
            yield http


async def register(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        for version, signal, served in (
            ("popularity-26w-7", "popularity", SHRUNK),
            ("streams-26w-7", "streams", LOSING_MODEL),
        ):
            session.add(
                ModelVersion(
                    version=version, signal=signal, horizon_weeks=26, kind="gbm", active=True,
                    metrics={"mae": 1.0, "serving": served}, baselines={},
                )
            )  # fmt: skip
        await session.commit()


def said(predictions: list[dict[str, Any]]) -> dict[str, set[tuple[str, float | None]]]:
    """(method, skill) said by the forecasts, per model version."""
    found: dict[str, set[tuple[str, float | None]]] = {}
    for prediction in predictions:
        for forecast in prediction["forecasts"]:
            found.setdefault(forecast["model_version"], set()).add((forecast["method"], forecast["skill"]))
    return found


async def test_every_answer_says_the_serving_method_of_its_model_version(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await register(sessions)  # before the forecasts of its versions, as the trainer does
    ids = await seed_songs(sessions, n=3, charted=1)
    await store_batch_predictions(sessions, ids, charted=1)
    expected = {version: {answer} for version, answer in EXPECTED.items()}

    trending = (await api.get("/v1/trending")).json()
    assert said(trending["predictions"]) == expected
    one = (await api.get(f"/v1/tracks/{ids[0]}/forecast")).json()
    assert one["source"] == "batch" and said(one["predictions"]) == expected  # the charted song: both signals
    batch = (await api.post("/v1/forecasts", json={"track_ids": ids})).json()
    assert said([p for f in batch["forecasts"] for p in f["predictions"]]) == expected

    async with sessions() as session:
        for signal in ("popularity", "streams"):
            view = await dashboard.trending(session=session, signal=signal)
            cells = [(row.f26, row.f52) for row in view.rows]
            assert {
                (c.model_version, c.method, c.skill) for pair in cells for c in pair if c is not None
            } == {(version, *answer) for version, answer in EXPECTED.items() if version.startswith(signal)}
