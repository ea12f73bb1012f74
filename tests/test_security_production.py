"""Production refuses weak secrets (issue 12, item 6): each one makes a service exit with code 2 and a
sentence naming the variable, before it connects to anything, and never prints the secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.predictor.settings import PredictorSettings
from shared.config import load_settings

SONGPOP = str(Path(sys.executable).parent / "songpop")
STRONG = {
    "SONGPOP_ENVIRONMENT": "production",
    "SONGPOP_DATABASE_URL": "mysql+asyncmy://songpop:Db-pass-9f2c1@127.0.0.1:3306/songpop",
    "SONGPOP_MQTT_URL": "mqtt://predictor:Mq-pass-71ad0@127.0.0.1:1883",
    "SONGPOP_SPOTIFY_CLIENT_ID": "client-id-1234",
    "SONGPOP_SPOTIFY_CLIENT_SECRET": "Sp-secret-5be3a9",
}
WEAK = {
    "database password changeme": (
        "SONGPOP_DATABASE_URL",
        "mysql+asyncmy://songpop:changeme@127.0.0.1:3306/s",
    ),
    "anonymous MQTT URL": ("SONGPOP_MQTT_URL", "mqtt://127.0.0.1:1883"),
    "embedded broker": ("SONGPOP_MQTT_URL", ""),
    "MQTT password changeme": ("SONGPOP_MQTT_URL", "mqtt://predictor:changeme@127.0.0.1:1883"),
    "MQTT user without password": ("SONGPOP_MQTT_URL", "mqtt://predictor@127.0.0.1:1883"),
    "empty Spotify secret": ("SONGPOP_SPOTIFY_CLIENT_SECRET", ""),
    "Spotify secret changeme": ("SONGPOP_SPOTIFY_CLIENT_SECRET", "changeme"),
    "short Spotify secret": ("SONGPOP_SPOTIFY_CLIENT_SECRET", "abc12"),
}


def test_strong_secrets_are_accepted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for key, value in STRONG.items():
        monkeypatch.setenv(key, value)
    assert load_settings(PredictorSettings).environment == "production"


@pytest.mark.parametrize("weak", list(WEAK), ids=list(WEAK))
def test_each_weak_secret_is_refused_with_exit_2(weak: str, tmp_path: Path) -> None:
    variable, value = WEAK[weak]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **STRONG, variable: value}
    done = subprocess.run(
        [SONGPOP, "serve", "predictor"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, said
    assert "production refuses weak secrets" in said and variable in said, said
    assert "Traceback" not in said
    for secret in ("changeme", "abc12", "Db-pass-9f2c1", "Mq-pass-71ad0", "Sp-secret-5be3a9"):
        assert secret not in said
