"""docker-compose.yml cannot run here (no Docker engine): check it by reading it instead."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import typer
import yaml

from services.cli import app

ROOT = Path(__file__).resolve().parent.parent
SONGPOP_SERVICES = {"ingestor", "predictor", "trainer", "dashboard"}


def compose() -> dict:
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
    assert set(songpop) >= SONGPOP_SERVICES
    for name, service in songpop.items():
        command = " ".join(service["command"])
        assert resolves(service["command"]), f"{name}: `songpop {command}` is not a command"


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


# ---------------------------------------------------------------- deployment (issue 7)

LONG_LIVED = SONGPOP_SERVICES | {"mysql", "mosquitto"}
ONE_SHOTS = {"migrate", "mqtt-users"}
REQUIRED_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+):\?")
ANY_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)")


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def acl_users() -> set[str]:
    lines = (ROOT / "mosquitto" / "acl").read_text().splitlines()
    return {line.split()[1] for line in lines if line.startswith("user ")}


def mounts(service: dict) -> dict[str, str]:
    """Container path -> source (volume name or host path), without the :ro suffix."""
    result = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        result[target] = source
    return result


def test_example_env_sets_every_variable_compose_needs() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    example = env_example()
    missing = sorted(set(REQUIRED_VARIABLE.findall(text)) - set(example))
    assert not missing, f".env.example lacks {missing}"
    unknown = sorted(set(ANY_VARIABLE.findall(text)) - set(example))
    assert not unknown, f"compose uses variables .env.example does not mention: {unknown}"


def test_real_env_is_ignored_and_example_is_committed() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert ignored.returncode == 0, ".env must be git-ignored"
    example = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=ROOT)
    assert example.returncode == 1, ".env.example must not be ignored"
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image} is not pinned"
    assert re.search(r"^FROM \S+:\d+\.\d+\.\d+", (ROOT / "Dockerfile").read_text(), re.M)


def test_restart_policies() -> None:
    services = compose()["services"]
    for name in LONG_LIVED:
        assert services[name]["restart"] in ("unless-stopped", "always"), name
    for name in ONE_SHOTS:
        assert services[name]["restart"] == "no", name


def test_named_volumes_keep_the_state() -> None:
    spec = compose()
    services, declared = spec["services"], set(spec["volumes"])
    assert mounts(services["mysql"])["/var/lib/mysql"] in declared
    data = mounts(services["mosquitto"])["/mosquitto/data"]
    assert data in declared
    config = (ROOT / "mosquitto" / "mosquitto.conf").read_text()
    assert "persistence true" in config and "persistence_location /mosquitto/data/" in config
    models = "/app/var/models"
    assert mounts(services["trainer"])[models] == mounts(services["predictor"])[models] == "models"
    assert "models" in declared
    assert any(v.endswith(f"{models}:ro") for v in services["predictor"]["volumes"]), "predictor reads only"


def test_predictor_can_be_scaled() -> None:
    predictor = compose()["services"]["predictor"]
    assert "container_name" not in predictor
    for port in predictor.get("ports", []):
        parts = str(port).split(":")
        host_port = parts[-2] if len(parts) >= 2 else ""
        assert host_port == "", f"predictor publishes a fixed host port: {port}"


def test_mosquitto_files_compose_mounts_match_its_config() -> None:
    config = (ROOT / "mosquitto" / "mosquitto.conf").read_text()
    keys = ("password_file", "acl_file")
    paths = dict(line.split(" ", 1) for line in config.splitlines() if line.startswith(keys))
    mosquitto = mounts(compose()["services"]["mosquitto"])
    assert mosquitto[paths["acl_file"]] == "./mosquitto/acl"
    auth_dir = str(Path(paths["password_file"]).parent)
    assert mosquitto[auth_dir] == "mosquitto-auth"
    users = compose()["services"]["mqtt-users"]
    assert mounts(users)[auth_dir] == "mosquitto-auth"
    assert users["entrypoint"][-1] == paths["password_file"]
    assert compose()["services"]["mosquitto"]["depends_on"]["mqtt-users"]["condition"] == (
        "service_completed_successfully"
    )


def test_every_service_has_its_own_mqtt_user_with_a_password() -> None:
    services = compose()["services"]
    script = (ROOT / "mosquitto" / "make-passwd.sh").read_text()
    script_users = set(re.search(r'^USERS="([^"]+)"', script, re.M).group(1).split())  # type: ignore[union-attr]
    assert acl_users() == script_users
    assert {f"MQTT_{u.upper()}_PASSWORD" for u in script_users} <= set(env_example())
    for name in SONGPOP_SERVICES:
        url = services[name]["environment"]["SONGPOP_MQTT_URL"]
        assert url.startswith(f"mqtt://{name}:${{MQTT_{name.upper()}_PASSWORD"), f"{name} uses {url}"


def run_make_passwd(tmp_path: Path, env_text: str) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "env"
    env_file.write_text(env_text)
    return subprocess.run(
        ["sh", str(ROOT / "mosquitto" / "make-passwd.sh"), str(tmp_path / "auth" / "passwd"), str(env_file)],
        capture_output=True,
        text=True,
    )


@pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="needs mosquitto_passwd")
def test_make_passwd_builds_one_hashed_entry_per_user(tmp_path: Path) -> None:
    secrets = {f"MQTT_{u.upper()}_PASSWORD": f"pw-{u}-0123456789" for u in acl_users()}
    text = "# a comment\n" + "".join(f"export {k}='{v}'\n" for k, v in secrets.items())
    result = run_make_passwd(tmp_path, text)
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "auth" / "passwd").read_text()
    entries = dict(line.split(":", 1) for line in passwd.splitlines())
    assert set(entries) == acl_users()
    assert all(value.startswith("$7$") for value in entries.values())  # hashed, never plain
    assert not any(secret in passwd for secret in secrets.values())
    assert (tmp_path / "auth" / "passwd").stat().st_mode & 0o077 == 0
    assert [p.name for p in (tmp_path / "auth").iterdir()] == ["passwd"]  # no plain-text leftovers


@pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="needs mosquitto_passwd")
@pytest.mark.parametrize(
    ("change", "complaint"),
    [("changeme", "placeholder"), ("", "not set"), ("pass@word", "letters, digits")],
)
def test_make_passwd_refuses_bad_passwords(tmp_path: Path, change: str, complaint: str) -> None:
    secrets = {f"MQTT_{u.upper()}_PASSWORD": f"pw-{u}-0123456789" for u in acl_users()}
    secrets["MQTT_TRAINER_PASSWORD"] = change
    result = run_make_passwd(tmp_path, "".join(f"{k}={v}\n" for k, v in secrets.items()))
    assert result.returncode != 0
    assert "MQTT_TRAINER_PASSWORD" in result.stderr and complaint in result.stderr
    assert not (tmp_path / "auth" / "passwd").exists()


@pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="needs mosquitto_passwd")
def test_the_example_env_cannot_be_deployed_as_is(tmp_path: Path) -> None:
    result = run_make_passwd(tmp_path, (ROOT / ".env.example").read_text())
    assert result.returncode != 0 and "placeholder" in result.stderr


def compose_available() -> bool:
    """A real Compose implementation: Debian's docker-compose (validates without an engine) or the
    docker client's plugin."""
    if shutil.which("docker-compose"):
        return True
    docker = shutil.which("docker")
    plugin = docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    return bool(plugin)


def fresh_clone(folder: Path) -> Path:
    """What `make compose-check` reads, as a fresh clone has it: no .env."""
    for name in ("Makefile", "docker-compose.yml", ".env.example"):
        shutil.copy(ROOT / name, folder / name)
    shutil.copytree(ROOT / "mosquitto", folder / "mosquitto")
    return folder


@pytest.mark.skipif(
    not compose_available(), reason="needs docker-compose or the docker compose plugin (.ci/run installs it)"
)
def test_make_compose_check_validates_on_a_fresh_clone(tmp_path: Path) -> None:
    clone = fresh_clone(tmp_path)
    result = subprocess.run(["make", "-s", "compose-check"], cwd=clone, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (clone / ".env").exists()
    example = (clone / ".env.example").read_text()
    (clone / ".env.example").write_text(example.replace("MYSQL_PASSWORD=changeme\n", ""))
    broken = subprocess.run(["make", "-s", "compose-check"], cwd=clone, capture_output=True, text=True)
    assert broken.returncode != 0 and "MYSQL_PASSWORD" in broken.stdout + broken.stderr


def test_volume_mount_points_exist_in_the_image_owned_by_the_app_user() -> None:
    """A new named volume copies its mount point from the image: it must exist there, writable."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER songpop", dockerfile, re.M)
    created = re.search(r"mkdir -p ([^&\\]+)", dockerfile)
    owned = re.search(r"chown -R songpop ([^&\\\n]+)", dockerfile)
    assert created and owned
    for service in SONGPOP_SERVICES:
        for target, source in mounts(compose()["services"][service]).items():
            if not source.startswith("."):  # a named volume
                assert target in created.group(1).split(), f"{service}: {target} not created in the image"
                assert any(target.startswith(d) for d in owned.group(1).split()), target


def interpolated(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation (`${VAR}`, `${VAR:-default}`, `${VAR:?error}`; `$$` stays)."""

    def value(match: re.Match[str]) -> str:
        name, operator, fallback = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in env and (env[name] or ":" not in operator):
            return env[name]
        assert not operator.endswith("?"), f"{name} is required but unset"
        return fallback

    return re.sub(r"(?<!\$)\$\{([A-Z0-9_]+)(:?[-?])?([^}]*)\}", value, text)


def test_compose_file_follows_the_compose_specification() -> None:
    """Validated by the compose_spec library (the schema `docker compose config` enforces), with the
    example .env interpolated; then the cross-references the schema cannot see."""
    compose_spec = pytest.importorskip("compose_spec")
    spec = yaml.safe_load(interpolated((ROOT / "docker-compose.yml").read_text(), env_example()))
    parsed = compose_spec.PyCompose.from_json(json.dumps(spec))
    services = spec["services"]
    assert set(parsed.service_names()) == set(services)
    declared = set(spec["volumes"])
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for source in mounts(service).values():
            assert source.startswith(".") or source in declared, f"{name}: volume {source} not declared"


def test_compose_spec_check_refuses_a_broken_file() -> None:
    compose_spec = pytest.importorskip("compose_spec")
    text = interpolated((ROOT / "docker-compose.yml").read_text(), env_example())
    for broken in (
        text.replace("condition: service_healthy", "condition: service_happy", 1),
        text.replace("restart: unless-stopped", "restart: sometimes", 1),
    ):
        with pytest.raises(ValueError):
            compose_spec.PyCompose.from_json(json.dumps(yaml.safe_load(broken)))
