"""What a deployment runs: `songpop serve` (one long-lived service), `songpop health` (its compose
healthcheck) and `songpop migrate` (the pre-start step)."""

from __future__ import annotations

import importlib
from enum import StrEnum
from typing import Annotated

import typer

from shared.config import Settings

from .jobs import EXIT_FAILED, console, fail, run_job, settings_of


class Service(StrEnum):
    ingestor = "ingestor"
    predictor = "predictor"
    trainer = "trainer"
    dashboard = "dashboard"


RUNNERS = {  # service: (module with `serve`, settings module, settings class)
    Service.ingestor: ("services.ingestor.main", "services.ingestor.settings", "IngestorSettings"),
    Service.predictor: ("services.predictor.main", "services.predictor.settings", "PredictorSettings"),
    Service.trainer: ("services.trainer.main", "services.trainer.settings", "TrainerSettings"),
    Service.dashboard: ("services.dashboard.main", "services.dashboard.settings", "DashboardSettings"),
}


def serve(service: Annotated[Service, typer.Argument(help="which long-lived service to run")]) -> None:
    """Run one long-lived service (what each docker compose service runs)."""
    main_module, settings_module, settings_class = RUNNERS[service]
    settings = settings_of(getattr(importlib.import_module(settings_module), settings_class))
    serve_fn = importlib.import_module(main_module).serve
    run_job(lambda: serve_fn(settings), settings)


class Beating(StrEnum):
    ingestor = "ingestor"
    trainer = "trainer"


def health(service: Annotated[Beating, typer.Argument(help="the service to check")]) -> None:
    """Liveness of a running ingestor or trainer (its compose healthcheck): exit 0 if its heartbeat is
    fresh, 1 if it is stale or missing (a hung or stopped service)."""
    from shared.heartbeat import heartbeat_age, stale_after

    settings = settings_of(Settings)
    age, limit = heartbeat_age(settings, service.value), stale_after(settings)
    if age is None:
        fail(f"{service.value}: no heartbeat under {settings.var_dir} (not running here?)", EXIT_FAILED)
    if age > limit:
        fail(f"{service.value}: last heartbeat {age:.0f} s ago (more than {limit:.0f} s): hung", EXIT_FAILED)
    console.print(f"{service.value}: alive (heartbeat {age:.0f} s ago)")


def migrate(
    wait: Annotated[float, typer.Option(help="seconds to wait for the database and broker")] = 60.0,
) -> None:
    """Pre-start step: wait for the database and the broker, then bring the schema up to date."""
    from services.prestart import prestart

    settings = settings_of(Settings)
    run_job(lambda: prestart(settings, within=wait), settings)
    console.print("database and broker reachable; schema up to date")
