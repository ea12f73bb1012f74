"""Fault-injection helpers for the reliability and security tests: a private Mosquitto started with the
project's mosquitto/ config (so it can be stopped, killed and restarted without touching the shared
broker), and an MQTT observer that reconnects like a service. (The TCP proxy that cuts MariaDB
connections is tests/proxy.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO_DIR = ROOT / "mosquitto"
SERVICE_USERS = ("ingestor", "predictor", "trainer", "dashboard", "healthcheck")
OBSERVER = "observer"  # test-only user that reads and writes everything, to see what got through


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def make_passwd(out: Path, passwords: dict[str, str]) -> None:
    """Run mosquitto/make-passwd.sh with `passwords` as MQTT_<USER>_PASSWORD variables."""
    env = {"PATH": os.environ["PATH"]}
    env.update({f"MQTT_{user.upper()}_PASSWORD": pw for user, pw in passwords.items()})
    subprocess.run(
        ["sh", str(MOSQUITTO_DIR / "make-passwd.sh"), str(out)], env=env, check=True, capture_output=True
    )


def project_config(*, port: int, workdir: Path, passwd: Path, acl: Path) -> str:
    """The project's mosquitto.conf with its paths and listener moved into `workdir` and `port`."""
    replaced = {
        "password_file": f"password_file {passwd}",
        "acl_file": f"acl_file {acl}",
        "persistence_location": f"persistence_location {workdir}/data/",
        "log_dest": f"log_dest file {workdir}/mosquitto.log",
        "listener": f"listener {port} 127.0.0.1",
        "include_dir": f"include_dir {workdir}/conf.d",
    }
    lines = []
    for line in (MOSQUITTO_DIR / "mosquitto.conf").read_text().splitlines():
        key = line.split(" ", 1)[0]
        lines.append(replaced.pop(key, line) if key in replaced else line)
    # Running as root, Mosquitto would switch to the `mosquitto` user, who cannot read pytest's tmp dirs.
    lines.append(f"user {getpass.getuser()}")
    return "\n".join(lines) + "\n"


class PrivateBroker:
    """A Mosquitto process of this test alone, with the project's config, ACL and generated passwords.

    The ACL is the project's, plus a test-only `observer` user allowed everything.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.passwords = {user: secrets.token_urlsafe(12) for user in (*SERVICE_USERS, OBSERVER)}
        self._process: subprocess.Popen[bytes] | None = None
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        (workdir / "conf.d").mkdir(exist_ok=True)  # extra listeners go here (include_dir)
        passwd, acl = workdir / "passwd", workdir / "acl"
        make_passwd(passwd, self.passwords)
        observer = ["mosquitto_passwd", "-b", str(passwd), OBSERVER, self.passwords[OBSERVER]]
        subprocess.run(observer, check=True)
        acl_text = (MOSQUITTO_DIR / "acl").read_text()
        acl.write_text(f"{acl_text}\n\nuser {OBSERVER}\ntopic readwrite #\n")
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(project_config(port=self.port, workdir=workdir, passwd=passwd, acl=acl))

    def url(self, user: str | None) -> str:
        """`mqtt://user:password@127.0.0.1:port` (or anonymous when `user` is None)."""
        if user is None:
            return f"mqtt://127.0.0.1:{self.port}"
        return f"mqtt://{user}:{self.passwords[user]}@127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"mosquitto exited: {error}\n{self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen on {self.port}\n{self.log}")
            time.sleep(0.05)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the broker: SIGTERM (saves its persistence file) or SIGKILL (a crash)."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self._process.wait(timeout=10)
        if self._process.stderr:
            self._process.stderr.close()
        self._process = None

    def __enter__(self) -> PrivateBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(kill=True)


class Collector:
    """An MQTT observer that behaves like a service: a persistent session, resubscribing after every
    reconnection, recording every message it receives (duplicates included)."""

    def __init__(self, url: str, filters: list[str]) -> None:
        from shared.mqtt import broker_address

        self.address = broker_address(url)
        self.filters = filters
        self.identifier = f"collector-{secrets.token_hex(4)}"
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = asyncio.Event()
        self.connections = 0
        self._task: asyncio.Task[None] | None = None

    def event_ids(self, topic: str) -> list[str]:
        """Event ids of the envelopes received on `topic`, in arrival order."""
        import json

        return [json.loads(p)["event_id"] for t, p in self.messages if t == topic and p]

    async def wait_until(self, condition: Callable[[], bool], within: float = 60.0) -> None:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 - polls state other tasks update
                await asyncio.sleep(0.05)

    async def _run(self) -> None:
        import aiomqtt

        while True:
            try:
                async with aiomqtt.Client(
                    self.address.host,
                    self.address.port,
                    username=self.address.username,
                    password=self.address.password,
                    identifier=self.identifier,
                    clean_session=False,
                ) as client:
                    for topic in self.filters:
                        await client.subscribe(topic, qos=1)
                    self.connections += 1
                    self.subscribed.set()
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        self.messages.append((str(message.topic), payload))
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(0.1)

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self.subscribed.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.asynccontextmanager
async def spotify_emulator(charts_dir: Path, **config: Any) -> AsyncIterator[tuple[Any, dict[str, str]]]:
    """The Spotify emulator serving in this loop, with this week's chart file in `charts_dir`; yields the
    app and the settings that point a service at it."""
    from services.emulator import EmulatorConfig
    from services.emulator import create_app as create_emulator
    from shared.weeks import current_week
    from tests.servers import serving

    week = current_week()
    app = create_emulator(EmulatorConfig(mode="extended", n_tracks=1000, start_week=week, **config))
    async with serving(app) as url:
        write_chart(charts_dir, app.state.emulator.catalog.chart_csv(week, "global"), week.isoformat())
        yield app, {"spotify_api_url": f"{url}/v1", "spotify_accounts_url": url}


def write_chart(charts_dir: Path, csv: str, week: str) -> None:
    charts_dir.mkdir(parents=True, exist_ok=True)
    (charts_dir / f"regional-global-weekly-{week}.csv").write_text(csv)


class Process:
    """A `songpop` command in a subprocess with a clean environment; output captured to a file."""

    def __init__(self, args: list[str], env: dict[str, str], workdir: Path, name: str) -> None:
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from services.cli import main; main()", *args],
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env},
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> str:
        self.process.wait(timeout=timeout)
        return self.stop()


async def until_up(url: str, within: float = 30) -> None:
    async with asyncio.timeout(within), httpx.AsyncClient() as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
