"""Hostile inputs shared by the security tests: a model artifact swapped for a code-running pickle."""

from __future__ import annotations

import hashlib
import pickle
import uuid
from pathlib import Path

EVIL = "popularity-26w-tampered"


class _RunsCodeWhenUnpickled:
    """Unpickling this calls Path.touch(marker): proof that a file was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def tampered_artifact(models_dir: Path, marker: Path) -> tuple[Path, str]:
    """An artifact file whose registered sha256 is that of the genuine bytes, while the file now holds
    a code-running pickle."""
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{EVIL}.joblib"
    genuine = b"the bytes the trainer wrote " + uuid.uuid4().bytes
    path.write_bytes(pickle.dumps(_RunsCodeWhenUnpickled(marker)))
    return path, hashlib.sha256(genuine).hexdigest()
