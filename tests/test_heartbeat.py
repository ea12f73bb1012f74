"""Liveness of the ingestor and trainer: a running service's heartbeat keeps `songpop health` (its compose
healthcheck) at exit 0; when the service's loop stops (the process is frozen), the check turns bad."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from services.cli import app
from services.cli.jobs import EXIT_FAILED
from tests.cli_support import environment

SONGPOP = Path(sys.executable).parent / "songpop"
BEAT = 0.3  # seconds: stale after three missed beats


def health(service: str, env: dict[str, str]) -> Result:
    return CliRunner().invoke(app, ["health", service], env={**env, "COLUMNS": "200"})


def wait_for(check: Any, seconds: float = 30.0) -> Result:
    """Poll `check` until it exits 0 or `seconds` pass; its last result."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result.exit_code == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


@pytest.mark.parametrize("service", ["ingestor", "trainer"])
def test_a_stopped_service_loop_turns_its_health_bad(settings: Any, service: str) -> None:
    env = environment(settings, heartbeat_seconds=str(BEAT))
    assert health(service, env).exit_code == EXIT_FAILED  # not running yet: no heartbeat
    process = subprocess.Popen(
        [str(SONGPOP), "serve", service],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        alive = wait_for(lambda: health(service, env))
        assert alive.exit_code == 0, alive.output
        assert f"{service}: alive" in alive.output

        process.send_signal(signal.SIGSTOP)  # the loop stops: no more beats
        time.sleep(4 * BEAT + 0.5)
        hung = health(service, env)
        assert hung.exit_code == EXIT_FAILED
        assert f"{service}: last heartbeat" in hung.output and "hung" in hung.output

        process.send_signal(signal.SIGCONT)  # and recovers when it runs again
        assert wait_for(lambda: health(service, env)).exit_code == 0
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(timeout=30)


def test_compose_healthchecks_read_the_heartbeat() -> None:
    import yaml

    services = yaml.safe_load((Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text())
    for service in ("ingestor", "trainer"):
        assert services["services"][service]["healthcheck"]["test"] == ["CMD", "songpop", "health", service]
