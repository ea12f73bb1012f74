"""Everything on this machine without Docker: `songpop up` (the whole stack in one process) and
`songpop emulator` (the Spotify Web API emulator)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from shared import logs
from shared.config import Settings
from shared.spotify.models import AccessMode

from .jobs import console, run_job, settings_of

DEFAULT_EMULATOR_MODE = AccessMode.extended.value  # `up` and `emulator` alike: every signal to look at
MODES = [m.value for m in AccessMode]


def check_mode(value: str) -> str:
    if value not in MODES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(MODES)}")
    return value


ModeOption = Annotated[
    str,
    typer.Option(metavar="|".join(MODES), callback=check_mode, help="the Spotify emulator's access mode"),
]


def up(
    weeks: Annotated[
        int, typer.Option(min=0, help="weeks of simulated demo history on an empty database (0: none)")
    ] = 120,
    mode: ModeOption = DEFAULT_EMULATOR_MODE,
) -> None:
    """The whole stack in one process: SQLite, an in-process MQTT broker and the Spotify emulator
    unless SONGPOP_* settings point elsewhere. Prints the dashboard URL."""
    from services.stack import SERVICE_SETTINGS, run_stack

    settings = settings_of(Settings)
    for service_settings in SERVICE_SETTINGS:  # every service's own settings, before any work
        settings_of(service_settings)
    emulator_mode: Literal["extended", "development"] = (
        "extended" if mode == AccessMode.extended else "development"
    )
    run_job(
        lambda: run_stack(settings, demo_weeks=weeks, emulator_mode=emulator_mode, console=console), settings
    )


def emulator(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8002,
    mode: ModeOption = DEFAULT_EMULATOR_MODE,
    latency_ms: Annotated[float, typer.Option(min=0, help="added latency per request")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed of the generated catalog")] = 42,
    tracks: Annotated[int, typer.Option(min=1, help="catalog size")] = 20_000,
) -> None:
    """Run the Spotify Web API emulator (same paths, JSON shapes and errors as Spotify)."""
    from services.emulator import run

    logs.setup()
    run(host=host, port=port, mode=mode, latency_ms=latency_ms, seed=seed, n_tracks=tracks)
