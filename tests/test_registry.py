"""Model registry and the services' entry points on the real database: training registers and activates
models, retraining without new data keeps them, an altered artifact is refused, cold starts are flagged."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.config import Settings
from shared.db import upsert
from shared.forecasting import TamperedArtifact, registry, train_and_register
from shared.forecasting.registry import ForecastBundle, load_artifact, save_artifact
from shared.forecasting.synthetic import chart_entry_rows, synthetic_charts, write_chart_files
from shared.models import ChartEntry, ModelVersion, Snapshot, Track
from shared.weeks import week_of
from tests.forecast_reference import forecast_trending

HORIZONS = (26,)


pytestmark = pytest.mark.usefixtures("quick_models")


def charts(weeks: int = 80, seed: int = 1) -> pd.DataFrame:
    return synthetic_charts(regions=2, weeks=weeks, size=40, seed=seed)


async def store(sessions: async_sessionmaker[AsyncSession], frame: pd.DataFrame) -> None:
    tracks = frame.drop_duplicates("track")
    async with sessions() as session:
        await upsert(
            session=session,
            model=Track,
            rows=[
                {"id": t, "name": n, "artist_names": a}
                for t, n, a in tracks[["track", "name", "artist"]].values
            ],
            keys=["id"],
            update=["name"],
        )
        await upsert(
            session=session,
            model=ChartEntry,
            rows=chart_entry_rows(frame),
            keys=["track_id", "week", "region"],
            update=["rank", "streams"],
        )
        await upsert(
            session=session,
            model=Snapshot,
            rows=[
                {"track_id": t, "week": week_of(w), "trending": True}
                for t, w in frame[["track", "week"]].drop_duplicates().values
            ],
            keys=["track_id", "week"],
            update=["trending"],
        )
        await session.commit()


def artifact_exists(version: ModelVersion) -> bool:
    return Path(version.artifact_path or "").is_file()


def flip_a_byte(version: ModelVersion) -> Path:
    """Alter one byte in the middle of the version's artifact file."""
    path = Path(version.artifact_path or "")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


async def active_rows(sessions: async_sessionmaker[AsyncSession]) -> list[ModelVersion]:
    async with sessions() as session:
        return list((await session.exec(select(ModelVersion).where(ModelVersion.active))).all())


async def test_train_registers_and_retrain_without_new_data_keeps_the_model(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    frame = charts()
    await store(sessions, frame)
    activated = await train_and_register(sessions=sessions, settings=settings, horizons=HORIZONS)
    assert [(v.signal, v.horizon_weeks) for v in activated] == [("streams", 26)]
    version = activated[0]
    assert version.active and not version.cold_start and version.sha256
    assert artifact_exists(version)
    assert {"cmae", "auc", "coverage80", "fingerprint"} <= set(version.metrics)
    assert {"persistence", "naive"} <= set(version.baselines)
    assert version.metrics["cmae"] < version.baselines["persistence"]["cmae"]

    again = await train_and_register(sessions=sessions, settings=settings, horizons=HORIZONS)
    assert again == []
    assert [v.version for v in await active_rows(sessions)] == [version.version]

    # a new week of charts: the same method on newer data replaces it
    await store(sessions, charts(weeks=81))
    newer = await train_and_register(sessions=sessions, settings=settings, horizons=HORIZONS)
    assert len(newer) == 1 and newer[0].version != version.version
    assert [v.version for v in await active_rows(sessions)] == [newer[0].version]


async def test_forecast_tracks_with_active_models(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    frame = charts(seed=4)
    await store(sessions, frame)
    await train_and_register(sessions=sessions, settings=settings, horizons=HORIZONS)
    async with sessions() as session:
        predictions = await forecast_trending(session=session, settings=settings, horizons=HORIZONS)
    latest = week_of(max(frame["week"]))
    assert len(predictions) == frame[frame["week"] == max(frame["week"])]["track"].nunique()
    first = predictions[0]
    assert first.signal == "streams" and first.week == latest and first.rank is not None
    assert first.name.startswith("Song") and first.current and first.current > 0
    forecast = first.forecasts[0]
    assert forecast.horizon_weeks == 26 and not forecast.cold_start
    assert forecast.lower is not None and forecast.upper is not None
    assert forecast.lower <= forecast.value <= forecast.upper
    assert forecast.p_chart is not None and 0 <= forecast.p_chart <= 1
    assert forecast.model_version.startswith("streams-26w-")


async def test_an_altered_artifact_is_refused(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await store(sessions, charts(seed=2))
    [version] = await train_and_register(sessions=sessions, settings=settings, horizons=HORIZONS)
    path = flip_a_byte(version)
    with pytest.raises(TamperedArtifact, match="does not match"):
        load_artifact(path, version.sha256)
    async with sessions() as session:
        predictions = await forecast_trending(session=session, settings=settings, horizons=HORIZONS)
    assert predictions, "songs are still forecast, by the flagged fallback"
    assert all(f.cold_start and f.model_version == "persistence" for p in predictions for f in p.forecasts)
    assert "refused" in caplog.text


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    bundle = ForecastBundle("streams", 26, forecaster={"any": "object"}, fingerprint="abc")
    path, digest = save_artifact(bundle, tmp_path, "v1")
    assert load_artifact(path, digest).fingerprint == "abc"
    with pytest.raises(Exception, match="no sha256"):
        load_artifact(path, None)


def test_loaded_artifacts_are_kept_up_to_a_bound(tmp_path: Path) -> None:
    """The process keeps the newest LOADED_ARTIFACTS artifacts loaded, not every model ever activated."""
    saved = [
        save_artifact(ForecastBundle("streams", 26, forecaster={"n": n}), tmp_path, f"v{n}")
        for n in range(registry.LOADED_ARTIFACTS + 2)
    ]
    loaded = [load_artifact(path, digest) for path, digest in saved]
    assert len(registry._cache) <= registry.LOADED_ARTIFACTS
    assert load_artifact(*saved[-1]) is loaded[-1]  # the newest: still loaded
    assert load_artifact(*saved[0]) is not loaded[0]  # the oldest was let go: read again


async def test_no_model_means_flagged_persistence(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await store(sessions, charts(weeks=20, seed=3))
    assert await train_and_register(sessions=sessions, settings=settings, horizons=HORIZONS) == []
    async with sessions() as session:
        predictions = await forecast_trending(session=session, settings=settings)
    assert predictions
    for prediction in predictions:
        assert [f.horizon_weeks for f in prediction.forecasts] == [26, 52]
        assert all(f.cold_start and f.value == prediction.current for f in prediction.forecasts)


async def test_cold_start_from_the_charts_folder(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    write_chart_files(charts(seed=5), settings.charts_dir)
    [version] = await train_and_register(
        sessions=sessions, settings=settings, horizons=HORIZONS, signals=("streams",)
    )
    assert version.cold_start and version.active
    assert version.train_start is not None and version.train_end is not None
