"""docker-compose.yml cannot run here (no Docker engine): check it by reading it instead."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from services.cli import app

ROOT = Path(__file__).resolve().parent.parent
SONGPOP_SERVICES = {"ingestor", "predictor", "trainer", "dashboard"}


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def resolves(args: list[str]) -> bool:
    """True when `songpop <args>` names an existing command (and a valid choice for its argument)."""
    command = typer.main.get_command(app)
    ctx = command.make_context("songpop", ["--help"], resilient_parsing=True)
    rest = list(args)
    while hasattr(command, "get_command") and rest:
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            return False
        command, rest = sub, rest[1:]
    try:
        command.make_context("songpop", rest)
    except Exception:  # typer ships its own click: any usage error means "no such command"
        return False
    return True


def test_every_songpop_command_in_compose_exists() -> None:
    services = compose()["services"]
    songpop = {name: s for name, s in services.items() if "command" in s and s.get("build") == "."}
    assert SONGPOP_SERVICES <= set(songpop)
    for name, service in songpop.items():
        assert resolves(service["command"]), f"{name}: `songpop {' '.join(service['command'])}` is not a command"


def test_resolver_refuses_unknown_commands() -> None:
    assert not resolves(["serve", "nonsense"])
    assert not resolves(["frobnicate"])


def test_services_start_only_when_dependencies_are_healthy() -> None:
    services = compose()["services"]
    for name in SONGPOP_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["mysql"]["condition"] == "service_healthy", name
        assert depends["mosquitto"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert "healthcheck" in services[name], name
    for infra in ("mysql", "mosquitto"):
        assert "healthcheck" in services[infra]
        assert ":" in services[infra]["image"] and not services[infra]["image"].endswith(":latest")


def test_broker_refuses_anonymous_clients() -> None:
    config = (ROOT / "mosquitto" / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in config
    assert "acl_file" in config and "password_file" in config
