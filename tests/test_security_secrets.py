"""Secrets never leak: the real processes (`songpop serve predictor|dashboard`, `songpop ingest update`,
`songpop migrate`) run at DEBUG with known secrets in SONGPOP_SPOTIFY_CLIENT_SECRET, in the MQTT URL's
password and in the database URL's password; every endpoint is exercised, including while the database
is away and with Spotify refusing the credentials; then the captured logs, the responses (/v1/status,
error pages, /metrics, OpenAPI) and the CLI's error output are searched for each secret, plain, base64'd
(HTTP basic auth) and URL-encoded."""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import text

from shared.db import make_engine
from tests.faults_support import PrivateBroker, Process, spotify_emulator, until_up
from tests.proxy import TcpProxy
from tests.servers import free_port

pytestmark = pytest.mark.skipif(
    not __import__("shutil").which("mosquitto"), reason="needs the mosquitto binary"
)

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "songpop-secret-test-client"
SPOTIFY_SECRET = "spot-" + secrets.token_urlsafe(16)
DB_PASSWORD = "db-" + secrets.token_urlsafe(16)


def forms(secret: str) -> list[str]:
    """The ways a secret could show up: as is, URL-encoded, inside HTTP basic auth."""
    basic = base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()
    return [secret, quote(secret, safe=""), basic, basic[:20]]


@pytest.fixture
async def db_user(settings) -> AsyncIterator[tuple[str, str]]:
    """A MariaDB user with a password, allowed on this session's database; yields (user, database)."""
    if not settings.database_url.startswith("mysql"):
        pytest.skip("needs MariaDB (a user with a password)")
    server, database = settings.database_url.rsplit("/", 1)
    user = f"sp_{uuid.uuid4().hex[:10]}"
    engine = make_engine(server + "/")
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{DB_PASSWORD}'"))
        await conn.execute(text(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'"))
    try:
        yield user, database
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
        await engine.dispose()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with PrivateBroker(tmp_path / "mosquitto") as running:
        yield running


async def exercise(url: str, paths: list[str], *, posts: dict[str, bytes] | None = None) -> list[str]:
    """GET every path (and POST the bodies); return every response's headers and text."""
    seen = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for path in paths:
            response = await http.get(path)
            seen.append(f"{path} {response.status_code} {dict(response.headers)} {response.text}")
        for path, body in (posts or {}).items():
            response = await http.post(path, content=body, headers={"content-type": "application/json"})
            seen.append(f"POST {path} {response.status_code} {response.text}")
    return seen


def assert_no_secret(where: str, text_seen: str, secret_values: list[str]) -> None:
    for secret in secret_values:
        for form in forms(secret):
            assert form not in text_seen, f"a secret ({form[:6]}…) appears in {where}"


async def test_no_secret_in_logs_responses_or_errors(settings, db_user, broker, tmp_path: Path) -> None:
    user, database = db_user
    mqtt_secret = broker.passwords["predictor"]
    all_secrets = [
        SPOTIFY_SECRET,
        DB_PASSWORD,
        mqtt_secret,
        broker.passwords["dashboard"],
        broker.passwords["ingestor"],
    ]
    seen: list[str] = []
    logs: dict[str, str] = {}
    charts = tmp_path / "charts"
    emulator_config = {"client_id": CLIENT_ID, "client_secret": SPOTIFY_SECRET}
    async with (
        spotify_emulator(charts, **emulator_config) as (emulator, spotify),
        TcpProxy("127.0.0.1", 3306) as db,
    ):
        common = {
            "SONGPOP_ENVIRONMENT": "production",
            "SONGPOP_LOG_LEVEL": "DEBUG",
            "SONGPOP_DATABASE_URL": f"mysql+asyncmy://{user}:{DB_PASSWORD}@127.0.0.1:{db.port}/{database}",
            "SONGPOP_MQTT_TOPIC_ROOT": "songpop/v1",
            "SONGPOP_VAR_DIR": str(tmp_path / "var"),
            "SONGPOP_CHARTS_DIR": str(charts),
            "SONGPOP_SPOTIFY_CLIENT_ID": CLIENT_ID,
            "SONGPOP_SPOTIFY_CLIENT_SECRET": SPOTIFY_SECRET,
            "SONGPOP_SPOTIFY_API_URL": spotify["spotify_api_url"],
            "SONGPOP_SPOTIFY_ACCOUNTS_URL": spotify["spotify_accounts_url"],
        }
        predictor_port, dashboard_port = free_port(), free_port()
        predictor_env = {
            "SONGPOP_MQTT_URL": broker.url("predictor"),
            "SONGPOP_PREDICTOR_PORT": str(predictor_port),
        }
        dashboard_env = {
            "SONGPOP_MQTT_URL": broker.url("dashboard"),
            "SONGPOP_DASHBOARD_PORT": str(dashboard_port),
        }
        predictor = Process(["serve", "predictor"], {**common, **predictor_env}, tmp_path, "predictor")
        dashboard = Process(["serve", "dashboard"], {**common, **dashboard_env}, tmp_path, "dashboard")
        try:
            predictor_url, dashboard_url = (f"http://127.0.0.1:{p}" for p in (predictor_port, dashboard_port))
            await until_up(predictor_url)
            await until_up(dashboard_url)

            ingest = Process(
                ["ingest", "update"],
                {**common, "SONGPOP_MQTT_URL": broker.url("ingestor")},
                tmp_path,
                "ingest",
            )
            logs["ingest"] = await asyncio.to_thread(ingest.wait, 120)

            track = emulator.state.emulator.catalog.track_ids[3]
            predictor_paths = [
                "/healthz",
                "/readyz",
                "/v1/status",
                "/v1/trending",
                "/v1/models",
                f"/v1/tracks/{track}/forecast",
                "/v1/tracks/not-an-id!/forecast",
                "/openapi.json",
                "/metrics",
                "/no/such/page",
            ]
            dashboard_paths = [
                "/",
                "/status",
                "/models",
                "/api/trending",
                "/tracks/nope",
                "/readyz",
                "/no/such/page",
            ]
            posts = {"/v1/forecasts": b'{"track_ids": ["' + track.encode() + b'"]}'}
            seen += await exercise(predictor_url, predictor_paths, posts=posts)
            seen += await exercise(dashboard_url, dashboard_paths)

            db.cut()  # the database goes away: error pages and reconnect logs
            seen += await exercise(predictor_url, predictor_paths, posts=posts)
            seen += await exercise(dashboard_url, dashboard_paths)
            migrate_env = {**common, "SONGPOP_MQTT_URL": broker.url("ingestor")}  # production needs a broker
            migrate = Process(["migrate", "--wait", "1"], migrate_env, tmp_path, "migrate")
            logs["migrate"] = await asyncio.to_thread(migrate.wait, 60)
            assert migrate.process.returncode != 0
            db.restore()

            state = emulator.state.emulator  # Spotify now refuses our secret and our token
            state.config.client_secret = "rotated"
            state.tokens.clear()
            seen += await exercise(predictor_url, [f"/v1/tracks/{state.catalog.track_ids[9]}/forecast"])
        finally:
            logs["predictor"] = predictor.stop()
            logs["dashboard"] = dashboard.stop()

    assert "GET /v1/status" in logs["predictor"] or "/v1/status" in "\n".join(seen)
    assert any("database" in line and " 503 " in line for line in seen), "the outage was not exercised"
    assert not [line[:200] for line in seen if " 500 " in line.split("{", 1)[0]], "an error page is a 500"
    assert any("Spotify refused" in line and " 502 " in line for line in seen)
    assert "unreachable" in logs["migrate"]
    for name, output in logs.items():
        assert_no_secret(f"the {name} output", output, all_secrets)
    assert_no_secret("the HTTP responses", "\n".join(seen), all_secrets)
