"""The OpenAPI document is valid, its examples are valid, and every path it documents answers with a
body that matches the documented schema."""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from services.predictor import schemas
from services.predictor.app import create_app
from services.predictor.service import predict_trending
from shared.ids import TRACK_REFERENCE_PATTERN, InvalidTrackId, normalise_track_id
from shared.mqtt import topics
from tests.predictor_support import (
    predictor_settings,
    running_emulator,
    seed_songs,
)
from tests.servers import serving


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[Any, str]]:
    async with running_emulator() as running:
        yield running


def schema_examples(doc: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for name, schema in doc["components"]["schemas"].items():
        for example in schema.get("examples", []):
            yield name, example


def check(doc: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    """Validate `instance` against a schema of the document (its `$ref`s resolve inside the document)."""
    jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate(instance)


def test_document_is_valid_openapi_and_its_examples_match_the_models() -> None:
    doc = create_app().openapi()
    validate(doc)
    examples = list(schema_examples(doc))
    assert {name for name, _ in examples} >= {"TrackForecast", "ForecastBatchRequest", "TrendingResponse"}
    for name, example in examples:
        check(doc, {"$ref": f"#/components/schemas/{name}"}, example)
        getattr(schemas, name).model_validate(example)


async def test_docs_are_served_and_every_documented_path_answers(settings, sessions, emulator) -> None:
    _, emulator_url = emulator
    ids = await seed_songs(sessions, n=3, charted=1)
    config = predictor_settings(settings, emulator_url)
    await predict_trending(
        sessions=sessions, settings=config, topics=topics(config), event_id=str(uuid.uuid4())
    )

    async with serving(create_app(config)) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
        doc = (await http.get("/openapi.json")).json()
        docs_page = await http.get("/docs")
        assert docs_page.status_code == 200 and "/openapi.json" in docs_page.text

        answered = []
        for path, operations in doc["paths"].items():
            for method, operation in operations.items():
                body = {"track_ids": ids} if method == "post" else None
                response = await http.request(method, path.replace("{track_id}", ids[0]), json=body)
                assert response.status_code == 200, (method, path, response.text)
                schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
                check(doc, schema, response.json())
                answered.append(path)
    assert set(answered) == {
        "/v1/tracks/{track_id}/forecast",
        "/v1/forecasts",
        "/v1/trending",
        "/v1/models",
        "/v1/status",
        "/healthz",
        "/readyz",
    }


SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
JSON = {"content-type": "application/json"}
FUZZ_EXAMPLES = 15  # per operation and phase: bounded, so the run stays well under a minute


async def test_schemathesis_passes_on_a_running_predictor(settings, sessions, emulator, tmp_path) -> None:
    _, emulator_url = emulator
    await seed_songs(sessions, n=3, charted=1)
    config = predictor_settings(settings, emulator_url)
    async with serving(create_app(config)) as url:
        run = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS), "run", f"{url}/openapi.json", "--checks", "all",
            "--max-examples", str(FUZZ_EXAMPLES), "--seed", "15", "--request-timeout", "20",
            "--suppress-health-check", "all", "--no-color",
            cwd=tmp_path,  # its cache of crashes stays out of the repository
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(run.communicate(), timeout=300)
    report = output.decode()
    assert run.returncode == 0, report[-6000:]
    assert "No issues found" in report or " passed" in report, report[-3000:]


def test_operations_have_readable_ids_tags_and_every_status_they_can_return() -> None:
    doc = create_app().openapi()
    operations = {(m, p): op for p, ops in doc["paths"].items() for m, op in ops.items()}
    assert {op["operationId"] for op in operations.values()} == {
        "getTrackForecast", "forecastTracks", "listTrending", "listModels", "getStatus", "healthz", "readyz",
    }  # fmt: skip
    assert all(op["tags"] for op in operations.values())
    statuses = {key: set(op["responses"]) for key, op in operations.items()}
    assert statuses[("get", "/v1/tracks/{track_id}/forecast")] == {
        "200", "401", "404", "422", "429", "502", "503",
    }  # fmt: skip
    assert statuses[("post", "/v1/forecasts")] == {"200", "400", "401", "413", "422", "429", "502", "503"}
    for path in ("/v1/trending", "/v1/models", "/v1/status"):
        assert statuses[("get", path)] == {"200", "503"}
    for key, op in operations.items():
        for status in ("429", "503"):
            if status in op["responses"] and key[1] != "/readyz":
                assert "Retry-After" in op["responses"][status]["headers"], (key, status)
    track_ids = doc["components"]["schemas"]["ForecastBatchRequest"]["properties"]["track_ids"]
    assert track_ids["maxItems"] == 100 and track_ids["minItems"] == 1
    assert track_ids["items"]["pattern"] == TRACK_REFERENCE_PATTERN


@pytest.mark.parametrize(
    "raw",
    ["4uLU6hMCjMI75M1A2tKUQC", " spotify:track:4uLU6hMCjMI75M1A2tKUQC ", "nope", "", "4uLU6hMCjMI75M1A2tKUQ",
     "https://open.spotify.com/intl-it/track/4uLU6hMCjMI75M1A2tKUQC?si=x"],
)  # fmt: skip
def test_the_documented_pattern_accepts_exactly_what_the_server_does(raw: str) -> None:
    documented = re.fullmatch(TRACK_REFERENCE_PATTERN, raw) is not None
    try:
        normalise_track_id(raw)
        accepted = True
    except InvalidTrackId:
        accepted = False
    assert documented == accepted


async def test_an_unreadable_body_is_400_and_an_oversized_one_413(settings) -> None:
    app = create_app(predictor_settings(settings))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        unreadable = await http.post("/v1/forecasts", content=b'{"track_ids": ["\xff\xfe"]}', headers=JSON)
        huge = await http.post("/v1/forecasts", content=b" " * 2_000_000, headers=JSON)
    assert unreadable.status_code == 400, unreadable.text
    assert huge.status_code == 413
