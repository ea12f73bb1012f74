"""The model registry: artifact files under `settings.models_dir`, each with its sha256 in `model_version`.

An artifact is loaded only when its bytes still hash to the recorded sha256 (a replaced or altered file is
refused before it is unpickled). Loaded artifacts are cached by (path, sha256).
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.models import ModelVersion

log = logging.getLogger(__name__)

LOADED_ARTIFACTS = 16  # kept in memory: the 4 active models and those they replaced, not every one ever seen
_cache: dict[tuple[str, str], Any] = {}  # (path, sha256) -> bundle, oldest first
_cache_lock = threading.Lock()


class ArtifactError(RuntimeError):
    """A model artifact is missing, unreadable or does not match its recorded hash."""


class TamperedArtifact(ArtifactError):
    """The artifact's bytes do not hash to the sha256 recorded when it was registered."""


@dataclass
class ForecastBundle:
    """What an artifact file holds: the fitted forecaster and how it was made."""

    signal: str  # "streams" or "popularity"
    horizon_weeks: int
    forecaster: Any  # StreamsForecaster or PopularityForecaster
    config: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""  # hash of the data it was trained and backtested on
    cold_start: bool = False


def save_artifact(bundle: ForecastBundle, models_dir: Path, version: str) -> tuple[Path, str]:
    """Write the bundle to `<models_dir>/<version>.joblib`; returns its path and sha256."""
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{version}.joblib"
    buffer = io.BytesIO()
    joblib.dump(bundle, buffer, compress=3)
    data = buffer.getvalue()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path, hashlib.sha256(data).hexdigest()


def load_artifact(path: str | Path, sha256: str | None) -> ForecastBundle:
    """Load an artifact after checking its hash; raises TamperedArtifact or ArtifactError."""
    path = Path(path)
    if not sha256:
        raise ArtifactError(f"{path}: no sha256 recorded, refusing to load it")
    key = (str(path), sha256)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read the model artifact ({exc.strerror or exc})") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise TamperedArtifact(
            f"{path}: sha256 {actual[:12]}… does not match the registered {sha256[:12]}…; refusing to load it"
        )
    bundle = joblib.load(io.BytesIO(data))
    if not isinstance(bundle, ForecastBundle):
        raise ArtifactError(f"{path}: not a songpop forecast artifact")
    with _cache_lock:
        _cache[key] = bundle
        while len(_cache) > LOADED_ARTIFACTS:
            del _cache[next(iter(_cache))]
    return bundle


def load_version(version: ModelVersion) -> ForecastBundle:
    """The verified artifact of a registered model version."""
    if not version.artifact_path:
        raise ArtifactError(f"model {version.version} has no artifact")
    return load_artifact(version.artifact_path, version.sha256)


async def active_versions(session: AsyncSession) -> dict[tuple[str, int], ModelVersion]:
    """The active model version per (signal, horizon in weeks)."""
    rows = (await session.exec(select(ModelVersion).where(col(ModelVersion.active).is_(True)))).all()
    active: dict[tuple[str, int], ModelVersion] = {}
    for row in sorted(rows, key=lambda r: (r.created_at, r.id or 0)):
        active[(row.signal, row.horizon_weeks)] = row
    return active


async def activate(session: AsyncSession, version: ModelVersion) -> None:
    """Make `version` the only active model of its signal and horizon (the caller commits)."""
    previous = (
        await session.exec(
            select(ModelVersion).where(
                ModelVersion.signal == version.signal,
                ModelVersion.horizon_weeks == version.horizon_weeks,
                col(ModelVersion.active).is_(True),
            )
        )
    ).all()
    for row in previous:
        if row.version != version.version:
            row.active = False
            session.add(row)
    version.active = True
    session.add(version)
