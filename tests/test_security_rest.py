"""REST abuse refused: SQL-injection strings, path tricks and huge or hostile bodies get a 4xx and
execute nothing; a bounded schemathesis run over the predictor's own OpenAPI document (valid and
invalid requests) finds no 5xx. (Plain bad ids and batch limits: tests/test_rest.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select, text

from services.predictor.app import create_app
from shared.models import Prediction, Snapshot, Track
from tests.predictor_support import predictor_settings, running_emulator, seed_songs
from tests.servers import serving

INJECTIONS = [
    "'; DROP TABLE track; --",
    "4uLU6hMCjMI75M1A2tKUQC' OR '1'='1",
    '4uLU6hMCjMI75M1A2tKUQC"; DELETE FROM snapshot; --',
    "1 UNION SELECT password FROM mysql.user",
    "4uLU6hMCjMI75M1A2tKUQC%27%20OR%201=1",
    "../../../../etc/passwd",
    "spotify:track:4uLU6hMCjMI75M1A2tKUQC'--",
    "4uLU6hMCjMI75M1A2tKUQC\x00",
]


@pytest.fixture
async def api(settings, sessions) -> AsyncIterator[httpx.AsyncClient]:
    async with running_emulator() as (_, emulator_url):
        app = create_app(predictor_settings(settings, emulator_url))
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
            yield http


async def table_counts(sessions) -> dict[str, int]:
    async with sessions() as session:
        return {
            model.__name__: (await session.exec(select(func.count()).select_from(model))).one()[0]
            for model in (Track, Snapshot, Prediction)
        }


async def test_sql_injection_strings_are_refused_and_execute_nothing(api, sessions) -> None:
    await seed_songs(sessions, n=5)
    before = await table_counts(sessions)
    for attack in INJECTIONS:
        one = await api.get(f"/v1/tracks/{quote(attack, safe='')}/forecast")
        assert one.status_code in (404, 422), (attack, one.status_code, one.text)
        batch = await api.post("/v1/forecasts", json={"track_ids": ["4uLU6hMCjMI75M1A2tKUQC", attack]})
        assert batch.status_code == 422, (attack, batch.status_code)
        for response in (one, batch):
            assert "Traceback" not in response.text and "SQL" not in response.text
    assert await table_counts(sessions) == before
    async with sessions() as session:  # every table still there
        assert (await session.exec(text("SELECT COUNT(*) FROM track"))).one()[0] == before["Track"]
    assert (await api.get("/v1/trending")).status_code == 200


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"track_ids": ["' + b"a" * 3_000_000 + b'"]}', {"content-type": "application/json"}),
        (b"[" * 100_000 + b"]" * 100_000, {"content-type": "application/json"}),
        (b"\xff\xfe\x00garbage", {"content-type": "application/json"}),
        (b'{"track_ids": ["4uLU6hMCjMI75M1A2tKUQC"]}', {"content-type": "text/xml"}),
    ],
    ids=["3MB", "deeply-nested", "binary", "wrong-content-type"],
)
async def test_hostile_bodies_get_a_4xx(api, body: bytes, headers: dict[str, str]) -> None:
    response = await api.post("/v1/forecasts", content=body, headers=headers)
    assert 400 <= response.status_code < 500, response.status_code
    assert len(response.content) < 10_000  # no echo of the body
    assert (await api.get("/healthz")).status_code == 200


async def test_oversized_body_is_refused_before_it_is_read(api) -> None:
    # A client announcing 50 MB: refused on the headers alone, without waiting for (or storing) the body.
    url = httpx.URL(str(api.base_url))
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        b"POST /v1/forecasts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000000\r\n\r\n{"
    )
    await writer.drain()
    async with asyncio.timeout(10):
        status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] == b"413"

    async def stream() -> AsyncIterator[bytes]:
        yield b'{"track_ids": ["'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"]}'

    chunked = await api.post("/v1/forecasts", content=stream(), headers={"content-type": "application/json"})
    assert chunked.status_code in (400, 413)


# ---------------------------------------------------------------- schemathesis


@contextlib.contextmanager
def predictor_in_a_thread(settings: Any) -> Iterator[str]:
    """The predictor (and the Spotify emulator) served from a thread of their own, so that schemathesis'
    blocking HTTP calls can reach them."""
    ready: dict[str, str] = {}
    started, stop = threading.Event(), threading.Event()

    async def main() -> None:
        async with running_emulator() as (_, emulator_url):
            app = create_app(predictor_settings(settings, emulator_url))
            async with serving(app) as url:
                ready["url"] = url
                started.set()
                while not stop.is_set():  # noqa: ASYNC110 - stop is set from another thread
                    await asyncio.sleep(0.05)

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert started.wait(30), "the predictor did not start"
    try:
        yield ready["url"]
    finally:
        stop.set()
        thread.join(30)


def test_schemathesis_finds_no_server_error(settings, engine) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hypothesis_settings
    from hypothesis.errors import Unsatisfiable

    failures: list[str] = []
    statuses: list[int] = []
    with predictor_in_a_thread(settings) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in schemathesis.GenerationMode:

                @given(case=operation.as_strategy(generation_mode=mode))
                @hypothesis_settings(
                    max_examples=15,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                )
                def call(case: Any) -> None:
                    response = case.call(base_url=url, timeout=20)
                    statuses.append(response.status_code)
                    if response.status_code >= 500:
                        failures.append(
                            f"{case.method} {case.formatted_path} -> {response.status_code}: "
                            f"{response.text[:200]}"
                        )

                with contextlib.suppress(Unsatisfiable):  # nothing to make invalid (no parameters)
                    call()
    assert not failures, "\n".join(failures)
    assert len(statuses) >= 50 and any(400 <= s < 500 for s in statuses)  # a real run, invalid inputs too
